/** The wasm kernels replaced in runtime/kernels.ts give exactly what the cpu backend gives. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { foldIn, keyFromSeed, normal } from '../dsl/random.ts';

type Case = readonly [string, () => tf.Tensor | tf.Tensor[]];

function cases(): Case[] {
  const k = keyFromSeed(9);
  const x = (shape: number[], i: number) => tf.tensor(normal(foldIn(k, i), shape.reduce((a, b) => a * b, 1)), shape);
  const ints = tf.tensor1d([4, 0, 4, 2, 1, 3], 'int32');
  return [
    ['transpose 2-D', () => tf.transpose(x([37, 23], 0))],
    ['transpose with unit axes collapsing to 2-D', () => tf.transpose(x([5, 1, 7, 3], 1), [1, 2, 3, 0])],
    ['transpose swapping a unit axis with its neighbour (a copy)', () => tf.transpose(x([2, 2, 1, 2], 4), [0, 1, 3, 2])],
    ['transpose whose unit axis separates two that stay in order', () => tf.transpose(x([3, 1, 4, 5], 5), [2, 0, 3, 1])],
    ['transpose moving rows', () => tf.transpose(x([3, 4, 5, 16], 2), [2, 0, 1, 3])],
    ['transpose, other', () => tf.transpose(x([3, 4, 5], 3), [2, 1, 0])],
    ['sum leading axes', () => tf.sum(x([3, 4, 5], 4), [0, 1])],
    ['sum middle axis, keepDims', () => tf.sum(x([3, 4, 5], 5), 1, true)],
    ['sum last axis', () => tf.sum(x([3, 4, 5], 6), -1)],
    ['sum of a long middle axis', () => tf.sum(x([2, 600, 512], 17), 1)],
    ['sum, scattered axes', () => tf.sum(x([3, 4, 5], 7), [0, 2])],
    ['slice', () => tf.slice(x([4, 5, 6], 8), [1, 2, 0], [2, 2, 6])],
    ['slice of a middle run', () => tf.slice(x([4, 5, 6], 9), [1, 0, 2], [3, 5, 3])],
    ['split', () => tf.split(x([4, 9], 10), [2, 3, 4], 1)],
    ['unstack', () => tf.unstack(x([3, 4, 2], 11), 1)],
    ['gather rows', () => tf.gather(x([5, 20], 12), ints)],
    ['gather along axis 1 of int32', () => tf.gather(tf.cast(tf.mul(x([2, 5, 3], 13), 10), 'int32'), ints, 1)],
    ['identity and same-dtype cast share values', () => [tf.clone(x([7], 14)), tf.cast(x([7], 15), 'float32')]],
    ['cast to int32', () => tf.cast(tf.mul(x([7], 16), 10), 'int32')],
    ['broadcastTo: nearest ×2 up-sampling', () => tf.reshape(tf.broadcastTo(tf.reshape(x([2, 3, 4, 16], 18), [2, 3, 1, 4, 1, 16]), [2, 3, 2, 4, 2, 16]), [2, 6, 8, 16])],
    ['tile: repeated rows, repeated blocks, unit axes', () => tf.tile(x([3, 1, 2, 20], 19), [2, 3, 1, 2])],
    ['broadcastTo of a column to long rows', () => tf.broadcastTo(x([5, 1], 20), [2, 5, 40])],
    ['tile with a short innermost run (shipped kernel)', () => tf.tile(x([3, 4], 21), [2, 3])],
    ['tile of int32 and bool', () => [tf.tile(tf.cast(tf.mul(x([2, 1, 17], 22), 10), 'int32'), [1, 3, 2]), tf.tile(tf.greater(x([2, 1, 17], 23), 0), [2, 2, 1])]],
  ];
}

test('replaced wasm kernels match the cpu backend exactly', async () => {
  await initBackend({ prefer: 'cpu' });
  const want = cases().map(([, f]) => tf.tidy(() => [f()].flat().map((t) => ({ shape: t.shape, dtype: t.dtype, values: Array.from(t.dataSync()) }))));
  await initBackend({ prefer: 'wasm' });
  registerMissingKernels();
  cases().forEach(([name, f], i) => {
    const got = tf.tidy(() => [f()].flat().map((t) => ({ shape: t.shape, dtype: t.dtype, values: Array.from(t.dataSync()) })));
    assert.equal(got.length, want[i]!.length, name);
    got.forEach((g, j) => {
      const w = want[i]![j]!;
      assert.deepEqual(g.shape, w.shape, `${name}: shape`);
      assert.equal(g.dtype, w.dtype, `${name}: dtype`);
      g.values.forEach((v, e) => assert.ok(Math.abs(v - w.values[e]!) <= 1e-5 * Math.max(1, Math.abs(w.values[e]!)), `${name}: element ${e} is ${v}, cpu gives ${w.values[e]}`));
    });
  });
});
