/**
 * Optimizers written out (tfjs has neither Adan nor AdamW with decoupled decay): PyTorch's
 * AdamW (MDT v1: lr 3e-4, betas 0.9/0.999, wd 0) and sail-sg's Adan (MDTv2: betas
 * 0.98/0.92/0.99, eps 1e-8, global grad-norm clip 1.0, prox weight decay).
 * State lives in tf.Variables keyed by `<slot>.<param path>` so checkpoints can save it.
 */
import * as tf from '@tensorflow/tfjs';
import { match } from 'ts-pattern';

export type OptimizerConfig =
  | { readonly kind: 'adamw'; readonly lr: number; readonly betas?: readonly [number, number]; readonly eps?: number; readonly weightDecay?: number }
  | { readonly kind: 'adan'; readonly lr: number; readonly betas?: readonly [number, number, number]; readonly eps?: number; readonly weightDecay?: number; readonly maxGradNorm?: number };

export interface Optimizer {
  readonly config: OptimizerConfig;
  /** Number of updates applied so far. */
  readonly step: number;
  /** Applies one update; gradients are consumed (disposed). */
  apply(params: ReadonlyMap<string, tf.Variable>, grads: ReadonlyMap<string, tf.Tensor>): void;
  /** Slot tensors by `<slot>.<path>` (for checkpoints); owned by the optimizer. */
  slots(): ReadonlyMap<string, tf.Variable>;
  /** Restores slots and the step count from a checkpoint. */
  restore(step: number, slots: ReadonlyMap<string, tf.Tensor>): void;
  dispose(): void;
}

function slotStore(names: readonly string[]) {
  const slots = new Map<string, tf.Variable>();
  return {
    slots,
    get(slot: (typeof names)[number], path: string, like: tf.Tensor): tf.Variable {
      const key = `${slot}.${path}`;
      let v = slots.get(key);
      if (v === undefined) {
        v = tf.variable(tf.zerosLike(like), false);
        slots.set(key, v);
      }
      return v;
    },
    restore(from: ReadonlyMap<string, tf.Tensor>) {
      for (const [key, t] of from) {
        const slot = key.split('.')[0]!;
        if (!names.includes(slot)) throw new Error(`optimizer state: unknown slot "${slot}" in key ${key}; expected ${names.join(', ')}`);
        const old = slots.get(key);
        if (old) old.assign(t);
        else slots.set(key, tf.variable(t.clone(), false));
      }
    },
    dispose() {
      for (const v of slots.values()) v.dispose();
      slots.clear();
    },
  };
}

function adamw(cfg: Extract<OptimizerConfig, { kind: 'adamw' }>): Optimizer {
  const [b1, b2] = cfg.betas ?? [0.9, 0.999];
  const eps = cfg.eps ?? 1e-8;
  const wd = cfg.weightDecay ?? 0;
  const store = slotStore(['exp_avg', 'exp_avg_sq']);
  let step = 0;
  return {
    config: cfg,
    get step() { return step; },
    apply(params, grads) {
      step += 1;
      const bc1 = 1 - b1 ** step;
      const bc2Sqrt = Math.sqrt(1 - b2 ** step);
      for (const [path, g] of grads) {
        const p = params.get(path)!;
        const m = store.get('exp_avg', path, p);
        const v = store.get('exp_avg_sq', path, p);
        tf.tidy(() => {
          const m1 = tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1));
          const v1 = tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2));
          const decayed = wd === 0 ? p : tf.mul(p, 1 - cfg.lr * wd);
          const denom = tf.add(tf.div(tf.sqrt(v1), bc2Sqrt), eps);
          m.assign(m1);
          v.assign(v1);
          p.assign(tf.sub(decayed, tf.mul(tf.div(m1, denom), cfg.lr / bc1)));
        });
        g.dispose();
      }
    },
    slots: () => store.slots,
    restore(s, slots) { step = s; store.restore(slots); },
    dispose: () => store.dispose(),
  };
}

function adan(cfg: Extract<OptimizerConfig, { kind: 'adan' }>): Optimizer {
  const [b1, b2, b3] = cfg.betas ?? [0.98, 0.92, 0.99];
  const eps = cfg.eps ?? 1e-8;
  const wd = cfg.weightDecay ?? 0;
  const maxNorm = cfg.maxGradNorm ?? 0;
  const store = slotStore(['exp_avg', 'exp_avg_sq', 'exp_avg_diff', 'neg_pre_grad']);
  let step = 0;
  return {
    config: cfg,
    get step() { return step; },
    apply(params, grads) {
      step += 1;
      const bc1 = 1 - b1 ** step;
      const bc2 = 1 - b2 ** step;
      const bc3Sqrt = Math.sqrt(1 - b3 ** step);
      // clip = min(max_norm / (‖g‖ + eps), 1) over the whole model, kept on the device.
      const clip = maxNorm > 0
        ? tf.tidy(() => tf.minimum(tf.div(maxNorm, tf.add(tf.sqrt(tf.addN([...grads.values()].map((g) => tf.sum(tf.square(g))))), eps)), 1))
        : tf.scalar(1);
      for (const [path, g0] of grads) {
        const p = params.get(path)!;
        const m = store.get('exp_avg', path, p);
        const n = store.get('exp_avg_sq', path, p);
        const diff = store.get('exp_avg_diff', path, p);
        const neg = store.get('neg_pre_grad', path, p);
        tf.tidy(() => {
          const g = tf.mul(g0, clip);
          // At the first step the previous gradient is the current one: the difference is 0.
          const negPrev = step === 1 ? tf.neg(g) : neg;
          const gd = tf.add(negPrev, g);
          const m1 = tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1));
          const d1 = tf.add(tf.mul(diff, b2), tf.mul(gd, 1 - b2));
          const u = tf.add(tf.mul(gd, b2), g);
          const n1 = tf.add(tf.mul(n, b3), tf.mul(tf.square(u), 1 - b3));
          const denom = tf.add(tf.div(tf.sqrt(n1), bc3Sqrt), eps);
          let p1 = tf.sub(tf.sub(p, tf.mul(tf.div(m1, denom), cfg.lr / bc1)), tf.mul(tf.div(d1, denom), (cfg.lr * b2) / bc2));
          if (wd !== 0) p1 = tf.div(p1, 1 + cfg.lr * wd);
          m.assign(m1);
          diff.assign(d1);
          n.assign(n1);
          neg.assign(tf.neg(g));
          p.assign(p1);
        });
        g0.dispose();
      }
      clip.dispose();
    },
    slots: () => store.slots,
    restore(s, slots) { step = s; store.restore(slots); },
    dispose: () => store.dispose(),
  };
}

export function createOptimizer(cfg: OptimizerConfig): Optimizer {
  if (!(cfg.lr > 0)) throw new Error(`optimizer: lr must be > 0, got ${cfg.lr}`);
  return match(cfg)
    .with({ kind: 'adamw' }, (c) => adamw(c))
    .with({ kind: 'adan' }, (c) => adan(c))
    .exhaustive();
}

/** EMA of the weights: ema ← decay·ema + (1 − decay)·p, initialised to the weights. */
export function createEma(params: ReadonlyMap<string, tf.Tensor>, decay: number) {
  const ema = new Map<string, tf.Variable>();
  for (const [k, v] of params) ema.set(k, tf.variable(v.clone(), false));
  return {
    values: ema as ReadonlyMap<string, tf.Variable>,
    update(current: ReadonlyMap<string, tf.Tensor>) {
      tf.tidy(() => {
        for (const [k, e] of ema) e.assign(tf.add(tf.mul(e, decay), tf.mul(current.get(k)!, 1 - decay)));
      });
    },
    dispose() {
      for (const v of ema.values()) v.dispose();
    },
  };
}
