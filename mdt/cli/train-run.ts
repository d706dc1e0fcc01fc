/**
 * A training run: data → model → compiled training step, with periodic JSONL logs, a loss
 * plot, sample grids and checkpoints in one run directory. `resume` continues a killed run
 * bit for bit (weights, EMA, optimizer state, and the step-indexed keys and batches).
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync } from 'node:fs';
import { appendFile, mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../dsl/atomic-write.ts';
import { foldIn, keyFromSeed, split } from '../../dsl/random.ts';
import { initParams } from '../../compile/init.ts';
import { compileTraining, type StepLosses, type TrainOptions } from '../../compile/train.ts';
import { compileSampler } from '../../compile/sample.ts';
import { loadCheckpoint, saveCheckpoint } from '../../compile/checkpoint.ts';
import type { OptimizerConfig } from '../../compile/optim.ts';
import { namedConfig, type ModelConfig } from '../config.ts';
import { buildModel } from '../model.ts';
import type { ImageDataset } from '../data/dataset.ts';
import { batchAt } from '../data/batches.ts';
import { imageGrid, toUint8, writePng } from '../viz/png.ts';
import { writePlot } from '../viz/plot.ts';

export interface TrainRunOptions {
  /** `MDT-S/2`, `MDTv2-S/2`, `DiT-S/2`, … */
  readonly model: string;
  /** Overrides of the named config (size, channels, classes, decoder depth, mask ratio). */
  readonly overrides: Partial<ModelConfig>;
  readonly batchSize: number;
  readonly steps: number;
  readonly optimizer: OptimizerConfig;
  readonly emaDecay: number;
  readonly seed: number;
  readonly outDir: string;
  readonly resume: boolean;
  readonly logEvery: number;
  readonly sampleEvery: number;
  readonly checkpointEvery: number;
  /** Sampling for the periodic grids. */
  readonly sampleSteps: string;
  readonly cfgScale: number;
  readonly flip: boolean;
  readonly maskedBranch?: boolean;
}

export interface TrainRunHooks {
  /** Called after each step with its losses (for progress bars). */
  onStep?(step: number, losses: StepLosses): void;
  onMessage?(text: string): void;
}

export interface TrainRunResult {
  readonly runDir: string;
  readonly losses: readonly StepLosses[];
  readonly finalStep: number;
}

function runRecord(o: TrainRunOptions, c: ModelConfig, dataset: string): Record<string, unknown> {
  return { model: o.model, config: c, dataset, batchSize: o.batchSize, optimizer: o.optimizer, emaDecay: o.emaDecay, seed: o.seed, flip: o.flip, maskedBranch: o.maskedBranch ?? true };
}

/** The options that must match for a resumed run to continue the same computation. */
const RESUME_FIELDS = ['model', 'config', 'dataset', 'batchSize', 'optimizer', 'emaDecay', 'seed', 'flip', 'maskedBranch'] as const;

async function writeSamples(path: string, images: tf.Tensor4D, cols: number): Promise<void> {
  const [n, c, h, w] = images.shape;
  const data = toUint8((await images.data()) as Float32Array);
  await writePng(path, imageGrid(Float32Array.from(data, (v) => v / 127.5 - 1), n, c as 1 | 3, h, w, cols));
}

/** The log lines of steps ≤ `upTo` (a resumed run rewrites the steps after its checkpoint). */
async function truncateLog(path: string, upTo: number): Promise<StepLosses[]> {
  if (!existsSync(path)) return [];
  const kept: string[] = [];
  const losses: StepLosses[] = [];
  for (const line of (await readFile(path, 'utf8')).split('\n')) {
    if (line.trim() === '') continue;
    const rec = JSON.parse(line) as { step: number } & StepLosses;
    if (rec.step > upTo) continue;
    kept.push(line);
    losses.push(rec);
  }
  await writeFileAtomic(path, kept.map((l) => `${l}\n`).join(''));
  return losses;
}

export async function plotLosses(path: string, log: readonly ({ step: number } & StepLosses)[], title: string): Promise<void> {
  if (log.length < 2) return;
  const x = log.map((r) => r.step);
  const series = [{ name: 'full mse', x, y: log.map((r) => r.mse) }];
  if (log[0]!.m_mse !== undefined) series.push({ name: 'masked mse', x, y: log.map((r) => r.m_mse ?? NaN) });
  await writePlot(path, series, { title, xLabel: 'step', yLabel: 'loss', logY: true, smooth: Math.max(1, Math.floor(log.length / 50)) });
}

/** What to train on; `decode` maps samples to 1- or 3-channel images for the grids (e.g. the VAE decoder for latents). */
export interface TrainData {
  readonly name: string;
  readonly train: ImageDataset;
  readonly decode?: (samples: tf.Tensor4D) => tf.Tensor4D;
}

export async function trainRun(o: TrainRunOptions, data: TrainData, hooks: TrainRunHooks = {}): Promise<TrainRunResult> {
  const ds = data.train;
  const config = namedConfig(o.model, { inChannels: ds.channels, inputSize: ds.height, numClasses: ds.numClasses, ...o.overrides });
  if (ds.height !== config.inputSize || ds.width !== config.inputSize || ds.channels !== config.inChannels) {
    throw new Error(`dataset images are ${ds.channels}×${ds.height}×${ds.width} but the model expects ${config.inChannels}×${config.inputSize}×${config.inputSize}`);
  }
  const model = buildModel(config);
  const runDir = o.outDir;
  await mkdir(join(runDir, 'samples'), { recursive: true });
  const record = runRecord(o, config, data.name);
  const logPath = join(runDir, 'log.jsonl');
  const [initKey, stepKey, dataKey, sampleKey] = split(keyFromSeed(o.seed), 4) as [ReturnType<typeof keyFromSeed>, ReturnType<typeof keyFromSeed>, ReturnType<typeof keyFromSeed>, ReturnType<typeof keyFromSeed>];

  let start = 0;
  let trainOpts: TrainOptions = { optimizer: o.optimizer, emaDecay: o.emaDecay, maskedBranch: o.maskedBranch ?? true };
  let initial: Map<string, tf.Tensor>;
  let log: ({ step: number } & StepLosses)[] = [];
  if (o.resume && existsSync(join(runDir, 'latest'))) {
    const ck = await loadCheckpoint(runDir, model);
    const prev = ck.meta.run;
    const diff = RESUME_FIELDS.filter((f) => JSON.stringify(prev[f]) !== JSON.stringify(record[f]));
    if (diff.length > 0) throw new Error(`cannot resume ${runDir}: ${diff.map((f) => `${f} was ${JSON.stringify(prev[f])}, now ${JSON.stringify(record[f])}`).join('; ')}`);
    start = ck.meta.step;
    initial = ck.model;
    trainOpts = { ...trainOpts, resume: { ema: ck.ema, optimizerStep: ck.optimizerStep, optimizerSlots: ck.optimizerSlots } };
    log = (await truncateLog(logPath, start)) as typeof log;
    hooks.onMessage?.(`resuming ${runDir} at step ${start}`);
  } else {
    if (existsSync(join(runDir, 'latest'))) throw new Error(`${runDir} already holds a run; pass --resume to continue it or choose another --out`);
    initial = initParams(model.params, initKey);
    await writeFileAtomic(logPath, '');
  }
  await writeFileAtomic(join(runDir, 'run.json'), JSON.stringify(record, null, 1));
  const trainer = compileTraining(model, initial, trainOpts);
  tf.dispose([...initial.values()]);
  if (trainOpts.resume) tf.dispose([...trainOpts.resume.ema.values(), ...trainOpts.resume.optimizerSlots.values()]);

  const classes = Math.min(config.numClasses, 10);
  const perClass = 4;
  const gridLabels = Int32Array.from({ length: classes * perClass }, (_, i) => i % classes);
  const viewable = data.decode !== undefined || config.inChannels === 1 || config.inChannels === 3;
  if (!viewable) hooks.onMessage?.(`no sample grids: ${config.inChannels}-channel samples need a decoder (e.g. --vae) to become images`);
  const sampleGrid = async (step: number) => {
    if (!viewable) return;
    const sampler = compileSampler(model, trainer.ema, {
      steps: o.sampleSteps, sampler: o.sampleSteps.startsWith('ddim') ? 'ddim' : 'ddpm',
      guidance: o.cfgScale > 1 ? { kind: 'constant', scale: o.cfgScale } : null,
      guideChannels: config.inChannels >= 3 ? 'first3' : 'all',
    });
    const raw = sampler.sample(gridLabels, foldIn(sampleKey, step));
    const imgs = data.decode ? tf.tidy(() => data.decode!(raw)) : raw;
    if (imgs !== raw) raw.dispose();
    await writeSamples(join(runDir, 'samples', `step-${String(step).padStart(6, '0')}.png`), imgs, classes);
    imgs.dispose();
  };

  const losses: StepLosses[] = [];
  let pending = '';
  for (let step = start; step < o.steps; step++) {
    const batch = batchAt(ds, dataKey, step, o.batchSize, { flip: o.flip });
    const x0 = tf.tensor4d(batch.images, [o.batchSize, config.inChannels, config.inputSize, config.inputSize]);
    const l = await trainer.step(x0, batch.labels, foldIn(stepKey, step));
    x0.dispose();
    losses.push(l);
    const done = step + 1;
    hooks.onStep?.(done, l);
    if (done % o.logEvery === 0 || done === o.steps) {
      const rec = { step: done, ...l };
      log.push(rec);
      pending += `${JSON.stringify(rec)}\n`;
      await appendFile(logPath, pending);
      pending = '';
    }
    if (done % o.checkpointEvery === 0 || done === o.steps) {
      await saveCheckpoint(runDir, trainer, done, record);
      await plotLosses(join(runDir, 'loss.png'), log, `${o.model} on ${data.name}`);
    }
    if (done % o.sampleEvery === 0 || done === o.steps) await sampleGrid(done);
  }
  trainer.dispose();
  return { runDir, losses, finalStep: o.steps };
}
