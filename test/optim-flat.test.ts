/**
 * The optimizers and the EMA update parameters in flat chunks of a few million values: a
 * model whose parameters span several chunks must update every element exactly as per
 * parameter, and its state must round-trip through slots()/restore().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { createEma, createOptimizer, type OptimizerConfig } from '../compile/optim.ts';
import { foldIn, keyFromSeed, normal } from '../dsl/random.ts';
import { FLAT_CONCAT, registerMissingKernels } from '../runtime/kernels.ts';

// 3M + 3M + 2M + 7 values: at most 4M per chunk, so three chunks, one parameter split off alone.
const SHAPES: Record<string, number[]> = { a: [1000, 3000], b: [3000, 1000], c: [2000, 1000], d: [7] };
const PROBES = [0, 1, 999, 1_999_999, 2_999_999];

function values(seed: number): Map<string, Float32Array> {
  return new Map(Object.entries(SHAPES).map(([k, s], i) => [k, normal(foldIn(keyFromSeed(seed), i), s.reduce((a, b) => a * b, 1))]));
}

/** AdamW by hand for the probed elements of every parameter (float64). */
function adamwByHand(p0: Map<string, Float32Array>, grads: Map<string, Float32Array>[], lr: number, wd: number): Map<string, number[]> {
  const [b1, b2, eps] = [0.9, 0.999, 1e-8];
  const out = new Map<string, number[]>();
  for (const [k, init] of p0) {
    out.set(k, PROBES.filter((i) => i < init.length).map((i) => {
      let [p, m, v] = [init[i]!, 0, 0];
      grads.forEach((g, s) => {
        p *= 1 - lr * wd;
        m = b1 * m + (1 - b1) * g.get(k)![i]!;
        v = b2 * v + (1 - b2) * g.get(k)![i]! ** 2;
        p -= (lr / (1 - b1 ** (s + 1))) * (m / (Math.sqrt(v) / Math.sqrt(1 - b2 ** (s + 1)) + eps));
      });
      return p;
    }));
  }
  return out;
}

function probe(vars: ReadonlyMap<string, tf.Tensor>): Map<string, number[]> {
  return new Map([...vars].map(([k, v]) => {
    const data = v.dataSync();
    return [k, PROBES.filter((i) => i < data.length).map((i) => data[i]!)];
  }));
}

function close(got: Map<string, number[]>, want: Map<string, number[]>, what: string) {
  for (const [k, w] of want) {
    got.get(k)!.forEach((v, j) => assert.ok(Math.abs(v - w[j]!) <= 2e-6 * Math.max(1, Math.abs(w[j]!)), `${what}: ${k}[${PROBES[j]}] is ${v}, expected ${w[j]}`));
  }
}

function adamwAcrossChunks(): void {
  const cfg: OptimizerConfig = { kind: 'adamw', lr: 0.01, weightDecay: 0.1 };
  const p0 = values(1);
  const grads = [values(2), values(3), values(4)];
  const vars = new Map([...p0].map(([k, v]) => [k, tf.variable(tf.tensor(v, SHAPES[k]))]));
  const copy = new Map([...p0].map(([k, v]) => [k, tf.variable(tf.tensor(v, SHAPES[k]))]));
  const a = createOptimizer(cfg);
  const b = createOptimizer(cfg);
  const feed = (g: Map<string, Float32Array>) => new Map([...g].map(([k, v]) => [k, tf.tensor(v, SHAPES[k])]));
  a.apply(vars, feed(grads[0]!));
  a.apply(vars, feed(grads[1]!));
  // b takes over a's state after two steps and must then move the copy exactly as a moves vars.
  b.restore(a.step, a.slots());
  for (const [k, v] of vars) copy.get(k)!.assign(v);
  a.apply(vars, feed(grads[2]!));
  b.apply(copy, feed(grads[2]!));
  close(probe(vars), adamwByHand(p0, grads, 0.01, 0.1), 'after three steps');
  close(probe(copy), probe(vars), 'restored optimizer');
  assert.equal(a.slots().size, 2 * Object.keys(SHAPES).length);
  a.dispose(); b.dispose();
  tf.dispose([...vars.values(), ...copy.values()]);
}

test('AdamW over several chunks matches the per-element update, and its state round-trips', () => {
  adamwAcrossChunks();
});

function emaAcrossChunks(): void {
  const p0 = values(5);
  const next = values(6);
  const w = new Map([...p0].map(([k, v]) => [k, tf.variable(tf.tensor(v, SHAPES[k]))]));
  const ema = createEma(w, 0.75);
  for (const [k, v] of next) w.get(k)!.assign(tf.tensor(v, SHAPES[k]));
  ema.update(w);
  const want = new Map([...p0].map(([k, v]) => [k, PROBES.filter((i) => i < v.length).map((i) => 0.75 * v[i]! + 0.25 * next.get(k)![i]!)]));
  close(probe(ema.values), want, 'EMA');
  ema.dispose();
  tf.dispose([...w.values()]);
}

test('EMA over several chunks moves every element by 1 − decay', () => {
  emaAcrossChunks();
});

test('the same, with the one-kernel flatten and split', () => {
  registerMissingKernels();
  assert.ok(tf.getKernel(FLAT_CONCAT, tf.getBackend()) !== undefined, `flat kernels on ${tf.getBackend()}`);
  adamwAcrossChunks();
  emaAcrossChunks();
});
