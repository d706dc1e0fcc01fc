// Sampling in bounded memory: the wasm heap guard, batches split to fit a (lowered) heap limit
// with the same images, weights streamed without train-only parameters, and the checkpoint
// layouts of training scripts (train.py's {model, ema, opt, args}, a DDP `module.` prefix).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadWeights } from '../compile/checkpoint.ts';
import { compileSampler } from '../compile/sample.ts';
import { keyFromSeed } from '../dsl/random.ts';
import { bytesOf, readSafetensors } from '../formats/safetensors.ts';
import { openTorchCheckpoint } from '../formats/torch-pt.ts';
import { configFromKeys } from '../mdt/config-from-keys.ts';
import { buildModel } from '../mdt/model.ts';
import { HeapExhaustedError, heapStatus, resetHeapPeak, setHeapLimit } from '../runtime/heap.ts';
import { useBackend } from './compile-support.ts';
import { cli } from './cli-capture.ts';
import { storagesOf, trainPyCheckpoint, writeRandomStateDict } from './cli-fixtures.ts';
import { decodeInParts, openVae } from '../cli/vae-file.ts';
import { autoencoderKL } from '../mdt/vae/autoencoder-kl.ts';
import { vaeConfig } from '../mdt/vae/config.ts';
import { checkpointPickle, op, pickle, stateDictOps, writeTorchArchive } from './torch-pt-builder.ts';

const FIXTURES = join(import.meta.dirname, '..', '..', 'shared', 'fixtures');
const V2 = join(FIXTURES, 'mdt-v2-tiny');

async function tinyV2() {
  const sd = await readSafetensors(join(V2, 'weights.safetensors'));
  const config = configFromKeys(new Map([...sd].map(([k, t]) => [k, t.shape])), { numHeads: 4, decodeLayer: 2 }).config;
  return buildModel(config);
}

test('the heap guard turns an allocation past the limit into an error and the backend keeps working', async () => {
  await useBackend('wasm');
  const before = tf.memory().numTensors;
  const heap = heapStatus()!;
  assert.ok(heap !== null && heap.limit <= 2 ** 32, 'wasm reports its heap');
  setHeapLimit(heap.used + 1024 * 1024);
  try {
    const small = tf.zeros([1000]);
    assert.throws(() => tf.zeros([1024 * 1024]), (e: unknown) => e instanceof HeapExhaustedError && /cannot hold 4\.00 MiB more/.test(e.message));
    small.dispose();
  } finally {
    setHeapLimit(null);
  }
  const after = tf.tidy(() => tf.add(tf.ones([3]), 1));
  assert.deepEqual([...(await after.data())], [2, 2, 2]);
  tf.dispose(after);
  assert.equal(tf.memory().numTensors, before);
});

test('on wasm, weights are read straight into their heap tensors: the file\'s values (int64 and strided ones converted), and a failed load frees all it made', async () => {
  await useBackend('wasm');
  const dir = mkdtempSync(join(tmpdir(), 'mdt-load-'));
  try {
    const model = await tinyV2();
    const sd = await readSafetensors(join(V2, 'weights.safetensors'));
    const inference = (k: string) => !model.params[k]!.trainOnly;
    // One weight stored transposed (a strided view, as `.t()` saves it) besides the contiguous ones.
    const { specs, data } = storagesOf(sd, '', 0);
    const w = sd.get('t_embedder.mlp.0.weight')!;
    const [rows, cols] = w.shape as [number, number];
    const spec = specs.find((s) => s.key === 't_embedder.mlp.0.weight')!;
    spec.stride = [1, rows];
    data.set(spec.storageKey, bytesOf(Float32Array.from({ length: rows * cols }, (_, i) => (w.data as Float32Array)[(i % rows) * cols + Math.floor(i / rows)]!)));
    const strided = join(dir, 'strided.pt');
    await writeTorchArchive(strided, checkpointPickle(specs), data);
    const before = { tensors: tf.memory().numTensors, heap: heapStatus()!.used };
    const values = await loadWeights(strided, model, 'ema', { inference: true });
    for (const [k, t] of sd) {
      if (!inference(k)) continue;
      const got = await values.get(k)!.data();
      assert.deepEqual([...got], [...t.data].map(Number), k);
    }
    tf.dispose([...values.values()]);
    assert.deepEqual({ tensors: tf.memory().numTensors, heap: heapStatus()!.used }, before);

    // A NaN in the last tensor, or a corrupt storage: an error, and nothing left in the heap.
    const last = [...sd.keys()].filter(inference).at(-1)!;
    const nan = storagesOf(new Map([...sd].map(([k, t]) => [k, k === last ? { ...t, data: (t.data as Float32Array).map((v, i) => (i === 1 ? NaN : v)) } : t])), '', 0);
    const nanPath = join(dir, 'nan.pt');
    await writeTorchArchive(nanPath, checkpointPickle(nan.specs), nan.data);
    await assert.rejects(loadWeights(nanPath, model, 'ema', { inference: true }), new RegExp(`non-finite values in 1 of \\d+ tensors: ${last.replace(/\./g, '\\.')} \\(1 NaN of`));
    const corrupt = Buffer.from(readFileSync(nanPath));
    corrupt[corrupt.indexOf(bytesOf(sd.get('x_embedder.proj.weight')!.data).subarray(0, 64)) + 5] ^= 0xff;
    writeFileSync(nanPath, corrupt);
    await assert.rejects(loadWeights(nanPath, model, 'ema', { inference: true }), /storage '\d+' \(tensor 'x_embedder\.proj\.weight'\) fails its CRC check/);
    assert.deepEqual({ tensors: tf.memory().numTensors, heap: heapStatus()!.used }, before);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a batch that does not fit the heap is sampled in parts, with the same images; one line says so', async () => {
  await useBackend('wasm');
  const before = tf.memory().numTensors;
  const model = await tinyV2();
  const values = await loadWeights(join(V2, 'weights.pt'), model, 'ema', { inference: true });
  assert.ok(![...values.keys()].some((k) => model.params[k]!.trainOnly), 'no train-only weights for sampling');
  assert.ok(Object.keys(model.params).some((k) => model.params[k]!.trainOnly), 'the model has train-only weights to leave out');
  const notes: string[] = [];
  const sampler = compileSampler(model, values, { steps: 'ddim3', sampler: 'ddim', guidance: { kind: 'power-cosine', scale: 2, power: 4 }, onNote: (n) => notes.push(n) });
  const labels = Int32Array.from([0, 1, 2, 3, 4, 5, 6, 7]);
  const key = keyFromSeed(7);
  try {
    const whole = sampler.sample(labels, key);
    assert.deepEqual(notes, []);
    const used = heapStatus()!.used;
    // Room for a step of about 3 of the 8 images (each needs its own rows and a null row).
    setHeapLimit(used + 160 * 1024);
    let split: tf.Tensor;
    try {
      split = sampler.sample(labels, key);
    } finally {
      setHeapLimit(null);
    }
    assert.equal(notes.length, 1, notes.join('\n'));
    const m = /a step of 8 images needs .*, the wasm heap has .* free: sampling them (\d) at a time \(the same noise, so the same images\)/.exec(notes[0]!);
    assert.ok(m !== null && Number(m[1]) >= 1 && Number(m[1]) < 8, notes[0]);
    assert.deepEqual(split.shape, whole.shape);
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(split, whole))).dataSync()[0]!);
    assert.ok(diff <= 1e-5, `split and whole batches differ by ${diff}`);
    tf.dispose([whole, split]);

    setHeapLimit(heapStatus()!.used + 1024);
    try {
      assert.throws(() => sampler.sample(labels, key), /the wasm heap cannot hold a sampling step of even 1 image: it needs .*; use a backend without this limit/);
    } finally {
      setHeapLimit(null);
    }
  } finally {
    sampler.dispose();
    tf.dispose([...values.values()]);
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor outlives the sampler');
});

test('mdt sample under a lowered heap limit: the default batch of 16 is split, the latents are the unsplit ones', async () => {
  await useBackend('wasm');
  const dir = mkdtempSync(join(tmpdir(), 'mdt-split-'));
  try {
    const model = await tinyV2();
    const weights = Object.values(model.params).filter((p) => p.persistent && !p.trainOnly).reduce((a, p) => a + 4 * p.shape.reduce((x, y) => x * y, 1), 0);
    const args = ['sample', '--ckpt', join(V2, 'weights.pt'), '--num-heads', '4', '--decode-layer', '2', '--class', 'all', '--count', '2', '--steps', 'ddim2', '--cfg-scale', '2'];
    const whole = await cli(...args, '--latents-out', join(dir, 'whole.npy'));
    assert.equal(whole.code, 0, whole.err);
    assert.doesNotMatch(whole.out, /at a time/);
    // The weights and room for a step of about half of the 16 images.
    setHeapLimit(heapStatus()!.used + weights + 800 * 1024);
    let split;
    try {
      split = await cli(...args, '--latents-out', join(dir, 'split.npy'));
    } finally {
      setHeapLimit(null);
    }
    assert.equal(split.code, 0, split.err);
    assert.match(split.out, /note: a step of 16 images needs .*, the wasm heap has .* free: sampling them \d+ at a time \(the same noise, so the same images\)/);
    assert.equal(split.out.match(/at a time/g)?.length, 1, 'one line says so');
    const a = readFileSync(join(dir, 'whole.npy'));
    const b = readFileSync(join(dir, 'split.npy'));
    const fa = new Float32Array(a.buffer.slice(a.byteOffset + 128, a.byteOffset + a.byteLength));
    const fb = new Float32Array(b.buffer.slice(b.byteOffset + 128, b.byteOffset + b.byteLength));
    assert.equal(fa.length, 20 * 4 * 8 * 8);
    assert.ok(fa.every((v, i) => Math.abs(v - fb[i]!) <= 1e-5), 'the same latents');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('VAE decoding halves its part when the heap cannot hold it, with the same images', async () => {
  await useBackend('wasm');
  const dir = mkdtempSync(join(tmpdir(), 'mdt-decode-'));
  try {
    const path = join(dir, 'vae.safetensors');
    await writeRandomStateDict(path, autoencoderKL(vaeConfig({ blockOutChannels: [32, 32], layersPerBlock: 1 })).params, 1);
    const before = tf.memory().numTensors;
    const vae = await openVae(path);
    const latents = tf.randomNormal([4, 4, 8, 8], 0, 1, 'float32', 3) as tf.Tensor4D;
    const whole = decodeInParts(vae, latents, 4, () => assert.fail('no note without a limit'));
    // What decoding one latent takes, then a limit that holds two at a time but not four.
    const one = tf.slice(latents, [0, 0, 0, 0], [1, -1, -1, -1]);
    const used = heapStatus()!.used;
    resetHeapPeak();
    tf.dispose(vae.decode(one));
    const perImage = heapStatus()!.peak - used;
    one.dispose();
    const notes: string[] = [];
    setHeapLimit(heapStatus()!.used + Math.floor(2.5 * perImage));
    let parts: tf.Tensor4D;
    try {
      parts = decodeInParts(vae, latents, 4, (n) => notes.push(n));
    } finally {
      setHeapLimit(null);
    }
    assert.ok(notes.length >= 1 && /^decoding 4 latents at once: the wasm heap cannot hold .*; decoding 2 at a time$/.test(notes[0]!), notes.join('\n'));
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(parts, whole))).dataSync()[0]!);
    assert.ok(diff <= 1e-5, `parts and whole decodes differ by ${diff}`);
    tf.dispose([whole, parts]);
    latents.dispose();
    vae.dispose();
    assert.equal(tf.memory().numTensors, before, 'no tensor outlives the decodes');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('train.py checkpoints: args is inert data, ema is the default, --key picks another; a DDP prefix is stripped', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mdt-train-pt-'));
  try {
    const sd = await readSafetensors(join(V2, 'weights.safetensors'));
    const path = join(dir, 'train.pt');
    await trainPyCheckpoint(path, sd);
    const ckpt = await openTorchCheckpoint(path);
    assert.equal(ckpt.wrapperKey, 'ema');
    assert.deepEqual(ckpt.extra['args'], { __class__: 'argparse.Namespace', model: 'MDTv2-S/2', epochs: 1400, ckpt: null });
    await ckpt.close();
    await assert.rejects(openTorchCheckpoint(path, { key: 'opt' }), /'opt' holds a dict of 2, not a dict of tensors; the top-level dict has keys \['model', 'ema', 'opt', 'args'\], of which 'model', 'ema' hold a state_dict/);
    await assert.rejects(openTorchCheckpoint(path, { key: 'teacher' }), /has no top-level key 'teacher'/);

    const flags = ['--num-heads', '4', '--decode-layer', '2', '--class', '1,2', '--count', '1', '--steps', 'ddim2', '--cfg-scale', '2'];
    const ema = await cli('sample', '--ckpt', path, ...flags, '--latents-out', join(dir, 'ema.npy'));
    assert.equal(ema.code, 0, ema.err);
    assert.match(ema.out, /note: train\.pt: using the state dict under 'ema' \(the file also holds 'model', 'opt', 'args'; --key chooses\)/);
    const model = await cli('sample', '--ckpt', path, '--key', 'model', ...flags, '--latents-out', join(dir, 'model.npy'));
    assert.equal(model.code, 0, model.err);
    assert.match(model.out, /using the state dict under 'model'/);
    assert.notDeepEqual(readFileSync(join(dir, 'ema.npy')), readFileSync(join(dir, 'model.npy')), 'ema and model weights sample differently');

    const ddp = join(dir, 'ddp.pt');
    const wrapped = storagesOf(sd, 'module.', 0);
    await writeTorchArchive(ddp, pickle(op.proto(2), stateDictOps(wrapped.specs), op.stop), wrapped.data);
    const d = await cli('sample', '--ckpt', ddp, ...flags, '--latents-out', join(dir, 'ddp.npy'));
    assert.equal(d.code, 0, d.err);
    assert.match(d.out, /note: ddp\.pt: every key starts with 'module\.' \(a state dict saved from a DistributedDataParallel-wrapped model\); stripped it/);
    assert.deepEqual(readFileSync(join(dir, 'ddp.npy')), readFileSync(join(dir, 'ema.npy')), 'the same weights sample the same latents');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a latent model without --vae is refused before its weights load; --latents-out keeps the raw latents instead', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mdt-latents-'));
  try {
    const base = ['sample', '--ckpt', join(V2, 'weights.pt'), '--num-heads', '4', '--decode-layer', '2', '--class', '3', '--count', '2', '--steps', 'ddim2'];
    const refused = await cli(...base, '--out', join(dir, 'png'));
    assert.equal(refused.code, 2);
    assert.match(refused.err, /4 channels, which are latents, not pixels: pass --vae FILE/);
    assert.doesNotMatch(refused.out, /using the state dict/, 'refused before the weights were opened for loading');
    const st = await cli(...base, '--latents-out', join(dir, 'l.safetensors'));
    assert.equal(st.code, 0, st.err);
    const saved = await readSafetensors(join(dir, 'l.safetensors'));
    assert.deepEqual(saved.get('latents')!.shape, [2, 4, 8, 8]);
    assert.deepEqual([...saved.get('labels')!.data as Int32Array], [3, 3]);
    const npy = await cli(...base, '--latents-out', join(dir, 'l.npy'));
    assert.equal(npy.code, 0, npy.err);
    const bytes = readFileSync(join(dir, 'l.npy'));
    const headerLen = bytes.readUInt16LE(8);
    assert.match(bytes.subarray(10, 10 + headerLen).toString('latin1'), /^\{'descr': '<f4', 'fortran_order': False, 'shape': \(2, 4, 8, 8\), \} *\n$/);
    assert.equal((10 + headerLen) % 64, 0);
    assert.deepEqual(new Float32Array(bytes.buffer.slice(bytes.byteOffset + 10 + headerLen, bytes.byteOffset + bytes.byteLength)), saved.get('latents')!.data);
    const bad = await cli(...base, '--latents-out', join(dir, 'l.png'));
    assert.equal(bad.code, 2);
    assert.match(bad.err, /--latents-out: expected a file name ending in \.npy or \.safetensors/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
