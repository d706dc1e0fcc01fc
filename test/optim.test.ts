/** AdamW and Adan against steps computed by hand (float64 in JS, the published update rules). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import fc from 'fast-check';
import { createEma, createOptimizer, lrAt, type LrSchedule, type OptimizerConfig } from '../compile/optim.ts';

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

/** torch.optim.AdamW's update with the learning rate of each step given (as a LambdaLR sets it). */
function adamwByHand(lrOf: (step: number) => number): number[][] {
  const b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
  const p = [...p0], m = [0, 0, 0], v = [0, 0, 0];
  const want: number[][] = [];
  grads.forEach((g, s) => {
    const step = s + 1;
    const lr = lrOf(step);
    for (let i = 0; i < 3; i++) {
      p[i] = p[i]! * (1 - lr * wd);
      m[i] = b1 * m[i]! + (1 - b1) * g[i]!;
      v[i] = b2 * v[i]! + (1 - b2) * g[i]! ** 2;
      const denom = Math.sqrt(v[i]!) / Math.sqrt(1 - b2 ** step) + eps;
      p[i] = p[i]! - (lr / (1 - b1 ** step)) * (m[i]! / denom);
    }
    want.push([...p]);
  });
  return want;
}

test('AdamW matches torch.optim.AdamW by hand (decoupled decay)', () => {
  close(run({ kind: 'adamw', lr: 0.01, weightDecay: 0.1 }), adamwByHand(() => 0.01));
});

test('a warm-up + cosine schedule sets each update\'s learning rate (LambdaLR by hand)', () => {
  // 1 warm-up step, then a half cosine from 0.01 to 0.002 over updates 2…4.
  const schedule: LrSchedule = { warmupSteps: 1, decay: 'cosine', decaySteps: 4, finalRatio: 0.2 };
  const by = (step: number) => (step <= 1 ? 0.01 * step : 0.01 * (0.2 + 0.8 * 0.5 * (1 + Math.cos((Math.PI * (step - 1)) / 3))));
  assert.deepEqual([1, 2, 4, 9].map((s) => lrAt({ kind: 'adamw', lr: 0.01, schedule }, s)).map((x) => +x.toFixed(12)), [0.01, by(2), 0.002, 0.002].map((x) => +x.toFixed(12)));
  close(run({ kind: 'adamw', lr: 0.01, weightDecay: 0.1, schedule }), adamwByHand(by));
});

test('property: a schedule warms up linearly, then never rises and stays within [lr · final, lr]', () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 50 }), fc.integer({ min: 1, max: 500 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.constantFrom('constant' as const, 'cosine' as const),
    (warmupSteps, span, finalRatio, decay) => {
      const cfg: OptimizerConfig = { kind: 'adan', lr: 0.5, schedule: { warmupSteps, decay, decaySteps: warmupSteps + span, finalRatio } };
      for (let s = 1; s <= warmupSteps; s++) assert.ok(Math.abs(lrAt(cfg, s) - (0.5 * s) / warmupSteps) < 1e-12);
      let prev = Infinity;
      for (let s = warmupSteps + 1; s <= warmupSteps + span + 3; s++) {
        const lr = lrAt(cfg, s);
        assert.ok(lr <= prev + 1e-12 && lr <= 0.5 + 1e-12 && lr >= 0.5 * (decay === 'cosine' ? finalRatio : 1) - 1e-12, `step ${s}: ${lr}`);
        prev = lr;
      }
      assert.ok(Math.abs(lrAt(cfg, warmupSteps + span + 3) - 0.5 * (decay === 'cosine' ? finalRatio : 1)) < 1e-12);
    },
  ));
});

test('a schedule that cannot be followed is refused with what it was given', () => {
  assert.throws(() => createOptimizer({ kind: 'adamw', lr: 0.1, schedule: { warmupSteps: 10, decay: 'cosine', decaySteps: 10, finalRatio: 0 } }), /decaySteps above them.*"warmupSteps":10/);
  assert.throws(() => createOptimizer({ kind: 'adamw', lr: 0.1, schedule: { warmupSteps: 0, decay: 'cosine', decaySteps: 5, finalRatio: 2 } }), /finalRatio in \[0, 1\]/);
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
