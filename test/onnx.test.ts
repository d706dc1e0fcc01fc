/**
 * ONNX export and the onnxruntime engine: every golden fixture's forward and forward_cfg cases
 * through the exported graph (at each opset export writes) on onnxruntime-node, within the case's tolerance, at the case's
 * batch (the file's batch axis is dynamic); bad files refused with a sentence. Skipped, with the
 * reason, where the optional onnxruntime-node is not installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { PNG } from 'pngjs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { DEFAULT_FIXTURES, fixtureDirs } from '../compile/parity-cli.ts';
import { compare, loadContext, type FixtureCase } from '../compile/parity.ts';
import { fixtureGuidanceOptions } from '../compile/parity-cases.ts';
import { exportOnnx } from '../compile/onnx-export.ts';
import { ONNX_OPSETS } from '../compile/onnx.ts';
import { openSafetensors } from '../formats/safetensors.ts';
import { encodeOnnx, type OnnxModel } from '../formats/onnx.ts';
import { writeSafetensors } from '../formats/safetensors.ts';
import { initParams } from '../compile/init.ts';
import { stateDictFromParams } from '../compile/weights.ts';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { startBackend } from '../cli/options.ts';
import { cli } from './cli-capture.ts';
import { onnxSampler, openOnnxDenoiser } from '../compile/onnx-engine.ts';
import { compileSampler } from '../compile/sample.ts';
import { splitImages } from '../compile/onnx-group.ts';
import { groupCount, POOL_BYTES, poolSettings, threadsPerGroup } from '../compile/onnx-pool.ts';
import fc from 'fast-check';
import { keyFromSeed } from '../dsl/random.ts';

const ortMissing = await import('onnxruntime-node').then(() => null, (e: Error) => `onnxruntime-node (optional) is not installed: ${e.message.split('\n')[0]}`);

test('the exported graph of every fixture matches its forward and forward_cfg cases on onnxruntime-node', async (t) => {
  if (ortMissing !== null) return t.skip(ortMissing);
  await initBackend({ prefer: 'cpu' });
  registerMissingKernels();
  const lines: string[] = [];
  let checked = 0;
  for (const dir of fixtureDirs(DEFAULT_FIXTURES)) {
    const list = JSON.parse(await readFile(join(dir, 'cases.json'), 'utf8')) as FixtureCase[];
    const file = await openSafetensors(join(dir, 'cases.safetensors'));
    try {
      const ctx = await loadContext(dir, file);
      for (const [c, opset] of list.filter((c) => c.kind === 'forward' || c.kind === 'forward_cfg').flatMap((c) => ONNX_OPSETS.map((o) => [c, o] as const))) {
        const guidance = fixtureGuidanceOptions(ctx, c);
        const bytes = encodeOnnx(exportOnnx(ctx.model, ctx.weights, { guidance, which: 'fixture', producerVersion: 'test', opset }));
        const den = await openOnnxDenoiser(bytes, `${c.name}.onnx`);
        const x = await ctx.float(c, 'x');
        const out = await den.run(x as tf.Tensor4D, await ctx.ints(c, 't'), await ctx.ints(c, 'y'));
        const { ratio } = compare((await out.data()) as Float32Array, await file.read(c.outputs['out']!), c.rtol, c.atol);
        tf.dispose([x, out]);
        await den.dispose();
        lines.push(`${dir.split('/').pop()}/${c.name} opset ${opset}: ${ratio.toExponential(2)} of allowed`);
        assert.ok(ratio <= 1, lines.at(-1));
        checked++;
      }
      tf.dispose([...ctx.weights.values()]);
    } finally {
      await file.close();
    }
  }
  console.log(lines.join('\n'));
  // FORMAT.md §9: MDT v1 and v2 each have forward, forward_null_label and two forward_cfg cases; DiT three; each at both opsets.
  assert.equal(checked, 11 * ONNX_OPSETS.length);
});

test('the onnx engine samples what the tfjs engine samples from the same noise (DDPM with guidance, DDIM plain)', async (t) => {
  if (ortMissing !== null) return t.skip(ortMissing);
  await initBackend({ prefer: 'cpu' });
  registerMissingKernels();
  const before = tf.memory().numTensors;
  for (const [fixture, steps, sampler, scale, opset] of [['mdt-v1-tiny', '25', 'ddpm', 3.8, 23], ['dit-tiny', 'ddim10', 'ddim', 1, 17]] as const) {
    const dir = join(DEFAULT_FIXTURES, fixture);
    const file = await openSafetensors(join(dir, 'cases.safetensors'));
    const ctx = await loadContext(dir, file);
    await file.close();
    const c = ctx.config;
    const schedule = scale === 1 ? null : { kind: 'power-cosine' as const, scale, power: 4 };
    const guidance = schedule === null ? null : { schedule, channels: 'first3' as const, inChannels: c.inChannels };
    const den = await openOnnxDenoiser(encodeOnnx(exportOnnx(ctx.model, ctx.weights, { guidance, which: 'fixture', producerVersion: 'test', opset })), `${fixture}.onnx`);
    const opts = { steps, sampler, guidance: schedule, guideChannels: 'first3' as const };
    const ours = compileSampler(ctx.model, ctx.weights, opts);
    const onnx = await onnxSampler(den, opts);
    const labels = Int32Array.from([3, 7]);
    const a = ours.sample(labels, keyFromSeed(11));
    const b = await onnx.sample(labels, keyFromSeed(11));
    assert.deepEqual(b.shape, [2, c.inChannels, c.inputSize, c.inputSize]);
    // The sampling step cases' tolerance (p_sample_step, ddim_step: rtol 1e-4, atol 1e-6 of max |x|).
    const { ratio } = compare((await b.data()) as Float32Array, { dtype: 'F32', shape: a.shape, data: (await a.data()) as Float32Array }, 1e-4, 1e-6);
    console.log(`${fixture} ${steps}${schedule === null ? '' : ' CFG'} opset ${opset}: onnx vs tfjs ${ratio.toExponential(2)} of allowed`);
    assert.ok(ratio <= 1, `${fixture}: ${ratio}`);
    tf.dispose([a, b, ...ctx.weights.values()]);
    ours.dispose();
    await onnx.dispose();
    await den.dispose();
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor outlives the samplers');
});

test('the pool\'s plan: consecutive groups of near-equal size; as many as threads, images and memory allow; settings checked', () => {
  fc.assert(fc.property(fc.nat({ max: 40 }), fc.integer({ min: 1, max: 12 }), (images, groups) => {
    const parts = splitImages(images, groups);
    assert.equal(parts.length, Math.min(images, groups));
    assert.equal(parts.reduce((a, p) => (assert.equal(p.first, a), a + p.images), 0), images);
    const sizes = parts.map((p) => p.images);
    assert.ok(Math.max(...sizes) - Math.min(...sizes) <= 1 && sizes.every((n) => n >= 1));
  }));
  const cpu = poolSettings({ MDT_ONNX_THREADS: '4' }, ['cpu']);
  assert.deepEqual(cpu, { threads: 4, groups: null, cpuOnly: true });
  assert.equal(groupCount(cpu, 2, 1e6), 2);
  assert.equal(groupCount(cpu, 9, 1e6), 4);
  assert.equal(threadsPerGroup(cpu, 3), 1);
  assert.equal(threadsPerGroup(cpu, 1), 4);
  // Each group holds the weights: a model of over half of POOL_BYTES runs whole.
  assert.equal(groupCount(cpu, 9, POOL_BYTES / 3), 3);
  assert.equal(groupCount(cpu, 9, POOL_BYTES * 0.6), 1);
  assert.equal(groupCount(poolSettings({ MDT_ONNX_THREADS: '4' }, ['cuda', 'cpu']), 9, 1e6), 1);
  assert.equal(groupCount(poolSettings({ MDT_ONNX_THREADS: '2', MDT_ONNX_GROUPS: '3' }, ['cpu']), 9, 1e6), 3);
  assert.throws(() => poolSettings({ MDT_ONNX_THREADS: 'two' }, ['cpu']), /^Error: MDT_ONNX_THREADS: expected a whole number of at least 1, got "two"$/);
  assert.throws(() => poolSettings({ MDT_ONNX_GROUPS: '0' }, ['cpu']), /^Error: MDT_ONNX_GROUPS: expected a whole number of at least 1, got "0"$/);
});

/** A small pixel DiT's parameters, random (not zero-initialised): the caller's tensors. */
function pixelDitWeights(model = buildModel(PIXEL_DIT)): Map<string, tf.Tensor> {
  return new Map([...initParams(model.params, keyFromSeed(3))].map(([k, v], i) => {
    const noisy = v.dtype === 'float32' ? tf.tidy(() => tf.add(v, tf.randomNormal(v.shape, 0, 0.2, 'float32', i))) : v;
    if (noisy !== v) v.dispose();
    return [k, noisy] as const;
  }));
}

/** The same as a bare state dict. */
async function writePixelDit(path: string): Promise<void> {
  const model = buildModel(PIXEL_DIT);
  const values = pixelDitWeights(model);
  await writeSafetensors(path, await stateDictFromParams(model.params, values), { format: 'pt' });
  tf.dispose([...values.values()]);
}

test('images split into groups over threads: the same images bit for bit (1, 2, 3 groups; guided DDPM, plain DDIM with noise); progress to the end', async (t) => {
  if (ortMissing !== null) return t.skip(ortMissing);
  await initBackend({ prefer: 'cpu' });
  const model = buildModel(PIXEL_DIT);
  const weights = pixelDitWeights(model);
  const before = process.env.MDT_ONNX_GROUPS;
  try {
    for (const [guidance, sampler, steps] of [[{ schedule: { kind: 'constant' as const, scale: 3 }, channels: 'all' as const, inChannels: 1 }, 'ddpm', '12'], [null, 'ddim', 'ddim8']] as const) {
      const bytes = encodeOnnx(exportOnnx(model, weights, { guidance, which: 'test', producerVersion: 'test' }));
      const labels = Int32Array.from([3, 0, 1]);
      let first: Float32Array | null = null;
      for (const groups of ['1', '2', '3']) {
        process.env.MDT_ONNX_GROUPS = groups;
        const den = await openOnnxDenoiser(bytes, 'pixel-dit.onnx');
        const s = await onnxSampler(den, { steps, sampler, eta: sampler === 'ddim' ? 0.5 : 0 });
        const told: number[] = [];
        const x = await s.sample(labels, keyFromSeed(4), (done, total) => told.push(done / total));
        const got = (await x.data()) as Float32Array;
        assert.deepEqual(x.shape, [3, 1, 8, 8]);
        x.dispose();
        await s.dispose();
        await den.dispose();
        assert.ok(told.length > 0 && told.at(-1) === 1 && told.every((v, i) => i === 0 || v > told[i - 1]!), `${groups} groups: progress ${told.join(' ')}`);
        if (first === null) first = got;
        else assert.deepEqual(got, first, `${sampler}: ${groups} groups against one`);
      }
    }
  } finally {
    if (before === undefined) delete process.env.MDT_ONNX_GROUPS;
    else process.env.MDT_ONNX_GROUPS = before;
    tf.dispose([...weights.values()]);
  }
});

const PIXEL_DIT = namedConfig('DiT-S/2', { inputSize: 8, inChannels: 1, numClasses: 4, depth: 2, hiddenSize: 32, numHeads: 2 });

test('mdt export and mdt sample --engine onnx: the tfjs engine\'s grid; bad files get a sentence', async (t) => {
  if (ortMissing !== null) return t.skip(ortMissing);
  const dir = mkdtempSync(join(tmpdir(), 'mdt-onnx-'));
  try {
    await startBackend('cpu');
    const ckpt = join(dir, 'dit.safetensors');
    await writePixelDit(ckpt);
    const model = join(dir, 'model.onnx');
    const e = await cli('export', '--ckpt', ckpt, '--num-heads', '2', '--cfg-scale', '3', '--format', 'onnx', '--out', model);
    assert.equal(e.code, 0, e.err);
    assert.match(e.out, /ONNX opset 23\): dit 8×8×1, ema weights, guidance constant w=3 on all channels/);
    const portable = join(dir, 'model-17.onnx');
    const e17 = await cli('export', '--ckpt', ckpt, '--num-heads', '2', '--cfg-scale', '3', '--opset', '17', '--out', portable);
    assert.equal(e17.code, 0, e17.err);
    assert.match(e17.out, /ONNX opset 17\)/);
    const badOpset = await cli('export', '--ckpt', ckpt, '--num-heads', '2', '--opset', '19', '--out', join(dir, 'model-19.onnx'));
    assert.equal(badOpset.code, 2);
    assert.match(badOpset.err, /--opset <n>' argument '19' is invalid\. Allowed: 17, 23\./);
    const common = ['--class', '0,1,2,3', '--count', '1', '--steps', '20', '--seed', '4'];
    const viaTfjs = await cli('sample', '--ckpt', ckpt, '--num-heads', '2', '--cfg-scale', '3', ...common, '--out', join(dir, 'tfjs'));
    assert.equal(viaTfjs.code, 0, viaTfjs.err);
    for (const [file, out] of [[model, 'onnx'], [portable, 'onnx-17']] as const) {
      const viaOnnx = await cli('sample', '--engine', 'onnx', '--ckpt', file, ...common, '--out', join(dir, out));
      assert.equal(viaOnnx.code, 0, viaOnnx.err);
      assert.match(viaOnnx.out, /guidance constant w=3 on all channels \(exported in model(-17)?\.onnx\), on onnxruntime/);
      const [p, q] = [out, 'tfjs'].map((d) => PNG.sync.read(readFileSync(join(dir, d, 'grid.png'))).data);
      assert.equal(p!.length, q!.length);
      // 8-bit pixels of the same samples: at most one level apart (rounding at a boundary).
      assert.ok(p!.every((v, i) => Math.abs(v - q![i]!) <= 1), `${out} and tfjs grids differ`);
    }

    const fails = async (args: string[], code: number, pattern: RegExp) => {
      const r = await cli('sample', '--engine', 'onnx', ...args, '--out', join(dir, 'refused'));
      assert.equal(r.code, code, `${args.join(' ')}: ${r.err}`);
      assert.match(r.err, pattern);
    };
    const bytes = readFileSync(model);
    const write = (name: string, data: Uint8Array) => {
      writeFileSync(join(dir, name), data);
      return join(dir, name);
    };
    await fails(['--ckpt', write('image.onnx', readFileSync(join(dir, 'tfjs', 'grid.png')))], 1, /image\.onnx: not (a readable|an) ONNX model/);
    await fails(['--ckpt', write('cut.onnx', bytes.subarray(0, bytes.length >> 1))], 1, /cut\.onnx: not a readable ONNX model \(\d+ bytes; protobuf: .*\); the file is truncated or of another kind/);
    await fails(['--ckpt', ckpt], 2, /--engine onnx samples an \.onnx file written by mdt export/);
    await fails(['--ckpt', model, '--cfg-scale', '2'], 2, /guidance is part of the exported graph; drop --cfg-scale/);
    // Export refuses what is not a DiT/MDT checkpoint, and an --out that is a folder, before writing anything.
    const vae = write('vae.safetensors', readFileSync(join(DEFAULT_FIXTURES, 'mdt-v1-tiny', 'cases.safetensors')));
    const notModel = await cli('export', '--ckpt', vae, '--out', join(dir, 'vae.onnx'));
    assert.equal(notModel.code, 1, notModel.err);
    assert.match(notModel.err, /not a DiT\/MDT state dict: expected keys blocks\.N\.\*/);
    assert.equal((await cli('export', '--ckpt', ckpt, '--num-heads', '2', '--out', dir)).code, 2);
    assert.ok(!existsSync(join(dir, 'vae.onnx')));

    // Re-encoded variants of an export: another producer's model, another model's metadata, a newer opset.
    const built = buildModel(PIXEL_DIT);
    const values = initParams(built.params, keyFromSeed(0));
    const variant = (name: string, edit: (m: OnnxModel) => void) => {
      const m = exportOnnx(built, values, { guidance: null, which: 'ema', producerVersion: 'test' });
      edit(m);
      return write(name, encodeOnnx(m));
    };
    await fails(['--ckpt', variant('other.onnx', (m) => (m.metadataProps = []))], 1, /other\.onnx: an ONNX model \(mdt-ts test, inputs x \[batch, 1, 8, 8\] float32, t \[batch\] int32, y \[batch\] int32\) but not an MDT\/DiT denoiser written by mdt export \(metadata mdt\.format is missing/);
    await fails(['--ckpt', variant('latent.onnx', (m) => {
      m.metadataProps.find((p) => p.key === 'mdt.config')!.value = JSON.stringify({ ...built.config, inChannels: 4, inputSize: 32 });
    })], 1, /latent\.onnx: its graph does not fit the model its metadata names \(dit 32×32×4\): expected input x \[rows, 4, 32, 32\], the graph has x \[batch, 1, 8, 8\] float32/);
    await fails(['--ckpt', variant('opset.onnx', (m) => (m.opsetImport = [{ domain: '', version: 99 }]))], 1, /opset\.onnx: uses operator set 99; this engine runs the graphs mdt export writes, opset 17 or 23/);
    tf.dispose([...values.values()]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
