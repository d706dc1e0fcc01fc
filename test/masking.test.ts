/** Properties of latent masking and of the masked shortcut (fast-check). */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import * as tf from '@tensorflow/tfjs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { keyFromSeed, normal } from '../dsl/random.ts';
import { readSafetensors } from '../formats/safetensors.ts';
import type { Shape } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { lenKeepV1, lenKeepV2, planFromShuffle, planKeeping, randomMasking, ratioV2, type MaskTensors } from '../mdt/masking.ts';
import { configFromJson, gridSize } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { paramsFromStateDict } from '../compile/weights.ts';
import { jit } from '../compile/trace.ts';
import { maskInputs, traceDenoiser } from '../compile/model-graph.ts';

const fixture = (name: string) => join(fileURLToPath(new URL('.', import.meta.url)), '../../shared/fixtures', name);

test('kept count, disjointness, and mask/restore consistency', () => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 2, max: 64 }), fc.double({ min: 0.01, max: 0.95, noNaN: true }), fc.integer(), (batch, n, ratio, seed) => {
    const keep = Math.max(1, lenKeepV1(n, ratio));
    const p = randomMasking(keyFromSeed(seed), batch, n, keep);
    for (let b = 0; b < batch; b++) {
      const kept = Array.from(p.idsKeep.subarray(b * keep, (b + 1) * keep));
      const shuffle = Array.from(p.idsShuffle.subarray(b * n, (b + 1) * n));
      assert.equal(new Set(kept).size, keep);
      assert.deepEqual([...shuffle].sort((x, y) => x - y), Array.from({ length: n }, (_, i) => i));
      const removed = shuffle.slice(keep);
      assert.ok(removed.every((id) => !kept.includes(id)));
      for (let id = 0; id < n; id++) {
        assert.equal(p.mask[b * n + id], kept.includes(id) ? 0 : 1);
        assert.equal(shuffle[p.idsRestore[b * n + id]!], id);
      }
    }
  }), { numRuns: 200 });
});

test('kept-token counts of the official code (spec §11, FORMAT §7.2)', () => {
  assert.equal(lenKeepV1(256, 0.3), 179);
  assert.equal(lenKeepV1(256, 0.4), 153);
  assert.equal(lenKeepV1(16, 0.3), 11);
  assert.equal(lenKeepV1(64, 0.3), 44);
  assert.equal(lenKeepV2(256, ratioV2(0, 0.3)), 179);
  assert.equal(lenKeepV2(256, ratioV2(0.999999, 0.3)), 128);
  fc.assert(fc.property(fc.double({ min: 0, max: 0.9999999, noNaN: true }), (u) => {
    const k = lenKeepV2(256, ratioV2(u, 0.3));
    return k >= 128 && k <= 179;
  }));
});

test('bad plans are refused', () => {
  assert.throws(() => planFromShuffle(Int32Array.from([0, 0, 1]), 1, 3, 2), /not a permutation/);
  assert.throws(() => planFromShuffle(Int32Array.from([0, 1, 2]), 1, 3, 0), /len_keep must be an integer in \[1, 3\]/);
  const p = planKeeping([true, false, true, false], 2);
  assert.equal(p.lenKeep, 2);
  assert.deepEqual(Array.from(p.mask), [0, 1, 0, 1, 0, 1, 0, 1]);
});

async function fixtureModel(name: string) {
  const config = configFromJson(JSON.parse(readFileSync(join(fixture(name), 'config.json'), 'utf8')));
  const model = buildModel(config);
  const values = paramsFromStateDict(model.params, await readSafetensors(join(fixture(name), 'weights.safetensors')));
  return { config, model, values };
}

const int32 = (v: number[]) => tf.tensor1d(v, 'int32');

for (const name of ['mdt-v1-tiny', 'mdt-v2-tiny']) {
  test(`${name}: the masked forward is equivariant to the kept tokens' order`, async () => {
    const { config, model, values } = await fixtureModel(name);
    const n = (config.inputSize / config.patchSize) ** 2;
    const masked = jit((io) => ({ out: traceDenoiser(model, io, true)(io.data('x'), io.data('t'), io.data('y')) }));
    const inputs = new Map<string, tf.Tensor>([
      ...values,
      ['x', tf.tensor4d(normal(keyFromSeed(3), 2 * config.inChannels * config.inputSize ** 2), [2, config.inChannels, config.inputSize, config.inputSize])],
      ['t', int32([10, 700])],
      ['y', int32([1, 2])],
    ]);
    const forward = (plan: ReturnType<typeof planFromShuffle>) => {
      const mask = maskInputs(plan, gridSize(config));
      try {
        return masked(new Map([...inputs, ...mask])).get('out')!;
      } finally {
        for (const m of mask.values()) m.dispose();
      }
    };
    await fc.assert(fc.asyncProperty(fc.integer(), fc.integer(), async (s1, s2) => {
      const a = randomMasking(keyFromSeed(s1), 2, n, 10);
      // Same kept set, kept tokens in another order (removed ones too).
      const b = randomMasking(keyFromSeed(s2), 2, n, 10);
      const shuffle = new Int32Array(a.idsShuffle);
      for (let r = 0; r < 2; r++) {
        const row = Array.from(a.idsShuffle.subarray(r * n, (r + 1) * n));
        const perm = Array.from(b.idsShuffle.subarray(r * n, r * n + 10)).map((v) => v % 10);
        const order = [...new Set([...perm, ...Array.from({ length: 10 }, (_, i) => i)])];
        const kept = order.map((i) => row[i]!);
        shuffle.set([...kept, ...row.slice(10).reverse()], r * n);
      }
      const other = planFromShuffle(shuffle, 2, n, 10);
      const [o1, o2] = [forward(a), forward(other)];
      const d = tf.tidy(() => tf.max(tf.abs(tf.sub(o1, o2))).dataSync()[0]!);
      const scale = tf.tidy(() => tf.max(tf.abs(o1)).dataSync()[0]!);
      tf.dispose([o1, o2]);
      assert.ok(d <= 1e-5 * scale, `max diff ${d} (scale ${scale})`);
    }), { numRuns: 8 });
    masked.dispose();
    tf.dispose([inputs.get('x')!, inputs.get('t')!, inputs.get('y')!, ...values.values()]);
  });

  test(`${name}: masked shortcut — kept positions are encoder features + decoder_pos_embed, removed ones the side block output`, async () => {
    const { config, model, values } = await fixtureModel(name);
    const n = (config.inputSize / config.patchSize) ** 2;
    const d = config.hiddenSize;
    const plan = randomMasking(keyFromSeed(9), 2, n, 9);
    const encoderLast = config.variant === 'mdt-v1' ? `block_out/blocks.${config.depth - config.decodeLayer - 1}` : `block_out/en_outblocks.${Math.floor((config.depth - config.decodeLayer) / 2) - 1}`;
    const names = [encoderLast, 'block_out/sideblocks.0', 'side_interpolater_out'];
    // The intermediates the forward reports become the program's outputs.
    const program = jit((io) => {
      const seen: Record<string, Tensor<Shape>> = {};
      const mask = Object.fromEntries(['keep', 'restore', 'removed', 'biasIndex'].map((k) => [k, io.data(`mask.${k}`)])) as unknown as MaskTensors;
      model.forward(io.params(model.params), io.data('x'), io.data('t'), io.data('y'), {
        mask,
        trace: (k, v) => { if (names.includes(k)) seen[k] = v; },
      });
      return seen;
    });
    const inputs = new Map<string, tf.Tensor>([
      ...values,
      ...maskInputs(plan, gridSize(config)),
      ['x', tf.tensor4d(normal(keyFromSeed(5), 2 * config.inChannels * config.inputSize ** 2), [2, config.inChannels, config.inputSize, config.inputSize])],
      ['t', int32([3, 500])],
      ['y', int32([0, 4])],
    ]);
    const outs = program(inputs);
    const seen = new Map([...outs].map(([k, v]) => [k, v.dataSync() as Float32Array]));
    const enc = seen.get(encoderLast)!;
    const side = seen.get('block_out/sideblocks.0')!;
    const out = seen.get('side_interpolater_out')!;
    const dpe = values.get('decoder_pos_embed')!.dataSync();
    assert.equal(enc.length, 2 * 9 * d);
    for (let b = 0; b < 2; b++) {
      for (let id = 0; id < n; id++) {
        const j = plan.idsRestore[b * n + id]!;
        for (let k = 0; k < d; k++) {
          const got = out[(b * n + id) * d + k]!;
          const want = j < 9 ? Math.fround(enc[(b * 9 + j) * d + k]! + dpe[id * d + k]!) : side[(b * n + id) * d + k]!;
          assert.equal(got, want, `b=${b} token ${id} dim ${k} (${j < 9 ? 'kept' : 'removed'})`);
        }
      }
    }
    program.dispose();
    tf.dispose([...outs.values(), ...inputs.values()]);
  });
}
