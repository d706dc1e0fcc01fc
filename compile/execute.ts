/**
 * Lowering a graph to an executable on the active tfjs backend. Constants, and everything
 * computed from constants alone, are evaluated once when the executable is made and kept
 * (constant folding: position tables, index arithmetic, timestep frequencies). A run then
 * dispatches one kernel per remaining node and frees each intermediate right after its last
 * reader (a memory plan fixed at build time), so a step's peak is what is live at once, not
 * everything it ever made, and no tape or tidy scope spans the step.
 */
import * as tf from '@tensorflow/tfjs';
import { formatShape, graphInputs, type Graph, type Node } from './ir.ts';
import { LOWERINGS } from './lowering.ts';

export interface Executable {
  readonly graph: Graph;
  /** Names and shapes the run expects. */
  readonly inputs: ReadonlyArray<{ readonly name: string; readonly shape: readonly number[]; readonly dtype: string }>;
  /**
   * Runs the graph; the outputs belong to the caller. Inputs are read, never disposed.
   * `profile` receives each executed node with its wall time (kernels run synchronously on
   * wasm and cpu; on asynchronous backends the times are dispatch times).
   */
  run(inputs: ReadonlyMap<string, tf.Tensor>, profile?: (node: Node, ms: number) => void): Map<string, tf.Tensor>;
  /** Frees the folded constants. */
  dispose(): void;
}

/** Nodes whose value depends on no input: evaluated once per executable. */
export function constantNodes(g: Graph): Set<number> {
  const out = new Set<number>();
  for (const n of g.nodes) {
    if (n.op === 'const' || (n.op !== 'input' && n.inputs.length > 0 && n.inputs.every((i) => out.has(i)))) out.add(n.id);
  }
  return out;
}

function evalNode(n: Node, values: readonly (tf.Tensor | undefined)[]): tf.Tensor {
  if (n.op === 'const') {
    const v = n.attrs['value'];
    return v === undefined ? tf.fill(n.shape as number[], n.attrs['fill'] as number, n.dtype) : tf.tensor(v as Float32Array | Int32Array, n.shape as number[], n.dtype);
  }
  const lower = LOWERINGS[n.op];
  if (lower === undefined) throw new Error(`no tfjs lowering for primitive '${n.op}' (node ${n.id} in ${n.scope || 'the top level'})`);
  const ins = n.inputs.map((i) => values[i]!);
  return tf.tidy(() => lower(ins, n));
}

export function lower(g: Graph): Executable {
  const consts = constantNodes(g);
  const inputs = graphInputs(g);
  const outputIds = new Set(g.outputs.map((o) => o.node));
  // A folded constant feeding only other folded nodes is dropped once the pool is built.
  const lastUse = new Array<number>(g.nodes.length).fill(-1);
  for (const n of g.nodes) for (const i of n.inputs) lastUse[i] = n.id;
  const pool: (tf.Tensor | undefined)[] = new Array(g.nodes.length);
  for (const n of g.nodes) {
    if (!consts.has(n.id)) continue;
    pool[n.id] = evalNode(n, pool);
    // Once per distinct input: mul(c, c) reads c twice but frees it once.
    for (const i of new Set(n.inputs)) {
      const stillRead = g.nodes.some((m) => !consts.has(m.id) && m.inputs.includes(i)) || outputIds.has(i);
      if (!stillRead && lastUse[i] <= n.id) {
        pool[i]!.dispose();
        pool[i] = undefined;
      }
    }
  }
  const freeAfter: number[][] = g.nodes.map(() => []);
  for (const n of g.nodes) {
    if (consts.has(n.id) || n.op === 'input' || outputIds.has(n.id)) continue;
    // A node nothing reads (a gradient autodiff made for a non-differentiated input, when no
    // dce ran) is freed as soon as it is made, or every run would leak it.
    freeAfter[lastUse[n.id]! < 0 ? n.id : lastUse[n.id]!]!.push(n.id);
  }
  const run = (given: ReadonlyMap<string, tf.Tensor>, profile?: (node: Node, ms: number) => void): Map<string, tf.Tensor> => {
    const values: (tf.Tensor | undefined)[] = pool.slice();
    for (const { name, node } of inputs) {
      const t = given.get(name);
      if (t === undefined) throw new Error(`graph input '${name}' was not given (expected ${formatShape(node.shape)} ${node.dtype})`);
      if (t.dtype !== node.dtype || formatShape(t.shape) !== formatShape(node.shape)) {
        throw new Error(`graph input '${name}': expected ${formatShape(node.shape)} ${node.dtype}, got ${formatShape(t.shape)} ${t.dtype}`);
      }
      values[node.id] = t;
    }
    const made = new Set<tf.Tensor>();
    try {
      for (const n of g.nodes) {
        // Folded constants are in the pool, or were dropped there because nothing here reads them.
        if (values[n.id] !== undefined || consts.has(n.id)) continue;
        const start = profile ? performance.now() : 0;
        const v = evalNode(n, values);
        profile?.(n, performance.now() - start);
        values[n.id] = v;
        made.add(v);
        for (const i of freeAfter[n.id]!) {
          values[i]!.dispose();
          values[i] = undefined;
        }
      }
    } catch (e) {
      for (const t of made) if (!t.isDisposed) t.dispose();
      throw e;
    }
    const out = new Map<string, tf.Tensor>();
    const handed = new Set<tf.Tensor>();
    for (const o of g.outputs) {
      const v = values[o.node]!;
      // An output that is an input or a folded constant (or a second name for one value) is
      // handed out as a copy, so the caller may dispose every output it gets.
      const mine = made.has(v) && !handed.has(v);
      out.set(o.name, mine ? v : tf.clone(v));
      handed.add(v);
    }
    return out;
  };
  return {
    graph: g,
    inputs: inputs.map(({ name, node }) => ({ name, shape: node.shape, dtype: node.dtype })),
    run,
    dispose: () => {
      for (const t of pool) t?.dispose();
    },
  };
}
