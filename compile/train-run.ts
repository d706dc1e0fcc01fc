/**
 * A training run: data → model → compiled training step, with periodic JSONL logs, a loss
 * plot, sample grids and checkpoints in one run directory. `resume` continues a killed run
 * bit for bit (weights, EMA, optimizer state, and the step-indexed keys and batches).
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ioError, removeStaleTemps, writeFileAtomic } from '../formats/atomic-write.ts';
import { foldIn, keyFromSeed, split } from '../dsl/random.ts';
import { initParams } from './init.ts';
import { compileTraining, type StepLosses, type Trainer, type TrainOptions } from './train.ts';
import { compileSampler } from './sample.ts';
import { loadCheckpoint, loadNewestValidCheckpoint, NonFiniteError, nonFiniteState, readJsonFile, saveCheckpoint, type LoadedCheckpoint } from './checkpoint.ts';
import type { OptimizerConfig } from './optim.ts';
import { modelLabel, namedConfig, type ModelConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import type { ImageDataset } from '../mdt/data/dataset.ts';
import { batchAt } from '../mdt/data/batches.ts';
import { imageGrid, toUint8, writePng } from '../mdt/viz/png.ts';
import { writePanels, writePlot } from '../mdt/viz/plot.ts';
import { UsageError } from '../dsl/errors.ts';
import { appendLogLine, keepLogUpTo, type EvalMetrics, type LogRecord } from './run-log.ts';

/** What a non-finite loss does: stop the run, or skip the step (see trainRun). */
export type NonFiniteAction = 'stop' | 'skip';

/** Defaults of the optional run options (the CLI's too). */
export const RUN_DEFAULTS = { keep: 2, milestoneEvery: 0, onNonFinite: 'stop' as NonFiniteAction };

/**
 * With `skip`, this many skipped steps in a row stop the run anyway: the model has diverged and
 * every further skip would reload and replay for nothing.
 */
export const MAX_SKIPS_IN_A_ROW = 5;

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
  /** See TrainOptions.minSnrGamma (absent: the variant's recipe). */
  readonly minSnrGamma?: number | null;
  /** Checkpoints kept: the newest `keep`, and every `milestoneEvery`-th step's for good. */
  readonly keep?: number;
  readonly milestoneEvery?: number;
  readonly onNonFinite?: NonFiniteAction;
  /** Steps between evaluations of the EMA weights (hooks.evaluate); 0 or absent: none. */
  readonly evalEvery?: number;
}

export interface TrainRunHooks {
  /** Called after each step with its losses (for progress bars). */
  onStep?(step: number, losses: StepLosses): void;
  onMessage?(text: string): void;
  /**
   * Awaited once the run directory is accepted (a new run, or a resume that matches run.json),
   * before run.json is written: what the caller records here exists whenever run.json does.
   */
  onAccepted?(): Promise<void>;
  /** Sample quality of the EMA weights at `step` (every `evalEvery` steps and at the end), logged with that step. */
  evaluate?(step: number, model: DiffusionModel, ema: ReadonlyMap<string, tf.Tensor>): Promise<EvalMetrics>;
}

export interface TrainRunResult {
  readonly runDir: string;
  /** Losses of the steps trained by this call (skipped steps have none). */
  readonly losses: readonly StepLosses[];
  readonly startStep: number;
  readonly finalStep: number;
}

function runRecord(o: TrainRunOptions, c: ModelConfig, dataset: string): Record<string, unknown> {
  return { model: o.model, config: c, dataset, batchSize: o.batchSize, optimizer: o.optimizer, emaDecay: o.emaDecay, seed: o.seed, flip: o.flip, maskedBranch: o.maskedBranch ?? true,
    // Recorded only when asked for, so that runs from before the flag resume as they were.
    ...(o.minSnrGamma !== undefined && { minSnrGamma: o.minSnrGamma }) };
}

/** The options that must match for a resumed run to continue the same computation. */
const RESUME_FIELDS = ['model', 'config', 'dataset', 'batchSize', 'optimizer', 'emaDecay', 'seed', 'flip', 'maskedBranch', 'minSnrGamma'] as const;

/**
 * run.json is the run's contract from the moment it exists: a new run never replaces one, and a
 * resume whose settings differ from it is refused, whether or not a checkpoint was made yet.
 */
async function checkRunIdentity(runDir: string, record: Record<string, unknown>, resume: boolean): Promise<void> {
  const path = join(runDir, 'run.json');
  if (!resume) {
    if (existsSync(path)) throw new UsageError(`${runDir} already holds a run (run.json); pass --resume to continue it or choose another --out`);
    return;
  }
  if (!existsSync(path)) throw new UsageError(`--resume: ${runDir} holds no run (no run.json); give the --out of an existing run`);
  const prev = await readJsonFile(path, 'the settings of a run (written by mdt train)') as Record<string, unknown> | null;
  if (prev === null || typeof prev !== 'object') throw new Error(`${path}: expected an object of run settings, got ${JSON.stringify(prev)}`);
  const diff = RESUME_FIELDS.filter((f) => JSON.stringify(prev[f]) !== JSON.stringify(record[f]));
  if (diff.length > 0) {
    throw new UsageError(`cannot resume ${runDir}: ${diff.map((f) => `${f} was ${JSON.stringify(prev[f])}, now ${JSON.stringify(record[f])}`).join('; ')} (run.json records the run; drop the flags that change it)`);
  }
}

/** "loss NaN, m_loss Infinity" when a step's objective is not finite; null when it is. */
function nonFiniteLosses(l: StepLosses): string | null {
  const bad = (['loss', 'm_loss'] as const).filter((k) => l[k] !== undefined && !Number.isFinite(l[k]));
  return bad.length === 0 ? null : bad.map((k) => `${k} ${String(l[k])}`).join(', ');
}

async function writeSamples(path: string, images: tf.Tensor4D, cols: number): Promise<void> {
  const [n, c, h, w] = images.shape;
  const data = toUint8((await images.data()) as Float32Array);
  await writePng(path, imageGrid(Float32Array.from(data, (v) => v / 127.5 - 1), n, c as 1 | 3, h, w, cols));
}

/** The losses; below them, where the run evaluates, FID and class accuracy of the EMA weights. */
export async function plotLosses(path: string, log: readonly LogRecord[], title: string): Promise<void> {
  if (log.length < 2) return;
  const x = log.map((r) => r.step);
  const series = [{ name: 'full mse', x, y: log.map((r) => r.mse) }];
  if (log[0]!.m_mse !== undefined) series.push({ name: 'masked mse', x, y: log.map((r) => r.m_mse ?? NaN) });
  const losses = { series, options: { title, xLabel: 'step', yLabel: 'loss', logY: true, smooth: Math.max(1, Math.floor(log.length / 50)) } };
  const evals = log.filter((r) => r.fid !== undefined);
  if (evals.length === 0) return writePlot(path, losses.series, losses.options);
  const ex = evals.map((r) => r.step);
  await writePanels(path, [
    losses,
    { series: [{ name: 'FID', x: ex, y: evals.map((r) => r.fid!) }], options: { title: `FID of the EMA weights (${evals[0]!.eval_samples ?? '?'} samples)`, xLabel: 'step', yLabel: 'FID', logY: true, height: 300 } },
    { series: [{ name: 'class accuracy %', x: ex, y: evals.map((r) => 100 * (r.class_accuracy ?? NaN)) }], options: { title: 'class accuracy of the EMA samples', xLabel: 'step', yLabel: '%', height: 300 } },
  ]);
}

/** What to train on; `decode` maps samples to 1- or 3-channel images for the grids (e.g. the VAE decoder for latents). */
export interface TrainData {
  readonly name: string;
  readonly train: ImageDataset;
  readonly decode?: (samples: tf.Tensor4D) => tf.Tensor4D;
}

/** A state training can go back to: a checkpoint folder, or (null) the seed's initial weights at step 0. */
interface RestorePoint {
  readonly step: number;
  readonly dir: string | null;
}

/**
 * Trains `o.steps` steps (from the newest valid checkpoint with `o.resume`), logging, plotting,
 * sampling and checkpointing on the way.
 *
 * A step whose loss is not finite stops the run (`onNonFinite: 'stop'`, an error naming the step
 * and the values; nothing of it is saved). With 'skip' the step is undone: the trainer applies
 * its update inside step(), so training goes back to the last restore point (the newest
 * checkpoint of this run, or its start) and replays the steps since then, which are
 * deterministic, leaving out every skipped one; it then goes on with the next batch. The state
 * is exactly what it would be had the skipped batches not been there, and a resumed run skips
 * the same steps. A skip costs up to `checkpointEvery` steps of replay.
 */
export async function trainRun(o: TrainRunOptions, data: TrainData, hooks: TrainRunHooks = {}): Promise<TrainRunResult> {
  const ds = data.train;
  const config = namedConfig(o.model, { inChannels: ds.channels, inputSize: ds.height, numClasses: ds.numClasses, ...o.overrides });
  if (ds.height !== config.inputSize || ds.width !== config.inputSize || ds.channels !== config.inChannels) {
    throw new Error(`dataset images are ${ds.channels}×${ds.height}×${ds.width} but the model expects ${config.inChannels}×${config.inputSize}×${config.inputSize}`);
  }
  const say = (text: string) => hooks.onMessage?.(text);
  const history = { keep: o.keep ?? RUN_DEFAULTS.keep, milestoneEvery: o.milestoneEvery ?? RUN_DEFAULTS.milestoneEvery };
  const onNonFinite = o.onNonFinite ?? RUN_DEFAULTS.onNonFinite;
  const model = buildModel(config);
  const runDir = o.outDir;
  const record = runRecord(o, config, data.name);
  const logPath = join(runDir, 'log.jsonl');
  const [initKey, stepKey, dataKey, sampleKey] = split(keyFromSeed(o.seed), 4) as [ReturnType<typeof keyFromSeed>, ReturnType<typeof keyFromSeed>, ReturnType<typeof keyFromSeed>, ReturnType<typeof keyFromSeed>];

  await checkRunIdentity(runDir, record, o.resume);
  for (const dir of [runDir, join(runDir, 'checkpoints'), join(runDir, 'samples')]) {
    const removed = await removeStaleTemps(dir);
    if (removed.length > 0) say(`removed ${removed.length} leftover(s) of interrupted writes in ${dir}: ${removed.join(', ')}`);
  }
  try {
    await mkdir(join(runDir, 'samples'), { recursive: true });
  } catch (e) {
    throw ioError('creating', join(runDir, 'samples'), e);
  }

  const ck = o.resume ? await loadNewestValidCheckpoint(runDir, model, say) : null;
  const start = ck?.meta.step ?? 0;
  if (o.steps < start) {
    if (ck) disposeCheckpoint(ck);
    throw new UsageError(`--steps ${o.steps}: ${runDir} is already at step ${start}; a run cannot go back (pass --steps above ${start} to train on)`);
  }
  let log: LogRecord[] = [];
  if (o.resume) {
    log = await keepLogUpTo(logPath, start, say);
    say(ck ? `resuming ${runDir} at step ${start}` : `resuming ${runDir}: it has no valid checkpoint yet, so it starts from step 0 with the settings of its run.json`);
  }
  await hooks.onAccepted?.();
  if (!o.resume) await writeFileAtomic(logPath, '');
  await writeFileAtomic(join(runDir, 'run.json'), JSON.stringify(record, null, 1));

  const baseOpts: TrainOptions = { optimizer: o.optimizer, emaDecay: o.emaDecay, maskedBranch: o.maskedBranch ?? true, ...(o.minSnrGamma !== undefined && { minSnrGamma: o.minSnrGamma }) };
  /** A trainer from a checkpoint (its tensors are consumed) or from the seed's initial weights. */
  const compileFrom = (from: LoadedCheckpoint | null): Trainer => {
    const initial = from?.model ?? initParams(model.params, initKey);
    const t = compileTraining(model, initial, from ? { ...baseOpts, resume: { ema: from.ema, optimizerStep: from.optimizerStep, optimizerSlots: from.optimizerSlots } } : baseOpts);
    tf.dispose([...initial.values()]);
    if (from) tf.dispose([...from.ema.values(), ...from.optimizerSlots.values()]);
    return t;
  };
  let trainer = compileFrom(ck);
  let restorePoint: RestorePoint = { step: start, dir: ck?.dir ?? null };
  /** Steps (0-based) left out since the restore point: a replay leaves them out again. */
  const skipped = new Set<number>();

  const classes = Math.min(config.numClasses, 10);
  const perClass = 4;
  const gridLabels = Int32Array.from({ length: classes * perClass }, (_, i) => i % classes);
  const viewable = data.decode !== undefined || config.inChannels === 1 || config.inChannels === 3;
  if (!viewable) say(`no sample grids: ${config.inChannels}-channel samples need a decoder (e.g. --vae) to become images`);
  const sampleGrid = async (step: number) => {
    if (!viewable) return;
    const sampler = compileSampler(model, trainer.ema, {
      steps: o.sampleSteps, sampler: o.sampleSteps.startsWith('ddim') ? 'ddim' : 'ddpm',
      guidance: o.cfgScale > 1 ? { kind: 'constant', scale: o.cfgScale } : null,
      guideChannels: config.inChannels >= 3 ? 'first3' : 'all',
    });
    const raw = sampler.sample(gridLabels, foldIn(sampleKey, step));
    sampler.dispose();
    const imgs = data.decode ? tf.tidy(() => data.decode!(raw)) : raw;
    if (imgs !== raw) raw.dispose();
    await writeSamples(join(runDir, 'samples', `step-${String(step).padStart(6, '0')}.png`), imgs, classes);
    imgs.dispose();
  };
  /** Step `step` (0-based) of the run: its batch and its keys depend on nothing else. */
  const trainStep = async (step: number): Promise<StepLosses> => {
    const batch = batchAt(ds, dataKey, step, o.batchSize, { flip: o.flip });
    const x0 = tf.tensor4d(batch.images, [o.batchSize, config.inChannels, config.inputSize, config.inputSize]);
    try {
      return await trainer.step(x0, batch.labels, foldIn(stepKey, step));
    } finally {
      x0.dispose();
    }
  };
  const newest = () => (restorePoint.dir === null ? 'none has been written yet' : `the newest is ${restorePoint.dir} (step ${restorePoint.step})`);
  /**
   * Undoes step `step` (0-based): back to the restore point, then the steps since, skipped ones
   * left out. Should the state still not be finite, the update before was the culprit (its
   * losses, computed before it, were finite), and it is left out too. Returns the steps left out.
   */
  const skipStep = async (step: number): Promise<{ left: number[]; replayed: number }> => {
    skipped.add(step);
    const left = [step];
    let replayed = 0;
    for (;;) {
      const from = restorePoint.dir === null ? null : await loadCheckpoint(restorePoint.dir, model);
      trainer.dispose();
      trainer = compileFrom(from);
      let last = -1;
      for (let s = restorePoint.step; s < step; s++) {
        if (skipped.has(s)) continue;
        const bad = nonFiniteLosses(await trainStep(s));
        if (bad !== null) throw new Error(`replaying step ${s + 1} after a skip gave ${bad}, where it gave finite losses before: this backend is not deterministic, so --on-nan skip cannot undo steps on it`);
        last = s;
        replayed++;
      }
      const bad = await nonFiniteState(trainer);
      if (bad === null) return { left, replayed };
      // Restore points are checked checkpoints or the initial weights: this would be a bug, not a bad step.
      if (last < 0) throw new Error(`the restore point at step ${restorePoint.step} is not finite (${bad})`);
      skipped.add(last);
      left.unshift(last);
    }
  };
  /** A step (0-based) that made something non-finite: stops the run, or skips it. */
  const badStep = async (step: number, what: string): Promise<void> => {
    const where = `step ${step + 1}: ${what}`;
    if (onNonFinite === 'stop') throw new Error(`${where}. Training stopped; nothing of this step was saved (of the checkpoints, ${newest()}). Lower --lr, or pass --on-nan skip to skip such steps`);
    const { left, replayed } = await skipStep(step);
    let inARow = 0;
    while (skipped.has(step - inARow)) inARow++;
    if (inARow >= MAX_SKIPS_IN_A_ROW) throw new Error(`${where}: ${inARow} steps in a row (${step + 2 - inARow} to ${step + 1}) had to be skipped: the model has diverged. Training stopped (of the checkpoints, ${newest()}); lower --lr`);
    const from = restorePoint.dir === null ? "the run's initial weights" : `checkpoint ${restorePoint.dir}`;
    say(`${where}: skipped step(s) ${left.map((s) => s + 1).join(', ')} (back to ${from}, ${replayed} step(s) replayed); going on with step ${step + 2}'s batch`);
  };
  const save = async (step: number) => {
    restorePoint = { step, dir: await saveCheckpoint(runDir, trainer, step, record, history) };
  };

  const losses: StepLosses[] = [];
  try {
    for (let step = start; step < o.steps; step++) {
      const l = await trainStep(step);
      const done = step + 1;
      const bad = nonFiniteLosses(l);
      if (bad !== null) await badStep(step, bad);
      else {
        losses.push(l);
        hooks.onStep?.(done, l);
        const evaluating = hooks.evaluate !== undefined && (o.evalEvery ?? 0) > 0 && (done % o.evalEvery! === 0 || done === o.steps);
        if (done % o.logEvery === 0 || done === o.steps || evaluating) {
          const rec = { step: done, ...l, ...(evaluating ? await hooks.evaluate!(done, model, trainer.ema) : {}) };
          log.push(rec);
          await appendLogLine(logPath, rec);
        }
      }
      if (done % o.checkpointEvery === 0 || done === o.steps) {
        try {
          await save(done);
        } catch (e) {
          if (!(e instanceof NonFiniteError)) throw e;
          // The losses of a step are computed before its update: only the checkpoint sees what the update made.
          await badStep(step, `its update made the weights non-finite (${e.message})`);
          await save(done);
        }
        await plotLosses(join(runDir, 'loss.png'), log, `${modelLabel(o.model, config)} on ${data.name}`);
      }
      if (done % o.sampleEvery === 0 || done === o.steps) await sampleGrid(done);
    }
  } finally {
    trainer.dispose();
  }
  return { runDir, losses, startStep: start, finalStep: o.steps };
}

function disposeCheckpoint(ck: LoadedCheckpoint): void {
  tf.dispose([...ck.model.values(), ...ck.ema.values(), ...ck.optimizerSlots.values()]);
}
