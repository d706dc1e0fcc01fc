/**
 * Notebook 02 — MDT and DiT of the same size, trained on the built-in data for the same number
 * of steps; both loss curves in one plot, and each model's samples.
 *   npx tsx examples/02-mdt-vs-dit.ts [STEPS=300] [OUT_DIR=runs/notebooks/02]
 */
import { noMoreArgs, pathArg, positiveIntArg } from './notebook.ts';
import { join } from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
import { startRuntime } from '../runtime/start.ts';
import { loadBuiltinDataset } from '../mdt/data/builtin.ts';
import { resizeTo } from '../mdt/data/resize.ts';
import { trainRun } from '../compile/train-run.ts';
import { movingAverage, writePlot } from '../mdt/viz/plot.ts';

const steps = positiveIntArg(0, 'STEPS', 300);
const out = pathArg(1, 'OUT_DIR', 'runs/notebooks/02');
noMoreArgs(2, '[STEPS=300] [OUT_DIR=runs/notebooks/02]');
const info = await startRuntime();
console.log(`backend: ${info.name}`);
await mkdir(out, { recursive: true });

// Fashion-MNIST at 16×16, 8×8 tokens of 2×2 pixels: small enough to train in minutes on a CPU.
const train = resizeTo(loadBuiltinDataset('fashion-mnist', 'train'), 16, 'resize');
const size = { depth: 4, hiddenSize: 64, numHeads: 4, patchSize: 2, decodeLayer: 1 };
const curves = [];
for (const model of ['MDT-S/2', 'DiT-S/2']) {
  const runDir = join(out, model.replace('/', '_'));
  await rm(runDir, { recursive: true, force: true });
  const t0 = performance.now();
  const r = await trainRun({
    model, overrides: size, batchSize: 32, steps, optimizer: { kind: 'adamw', lr: 1e-3 }, emaDecay: 0.995, seed: 0,
    outDir: runDir, resume: false, logEvery: 10, sampleEvery: steps, checkpointEvery: steps, sampleSteps: 'ddim25', cfgScale: 2, flip: false,
  }, { name: 'fashion-mnist', train });
  console.log(`${model}: ${steps} steps in ${((performance.now() - t0) / 1000).toFixed(0)} s, final mse ${r.losses.at(-1)!.mse.toFixed(4)} → ${runDir}/samples`);
  curves.push({ name: `${model} mse (full branch)`, y: Array.from(movingAverage(r.losses.map((l) => l.mse), 10)) });
}
const path = join(out, 'mdt-vs-dit.png');
await writePlot(path, curves, { title: `MDT vs DiT, same size, ${steps} steps on Fashion-MNIST 16x16`, xLabel: 'step', yLabel: 'mse (moving average 10)', logY: true });
console.log(`wrote ${path}`);
