/**
 * Notebook 06 — the paper's claim at small scale: MDT v1 and DiT of the same size trained on
 * Fashion-MNIST (32×32, the main job's input) for the same steps, seed and data order, with FID
 * and class accuracy of the EMA weights measured every EVERY steps on the Fashion-MNIST
 * classifier (mdt eval's feature network). One plot: FID against steps and against wall-clock
 * for both; a table on stdout (the README's comes from it).
 *   npx tsx examples/06-mdt-vs-dit-fid.ts [STEPS=2000] [EVERY=250] [SAMPLES=1000] [OUT_DIR=runs/notebooks/06]
 */
import { join } from 'node:path';
import { mkdir, rm } from 'node:fs/promises';
import { startRuntime } from '../runtime/start.ts';
import { trainRun } from '../compile/train-run.ts';
import { classifierView, trainingEvaluator } from '../mdt/eval/feature-nets.ts';
import { writePanels } from '../mdt/viz/plot.ts';
import { flipsByDefault, lrSchedule, TRAIN_DEFAULTS } from '../cli/train.ts';
import { modelLabel, namedConfig } from '../mdt/config.ts';

const steps = Number(process.argv[2] ?? 2000);
const every = Number(process.argv[3] ?? 250);
const samples = Number(process.argv[4] ?? 1000);
const out = process.argv[5] ?? 'runs/notebooks/06';
const info = await startRuntime();
console.log(`backend: ${info.name}`);
await mkdir(out, { recursive: true });

const train = classifierView('fashion-mnist', 'train');
const d = TRAIN_DEFAULTS;
const evaluator = await trainingEvaluator('fashion-mnist', { samples, steps: d.sampleSteps, cfgScale: d.cfgScale, seed: 0 });
interface Point { readonly step: number; readonly seconds: number; readonly fid: number; readonly accuracy: number }
const results: { model: string; points: Point[] }[] = [];
// The main job's size for both; the MDT with one decoder block (the main job's model until DiT replaced it).
const sizeOf = (model: string) => (model.startsWith('MDT') ? { ...d.overrides, decodeLayer: 1 } : d.overrides);
for (const model of ['MDT-S/2', 'DiT-S/2']) {
  const runDir = join(out, model.replace('/', '_'));
  await rm(runDir, { recursive: true, force: true });
  const points: Point[] = [];
  // Wall-clock of training only: the evaluations are paused out of it.
  let trainSeconds = 0, since = performance.now();
  await trainRun({
    model, overrides: sizeOf(model), batchSize: d.batchSize, steps, optimizer: { kind: 'adamw', lr: d.lr, schedule: lrSchedule({ lrSchedule: d.lrSchedule, steps }) }, emaDecay: d.ema, seed: 0,
    outDir: runDir, resume: false, logEvery: d.logEvery, sampleEvery: steps, checkpointEvery: steps, sampleSteps: d.sampleSteps, cfgScale: d.cfgScale,
    flip: flipsByDefault('fashion-mnist'), evalEvery: every,
  }, { name: 'fashion-mnist', train }, {
    async evaluate(step, m, ema) {
      trainSeconds += (performance.now() - since) / 1000;
      const r = await evaluator.evaluate(step, m, ema);
      points.push({ step, seconds: trainSeconds, fid: r.fid!, accuracy: r.class_accuracy! });
      console.log(`${model} step ${step}: FID ${r.fid!.toFixed(2)}, class accuracy ${(100 * r.class_accuracy!).toFixed(1)}%, ${trainSeconds.toFixed(0)} s of training`);
      since = performance.now();
      return r;
    },
  });
  results.push({ model: modelLabel(model, namedConfig(model, sizeOf(model))), points });
}
evaluator.dispose();

const series = (x: (p: Point) => number) => results.map((r) => ({ name: r.model, x: r.points.map(x), y: r.points.map((p) => p.fid) }));
const path = join(out, 'mdt-vs-dit-fid.png');
await writePanels(path, [
  { series: series((p) => p.step), options: { title: `FID (${samples} EMA samples, Fashion-MNIST classifier) vs steps`, xLabel: 'step', yLabel: 'FID', logY: true } },
  { series: series((p) => p.seconds), options: { title: 'FID vs training wall-clock', xLabel: 'seconds', yLabel: 'FID', logY: true } },
]);
console.log(`wrote ${path}\n`);
console.log(`| step | ${results.map((r) => `${r.model} FID | acc | s`).join(' | ')} |`);
console.log(`|---|${results.map(() => '---|---|---').join('|')}|`);
for (let i = 0; i < results[0]!.points.length; i++) {
  console.log(`| ${results[0]!.points[i]!.step} | ${results.map((r) => { const p = r.points[i]!; return `${p.fid.toFixed(1)} | ${(100 * p.accuracy).toFixed(0)}% | ${p.seconds.toFixed(0)}`; }).join(' | ')} |`);
}
