/** AdamW and Adan against steps computed by hand (float64 in JS, the published update rules). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { createEma, createOptimizer, type OptimizerConfig } from '../compile/optim.ts';

const grads = [[0.5, -1.0, 2.0], [0.1, 0.3, -4.0], [-0.7, 0.2, 1.5], [1.0, 1.0, 1.0]];
const p0 = [1.0, -2.0, 0.25];

function run(cfg: OptimizerConfig, extra: number[] = []): number[][] {
  const opt = createOptimizer(cfg);
  const params = new Map([['w', tf.variable(tf.tensor1d(p0))], ...(extra.length ? [['v', tf.variable(tf.tensor1d(extra))] as const] : [])]);
  const out: number[][] = [];
  for (const g of grads) {
    const gs = new Map<string, tf.Tensor>([['w', tf.tensor1d(g)]]);
    if (extra.length) gs.set('v', tf.tensor1d(extra.map(() => 3)));
    opt.apply(params, gs);
    out.push(Array.from(params.get('w')!.dataSync()));
  }
  opt.dispose();
  for (const v of params.values()) v.dispose();
  return out;
}

function close(a: number[][], b: number[][], tol = 2e-6) {
  a.forEach((row, i) => row.forEach((v, j) => assert.ok(Math.abs(v - b[i]![j]!) <= tol * Math.max(1, Math.abs(b[i]![j]!)), `step ${i + 1} elem ${j}: ${v} vs ${b[i]![j]}`)));
}

test('AdamW matches torch.optim.AdamW by hand (decoupled decay)', () => {
  const lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
  const p = [...p0], m = [0, 0, 0], v = [0, 0, 0];
  const want: number[][] = [];
  grads.forEach((g, s) => {
    const step = s + 1;
    for (let i = 0; i < 3; i++) {
      p[i] = p[i]! * (1 - lr * wd);
      m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
      v[i] = b2 * v[i]! + (1 - b2) * g[i]! ** 2;
      const denom = Math.sqrt(v[i]!) / Math.sqrt(1 - b2 ** step) + eps;
      p[i] = p[i]! - (lr / (1 - b1 ** step)) * (m[i]! / denom);
    }
    want.push([...p]);
  });
  close(run({ kind: 'adamw', lr, weightDecay: wd }), want);
});

function adanByHand(maxNorm: number, otherGradSq: number): number[][] {
  const lr = 0.01, [b1, b2, b3] = [0.98, 0.92, 0.99], eps = 1e-8, wd = 0.02;
  const p = [...p0], m = [0, 0, 0], d = [0, 0, 0], n = [0, 0, 0];
  let prev: number[] = [];
  const want: number[][] = [];
  grads.forEach((g0, s) => {
    const step = s + 1;
    const norm = Math.sqrt(g0.reduce((a, x) => a + x * x, 0) + otherGradSq);
    const clip = maxNorm > 0 ? Math.min(maxNorm / (norm + eps), 1) : 1;
    const g = g0.map((x) => x * clip);
    if (step === 1) prev = g;
    for (let i = 0; i < 3; i++) {
      const diff = g[i]! - prev[i]!;
      m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
      d[i] = b2 * d[i]! + (1 - b2) * diff;
      const u = g[i]! + b2 * diff;
      n[i] = b3 * n[i]! + (1 - b3) * u * u;
      const denom = Math.sqrt(n[i]!) / Math.sqrt(1 - b3 ** step) + eps;
      p[i] = (p[i]! - (lr / (1 - b1 ** step)) * m[i]! / denom - ((lr * b2) / (1 - b2 ** step)) * d[i]! / denom) / (1 + lr * wd);
    }
    prev = g;
    want.push([...p]);
  });
  return want;
}

test('Adan matches sail-sg/Adan by hand (no clipping)', () => {
  close(run({ kind: 'adan', lr: 0.01, weightDecay: 0.02 }), adanByHand(0, 0));
});

test('Adan clips by the global gradient norm over every parameter', () => {
  // A second parameter with gradient 3 in each of 2 entries adds 18 to the squared norm.
  close(run({ kind: 'adan', lr: 0.01, weightDecay: 0.02, maxGradNorm: 1 }, [0, 0]), adanByHand(1, 18));
});

test('EMA starts at the weights and moves by 1 − decay', () => {
  const w = tf.variable(tf.tensor1d([1, 2]));
  const ema = createEma(new Map([['w', w]]), 0.9);
  assert.deepEqual(Array.from(ema.values.get('w')!.dataSync()), [1, 2]);
  w.assign(tf.tensor1d([2, 0]));
  ema.update(new Map([['w', w]]));
  const got = Array.from(ema.values.get('w')!.dataSync());
  assert.ok(Math.abs(got[0]! - 1.1) < 1e-6 && Math.abs(got[1]! - 1.8) < 1e-6, String(got));
  ema.dispose();
  w.dispose();
});

test('optimizer state round-trips through restore()', () => {
  const a = createOptimizer({ kind: 'adan', lr: 0.01 });
  const w = tf.variable(tf.tensor1d(p0));
  a.apply(new Map([['w', w]]), new Map([['w', tf.tensor1d(grads[0]!)]]));
  const b = createOptimizer({ kind: 'adan', lr: 0.01 });
  b.restore(a.step, a.slots());
  const w2 = tf.variable(w.clone());
  a.apply(new Map([['w', w]]), new Map([['w', tf.tensor1d(grads[1]!)]]));
  b.apply(new Map([['w', w2]]), new Map([['w', tf.tensor1d(grads[1]!)]]));
  assert.deepEqual(Array.from(w.dataSync()), Array.from(w2.dataSync()));
  a.dispose(); b.dispose(); w.dispose(); w2.dispose();
});
