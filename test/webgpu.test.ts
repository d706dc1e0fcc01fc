/**
 * The optional webgpu backend trains and samples like the others: the same losses as the cpu
 * backend for the same keys, and no tensor growth across steps. Skipped, with the reason,
 * where its packages or a WebGPU adapter are missing (README: Backends); parity on it is in
 * parity.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend, webgpuAvailable, type BackendName } from '../runtime/backend.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { foldIn, keyFromSeed, normal } from '../dsl/random.ts';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { initParams } from '../compile/init.ts';
import { compileTraining, type StepLosses } from '../compile/train.ts';
import { compileSampler } from '../compile/sample.ts';

const config = namedConfig('MDTv2-S/2', { depth: 4, hiddenSize: 32, numHeads: 2, inputSize: 8, patchSize: 2, inChannels: 2, numClasses: 3, decodeLayer: 2 });

/** Losses of `steps` Adan steps and 4 DDIM-sampled images, on `backend`, from the same seeds. */
async function run(backend: BackendName, steps: number): Promise<{ losses: StepLosses[]; growth: number; sample: Float32Array }> {
  await initBackend({ prefer: backend });
  registerMissingKernels();
  const model = buildModel(config);
  const init = initParams(model.params, keyFromSeed(0));
  const trainer = compileTraining(model, init, { optimizer: { kind: 'adan', lr: 1e-3 }, emaDecay: 0.9 });
  tf.dispose([...init.values()]);
  const x0 = tf.tensor4d(normal(keyFromSeed(1), 4 * 2 * 64), [4, 2, 8, 8]);
  const y = Int32Array.from([0, 1, 2, 0]);
  const losses: StepLosses[] = [];
  let atTwo = 0;
  for (let s = 0; s < steps; s++) {
    losses.push(await trainer.step(x0, y, foldIn(keyFromSeed(2), s)));
    if (s === 1) atTwo = tf.memory().numTensors;
  }
  const growth = tf.memory().numTensors - atTwo;
  const sampler = compileSampler(model, trainer.ema, { steps: 'ddim5', sampler: 'ddim', guidance: { kind: 'constant', scale: 2 }, guideChannels: 'all' });
  const x = sampler.sample(Int32Array.from([0, 1, 2, 0]), keyFromSeed(3));
  const sample = (await x.data()) as Float32Array;
  x.dispose();
  trainer.dispose();
  x0.dispose();
  return { losses, growth, sample };
}

test('webgpu trains (MDTv2, Adan, both branches) and samples with the cpu backend\'s numbers', async (t) => {
  const gpu = await webgpuAvailable();
  if (!gpu.ok) return t.skip(`webgpu unavailable: ${gpu.error}`);
  const cpu = await run('cpu', 6);
  const webgpu = await run('webgpu', 6);
  assert.equal(tf.getBackend(), 'webgpu');
  assert.equal(webgpu.growth, 0, 'live tensors grew across webgpu steps');
  for (const [i, l] of webgpu.losses.entries()) {
    const ref = cpu.losses[i]!;
    assert.equal(l.lenKeep, ref.lenKeep);
    for (const k of ['loss', 'm_loss'] as const) {
      assert.ok(Math.abs(l[k]! - ref[k]!) <= 2e-3 * Math.abs(ref[k]!), `step ${i} ${k}: webgpu ${l[k]} vs cpu ${ref[k]}`);
    }
  }
  const worst = webgpu.sample.reduce((m, v, i) => Math.max(m, Math.abs(v - cpu.sample[i]!)), 0);
  assert.ok(worst < 1e-2, `sampled images differ by up to ${worst}`);
});
