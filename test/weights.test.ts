/** Official state dicts: strict loading that reports every problem at once, non-strict inference loading, round trips. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { readSafetensors, writeSafetensors, type StTensor } from '../formats/safetensors.ts';
import { configFromJson, namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { paramsFromStateDict, stateDictFromParams, StateDictError } from '../compile/weights.ts';
import { inferenceParams } from '../compile/sample.ts';

const fixtures = join(fileURLToPath(new URL('.', import.meta.url)), '../../shared/fixtures');
const S2 = JSON.parse(readFileSync(join(fixtures, '../docs/state_dict_S2.json'), 'utf8')) as Record<string, unknown>;

test('parameter paths and shapes equal the official S/2 state dicts (v1 dl=2, v2 dl=6)', () => {
  const manifests = Object.entries(S2) as [string, { key: string; shape: number[]; dtype: string }[]][];
  assert.equal(manifests.length, 3);
  for (const [section, list] of manifests) {
    const entries = list.map((e) => [e.key, e.shape] as const);
    assert.ok(list.every((e) => e.dtype === (e.key.endsWith('relative_position_index') ? 'int64' : 'float32')), section);
    const variant = /v2/i.test(section) ? 'MDTv2-S/2' : 'MDT-S/2';
    const dl = entries.filter(([k]) => k.startsWith('de_blocks.') && k.endsWith('.attn.qkv.weight')).length || Number(/dec(\d+)/.exec(section)![1]);
    const model = buildModel(namedConfig(variant, { decodeLayer: dl }));
    const ours = Object.fromEntries(Object.entries(model.params).map(([k, s]) => [k, s.shape]));
    assert.deepEqual(Object.keys(ours).sort(), entries.map(([k]) => k).sort(), section);
    for (const [k, shape] of entries) assert.deepEqual(ours[k], shape, `${section}: ${k}`);
  }
});

test('strict loading lists missing, unexpected and mis-shaped keys together', async () => {
  const config = configFromJson(JSON.parse(readFileSync(join(fixtures, 'mdt-v1-tiny/config.json'), 'utf8')));
  const model = buildModel(config);
  const sd = await readSafetensors(join(fixtures, 'mdt-v1-tiny/weights.safetensors'));
  sd.delete('blocks.1.mlp.fc2.bias');
  sd.set('blocks.9.attn.proj.weight', { dtype: 'F32', shape: [64, 64], data: new Float32Array(4096) });
  sd.set('pos_embed', { dtype: 'F32', shape: [1, 17, 64], data: new Float32Array(17 * 64) });
  assert.throws(() => paramsFromStateDict(model.params, sd), (e: Error) => e instanceof StateDictError
    && /3 problems/.test(e.message)
    && /missing blocks\.1\.mlp\.fc2\.bias \(expected \[64\]\)/.test(e.message)
    && /unexpected blocks\.9\.attn\.proj\.weight \(given \[64, 64\]\)/.test(e.message)
    && /shape mismatch pos_embed: expected \[1, 16, 64\], given \[1, 17, 64\]/.test(e.message));
});

test('a checkpoint for another model size fails with the mismatched keys', async () => {
  const sd = await readSafetensors(join(fixtures, 'dit-tiny/weights.safetensors'));
  const other = buildModel(namedConfig('DiT-S/2', { depth: 3, hiddenSize: 64, numHeads: 4, inputSize: 8, numClasses: 12 }));
  assert.throws(() => paramsFromStateDict(other.params, sd), /shape mismatch y_embedder\.embedding_table\.weight: expected \[13, 64\], given \[11, 64\]/);
});

test('non-strict loading serves inference without the side block; save round-trips the official keys', async () => {
  const config = configFromJson(JSON.parse(readFileSync(join(fixtures, 'mdt-v2-tiny/config.json'), 'utf8')));
  const model = buildModel(config);
  const sd = await readSafetensors(join(fixtures, 'mdt-v2-tiny/weights.safetensors'));
  const inference = new Map<string, StTensor>([...sd].filter(([k]) => !k.startsWith('sideblocks.') && k !== 'mask_token'));
  assert.throws(() => paramsFromStateDict(model.params, inference), /missing sideblocks\.0/);
  const loaded = paramsFromStateDict(model.params, inference, { strict: false });
  assert.equal(loaded.size, inferenceParams(model, loaded).size);
  const full = paramsFromStateDict(model.params, sd);
  const dir = await mkdtemp(join(tmpdir(), 'mdt-w-'));
  try {
    await writeSafetensors(join(dir, 'w.safetensors'), await stateDictFromParams(model.params, full));
    const back = await readSafetensors(join(dir, 'w.safetensors'));
    assert.deepEqual([...back.keys()].sort(), [...sd.keys()].sort());
    for (const [k, t] of sd) {
      assert.equal(back.get(k)!.dtype, t.dtype, k);
      assert.deepEqual(Array.from(back.get(k)!.data as ArrayLike<number | bigint>), Array.from(t.data as ArrayLike<number | bigint>), k);
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
    tf.dispose([...full.values(), ...loaded.values()]);
  }
});
