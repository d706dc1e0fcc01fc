/**
 * Optimizers written out (tfjs has neither Adan nor AdamW with decoupled decay): PyTorch's
 * AdamW (MDT v1: lr 3e-4, betas 0.9/0.999, wd 0) and sail-sg's Adan (MDTv2: betas
 * 0.98/0.92/0.99, eps 1e-8, global grad-norm clip 1.0, prox weight decay).
 *
 * Every update runs on the parameters laid end to end in a few float32 vectors: a step is ~20
 * kernels per 4M parameters whatever the number of tensors (per tensor it was ~15 each, and
 * on small tensors the per-kernel overhead is most of the cost). Slot state stays flat between
 * steps; slots() hands it out as `<slot>.<param path>` tensors so checkpoints save it per parameter.
 */
import * as tf from '@tensorflow/tfjs';
import { match } from 'ts-pattern';
import { FLAT_CONCAT, FLAT_SPLIT } from '../runtime/kernels.ts';
import { adamwUpdate, adamwUpdateList, adanUpdate, emaUpdate, emaUpdateList } from '../runtime/fused.ts';

/**
 * The learning rate over the updates: a linear warm-up from 0 over `warmupSteps`, then `lr`
 * (constant) or a half cosine from `lr` down to `lr · finalRatio` at update `decaySteps`, held
 * there after (a run extended past its horizon keeps training, at the final rate).
 */
export interface LrSchedule {
  readonly warmupSteps: number;
  readonly decay: 'constant' | 'cosine';
  readonly decaySteps: number;
  readonly finalRatio: number;
}

export type OptimizerConfig =
  | { readonly kind: 'adamw'; readonly lr: number; readonly schedule?: LrSchedule; readonly betas?: readonly [number, number]; readonly eps?: number; readonly weightDecay?: number }
  | { readonly kind: 'adan'; readonly lr: number; readonly schedule?: LrSchedule; readonly betas?: readonly [number, number, number]; readonly eps?: number; readonly weightDecay?: number; readonly maxGradNorm?: number };

/** The learning rate of update `step` (1-based); without a schedule, `lr`. */
export function lrAt(cfg: OptimizerConfig, step: number): number {
  const s = cfg.schedule;
  if (s === undefined) return cfg.lr;
  if (step <= s.warmupSteps) return (cfg.lr * step) / s.warmupSteps;
  if (s.decay === 'constant') return cfg.lr;
  const t = Math.min(1, (step - s.warmupSteps) / Math.max(1, s.decaySteps - s.warmupSteps));
  return cfg.lr * (s.finalRatio + (1 - s.finalRatio) * 0.5 * (1 + Math.cos(Math.PI * t)));
}

export interface Optimizer {
  readonly config: OptimizerConfig;
  /** Number of updates applied so far. */
  readonly step: number;
  /** Applies one update; gradients are consumed (disposed). */
  apply(params: ReadonlyMap<string, tf.Variable>, grads: ReadonlyMap<string, tf.Tensor>): void;
  /** Slot tensors by `<slot>.<path>` (for checkpoints); owned by the optimizer and valid until its next update. */
  slots(): ReadonlyMap<string, tf.Variable>;
  /** Restores slots and the step count from a checkpoint. */
  restore(step: number, slots: ReadonlyMap<string, tf.Tensor>): void;
  dispose(): void;
}

/**
 * At most this many values per flat vector. An update holds a few temporaries of one vector at
 * a time, and tfjs-backend-wasm breaks once its heap passes 2 GB; 4M floats keep MDT-S/2's
 * update (36M parameters) to ~10 vectors of 16 MB.
 */
const CHUNK = 1 << 22;

/** Parameters laid end to end, in the order of the map they came from. */
interface Chunk {
  readonly paths: readonly string[];
  readonly shapes: readonly (readonly number[])[];
  readonly sizes: readonly number[];
}
type Layout = readonly Chunk[];

function layoutOf(tensors: ReadonlyMap<string, tf.Tensor>): Layout {
  const chunks: { paths: string[]; shapes: number[][]; sizes: number[]; total: number }[] = [];
  for (const [path, t] of tensors) {
    let last = chunks[chunks.length - 1];
    if (last === undefined || (last.total > 0 && last.total + t.size > CHUNK)) chunks.push((last = { paths: [], shapes: [], sizes: [], total: 0 }));
    last.paths.push(path);
    last.shapes.push(t.shape);
    last.sizes.push(t.size);
    last.total += t.size;
  }
  return chunks;
}

function sameLayout(a: Layout, b: Layout): boolean {
  return a.length === b.length && a.every((c, k) => c.paths.length === b[k]!.paths.length && c.paths.every((p, i) => p === b[k]!.paths[i] && c.sizes[i] === b[k]!.sizes[i]));
}

/** Whether the backend has the one-kernel flatten and split (registerMissingKernels). */
function flatKernels(): boolean {
  return tf.getKernel(FLAT_CONCAT, tf.getBackend()) !== undefined;
}

/** The chunk's tensors, end to end; `get` supplies each path's tensor. */
function flatten(chunk: Chunk, get: (path: string, index: number) => tf.Tensor): tf.Tensor1D {
  const ts = chunk.paths.map((p, i) => get(p, i));
  if (flatKernels()) return tf.engine().runKernel(FLAT_CONCAT, Object.fromEntries(ts.map((t, i) => [`x${i}`, t]))) as tf.Tensor1D;
  return tf.concat(ts.map((t) => tf.reshape(t, [-1]))) as tf.Tensor1D;
}

/** The inverse of flatten: one tensor per path, in chunk order. */
function unflatten(chunk: Chunk, flat: tf.Tensor): tf.Tensor[] {
  if (flatKernels()) return tf.engine().runKernel(FLAT_SPLIT, { x: flat }, { shapes: chunk.shapes as number[][] }) as tf.Tensor[];
  return tf.split(flat, chunk.sizes as number[]).map((t, i) => tf.reshape(t, chunk.shapes[i] as number[]));
}

/** Assigns each path's piece of `flat` to its variable in `targets`. */
function scatter(chunk: Chunk, flat: tf.Tensor, targets: ReadonlyMap<string, tf.Variable>): void {
  tf.tidy(() => unflatten(chunk, flat).forEach((t, i) => targets.get(chunk.paths[i]!)!.assign(t)));
}

/**
 * Flat slot vectors (per slot name, one per chunk of the last update's layout), plus restored
 * per-parameter state not yet laid out.
 */
function flatSlotStore(names: readonly string[]) {
  let layout: Layout | null = null;
  const flat = new Map<string, tf.Variable[]>();
  const pending = new Map<string, tf.Tensor>();
  let views: Map<string, tf.Variable> | null = null;

  const dropViews = () => {
    if (views !== null) for (const v of views.values()) v.dispose();
    views = null;
  };
  const dropFlat = () => {
    for (const vs of flat.values()) for (const v of vs) v.dispose();
    flat.clear();
  };
  /** Per-parameter copies of everything held, `<slot>.<path>` → tensor (the caller owns them). */
  const perParameter = (): Record<string, tf.Tensor> => tf.tidy(() => {
    const out: Record<string, tf.Tensor> = {};
    if (layout !== null) {
      for (const [slot, vs] of flat) layout.forEach((c, k) => unflatten(c, vs[k]!).forEach((t, i) => (out[`${slot}.${c.paths[i]}`] = t)));
    }
    for (const [key, t] of pending) out[key] = t.clone();
    return out;
  });

  return {
    /** The slot vectors laid out as `l` (zeros where nothing is known): slot name → one per chunk. */
    prepare(l: Layout): ReadonlyMap<string, readonly tf.Variable[]> {
      dropViews();
      if (layout !== null && sameLayout(layout, l) && pending.size === 0) return flat;
      const known = perParameter();
      dropFlat();
      tf.dispose([...pending.values()]);
      pending.clear();
      for (const slot of names) {
        flat.set(slot, l.map((c) => {
          const vec = tf.tidy(() => flatten(c, (p, i) => known[`${slot}.${p}`] ?? tf.zeros([c.sizes[i]!])));
          const v = tf.variable(vec, false);
          vec.dispose();
          return v;
        }));
      }
      tf.dispose(Object.values(known));
      layout = l;
      return flat;
    },
    slots(): ReadonlyMap<string, tf.Variable> {
      if (views === null) {
        const made = new Map<string, tf.Variable>();
        for (const [k, t] of Object.entries(perParameter())) {
          made.set(k, tf.variable(t, false));
          t.dispose();
        }
        views = made;
      }
      return views;
    },
    restore(from: ReadonlyMap<string, tf.Tensor>) {
      dropViews();
      for (const [key, t] of from) {
        const slot = key.split('.')[0]!;
        if (!names.includes(slot)) throw new Error(`optimizer state: unknown slot "${slot}" in key ${key}; expected ${names.join(', ')}`);
        pending.get(key)?.dispose();
        pending.set(key, tf.keep(t.clone()));
      }
    },
    dispose() {
      dropViews();
      dropFlat();
      tf.dispose([...pending.values()]);
      pending.clear();
      layout = null;
    },
  };
}

/** The layout of an update's gradients, checked against the parameters. */
function gradLayout(params: ReadonlyMap<string, tf.Variable>, grads: ReadonlyMap<string, tf.Tensor>): Layout {
  for (const path of grads.keys()) if (!params.has(path)) throw new Error(`optimizer: gradient for ${path}, which is not among the parameters`);
  return layoutOf(grads);
}

/** A chunk's gradient as one vector; the per-parameter gradients are disposed. */
function takeGradients(chunk: Chunk, grads: ReadonlyMap<string, tf.Tensor>): tf.Tensor1D {
  const g = flatten(chunk, (p) => grads.get(p)!);
  for (const p of chunk.paths) grads.get(p)!.dispose();
  return g;
}

function adamw(cfg: Extract<OptimizerConfig, { kind: 'adamw' }>): Optimizer {
  const [b1, b2] = cfg.betas ?? [0.9, 0.999];
  const eps = cfg.eps ?? 1e-8;
  const wd = cfg.weightDecay ?? 0;
  const store = flatSlotStore(['exp_avg', 'exp_avg_sq']);
  let step = 0;
  return {
    config: cfg,
    get step() { return step; },
    apply(params, grads) {
      step += 1;
      const bc1 = 1 - b1 ** step;
      const bc2Sqrt = Math.sqrt(1 - b2 ** step);
      const layout = gradLayout(params, grads);
      const slots = store.prepare(layout);
      const h = { lr: lrAt(cfg, step), b1, b2, eps, wd, bc1, bc2Sqrt };
      layout.forEach((chunk, k) => tf.tidy(() => {
        const m = slots.get('exp_avg')![k]!;
        const v = slots.get('exp_avg_sq')![k]!;
        // Where the backend updates lists in place of flat vectors, nothing is copied.
        const gs = chunk.paths.map((path) => grads.get(path)!);
        const listed = adamwUpdateList(chunk.paths.map((path) => params.get(path)!), gs, m, v, h);
        if (listed !== null) {
          chunk.paths.forEach((path, i) => params.get(path)!.assign(listed[i]!));
          m.assign(listed[chunk.paths.length]!);
          v.assign(listed[chunk.paths.length + 1]!);
          tf.dispose(gs);
          return;
        }
        const g = takeGradients(chunk, grads);
        const [p1, m1, v1] = adamwUpdate(flatten(chunk, (path) => params.get(path)!), g, m, v, h);
        m.assign(m1);
        v.assign(v1);
        scatter(chunk, p1, params);
      }));
    },
    slots: () => store.slots(),
    restore(s, slots) { step = s; store.restore(slots); },
    dispose: () => store.dispose(),
  };
}

function adan(cfg: Extract<OptimizerConfig, { kind: 'adan' }>): Optimizer {
  const [b1, b2, b3] = cfg.betas ?? [0.98, 0.92, 0.99];
  const eps = cfg.eps ?? 1e-8;
  const wd = cfg.weightDecay ?? 0;
  const maxNorm = cfg.maxGradNorm ?? 0;
  const names = ['exp_avg', 'exp_avg_sq', 'exp_avg_diff', 'neg_pre_grad'] as const;
  const store = flatSlotStore(names);
  let step = 0;
  return {
    config: cfg,
    get step() { return step; },
    apply(params, grads) {
      step += 1;
      const bc1 = 1 - b1 ** step;
      const bc2 = 1 - b2 ** step;
      const bc3Sqrt = Math.sqrt(1 - b3 ** step);
      const layout = gradLayout(params, grads);
      const slots = store.prepare(layout);
      const flatGrads = layout.map((chunk) => tf.tidy(() => takeGradients(chunk, grads)));
      // clip = min(max_norm / (‖g‖ + eps), 1) over the whole model, kept on the device.
      const clip = tf.tidy(() => maxNorm > 0
        ? tf.minimum(tf.div(maxNorm, tf.add(tf.sqrt(tf.addN(flatGrads.map((g) => tf.sum(tf.mul(g, g))))), eps)), 1) as tf.Scalar
        : tf.scalar(1));
      // At the first step the previous gradient is the current one: the difference is 0.
      const h = { lr: lrAt(cfg, step), b1, b2, b3, eps, wd, bc1, bc2, bc3Sqrt, first: step === 1 ? 1 : 0 } as const;
      layout.forEach((chunk, k) => tf.tidy(() => {
        const g0 = flatGrads[k]!;
        const p = flatten(chunk, (path) => params.get(path)!);
        const [m, n, diff, neg] = names.map((name) => slots.get(name)![k]!) as [tf.Variable, tf.Variable, tf.Variable, tf.Variable];
        const [p1, m1, n1, d1, neg1] = adanUpdate(p, g0, m, n, diff, neg, clip, h);
        m.assign(m1);
        diff.assign(d1);
        n.assign(n1);
        neg.assign(neg1);
        scatter(chunk, p1, params);
        g0.dispose();
      }));
      clip.dispose();
    },
    slots: () => store.slots(),
    restore(s, slots) { step = s; store.restore(slots); },
    dispose: () => store.dispose(),
  };
}

export function createOptimizer(cfg: OptimizerConfig): Optimizer {
  if (!(cfg.lr > 0)) throw new Error(`optimizer: lr must be > 0, got ${cfg.lr}`);
  const s = cfg.schedule;
  if (s !== undefined && !(Number.isInteger(s.warmupSteps) && s.warmupSteps >= 0 && Number.isInteger(s.decaySteps) && (s.decay === 'constant' || s.decaySteps > s.warmupSteps) && s.finalRatio >= 0 && s.finalRatio <= 1)) {
    throw new Error(`optimizer: schedule needs whole warmupSteps ≥ 0, decaySteps above them (cosine) and finalRatio in [0, 1], got ${JSON.stringify(s)}`);
  }
  return match(cfg)
    .with({ kind: 'adamw' }, (c) => adamw(c))
    .with({ kind: 'adan' }, (c) => adan(c))
    .exhaustive();
}

/** EMA of the weights: ema ← decay·ema + (1 − decay)·p, initialised to the weights, updated a chunk at a time. */
export function createEma(params: ReadonlyMap<string, tf.Tensor>, decay: number) {
  const layout = layoutOf(params);
  const ema = new Map<string, tf.Variable>();
  for (const [k, v] of params) ema.set(k, tf.variable(v.clone(), false));
  return {
    values: ema as ReadonlyMap<string, tf.Variable>,
    update(current: ReadonlyMap<string, tf.Tensor>) {
      for (const p of params.keys()) if (!current.has(p)) throw new Error(`EMA update: no current value for ${p}`);
      for (const chunk of layout) {
        tf.tidy(() => {
          const listed = emaUpdateList(chunk.paths.map((p) => ema.get(p)!), chunk.paths.map((p) => current.get(p)!), decay);
          if (listed !== null) chunk.paths.forEach((p, i) => ema.get(p)!.assign(listed[i]!));
          else scatter(chunk, emaUpdate(flatten(chunk, (p) => ema.get(p)!), flatten(chunk, (p) => current.get(p)!), decay), ema);
        });
      }
    },
    dispose() {
      for (const v of ema.values()) v.dispose();
    },
  };
}
