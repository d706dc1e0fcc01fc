import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Layer } from '../dsl/layer.ts';
import { countParams, type ParamDecls } from '../dsl/param.ts';
import { foldIn, keyFromSeed, normal, type Key } from '../dsl/random.ts';
import { readSafetensors, writeSafetensors, type StTensor } from '../formats/safetensors.ts';
import { jit, type Program } from '../compile/trace.ts';
import { compileVae, loadVaeParams } from '../compile/vae.ts';
import { stateDictFromParams, StateDictError } from '../compile/weights.ts';
import { conv2d, upsampleNearest2x, type Maps, type Padding } from '../layers/conv.ts';
import { groupNorm } from '../layers/group-norm.ts';
import { ByteImageDataset } from '../mdt/data/dataset.ts';
import { autoencoderKL, imagesToUint8, midAttention, posteriorNoise, samplePosterior, type AutoencoderKL } from '../mdt/vae/autoencoder-kl.ts';
import { latentSize, SD_VAE_CONFIG, vaeConfig } from '../mdt/vae/config.ts';
import { encodeLatents, openLatents, type LatentsProgress } from '../mdt/vae/latents.ts';

await tf.setBackend('cpu');

const maps = (data: Float32Array | number[], shape: number[]): tf.Tensor4D => tf.tensor4d(data, shape as [number, number, number, number]);

/** Runs `program` compiled on the named tensors (data and parameters alike). */
function run(program: Program, inputs: Iterable<readonly [string, tf.Tensor]>): Map<string, tf.Tensor> {
  const f = jit(program);
  try {
    return f(new Map(inputs));
  } finally {
    f.dispose();
  }
}

/** A layer's output for input `x` (a data input named `x`) with parameter `values` (by path). */
function applyLayer(l: Layer<Maps, Maps>, values: ReadonlyMap<string, tf.Tensor>, x: tf.Tensor): tf.Tensor {
  return run((io) => ({ y: l.apply(io.params(l.params), io.data<Maps>('x'), undefined) }), [...values, ['x', x]]).get('y')!;
}
const rand = (seed: number, n: number, scale = 1, shift = 0): Float32Array => normal(keyFromSeed(seed), n).map((v) => v * scale + shift);

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const d = Math.abs(actual[i]! - expected[i]!);
    if (d > tol * (1 + Math.abs(expected[i]!))) assert.fail(`${what}: element ${i} is ${actual[i]}, expected ${expected[i]} (|diff| ${d})`);
  }
}

// ---- plain-JS references (NCHW, float64) ----

function convRef(x: Float32Array, [n, ci, h, w]: number[], wt: Float32Array, bias: Float32Array, co: number, k: number, stride: number, [pl, pr, pt, pb]: number[]) {
  const ho = Math.floor((h + pt + pb - k) / stride) + 1;
  const wo = Math.floor((w + pl + pr - k) / stride) + 1;
  const out = new Float64Array(n * co * ho * wo);
  for (let s = 0; s < n; s++) for (let o = 0; o < co; o++) for (let i = 0; i < ho; i++) for (let j = 0; j < wo; j++) {
    let acc = bias[o]!;
    for (let c = 0; c < ci; c++) for (let dy = 0; dy < k; dy++) for (let dx = 0; dx < k; dx++) {
      const y = i * stride + dy - pt;
      const xx = j * stride + dx - pl;
      if (y < 0 || y >= h || xx < 0 || xx >= w) continue;
      acc += x[((s * ci + c) * h + y) * w + xx]! * wt[((o * ci + c) * k + dy) * k + dx]!;
    }
    out[((s * co + o) * ho + i) * wo + j] = acc;
  }
  return { out, shape: [n, co, ho, wo] };
}

function groupNormRef(x: ArrayLike<number>, [n, c, h, w]: number[], groups: number, gamma: ArrayLike<number>, beta: ArrayLike<number>, eps: number): Float64Array {
  const out = new Float64Array(n * c * h * w);
  const per = c / groups;
  for (let s = 0; s < n; s++) for (let g = 0; g < groups; g++) {
    const at = (ch: number, i: number) => (s * c + ch) * h * w + i;
    let sum = 0;
    for (let ch = g * per; ch < (g + 1) * per; ch++) for (let i = 0; i < h * w; i++) sum += x[at(ch, i)]!;
    const mean = sum / (per * h * w);
    let sq = 0;
    for (let ch = g * per; ch < (g + 1) * per; ch++) for (let i = 0; i < h * w; i++) sq += (x[at(ch, i)]! - mean) ** 2;
    const inv = 1 / Math.sqrt(sq / (per * h * w) + eps);
    for (let ch = g * per; ch < (g + 1) * per; ch++) for (let i = 0; i < h * w; i++) out[at(ch, i)] = (x[at(ch, i)]! - mean) * inv * gamma[ch]! + beta[ch]!;
  }
  return out;
}

function nchwToNhwc(x: ArrayLike<number>, [n, c, h, w]: number[]): Float32Array {
  const out = new Float32Array(n * c * h * w);
  for (let s = 0; s < n; s++) for (let ch = 0; ch < c; ch++) for (let i = 0; i < h * w; i++) out[(s * h * w + i) * c + ch] = x[(s * c + ch) * h * w + i]!;
  return out;
}

// ---- building blocks ----

test('GroupNorm matches a plain loop, in both layouts', async () => {
  const shape = [2, 8, 5, 3];
  const n = 2 * 8 * 5 * 3;
  const x = rand(1, n, 3, 2);
  const gamma = rand(2, 8, 0.5, 1);
  const beta = rand(3, 8, 0.5);
  const expected = groupNormRef(x, shape, 4, gamma, beta, 1e-6);
  const values = new Map([['weight', tf.tensor(gamma)], ['bias', tf.tensor(beta)]]);
  const nchw = applyLayer(groupNorm(8, 4), values, maps(x, shape));
  assertClose(await nchw.data(), expected, 1e-4, 'NCHW');
  const nhwc = applyLayer(groupNorm(8, 4, 1e-6, 'NHWC'), values, maps(nchwToNhwc(x, shape), [2, 5, 3, 8]));
  assertClose(await nhwc.data(), nchwToNhwc(expected, shape), 1e-4, 'NHWC');
  assert.deepEqual(Object.keys(groupNorm(8, 4).params), ['weight', 'bias']);
  assert.throws(() => groupNorm(10, 4), /10 channels cannot be split into 4 groups/);
});

async function checkConv(k: number, stride: number, padding: Padding, shape: number[], co: number) {
  const [n, ci, h, w] = shape as [number, number, number, number];
  const x = rand(10, n * ci * h * w);
  const wt = rand(11, co * ci * k * k, 0.3);
  const bias = rand(12, co);
  const pads = typeof padding === 'number' ? [padding, padding, padding, padding] : [...padding];
  const ref = convRef(x, shape, wt, bias, co, k, stride, pads);
  const layer = conv2d({ inChannels: ci, outChannels: co, kernel: k, stride, padding });
  assert.deepEqual(layer.params.weight!.shape, [co, ci, k, k], 'PyTorch weight layout (out, in, kh, kw)');
  const y = applyLayer(layer, new Map([['weight', tf.tensor(wt, [co, ci, k, k])], ['bias', tf.tensor(bias)]]), maps(x, shape));
  assert.deepEqual(y.shape, ref.shape);
  assertClose(await y.data(), ref.out, 1e-4, `conv ${k}×${k}/${stride} pad ${JSON.stringify(padding)}`);
}

test('conv 3×3 with padding 1 matches a plain loop', async () => {
  await checkConv(3, 1, 1, [2, 3, 7, 6], 5);
});

test("the down-sampling conv (3×3, stride 2, diffusers' F.pad (0, 1, 0, 1)) matches a plain loop", async () => {
  await checkConv(3, 2, [0, 1, 0, 1], [1, 4, 8, 8], 3);
  await checkConv(3, 2, [0, 1, 0, 1], [1, 2, 7, 9], 2);
  await checkConv(1, 1, 0, [1, 6, 4, 4], 3);
});

test('nearest up-sampling ×2 repeats each pixel into a 2×2 block, in both layouts', async () => {
  const shape = [1, 2, 3, 4];
  const x = rand(20, 24);
  const expected = new Float32Array(2 * 6 * 8);
  for (let c = 0; c < 2; c++) for (let i = 0; i < 6; i++) for (let j = 0; j < 8; j++) expected[(c * 6 + i) * 8 + j] = x[(c * 3 + (i >> 1)) * 4 + (j >> 1)]!;
  const up = (layout: 'NCHW' | 'NHWC', t: tf.Tensor) => run((io) => ({ y: upsampleNearest2x(io.data<Maps>('x'), layout) }), [['x', t]]).get('y')!;
  const y = up('NCHW', maps(x, shape));
  assert.deepEqual(y.shape, [1, 2, 6, 8]);
  assert.deepEqual(await y.data(), expected);
  const yh = up('NHWC', maps(nchwToNhwc(x, shape), [1, 3, 4, 2]));
  assert.deepEqual(await yh.data(), nchwToNhwc(expected, [1, 2, 6, 8]));
});

test('the mid-block attention is single-head softmax attention over positions, with a residual', async () => {
  const [c, h, w, groups] = [8, 3, 2, 2];
  const l = h * w;
  const x = rand(30, c * l);
  const gamma = rand(31, c, 0.3, 1);
  const beta = rand(32, c, 0.3);
  const lin = (s: number) => ({ w: rand(s, c * c, 0.4), b: rand(s + 100, c, 0.2) });
  const [q, k, v, o] = [lin(33), lin(34), lin(35), lin(36)];
  const hn = groupNormRef(x, [1, c, h, w], groups, gamma, beta, 1e-6);
  // tokens t[i][ch] = normed[ch][i]; Linear: y = x·Wᵀ + b
  const proj = (m: { w: Float32Array; b: Float32Array }, src: (i: number, ch: number) => number) =>
    Array.from({ length: l }, (_, i) => Array.from({ length: c }, (_, oc) => {
      let acc = m.b[oc]!;
      for (let ic = 0; ic < c; ic++) acc += src(i, ic) * m.w[oc * c + ic]!;
      return acc;
    }));
  const tok = (i: number, ch: number) => hn[ch * l + i]!;
  const [Q, K, V] = [proj(q, tok), proj(k, tok), proj(v, tok)];
  const mixed = Q.map((qi) => {
    const logits = K.map((kj) => kj.reduce((a, kv, d) => a + kv * qi[d]!, 0) / Math.sqrt(c));
    const mx = Math.max(...logits);
    const e = logits.map((z) => Math.exp(z - mx));
    const sum = e.reduce((a, b) => a + b, 0);
    return Array.from({ length: c }, (_, d) => e.reduce((a, ej, j) => a + (ej / sum) * V[j]![d]!, 0));
  });
  const out = proj(o, (i, ch) => mixed[i]![ch]!);
  const expected = new Float64Array(c * l);
  for (let ch = 0; ch < c; ch++) for (let i = 0; i < l; i++) expected[ch * l + i] = out[i]![ch]! + x[ch * l + i]!;

  const attn = midAttention(c, groups);
  assert.deepEqual(Object.keys(attn.params).sort(), [
    'group_norm.bias', 'group_norm.weight', 'to_k.bias', 'to_k.weight', 'to_out.0.bias', 'to_out.0.weight', 'to_q.bias', 'to_q.weight', 'to_v.bias', 'to_v.weight',
  ]);
  const values = new Map<string, tf.Tensor>([['group_norm.weight', tf.tensor(gamma)], ['group_norm.bias', tf.tensor(beta)]]);
  for (const [name, m] of [['to_q', q], ['to_k', k], ['to_v', v], ['to_out.0', o]] as const) {
    values.set(`${name}.weight`, tf.tensor(m.w, [c, c]));
    values.set(`${name}.bias`, tf.tensor(m.b));
  }
  const y = applyLayer(attn, values, maps(nchwToNhwc(x, [1, c, h, w]), [1, h, w, c]));
  assertClose(await y.data(), nchwToNhwc(expected, [1, c, h, w]), 1e-4, 'attention');
});

// ---- the model ----

const SMALL = vaeConfig({ blockOutChannels: [16, 32, 32], layersPerBlock: 1, normNumGroups: 4 });

/** Values for every parameter, all random (biases and norm affines included) so a lost tensor shows. */
function randomParams(decls: ParamDecls, key: Key): Map<string, tf.Tensor> {
  const out = new Map<string, tf.Tensor>();
  Object.entries(decls).forEach(([path, spec], i) => {
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const fanIn = spec.shape.length > 1 ? n / spec.shape[0]! : 0;
    const isNormWeight = /norm[^.]*\.weight$/.test(path);
    const scale = fanIn > 0 ? 1 / Math.sqrt(fanIn) : 0.1;
    out.set(path, tf.tensor(normal(foldIn(key, i), n).map((v) => v * scale + (isNormWeight ? 1 : 0)), spec.shape as number[]));
  });
  return out;
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'vae-test-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function writeParams(vae: AutoencoderKL, values: Map<string, tf.Tensor>, path: string, edit: (sd: Map<string, StTensor>) => void = () => {}) {
  const sd = await stateDictFromParams(vae.params, values);
  edit(sd);
  await writeSafetensors(path, sd);
}

test("parameter paths are diffusers' AutoencoderKL state-dict keys", () => {
  const sd = autoencoderKL(SD_VAE_CONFIG);
  assert.equal(Object.keys(sd.params).length, 248);
  assert.equal(countParams(sd.params), 83_653_863);
  const keys = Object.keys(autoencoderKL(SMALL).params);
  for (const k of [
    'encoder.conv_in.weight', 'encoder.down_blocks.0.resnets.0.norm1.weight', 'encoder.down_blocks.0.resnets.0.conv1.weight',
    'encoder.down_blocks.1.resnets.0.conv_shortcut.weight', 'encoder.down_blocks.0.downsamplers.0.conv.weight', 'encoder.down_blocks.1.downsamplers.0.conv.bias',
    'encoder.mid_block.resnets.1.conv2.bias', 'encoder.mid_block.attentions.0.group_norm.weight', 'encoder.mid_block.attentions.0.to_out.0.weight',
    'encoder.conv_norm_out.weight', 'encoder.conv_out.weight', 'quant_conv.weight', 'post_quant_conv.bias', 'decoder.conv_in.weight',
    'decoder.mid_block.attentions.0.to_q.bias', 'decoder.up_blocks.0.resnets.1.norm2.bias', 'decoder.up_blocks.2.resnets.0.conv_shortcut.weight',
    'decoder.up_blocks.1.upsamplers.0.conv.weight', 'decoder.conv_norm_out.bias', 'decoder.conv_out.weight',
  ]) assert.ok(keys.includes(k), `missing ${k}`);
  for (const k of ['encoder.down_blocks.2.downsamplers.0.conv.weight', 'decoder.up_blocks.2.upsamplers.0.conv.weight', 'decoder.up_blocks.0.resnets.2.conv1.weight', 'encoder.down_blocks.0.resnets.1.conv1.weight']) {
    assert.ok(!keys.includes(k), `unexpected ${k}`);
  }
  const shapes = autoencoderKL(SMALL).params;
  assert.deepEqual(shapes['encoder.conv_out.weight']!.shape, [8, 32, 3, 3]);
  assert.deepEqual(shapes['decoder.up_blocks.2.resnets.0.conv_shortcut.weight']!.shape, [16, 32, 1, 1]);
  assert.deepEqual(shapes['decoder.mid_block.attentions.0.to_v.weight']!.shape, [32, 32]);
  assert.throws(() => vaeConfig({ blockOutChannels: [16, 30], normNumGroups: 4 }), /multiples of normNumGroups=4 \(not: 30\)/);
  assert.throws(() => latentSize(SMALL, 30), /multiple of 4/);
});

test('a small VAE: strict load from a diffusers-keyed file, shapes, identical outputs after the round trip', async () => {
  const vae = autoencoderKL(SMALL);
  const values = randomParams(vae.params, keyFromSeed(7));
  const x = maps(rand(40, 2 * 3 * 64 * 64, 0.5), [2, 3, 64, 64]);
  await withTempDir(async (dir) => {
    const path = join(dir, 'diffusion_pytorch_model.safetensors');
    await writeParams(vae, values, path);
    const loaded = await loadVaeParams(vae, path);
    assert.equal(loaded.size, values.size);
    const [p, q] = [compileVae(vae, values), compileVae(vae, loaded)];
    const post = p.encode(x);
    assert.deepEqual(post.mean.shape, [2, 4, 16, 16]);
    assert.deepEqual(post.logvar.shape, [2, 4, 16, 16]);
    const post2 = q.encode(x);
    assert.deepEqual(await post2.mean.data(), await post.mean.data());
    assert.deepEqual(await post2.logvar.data(), await post.logvar.data());
    const z = p.encodeToLatents(x);
    assertClose(await z.data(), (await post.mean.data()).map((v) => v * 0.18215), 1e-6, 'latents = mean·0.18215');
    const img = p.decode(z);
    assert.deepEqual(img.shape, [2, 3, 64, 64]);
    assert.deepEqual(await q.decode(z).data(), await img.data());
    assert.ok((await img.data()).every(Number.isFinite));
    // The executor frees every intermediate: a call leaves only its outputs behind.
    const before = tf.memory().numTensors;
    const again = p.decode(z);
    assert.equal(tf.memory().numTensors, before + 1);
    assert.deepEqual(await again.data(), await img.data(), 'a second call (the cached executable) gives the same images');

    // Older diffusers files: query/key/value/proj_attn, and 1×1-conv-shaped attention weights.
    const legacy = join(dir, 'legacy.safetensors');
    await writeParams(vae, values, legacy, (sd) => {
      for (const [k, t] of [...sd]) {
        const m = /^(.*\.attentions\.0)\.(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$/.exec(k);
        if (!m) continue;
        sd.delete(k);
        const old = { to_q: 'query', to_k: 'key', to_v: 'value', 'to_out.0': 'proj_attn' }[m[2]!]!;
        sd.set(`${m[1]}.${old}.${m[3]}`, m[3] === 'weight' && m[2] !== 'to_k' ? { ...t, shape: [...t.shape, 1, 1] } : t);
      }
    });
    assert.ok((await readSafetensors(legacy)).has('encoder.mid_block.attentions.0.proj_attn.weight'));
    const fromLegacy = await loadVaeParams(vae, legacy);
    for (const [k, t] of values) assert.deepEqual(await fromLegacy.get(k)!.data(), await t.data(), k);
  });
});

test('a wrong file is refused with one error listing the missing, the unexpected and the mis-shaped key', async () => {
  const vae = autoencoderKL(SMALL);
  const values = randomParams(vae.params, keyFromSeed(8));
  await withTempDir(async (dir) => {
    const path = join(dir, 'bad.safetensors');
    await writeParams(vae, values, path, (sd) => {
      sd.delete('decoder.conv_out.bias');
      sd.set('decoder.extra.weight', { dtype: 'F32', shape: [2], data: new Float32Array(2) });
      sd.set('encoder.conv_in.weight', { dtype: 'F32', shape: [16, 3, 1, 1], data: new Float32Array(48) });
    });
    await assert.rejects(loadVaeParams(vae, path), (e: unknown) => {
      assert.ok(e instanceof StateDictError);
      assert.match(e.message, /3 problems/);
      assert.match(e.message, /missing decoder\.conv_out\.bias \(expected \[3\]\)/);
      assert.match(e.message, /unexpected decoder\.extra\.weight/);
      assert.match(e.message, /shape mismatch encoder\.conv_in\.weight: expected \[16, 3, 3, 3\], given \[16, 3, 1, 1\]/);
      return true;
    });
  });
});

test('posterior: logvar is clamped to [−30, 20]; a sample is mean + exp(½·logvar)·ε, per-sample keys independent of batching', async () => {
  const vae = autoencoderKL(SMALL);
  const values = randomParams(vae.params, keyFromSeed(9));
  const bias = new Float32Array([0, 0, 0, 0, 100, -100, 100, -100]);
  values.set('quant_conv.weight', tf.zeros([8, 8, 1, 1]));
  values.set('quant_conv.bias', tf.tensor(bias));
  const compiled = compileVae(vae, values);
  const images = maps(rand(41, 3 * 16 * 16), [1, 3, 16, 16]);
  const post = compiled.encode(images);
  const lv = await post.logvar.data();
  for (let ch = 0; ch < 4; ch++) assert.equal(lv[ch * 16], ch % 2 === 0 ? 20 : -30);
  assert.ok((await post.mean.data()).every((v) => v === 0), 'the first latentChannels channels are the mean');
  // encodeToLatents with a key: z = (mean + exp(½·logvar)·ε)·scalingFactor, the clamped logvar's.
  const zKey = keyFromSeed(47);
  const noise = posteriorNoise([1, 4, 4, 4], [zKey]);
  const expectedZ = Float32Array.from(lv, (l, i) => Math.exp(0.5 * l) * noise[i]! * 0.18215);
  assertClose(await compiled.encodeToLatents(images, [zKey]).data(), expectedZ, 1e-5, 'sampled latents');

  const mean = rand(42, 2 * 4 * 2 * 2);
  const logvar = rand(43, 2 * 4 * 2 * 2);
  const sample = (eps: Float32Array) => run((io) => ({
    z: samplePosterior({ mean: io.data<Maps>('mean'), logvar: io.data<Maps>('logvar') }, io.data<Maps>('noise')),
  }), [['mean', maps(mean, [2, 4, 2, 2])], ['logvar', maps(logvar, [2, 4, 2, 2])], ['noise', maps(eps, [2, 4, 2, 2])]]).get('z')!;
  const key = keyFromSeed(44);
  const eps = normal(key, 32);
  assert.deepEqual(posteriorNoise([2, 4, 2, 2], key), eps, 'one key draws the whole batch');
  assertClose(await sample(eps).data(), mean.map((m, i) => m + Math.exp(0.5 * logvar[i]!) * eps[i]!), 1e-5, 'sample');
  const keys = [keyFromSeed(45), keyFromSeed(46)];
  assert.deepEqual(posteriorNoise([2, 4, 2, 2], keys).slice(16), posteriorNoise([1, 4, 2, 2], [keys[1]!]));
  assert.throws(() => posteriorNoise([2, 4, 2, 2], [key]), /one key per sample \(2\), got 1/);
});

test('images → uint8 NHWC: clamp((x + 1)·127.5, 0, 255), truncated', async () => {
  const { data, shape } = imagesToUint8([-1, 0, 1, 2, -3, 0.999], [1, 3, 1, 2]);
  assert.deepEqual(shape, [1, 1, 2, 3]);
  assert.deepEqual([...data], [0, 255, 0, 127, 255, 254]);
});

// ---- latents on disk ----

function tinyDataset(channels: 1 | 3, n: number): ByteImageDataset {
  const pixels = Uint8Array.from(rand(50 + channels, n * channels * 16 * 16, 60, 128), (v) => Math.max(0, Math.min(255, Math.round(v))));
  return new ByteImageDataset({ name: `tiny${channels}`, channels, height: 16, width: 16, classNames: ['a', 'b', 'c'], pixels, labels: Int32Array.from({ length: n }, (_, i) => i % 3) });
}

test('encodeLatents writes sharded latents with labels, resumes by skipping finished shards, and reads back as a dataset', async () => {
  const vae = autoencoderKL(SMALL);
  const p = compileVae(vae, randomParams(vae.params, keyFromSeed(10)));
  const ds = tinyDataset(3, 5);
  const key = keyFromSeed(11);
  await withTempDir(async (dir) => {
    const events: LatentsProgress[] = [];
    const opts = { outDir: dir, vaeName: 'random-small', shardSize: 2, batchSize: 3, key, flip: true, onProgress: (e: LatentsProgress) => events.push(e) };
    const first = await encodeLatents(p, ds, opts);
    assert.equal(first.encodedShards, 3);
    assert.equal(events.at(-1)!.done, 5);
    const lat = await openLatents(dir);
    try {
      assert.equal(lat.size, 5);
      assert.deepEqual([lat.channels, lat.height, lat.width, lat.numClasses], [4, 4, 4, 3]);
      const { latents, labels } = lat.get([4, 1], [0, 1]);
      assert.deepEqual([...labels], [1, 1]);
      // Item 4 with batch size 1 and its own key gives what the sharded run stored.
      const direct = p.encodeToLatents(maps(ds.get([4]).images, [1, 3, 16, 16]), [foldIn(key, 4)]);
      assertClose(latents.slice(0, 64), await direct.data(), 1e-6, 'stored latents');
      assert.notDeepEqual(latents.slice(64), lat.get([1]).latents, 'flipped latents differ from plain ones');
      const before = lat.get([0, 1, 2, 3, 4]).latents;

      await unlink(join(dir, 'shard-00001.safetensors'));
      events.length = 0;
      const again = await encodeLatents(p, ds, opts);
      assert.deepEqual([again.encodedShards, again.skippedShards], [1, 2]);
      assert.deepEqual(events.map((e) => [e.shard, e.skipped]), [[0, true], [1, false], [2, true]]);
      const lat2 = await openLatents(dir);
      assert.deepEqual(lat2.get([0, 1, 2, 3, 4]).latents, before, 'a resumed run writes the same latents');
      lat2.close();
    } finally {
      lat.close();
    }
    await assert.rejects(encodeLatents(p, ds, { ...opts, shardSize: 4 }), /belongs to a different job[\s\S]*shardSize: 2 on disk, 4 now/);
    await unlink(join(dir, 'shard-00002.safetensors'));
    await assert.rejects(openLatents(dir), /incomplete, 1 of 3 shards missing \(shard-00002\.safetensors\)/);
  });
});

test('gray datasets are encoded as RGB with the channel repeated; the posterior mean without a key', async () => {
  const vae = autoencoderKL(SMALL);
  const p = compileVae(vae, randomParams(vae.params, keyFromSeed(12)));
  const gray = tinyDataset(1, 2);
  await withTempDir(async (dir) => {
    await encodeLatents(p, gray, { outDir: dir, vaeName: 'random-small' });
    const lat = await openLatents(dir);
    const img = gray.get([0, 1]).images;
    const rgb = new Float32Array(2 * 3 * 256);
    for (let s = 0; s < 2; s++) for (let c = 0; c < 3; c++) rgb.set(img.subarray(s * 256, (s + 1) * 256), (s * 3 + c) * 256);
    assertClose(lat.get([0, 1]).latents, await p.encodeToLatents(maps(rgb, [2, 3, 16, 16])).data(), 1e-6, 'gray latents');
    assert.throws(() => lat.get([0], [1]), /encoded without flip/);
    lat.close();
  });
});
