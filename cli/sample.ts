/** `mdt sample`: class-conditional samples from a checkpoint, as a grid and one PNG each. */
import * as tf from '@tensorflow/tfjs';
import { mkdir } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { compileSampler } from '../compile/sample.ts';
import { onnxSampler, openOnnxFile } from '../compile/onnx-engine.ts';
import type { ModelConfig } from '../mdt/config.ts';
import type { Key } from '../dsl/random.ts';
import { foldIn, keyFromSeed } from '../dsl/random.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { imageGrid, writePng } from '../mdt/viz/png.ts';
import { addCheckpointOptions, loadCheckpointModel, type CheckpointFlags } from './checkpoint-model.ts';
import { addGuidanceOptions, describeGuidance, guideChannelsFrom, guidanceFrom, type GuidanceFlags } from './guidance.ts';
import { pixelChannels, tile } from './images.ts';
import { openVae, type Vae } from './vae-file.ts';
import { say, type CliIO } from './io.ts';
import { checkOutputDir } from './output-dir.ts';
import { backendOption, intArg, numberArg, option, respacingArg, sanitize, startBackend, timestamp, UsageError, type BackendChoice } from './options.ts';
import { startProgress } from './progress.ts';

/** The labels of DiT's sample.py, the usual first look at a 1000-class (ImageNet) model. */
export const IMAGENET_SAMPLE_CLASSES = [207, 360, 387, 974, 88, 979, 417, 279];

interface SampleFlags extends CheckpointFlags, GuidanceFlags {
  readonly class?: 'all' | number[];
  readonly count: number;
  readonly batchSize: number;
  readonly steps: string;
  readonly sampler?: 'ddpm' | 'ddim';
  readonly eta: number;
  readonly seed: number;
  readonly vae?: string;
  readonly out?: string;
  readonly backend: BackendChoice;
  readonly engine: 'tfjs' | 'onnx';
}

export function classListArg(v: string): 'all' | number[] {
  if (v === 'all') return 'all';
  const parts = v.split(',').map((s) => s.trim());
  if (parts.some((s) => !/^\d+$/.test(s))) throw new InvalidArgumentError('Expected "all" or class indices like 3,5,7.');
  return parts.map(Number);
}

/** Checks classes against the model; `undefined` is every class (DiT's eight for 1000 classes). */
export function resolveClasses(given: 'all' | number[] | undefined, numClasses: number): number[] {
  if (given === undefined && numClasses === 1000) return IMAGENET_SAMPLE_CLASSES;
  if (given === undefined || given === 'all') return Array.from({ length: numClasses }, (_, i) => i);
  const bad = given.filter((k) => k >= numClasses);
  if (bad.length > 0) throw new UsageError(`--class: ${bad.join(', ')} out of range; the model has classes 0..${numClasses - 1}`);
  return given;
}

export function sampleCommand(program: Command, io: CliIO): Command {
  const cmd = program.command('sample').description('sample images from a checkpoint: grid.png and sample-<i>-class<k>.png');
  addCheckpointOptions(cmd);
  cmd
    .addOption(option('--class <list>', 'classes to sample: 3,5,7 or all', { defaultText: `all (for 1000 classes: ${IMAGENET_SAMPLE_CLASSES.join(',')}, as DiT's sample.py)`, parse: classListArg }))
    .addOption(option('--count <n>', 'samples per class', { default: 4, parse: intArg(1, 100_000) }))
    .addOption(option('--batch-size <n>', 'images per sampler call (the noise depends on it)', { default: 16, parse: intArg(1, 100_000) }))
    .addOption(option('--steps <respacing>', 'sampler steps: 250, ddim50, 25,25, … of 1000 diffusion steps', { default: '250', parse: respacingArg }))
    .addOption(option('--sampler <name>', 'ancestral DDPM or DDIM', { defaultText: 'ddim when --steps is ddimN, else ddpm', choices: ['ddpm', 'ddim'] }))
    .addOption(option('--eta <x>', 'DDIM η (0 = deterministic)', { default: 0, parse: numberArg(0, Infinity) }));
  addGuidanceOptions(cmd)
    .addOption(option('--seed <n>', 'seed of the sampling noise', { default: 0, parse: intArg(0) }))
    .addOption(option('--vae <file>', 'SD VAE (diffusers .safetensors) to decode latents to pixels; needed for latent models', { defaultText: 'none' }))
    .addOption(option('--out <dir>', 'output directory', { defaultText: 'samples/<checkpoint>-<timestamp>' }))
    .addOption(backendOption())
    .addOption(option('--engine <name>', 'what runs the network: the compiled tfjs graph, or onnxruntime-node on an .onnx file from mdt export (given as --ckpt)', { default: 'tfjs', choices: ['tfjs', 'onnx'] }))
    .action(async (f: SampleFlags) => runSample(f, io));
  return cmd;
}

async function runSample(f: SampleFlags, io: CliIO): Promise<void> {
  const outDir = f.out ?? join('samples', sanitize(`${basename(resolve(f.ckpt))}-${timestamp()}`));
  await checkOutputDir('--out', outDir);
  await startBackend(f.backend);
  const engine = f.engine === 'onnx' ? await openOnnxEngine(f) : await openTfjsEngine(f, io);
  const { config: c, sampler } = engine;
  let vae: Vae | null = null;
  try {
    const classes = resolveClasses(f.class, c.numClasses);
    vae = f.vae === undefined ? null : await openVae(f.vae);
    if (vae !== null && c.inChannels !== vae.config.latentChannels) throw new UsageError(`--vae: the VAE decodes ${vae.config.latentChannels}-channel latents, the model makes ${c.inChannels} channels`);
    const channels = pixelChannels(vae === null ? c.inChannels : vae.config.outChannels, vae === null ? 'the model\'s output' : 'the VAE\'s output');
    const labels = Int32Array.from({ length: classes.length * f.count }, (_, i) => classes[i % classes.length]!);
    const K = respacedTables(1000, f.steps).T;
    const batches = Math.ceil(labels.length / f.batchSize);
    say(io, `sampling ${labels.length} images (${f.count} × classes ${classes.join(',')}) with ${c.variant} ${c.inputSize}×${c.inputSize}×${c.inChannels}, ${K} steps, ${engine.guidance} → ${outDir}`);
    const key = keyFromSeed(f.seed);
    const bar = startProgress(io, { label: 'sampling', total: batches * K, unit: 'steps', every: Math.max(1, Math.ceil(K / 4)) });
    const parts: Float32Array[] = [];
    let side = c.inputSize;
    for (let b = 0; b < batches; b++) {
      const y = labels.subarray(b * f.batchSize, (b + 1) * f.batchSize);
      const x = await sampler.sample(y, foldIn(key, b), (done) => bar.update(b * K + done));
      const pixels = vae === null ? x : vae.decode(x);
      if (pixels !== x) x.dispose();
      side = pixels.shape[2];
      parts.push((await pixels.data()) as Float32Array);
      pixels.dispose();
    }
    bar.stop();
    const images = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let at = 0;
    for (const p of parts) {
      images.set(p, at);
      at += p.length;
    }
    await mkdir(outDir, { recursive: true });
    const cols = classes.length <= 32 ? classes.length : Math.ceil(Math.sqrt(labels.length));
    await writePng(join(outDir, 'grid.png'), imageGrid(images, labels.length, channels, side, side, cols));
    const width = String(labels.length - 1).length;
    for (let i = 0; i < labels.length; i++) {
      await writePng(join(outDir, `sample-${String(i).padStart(width, '0')}-class${labels[i]}.png`), tile(images, i, channels, side, side));
    }
    say(io, `wrote ${join(outDir, 'grid.png')} (${labels.length} samples, ${cols} columns) and sample-*-class*.png`);
  } finally {
    vae?.dispose();
    await engine.dispose();
  }
}

/** What samples: the network's engine with the sampler on it, for the model it was made for. */
interface Engine {
  readonly config: ModelConfig;
  /** The guidance, in words. */
  readonly guidance: string;
  readonly sampler: { sample(labels: Int32Array, key: Key, progress?: (done: number) => void): tf.Tensor4D | Promise<tf.Tensor4D> };
  dispose(): Promise<void> | void;
}

const samplerOptions = (f: SampleFlags) => ({ steps: f.steps, sampler: f.sampler ?? (f.steps.startsWith('ddim') ? 'ddim' as const : 'ddpm' as const), eta: f.eta });

async function openTfjsEngine(f: SampleFlags, io: CliIO): Promise<Engine> {
  if (f.ckpt.endsWith('.onnx')) throw new UsageError(`--ckpt ${f.ckpt} is an exported ONNX model: sample it with --engine onnx`);
  const { model, values } = await loadCheckpointModel(f, io);
  const c = model.config;
  const guidance = guidanceFrom(f, c);
  const guideChannels = guideChannelsFrom(f, c);
  const sampler = compileSampler(model, values, { ...samplerOptions(f), guidance, guideChannels });
  return {
    config: c,
    guidance: describeGuidance(guidance, guideChannels),
    sampler,
    dispose() {
      sampler.dispose();
      tf.dispose([...values.values()]);
    },
  };
}

async function openOnnxEngine(f: SampleFlags): Promise<Engine> {
  if (!f.ckpt.endsWith('.onnx')) throw new UsageError(`--engine onnx samples an .onnx file written by mdt export --format onnx; --ckpt ${f.ckpt} is not one (export it first)`);
  const given = (['cfgScale', 'cfgSchedule', 'guideChannels'] as const).filter((k) => f[k] !== undefined);
  if (given.length > 0) throw new UsageError(`--engine onnx: guidance is part of the exported graph; drop ${given.map((k) => `--${k.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`)}`).join(', ')} (or export again with them)`);
  const den = await openOnnxFile(f.ckpt);
  const sampler = await onnxSampler(den, samplerOptions(f));
  const g = den.guidance;
  return {
    config: den.config,
    guidance: `${g === null ? 'no guidance' : describeGuidance(g.schedule, g.channels ?? 'first3')} (exported in ${basename(f.ckpt)}), on onnxruntime`,
    sampler,
    async dispose() {
      await sampler.dispose();
      await den.dispose();
    },
  };
}
