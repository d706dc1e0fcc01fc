/**
 * Parameter declarations. A layer says what it needs (path, shape, dtype, initialiser,
 * trainable, persistent); it never creates tfjs variables — compile/ does, from these.
 */
import type { Shape } from './shape.ts';
import { checkRead } from './memo.ts';
import { tensorOf, type Tensor } from './tensor.ts';
import type { GraphBuilder } from '../compile/ir.ts';

export type Init =
  | { readonly kind: 'zeros' }
  | { readonly kind: 'normal'; readonly std: number }
  /** timm's trunc_normal_: N(0, std²) truncated to absolute bounds [lo, hi]. */
  | { readonly kind: 'truncNormal'; readonly std: number; readonly lo: number; readonly hi: number }
  | { readonly kind: 'xavierUniform'; readonly fanIn: number; readonly fanOut: number }
  /** Fixed values (position tables, index buffers), computed on demand. */
  | { readonly kind: 'values'; readonly values: () => Float32Array | Int32Array };

export interface ParamSpec {
  readonly shape: readonly number[];
  readonly dtype: 'float32' | 'int32';
  readonly init: Init;
  /** Updated by the optimizer. */
  readonly trainable: boolean;
  /** Saved in state dicts (PyTorch `persistent` buffers and parameters). */
  readonly persistent: boolean;
  /** Only the masked (training) graph reads it; inference graphs need not allocate it. */
  readonly trainOnly?: boolean;
}

/** Flat map from dotted path (`blocks.3.attn.qkv.weight`) to its declaration. */
export type ParamDecls = Readonly<Record<string, ParamSpec>>;

export function param(shape: readonly number[], init: Init, opts: Partial<Pick<ParamSpec, 'trainable' | 'persistent' | 'dtype' | 'trainOnly'>> = {}): ParamSpec {
  return { shape, init, dtype: opts.dtype ?? 'float32', trainable: opts.trainable ?? true, persistent: opts.persistent ?? true, ...(opts.trainOnly ? { trainOnly: true } : {}) };
}

export function prefixDecls(prefix: string, decls: ParamDecls): ParamDecls {
  const out: Record<string, ParamSpec> = {};
  for (const [k, v] of Object.entries(decls)) out[`${prefix}.${k}`] = v;
  return out;
}

export function mergeDecls(...parts: ParamDecls[]): ParamDecls {
  const out: Record<string, ParamSpec> = {};
  for (const part of parts) {
    for (const [k, v] of Object.entries(part)) {
      if (k in out) throw new Error(`parameter path declared twice: ${k}`);
      out[k] = v;
    }
  }
  return out;
}

export function markTrainOnly(decls: ParamDecls): ParamDecls {
  return Object.fromEntries(Object.entries(decls).map(([k, v]) => [k, { ...v, trainOnly: true }]));
}

/** Read access to parameters, scoped to a layer's prefix: each read is a named graph input. */
export interface ParamView {
  /**
   * The parameter, typed by the shape it is expected to have; the declaration is checked
   * against it when traced (symbols bind in the enclosing named layer's memo).
   */
  get<const S extends Shape>(name: string, shape: S): Tensor<S>;
  /** @deprecated An unchecked claim about the shape: pass the expected shape instead (`get(name, shape)`). */
  get<S extends Shape = Shape>(name: string): Tensor<S>;
  scope(name: string): ParamView;
}

/**
 * Parameters as inputs of the graph being traced: the first read of a path declares it, so a
 * graph's parameter inputs are exactly what it reads (the sampling graph never sees the side
 * block or the mask token). `available` narrows what may be read (inference weights only).
 */
export function paramView(graph: GraphBuilder, decls: ParamDecls, available: (path: string) => boolean = () => true, prefix = ''): ParamView {
  return {
    get<S extends Shape>(name: string, shape?: S): Tensor<S> {
      const path = prefix + name;
      const spec = decls[path];
      if (spec === undefined || !available(path)) throw new Error(`parameter ${path} is not available in this graph`);
      if (shape !== undefined) checkRead(graph, `parameter ${path}`, spec.shape, shape);
      return tensorOf<S>(graph, graph.input(path, 'param', spec.shape, spec.dtype));
    },
    scope(name: string): ParamView {
      return paramView(graph, decls, available, `${prefix}${name}.`);
    },
  };
}

export function countParams(decls: ParamDecls, filter: (path: string, spec: ParamSpec) => boolean = () => true): number {
  let n = 0;
  for (const [k, v] of Object.entries(decls)) if (v.dtype === 'float32' && filter(k, v)) n += v.shape.reduce((a, b) => a * b, 1);
  return n;
}
