import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import { keyFromSeed, normal } from '../dsl/random.ts';
import { readSafetensors } from '../formats/safetensors.ts';
import { configFromJson } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { knownTokens, tokenMaskPixels } from '../mdt/inpaint.ts';
import { inpaint } from '../compile/inpaint.ts';
import { paramsFromStateDict } from '../compile/weights.ts';
import { inferenceParams } from '../compile/sample.ts';

const fixtures = join(fileURLToPath(new URL('.', import.meta.url)), '../../shared/fixtures');

test('a token is known only when its whole patch is', () => {
  const px = Array.from({ length: 16 }, (_, i) => i % 4 < 2 || i === 2);
  assert.deepEqual(knownTokens(px, 2, 2), [true, false, true, false]);
  assert.throws(() => knownTokens(px, 3, 2), /mask has 16 pixels, expected 6×6/);
  assert.deepEqual(Array.from(tokenMaskPixels([true, false, true, false], 2, 2)), [1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0]);
});

for (const name of ['mdt-v1-tiny', 'mdt-v2-tiny']) {
  test(`${name}: inpainting keeps the known region and fills the rest`, async () => {
    const config = configFromJson(JSON.parse(readFileSync(join(fixtures, name, 'config.json'), 'utf8')));
    const model = buildModel(config);
    const values = paramsFromStateDict(model.params, await readSafetensors(join(fixtures, name, 'weights.safetensors')));
    const s = config.inputSize;
    const image = tf.tensor4d(normal(keyFromSeed(1), config.inChannels * s * s).map((v) => Math.tanh(v)), [1, config.inChannels, s, s]);
    const knownPixels = Array.from({ length: s * s }, (_, i) => i % s < s / 2); // left half known
    const before = tf.memory().numTensors;
    const out = inpaint(model, values, { image, knownPixels, labels: Int32Array.from([3]), steps: '20', switchFraction: 0.3, guidance: { kind: 'power-cosine', scale: 2, power: 4 }, key: keyFromSeed(2) });
    assert.equal(tf.memory().numTensors, before + 1);
    const [a, b] = [image.dataSync(), out.dataSync()];
    let diffInside = 0;
    for (let ch = 0; ch < config.inChannels; ch++) {
      for (let i = 0; i < s * s; i++) {
        const j = ch * s * s + i;
        if (knownPixels[i]) assert.equal(b[j], a[j], `known pixel ${i} channel ${ch}`);
        else diffInside = Math.max(diffInside, Math.abs(b[j]! - a[j]!));
      }
    }
    assert.ok(diffInside > 0.1, `output differs inside the mask (max |Δ| = ${diffInside})`);
    // Without guidance (B rows, the image used as it is): the same key gives the same result.
    const plain = () => inpaint(model, values, { image, knownPixels, labels: Int32Array.from([3]), steps: '4', switchFraction: 0.5, guidance: null, key: keyFromSeed(4) });
    const [p1, p2] = [plain(), plain()];
    assert.equal(tf.memory().numTensors, before + 3);
    assert.deepEqual(p1.dataSync(), p2.dataSync(), 'deterministic in the key');
    assert.ok(p1.dataSync().every((v, j) => (knownPixels[j % (s * s)] ? v === a[j] : Number.isFinite(v))));
    tf.dispose([p1, p2]);
    assert.throws(() => inpaint(model, inferenceParams(model, values), { image, knownPixels, labels: Int32Array.from([3]), steps: '5', switchFraction: 0.3, guidance: null, key: keyFromSeed(2) }), /needs the side-interpolater weights/);
    tf.dispose([image, out, ...values.values()]);
  });
}
