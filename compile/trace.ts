/**
 * Tracing: run a program written with the DSL's typed ops on symbolic inputs and keep the
 * graph it records. `jit` does that once per shape signature of the tensors it is called
 * with, optimises the graph (fusion, CSE, DCE) and keeps the executable, like jax.jit.
 */
import type * as tf from '@tensorflow/tfjs';
import type { Shape } from '../dsl/shape.ts';
import { tensorOf, type Tensor } from '../dsl/tensor.ts';
import { paramView, type ParamDecls, type ParamView } from '../dsl/param.ts';
import { checkRead } from '../dsl/memo.ts';
import { GraphBuilder, type DType, type Graph, type InputKind } from './ir.ts';
import { lower, type Executable } from './execute.ts';
import { optimize } from './pipeline.ts';

export interface InputSpec {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly kind?: InputKind;
}

/** What a traced program sees: its data inputs by name, and parameters through a ParamView. */
export interface TraceIO {
  readonly graph: GraphBuilder;
  /** The data input `name`, typed by the shape it is expected to have (checked against the specs when traced; symbols bind). */
  data<const S extends Shape>(name: string, shape: S): Tensor<S>;
  /** @deprecated An unchecked claim about the shape: pass the expected shape instead (`data(name, shape)`). */
  data<S extends Shape = Shape>(name: string): Tensor<S>;
  /** Parameters declared by `decls`, each a named input when first read. */
  params(decls: ParamDecls, available?: (path: string) => boolean): ParamView;
}

export type Program = (io: TraceIO) => Readonly<Record<string, Tensor<Shape>>>;

/** Records `fn` on inputs of the given specs; its returned tensors become the named outputs. */
export function trace(fn: Program, specs: Readonly<Record<string, InputSpec>>): Graph {
  const graph = new GraphBuilder();
  const io: TraceIO = {
    graph,
    data<S extends Shape>(name: string, shape?: S): Tensor<S> {
      const s = specs[name];
      if (s === undefined) throw new Error(`trace: no input named '${name}' (given: ${Object.keys(specs).join(', ') || 'none'})`);
      if (shape !== undefined) checkRead(graph, `input ${name}`, s.shape, shape);
      return tensorOf<S>(graph, graph.input(name, s.kind ?? 'data', s.shape, s.dtype));
    },
    params: (decls, available) => paramView(graph, decls, available),
  };
  for (const [name, t] of Object.entries(fn(io))) graph.output(name, t.id);
  return graph.finish();
}

/** The shape signature of input specs: names, shapes and dtypes (kinds aside). */
export function specsSignature(specs: Readonly<Record<string, InputSpec>>): string {
  return Object.entries(specs).map(([k, t]) => `${k}:${t.dtype}[${t.shape.join(',')}]`).sort().join(';');
}

/** The shape signature of a call: names, shapes and dtypes of what it is given. */
export function signature(inputs: ReadonlyMap<string, tf.Tensor>): string {
  return specsSignature(specsOf(inputs));
}

export function specsOf(inputs: ReadonlyMap<string, tf.Tensor>, kind: (name: string) => InputKind = () => 'data'): Record<string, InputSpec> {
  return Object.fromEntries([...inputs].map(([k, t]) => [k, { shape: t.shape, dtype: t.dtype as DType, kind: kind(k) }]));
}

export interface Jitted {
  /** Runs the program (traced and compiled on the first call with these shapes); outputs are the caller's. */
  (inputs: ReadonlyMap<string, tf.Tensor>): Map<string, tf.Tensor>;
  /** The executable for a signature, compiling it if needed. */
  executable(inputs: ReadonlyMap<string, tf.Tensor>): Executable;
  /** The optimised graph for inputs of these specs, traced without running anything (kept for the executable). */
  graph(specs: Readonly<Record<string, InputSpec>>): Graph;
  dispose(): void;
}

/** A program compiled per shape signature of its inputs (MDTv2's varying kept-token count gets one per length). */
export function jit(fn: Program, build: (g: Graph) => Graph = optimize): Jitted {
  const cache = new Map<string, Executable>();
  // Graphs asked for before their executable (a memory estimate); lowering takes them.
  const graphs = new Map<string, Graph>();
  const graph = (specs: Readonly<Record<string, InputSpec>>): Graph => {
    const key = specsSignature(specs);
    let g = graphs.get(key);
    if (g === undefined) graphs.set(key, (g = build(trace(fn, specs))));
    return g;
  };
  const executable = (inputs: ReadonlyMap<string, tf.Tensor>): Executable => {
    const key = signature(inputs);
    let exe = cache.get(key);
    if (exe === undefined) {
      cache.set(key, (exe = lower(graph(specsOf(inputs)))));
      graphs.delete(key);
    }
    return exe;
  };
  const run = (inputs: ReadonlyMap<string, tf.Tensor>) => executable(inputs).run(inputs);
  return Object.assign(run, {
    executable,
    graph,
    dispose: () => {
      for (const e of cache.values()) e.dispose();
      cache.clear();
      graphs.clear();
    },
  });
}
