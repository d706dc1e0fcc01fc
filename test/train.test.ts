/** Training and sampling end to end on a tiny MDT: loss goes down, memory stays flat, runs resume exactly. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initBackend } from '../runtime/backend.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { foldIn, keyFromSeed } from '../dsl/random.ts';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { initParams } from '../compile/init.ts';
import { compileTraining } from '../compile/train.ts';
import { compileSampler } from '../compile/sample.ts';
import { trainRun, type TrainRunOptions } from '../compile/train-run.ts';
import { syntheticDataset } from './synthetic-dataset.ts';

const tiny = (name: string) => namedConfig(name, { depth: 3, hiddenSize: 32, numHeads: 2, inputSize: 8, patchSize: 2, inChannels: 1, numClasses: 3, decodeLayer: 1 });

test('a tiny MDT trains on wasm: loss falls over a few hundred steps, live tensors stay flat', async () => {
  await initBackend({ prefer: 'wasm' });
  registerMissingKernels();
  const model = buildModel(tiny('MDT-S/2'));
  const init = initParams(model.params, keyFromSeed(0));
  const trainer = compileTraining(model, init, { optimizer: { kind: 'adamw', lr: 2e-3 }, emaDecay: 0.99 });
  tf.dispose([...init.values()]);
  // A fixed batch of smooth images (a learnable signal, unlike white noise).
  const img = new Float32Array(8 * 64).map((_, i) => Math.sin((i % 8) / 2 + Math.floor(i / 64)) * 0.8);
  const x0 = tf.tensor4d(img, [8, 1, 8, 8]);
  const y = Int32Array.from({ length: 8 }, (_, i) => i % 3);
  const losses: number[] = [];
  let at10 = 0;
  for (let s = 0; s < 200; s++) {
    losses.push((await trainer.step(x0, y, foldIn(keyFromSeed(1), s))).loss);
    if (s === 9) at10 = tf.memory().numTensors;
  }
  assert.equal(tf.memory().numTensors, at10, 'live tensors after step 200 vs step 10');
  const mean = (a: number[]) => a.reduce((p, v) => p + v, 0) / a.length;
  const first = mean(losses.slice(0, 20)), last = mean(losses.slice(-20));
  assert.ok(last < 0.5 * first, `loss ${first.toFixed(3)} → ${last.toFixed(3)}`);

  const sampler = compileSampler(model, trainer.ema, { steps: '10', sampler: 'ddpm', guidance: { kind: 'constant', scale: 2 }, guideChannels: 'all' });
  const before = tf.memory().numTensors;
  // The first loop compiles the step and keeps its folded constants (schedule tables, the
  // relative-position index) until the sampler is disposed; later loops add nothing.
  sampler.sample(Int32Array.from([0, 1]), keyFromSeed(2)).dispose();
  const afterOne = tf.memory().numTensors;
  for (let i = 0; i < 9; i++) sampler.sample(Int32Array.from([0, 1]), keyFromSeed(3 + i)).dispose();
  assert.equal(tf.memory().numTensors, afterOne, 'live tensors after one sampling loop vs ten');
  sampler.dispose();
  assert.equal(tf.memory().numTensors, before, 'live tensors once the sampler is disposed');
  trainer.dispose();
  x0.dispose();
});

for (const name of ['MDT-S/2', 'MDTv2-S/2'] as const) {
  test(`${name}: a resumed run continues bit for bit`, async () => {
    await initBackend({ prefer: 'wasm' });
    registerMissingKernels();
    const dir = await mkdtemp(join(tmpdir(), 'mdt-resume-'));
    const c = tiny(name);
    const opts = (out: string, steps: number, resume: boolean): TrainRunOptions => ({
      model: name, overrides: { depth: c.depth, hiddenSize: c.hiddenSize, numHeads: c.numHeads, patchSize: 2, decodeLayer: 1 },
      batchSize: 4, steps, optimizer: name === 'MDTv2-S/2' ? { kind: 'adan', lr: 1e-3, maxGradNorm: 1 } : { kind: 'adamw', lr: 1e-3 },
      emaDecay: 0.9, seed: 7, outDir: out, resume, logEvery: 1, sampleEvery: 1000, checkpointEvery: 3, sampleSteps: 'ddim5', cfgScale: 1, flip: true,
    });
    const data = { name: 'synthetic', train: syntheticDataset(20) };
    try {
      const whole = await trainRun(opts(join(dir, 'a'), 7, false), data);
      await trainRun(opts(join(dir, 'b'), 3, false), data);
      await assert.rejects(trainRun(opts(join(dir, 'b'), 7, false), data), /already holds a run \(run\.json\); pass --resume/);
      const resumed = await trainRun(opts(join(dir, 'b'), 7, true), data);
      assert.deepEqual(resumed.losses, whole.losses.slice(3));
      const logA = await readFile(join(dir, 'a', 'log.jsonl'), 'utf8');
      const logB = await readFile(join(dir, 'b', 'log.jsonl'), 'utf8');
      assert.equal(logB, logA);
      for (const f of ['loss.png', 'samples/step-000007.png', 'latest', 'checkpoints/000007/model.safetensors', 'checkpoints/000007/opt.safetensors']) assert.ok(existsSync(join(dir, 'b', f)), f);
      assert.ok(existsSync(join(dir, 'b', 'checkpoints', '000006')) && !existsSync(join(dir, 'b', 'checkpoints', '000003')), 'the newest two checkpoints are kept, older ones retired');
      await assert.rejects(trainRun({ ...opts(join(dir, 'b'), 9, true), seed: 8 }, data), /cannot resume .*seed was 7, now 8/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
}
