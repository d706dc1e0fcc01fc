/**
 * ONNX export and the onnxruntime engine: every golden fixture's forward and forward_cfg cases
 * through the exported graph on onnxruntime-node, within the case's tolerance, at the case's
 * batch (the file's batch axis is dynamic); bad files refused with a sentence. Skipped, with the
 * reason, where the optional onnxruntime-node is not installed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { DEFAULT_FIXTURES, fixtureDirs } from '../compile/parity-cli.ts';
import { compare, loadContext, type FixtureCase } from '../compile/parity.ts';
import { fixtureGuidanceOptions } from '../compile/parity-cases.ts';
import { exportOnnx } from '../compile/onnx-export.ts';
import { openSafetensors } from '../formats/safetensors.ts';
import { encodeOnnx } from '../formats/onnx.ts';
import { onnxSampler, openOnnxDenoiser } from '../runtime/onnx-engine.ts';
import { compileSampler } from '../compile/sample.ts';
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
      for (const c of list.filter((c) => c.kind === 'forward' || c.kind === 'forward_cfg')) {
        const guidance = fixtureGuidanceOptions(ctx, c);
        const bytes = encodeOnnx(exportOnnx(ctx.model, ctx.weights, { guidance, which: 'fixture', producerVersion: 'test' }));
        const den = await openOnnxDenoiser(bytes, `${c.name}.onnx`);
        const x = await ctx.float(c, 'x');
        const out = await den.run(x as tf.Tensor4D, await ctx.ints(c, 't'), await ctx.ints(c, 'y'));
        const { ratio } = compare((await out.data()) as Float32Array, await file.read(c.outputs['out']!), c.rtol, c.atol);
        tf.dispose([x, out]);
        await den.dispose();
        lines.push(`${dir.split('/').pop()}/${c.name}: ${ratio.toExponential(2)} of allowed`);
        assert.ok(ratio <= 1, lines.at(-1));
        checked++;
      }
      tf.dispose([...ctx.weights.values()]);
    } finally {
      await file.close();
    }
  }
  console.log(lines.join('\n'));
  // FORMAT.md §9: MDT v1 and v2 each have forward, forward_null_label and two forward_cfg cases; DiT three.
  assert.equal(checked, 11);
});

test('the onnx engine samples what the tfjs engine samples from the same noise (DDPM with guidance, DDIM plain)', async (t) => {
  if (ortMissing !== null) return t.skip(ortMissing);
  await initBackend({ prefer: 'cpu' });
  registerMissingKernels();
  const before = tf.memory().numTensors;
  for (const [fixture, steps, sampler, scale] of [['mdt-v1-tiny', '25', 'ddpm', 3.8], ['dit-tiny', 'ddim10', 'ddim', 1]] as const) {
    const dir = join(DEFAULT_FIXTURES, fixture);
    const file = await openSafetensors(join(dir, 'cases.safetensors'));
    const ctx = await loadContext(dir, file);
    await file.close();
    const c = ctx.config;
    const schedule = scale === 1 ? null : { kind: 'power-cosine' as const, scale, power: 4 };
    const guidance = schedule === null ? null : { schedule, channels: 'first3' as const, inChannels: c.inChannels };
    const den = await openOnnxDenoiser(encodeOnnx(exportOnnx(ctx.model, ctx.weights, { guidance, which: 'fixture', producerVersion: 'test' })), `${fixture}.onnx`);
    const opts = { steps, sampler, guidance: schedule, guideChannels: 'first3' as const };
    const ours = compileSampler(ctx.model, ctx.weights, opts);
    const onnx = onnxSampler(den, opts);
    const labels = Int32Array.from([3, 7]);
    const a = ours.sample(labels, keyFromSeed(11));
    const b = await onnx.sample(labels, keyFromSeed(11));
    assert.deepEqual(b.shape, [2, c.inChannels, c.inputSize, c.inputSize]);
    // The sampling step cases' tolerance (p_sample_step, ddim_step: rtol 1e-4, atol 1e-6 of max |x|).
    const { ratio } = compare((await b.data()) as Float32Array, { dtype: 'F32', shape: a.shape, data: (await a.data()) as Float32Array }, 1e-4, 1e-6);
    console.log(`${fixture} ${steps}${schedule === null ? '' : ' CFG'}: onnx vs tfjs ${ratio.toExponential(2)} of allowed`);
    assert.ok(ratio <= 1, `${fixture}: ${ratio}`);
    tf.dispose([a, b, ...ctx.weights.values()]);
    ours.dispose();
    onnx.dispose();
    await den.dispose();
  }
  assert.equal(tf.memory().numTensors, before, 'no tensor outlives the samplers');
});
