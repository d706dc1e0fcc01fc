/**
 * `mdt train`: a training run from flags. The resolved flags are kept in RUN/cli.json, so
 * `mdt train --out RUN --resume` continues a run without repeating them (flags given again
 * override, e.g. a larger --steps).
 */
import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { writeFileAtomic } from '../formats/atomic-write.ts';
import { readJsonFile } from '../compile/checkpoint.ts';
import type { LrSchedule, OptimizerConfig } from '../compile/optim.ts';
import { modelLabel, namedConfig } from '../mdt/config.ts';
import { BUILTIN_DATASETS, DEFAULT_DATASET, loadBuiltinDataset, type BuiltinDataset } from '../mdt/data/builtin.ts';
import type { ImageDataset } from '../mdt/data/dataset.ts';
import { loadImageFolder, type LabelSource } from '../mdt/data/image-folder.ts';
import { resizeTo } from '../mdt/data/resize.ts';
import { openLatents, type LatentDataset } from '../mdt/vae/latents.ts';
import type * as tf from '@tensorflow/tfjs';
import { MAX_SKIPS_IN_A_ROW, RUN_DEFAULTS, trainRun, type NonFiniteAction, type TrainRunResult } from '../compile/train-run.ts';
import { checkOutputDir } from './output-dir.ts';
import { openVae } from './vae-file.ts';
import { say, type CliIO } from './io.ts';
import {
  addSizeOptions, backendOption, intArg, modelNameArg, numberArg, option, respacingArg, sanitize,
  sizeOverrides, startBackend, timestamp, UsageError, type BackendChoice, type SizeOverrides,
} from './options.ts';
import { startProgress, type Progress } from './progress.ts';
import { trainingEvaluator, type TrainingEvaluator } from '../mdt/eval/feature-nets.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';

/** Every default of `mdt train`, in one place. */
/**
 * The defaults are the main job (`npm start`): a small DiT on Fashion-MNIST padded to 32×32,
 * 8×8 tokens of 4×4 pixels, sized to train in under 10 minutes on a 2-core CPU (wasm backend).
 * A DiT rather than an MDT: at this size and budget an MDT step (full + masked branch) costs
 * 2.1× a DiT step and does not learn more per step (README, "How these defaults were chosen").
 * The EMA decay is short (0.99) because the run is short: at 0.9999 the EMA would still be
 * mostly the initial weights after a few hundred steps.
 */
export const TRAIN_DEFAULTS = {
  model: 'DiT-S/2',
  /** Size overrides applied when --model is left at its default. */
  overrides: { depth: 4, hiddenSize: 96, numHeads: 4, patchSize: 4 } as SizeOverrides,
  /** The main job's min-SNR γ, also only with the default --model (a named model keeps its official recipe). */
  minSnr: 5,
  data: DEFAULT_DATASET as string,
  labels: 'folder' as LabelSource,
  imageSize: 32,
  batchSize: 32,
  lr: 2e-3,
  lrSchedule: 'cosine' as LrSchedule['decay'],
  /** Warm-up steps when --warmup is not given: this many, at most a tenth of the schedule's horizon. */
  warmup: 100,
  /** Where a cosine schedule ends: this fraction of --lr. */
  lrFinalRatio: 0.1,
  weightDecay: 0,
  /** Adan's global gradient-norm clip (MDTv2's recipe); AdamW does not clip. */
  adanMaxGradNorm: 1.0,
  ema: 0.99,
  steps: 3600,
  seed: 0,
  logEvery: 10,
  sampleEvery: 900,
  ckptEvery: 100,
  /** Steps between FID / class-accuracy evaluations of the EMA weights (0: none), and their sample count. */
  evalEvery: 0,
  evalSamples: 1000,
  ...RUN_DEFAULTS,
  sampleSteps: 'ddim10',
  cfgScale: 4,
};

const CLI_RECORD = 'cli.json';
/** Flags that describe this invocation rather than the run. */
const NOT_RECORDED = new Set(['resume', 'out', 'backend']);

interface TrainFlags extends SizeOverrides {
  model: string;
  data: string;
  labels: LabelSource;
  imageSize: number;
  latents?: string;
  vae?: string;
  batchSize: number;
  lr: number;
  lrSchedule: LrSchedule['decay'];
  warmup?: number;
  lrDecaySteps?: number;
  optimizer?: 'adamw' | 'adan';
  weightDecay: number;
  maxGradNorm?: number;
  minSnr?: number;
  ema: number;
  steps: number;
  seed: number;
  backend: BackendChoice;
  out?: string;
  resume: boolean;
  logEvery: number;
  sampleEvery: number;
  ckptEvery: number;
  keep: number;
  milestoneEvery: number;
  onNan: NonFiniteAction;
  sampleSteps: string;
  cfgScale: number;
  flip?: boolean;
  evalEvery: number;
  evalSamples: number;
}

/** The flags once the defaults that depend on other flags are filled in (and recorded). */
type ResolvedTrainFlags = TrainFlags & { readonly flip: boolean; readonly lrDecaySteps: number };

/**
 * Random left–right mirroring by default for image folders and latents (as the official
 * training), not for the built-in data: mirrored digits are not digits, Fashion-MNIST's shoes all
 * face one way, and the main job sees less than an epoch, so mirroring only adds variety to learn.
 */
export function flipsByDefault(data: string, latents?: string): boolean {
  return latents !== undefined || !(BUILTIN_DATASETS as readonly string[]).includes(data);
}

export function trainCommand(program: Command, io: CliIO): Command {
  const d = TRAIN_DEFAULTS;
  const cmd = program
    .command('train')
    .description('train a DiT / MDT / MDTv2 on Fashion-MNIST, MNIST, an image folder or a latent cache');
  cmd.addOption(option('--model <name>', 'model family and size: DiT|MDT-{S,B,L,XL}/{2,4,8} or MDTv2-{S,B,L,XL}/2', { default: d.model, parse: modelNameArg }));
  addSizeOptions(cmd, (f) => {
    const v = d.overrides[f];
    return v === undefined ? "the model's" : `${v} with the default --model, else the model's`;
  });
  cmd
    .addOption(option('--data <name|dir>', `${BUILTIN_DATASETS.join(', ')}, or a folder of PNG/JPEG images`, { default: d.data }))
    .addOption(option('--labels <source>', 'classes of a folder --data: sub-folder names, file-name prefix before "_", or one class', { default: d.labels, choices: ['folder', 'prefix', 'none'] }))
    .addOption(option('--image-size <n>', 'side of the training images (28×28 data is padded to 32, other sizes resized)', { default: d.imageSize, parse: intArg(4, 4096) }))
    .addOption(option('--latents <dir>', 'train on a latent cache written by `mdt encode` (channels and size come from it)', { defaultText: 'none' }).conflicts(['data', 'imageSize', 'labels']))
    .addOption(option('--vae <file>', 'SD VAE (diffusers .safetensors) to decode the periodic sample grids of a --latents run', { defaultText: 'none: latent runs write no grids' }))
    .addOption(option('--batch-size <n>', 'images per step', { default: d.batchSize, parse: intArg(1, 1_000_000) }))
    .addOption(option('--lr <x>', 'learning rate', { default: d.lr, parse: numberArg(0, Infinity, true) }))
    .addOption(option('--lr-schedule <kind>', `learning rate after the warm-up: constant, or a cosine down to ${d.lrFinalRatio}× --lr at --lr-decay-steps`, { default: d.lrSchedule, choices: ['constant', 'cosine'] }))
    .addOption(option('--warmup <steps>', 'steps of linear learning-rate warm-up from 0', { defaultText: `${d.warmup}, at most a tenth of --lr-decay-steps`, parse: intArg(0) }))
    .addOption(option('--lr-decay-steps <n>', 'step where the cosine schedule reaches its final rate (held after)', { defaultText: "--steps of the run's first invocation (kept on --resume)", parse: intArg(1) }))
    .addOption(option('--optimizer <name>', 'optimizer', { defaultText: 'adamw for DiT/MDT, adan for MDTv2, as the official recipes', choices: ['adamw', 'adan'] }))
    .addOption(option('--weight-decay <x>', 'decoupled weight decay', { default: d.weightDecay, parse: numberArg(0, Infinity) }))
    .addOption(option('--max-grad-norm <x>', 'global gradient-norm clip (adan only)', { defaultText: `${d.adanMaxGradNorm.toFixed(1)} with adan; adamw does not clip`, parse: numberArg(0, Infinity, true) }))
    .addOption(option('--min-snr <gamma>', 'min-SNR-γ weighting of the MSE term (Hang et al. 2023); 0: none', { defaultText: `${d.minSnr} with the default --model (the main job), 5 for MDTv2, none for a named DiT or MDT (the official recipes)`, parse: numberArg(0, Infinity) }))
    .addOption(option('--ema <decay>', 'EMA decay of the weights used for samples', { default: d.ema, parse: numberArg(0, 1) }))
    .addOption(option('--steps <n>', 'total training steps (with --resume: the new target)', { default: d.steps, parse: intArg(1) }))
    .addOption(option('--seed <n>', 'seed of every random choice (init, batches, noise, masks)', { default: d.seed, parse: intArg(0) }))
    .addOption(backendOption())
    .addOption(option('--out <dir>', 'run directory', { defaultText: 'runs/<model>-<data>-<timestamp>' }))
    .addOption(option('--resume', 'continue the run in --out from its latest checkpoint, bit for bit', { default: false }))
    .addOption(option('--log-every <n>', 'steps between log.jsonl lines (and progress lines without a terminal)', { default: d.logEvery, parse: intArg(1) }))
    .addOption(option('--sample-every <n>', 'steps between sample grids', { default: d.sampleEvery, parse: intArg(1) }))
    .addOption(option('--ckpt-every <n>', 'steps between checkpoints', { default: d.ckptEvery, parse: intArg(1) }))
    .addOption(option('--keep <n>', 'newest checkpoints kept (older ones are removed once a newer one is complete)', { default: d.keep, parse: intArg(1) }))
    .addOption(option('--milestone-every <n>', 'also keep, for good, the checkpoint of every step that is a multiple of n (0: none)', { default: d.milestoneEvery, parse: intArg(0) }))
    .addOption(option('--on-nan <action>', `a step whose loss is NaN or infinite: stop the run, or skip it (reload the newest checkpoint, replay the steps since, go on with the next batch; ${MAX_SKIPS_IN_A_ROW} in a row stop)`, { default: d.onNonFinite, choices: ['stop', 'skip'] }))
    .addOption(option('--sample-steps <respacing>', 'sampler steps of the periodic grids: 250 (DDPM), ddim25, 25,25, …', { default: d.sampleSteps, parse: respacingArg }))
    .addOption(option('--cfg-scale <w>', 'guidance scale of the periodic grids (1 = off)', { default: d.cfgScale, parse: numberArg(0, Infinity) }))
    .addOption(option('--eval-every <n>', 'steps between FID and class accuracy of the EMA weights in log.jsonl and loss.png (built-in data; 0: none)', { default: d.evalEvery, parse: intArg(0) }))
    .addOption(option('--eval-samples <n>', 'samples per --eval-every evaluation (FID is biased upwards at small counts)', { default: d.evalSamples, parse: intArg(2, 100_000) }))
    .addOption(option('--flip', 'mirror training images left–right with p = 0.5', { defaultText: 'for image folders and latents (as the official training), not for the built-in data (mirrored digits are not digits, and the shoes all face one way)' }))
    .addOption(option('--no-flip', 'do not mirror training images', { defaultText: 'see --flip' }))
    .action(async (_opts: TrainFlags, self: Command) => runTrain(self, io));
  return cmd;
}

/**
 * With --resume: the run's recorded flags stand in for those not given now. Without cli.json
 * (a run killed before writing it) the flags stay as given, and run.json decides whether they fit.
 */
async function applyRecordedFlags(cmd: Command, runDir: string): Promise<void> {
  if (!existsSync(join(runDir, 'run.json'))) throw new UsageError(`--resume: ${runDir} holds no run (no run.json); give the --out of an existing run`);
  await applyRecordedSchedule(cmd, runDir);
  const path = join(runDir, CLI_RECORD);
  if (!existsSync(path)) return;
  const recorded = await readJsonFile(path, 'the flags of the run (written by mdt train)');
  if (recorded === null || typeof recorded !== 'object' || Array.isArray(recorded)) throw new Error(`${path}: expected an object of flags, got ${JSON.stringify(recorded).slice(0, 80)}`);
  const known = new Set(cmd.options.map((o) => o.attributeName()));
  for (const [k, v] of Object.entries(recorded)) {
    if (!known.has(k)) throw new Error(`${path}: "${k}" is not a flag of mdt train; expected the flags of the run (remove the entry to go on)`);
    if (cmd.getOptionValueSource(k) !== 'cli') cmd.setOptionValueWithSource(k, v, 'config');
  }
}

/**
 * The learning-rate schedule of a run's flags; undefined for the constant rate without warm-up
 * (the official recipes', and what runs made before schedules existed recorded).
 */
export function lrSchedule(f: Pick<TrainFlags, 'lrSchedule' | 'warmup' | 'lrDecaySteps' | 'steps'>): LrSchedule | undefined {
  const decaySteps = f.lrDecaySteps ?? f.steps;
  const warmup = f.warmup ?? Math.min(TRAIN_DEFAULTS.warmup, Math.floor(decaySteps / 10));
  if (f.lrSchedule === 'cosine' && decaySteps <= warmup) throw new UsageError(`--warmup ${warmup}: the cosine decay (to step ${decaySteps}, --lr-decay-steps) must end after the warm-up`);
  if (f.lrSchedule === 'constant' && warmup === 0) return undefined;
  return { warmupSteps: warmup, decay: f.lrSchedule, decaySteps, finalRatio: TRAIN_DEFAULTS.lrFinalRatio };
}

/**
 * The learning-rate schedule a run was made with, from its run.json, for flags its cli.json does
 * not record (a run made before the schedule existed, or without its cli.json): a resume, even
 * with a larger --steps, keeps that schedule rather than today's defaults. No schedule in
 * run.json is the constant rate without warm-up.
 */
async function applyRecordedSchedule(cmd: Command, runDir: string): Promise<void> {
  const run = await readJsonFile(join(runDir, 'run.json'), 'the run (written by mdt train)') as { optimizer?: { schedule?: Partial<LrSchedule> } } | null;
  if (run?.optimizer === undefined) return;
  const s = run.optimizer.schedule;
  const recorded = s === undefined ? { lrSchedule: 'constant', warmup: 0 } : { lrSchedule: s.decay, warmup: s.warmupSteps, lrDecaySteps: s.decaySteps };
  for (const [k, v] of Object.entries(recorded)) if (v !== undefined && cmd.getOptionValueSource(k) !== 'cli') cmd.setOptionValueWithSource(k, v, 'config');
}

function optimizerConfig(f: TrainFlags, variant: string): OptimizerConfig {
  const kind = f.optimizer ?? (variant === 'mdt-v2' ? 'adan' : 'adamw');
  const schedule = lrSchedule(f);
  if (kind === 'adamw') {
    if (f.maxGradNorm !== undefined) throw new UsageError('--max-grad-norm: only adan clips gradients; drop it or pass --optimizer adan');
    return { kind, lr: f.lr, ...(schedule && { schedule }), weightDecay: f.weightDecay };
  }
  return { kind, lr: f.lr, ...(schedule && { schedule }), weightDecay: f.weightDecay, maxGradNorm: f.maxGradNorm ?? TRAIN_DEFAULTS.adanMaxGradNorm };
}

/**
 * A latent cache as training data. With mirrored latents in the cache, both orientations are
 * items of the set (2N of them), which replaces random flipping: mirroring a latent map is not
 * the latent of the mirrored image.
 */
function latentTrainingSet(lat: LatentDataset, flip: boolean): ImageDataset {
  const n = lat.size;
  const both = flip && lat.manifest.flip;
  return {
    name: both ? `${lat.name}+mirrored` : lat.name,
    size: both ? 2 * n : n,
    // ImageDataset types channels for pixel data (1 | 3); training reads it only as a count.
    channels: lat.channels as ImageDataset['channels'],
    height: lat.height,
    width: lat.width,
    numClasses: lat.numClasses,
    classNames: lat.classNames,
    get(indices) {
      const idx = Int32Array.from(indices, (i) => (i >= n ? i - n : i));
      const r = lat.get(idx, both ? Uint8Array.from(indices, (i) => (i >= n ? 1 : 0)) : undefined);
      return { images: r.latents, labels: r.labels };
    },
  };
}

interface TrainData {
  readonly name: string;
  readonly train: ImageDataset;
  readonly flip: boolean;
  close(): void;
}

async function loadTrainData(f: ResolvedTrainFlags, io: CliIO): Promise<TrainData> {
  if (f.latents !== undefined) {
    const lat = await openLatents(f.latents);
    const train = latentTrainingSet(lat, f.flip);
    if (f.flip && !lat.manifest.flip) say(io, `${f.latents} holds no mirrored latents (encode without --no-flip to have them): training without flips`);
    // Mirroring is in the data set itself (see latentTrainingSet), never on the latent maps.
    return { name: train.name, train, flip: false, close: () => lat.close() };
  }
  const builtin = (BUILTIN_DATASETS as readonly string[]).includes(f.data);
  if (!builtin && !statSync(f.data, { throwIfNoEntry: false })?.isDirectory()) {
    throw new UsageError(`--data: expected ${BUILTIN_DATASETS.join(', ')} or a folder of images, got ${JSON.stringify(f.data)} (no such folder)`);
  }
  let train: ImageDataset;
  if (builtin) {
    const ds = loadBuiltinDataset(f.data as BuiltinDataset, 'train');
    train = f.imageSize === ds.height ? ds : resizeTo(ds, f.imageSize, f.imageSize === 32 && ds.height === 28 ? 'pad' : 'resize');
  } else {
    train = loadImageFolder(f.data, { size: f.imageSize, labels: f.labels });
  }
  return { name: train.name, train, flip: f.flip, close: () => {} };
}

function lossText(l: { loss: number; m_loss?: number }): string {
  return `loss ${l.loss.toFixed(4)}${l.m_loss === undefined ? '' : ` | m_loss ${l.m_loss.toFixed(4)}`}`;
}

async function runTrain(cmd: Command, io: CliIO): Promise<void> {
  const explicit = (k: string) => cmd.getOptionValueSource(k) === 'cli';
  if (cmd.opts().resume) {
    if (!explicit('out')) throw new UsageError('--resume needs the --out of the run to continue');
    await applyRecordedFlags(cmd, cmd.opts().out as string);
  } else if (explicit('out') && existsSync(join(cmd.opts().out as string, 'run.json'))) {
    throw new UsageError(`--out: ${cmd.opts().out as string} already holds a run (run.json); pass --resume to continue it or choose another --out`);
  }
  // Recorded resolved, as the horizon below: a resume must not change what the run trains on.
  if (cmd.opts().flip === undefined) cmd.setOptionValueWithSource('flip', flipsByDefault(cmd.opts().data, cmd.opts().latents), 'default');
  if (cmd.opts().minSnr === undefined && cmd.getOptionValueSource('model') === 'default') cmd.setOptionValueWithSource('minSnr', TRAIN_DEFAULTS.minSnr, 'default');
  // The cosine horizon is the first invocation's --steps, recorded so that a resume with a larger
  // --steps keeps the schedule the run's optimizer state was made with.
  if (cmd.opts().lrDecaySteps === undefined) cmd.setOptionValueWithSource('lrDecaySteps', cmd.opts().steps, 'default');
  const f = cmd.opts() as ResolvedTrainFlags;
  // The small default sizes belong to the default model only; a named model keeps its own.
  const overrides: SizeOverrides = cmd.getOptionValueSource('model') === 'default' ? { ...TRAIN_DEFAULTS.overrides, ...sizeOverrides(f) } : sizeOverrides(f);
  const variant = namedConfig(f.model).variant;
  const optimizer = optimizerConfig(f, variant);

  const dataLabel = f.latents !== undefined ? basename(resolve(f.latents)) : builtinOrFolder(f.data);
  // Named after the model it trains: the default (DiT-S/2 resized to depth 4, width 96, patch 4) is DiT-d4h96/4.
  const outDir = f.out ?? join('runs', sanitize(`${modelLabel(f.model, namedConfig(f.model, overrides))}-${dataLabel}-${timestamp()}`));
  await checkOutputDir('--out', outDir);

  if (f.evalEvery > 0 && (!(BUILTIN_DATASETS as readonly string[]).includes(f.data) || f.latents !== undefined || f.imageSize !== 32)) {
    throw new UsageError(`--eval-every: evaluation uses the classifier of a built-in dataset at 32×32 (--data mnist or fashion-mnist, --image-size 32); this run trains on ${f.latents ?? f.data} at ${f.imageSize}×${f.imageSize}`);
  }
  const backend = await startBackend(f.backend);
  const data = await loadTrainData(f, io);
  const vae = f.vae === undefined ? null : await openVae(f.vae);
  const progress: { bar?: Progress } = {};
  let result: TrainRunResult;
  let evaluator: TrainingEvaluator | null = null;
  try {
    if (f.evalEvery > 0) {
      evaluator = await trainingEvaluator(f.data as BuiltinDataset, { samples: f.evalSamples, steps: f.sampleSteps, cfgScale: f.cfgScale, seed: f.seed });
    }
    const record = Object.fromEntries(Object.entries({ ...f, ...overrides }).filter(([k]) => !NOT_RECORDED.has(k)));
    say(io, `training ${f.model} ${JSON.stringify(overrides)} on ${data.name} (${data.train.size} items) with ${optimizer.kind}, backend ${backend.name} → ${outDir}`);

    result = await trainRun(
      {
        model: f.model,
        overrides,
        batchSize: f.batchSize,
        steps: f.steps,
        optimizer,
        emaDecay: f.ema,
        seed: f.seed,
        outDir,
        resume: f.resume,
        logEvery: f.logEvery,
        sampleEvery: f.sampleEvery,
        checkpointEvery: f.ckptEvery,
        sampleSteps: f.sampleSteps,
        cfgScale: f.cfgScale,
        flip: data.flip,
        keep: f.keep,
        milestoneEvery: f.milestoneEvery,
        onNonFinite: f.onNan,
        evalEvery: f.evalEvery,
        ...(f.minSnr !== undefined && { minSnrGamma: f.minSnr === 0 ? null : f.minSnr }),
      },
      { name: data.name, train: data.train, ...(vae ? { decode: (x: tf.Tensor4D) => vae.decode(x) } : {}) },
      {
        onMessage: (text) => say(io, text),
        // Before run.json: a resume always finds the flags of a run that exists.
        onAccepted: () => writeFileAtomic(join(outDir, CLI_RECORD), `${JSON.stringify(record, null, 1)}\n`),
        onStep(step, losses) {
          progress.bar ??= startProgress(io, { label: 'train', total: f.steps, start: step - 1, unit: 'steps', every: f.logEvery });
          progress.bar.update(step, lossText(losses));
        },
        ...(evaluator === null ? {} : {
          evaluate: async (step: number, model: DiffusionModel, ema: ReadonlyMap<string, tf.Tensor>) => {
            const m = await evaluator!.evaluate(step, model, ema);
            say(io, `step ${step}: FID ${m.fid!.toFixed(2)}, class accuracy ${(100 * m.class_accuracy!).toFixed(1)}% (EMA, ${f.evalSamples} samples)`);
            return m;
          },
        }),
      },
    );
  } finally {
    progress.bar?.stop();
    evaluator?.dispose();
    vae?.dispose();
    data.close();
  }
  const last = result.losses.at(-1);
  if (result.finalStep === result.startStep) say(io, `nothing to train: the run is already at step ${result.finalStep} (pass a larger --steps to go on)`);
  else say(io, `done: at step ${result.finalStep} (${result.finalStep - result.startStep} trained now)${last ? `, last ${lossText(last)}` : ''}`);
  say(io, `run: ${result.runDir} (log.jsonl, loss.png, samples/, checkpoints/)`);
}

function builtinOrFolder(data: string): string {
  return (BUILTIN_DATASETS as readonly string[]).includes(data) ? data : basename(resolve(data));
}
