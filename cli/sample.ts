/** `mdt sample`: class-conditional samples from a checkpoint, as a grid and one PNG each. */
import * as tf from '@tensorflow/tfjs';
import { mkdir } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { InvalidArgumentError, type Command } from 'commander';
import { compileSampler } from '../compile/sample.ts';
import { onnxSampler, openOnnxFile } from '../compile/onnx-engine.ts';
import type { ModelConfig } from '../mdt/config.ts';
import type { Key } from '../dsl/random.ts';
import { foldIn, keyFromSeed } from '../dsl/random.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { imageGrid, writePng } from '../mdt/viz/png.ts';
import { writeNpy } from '../formats/npy.ts';
import { writeSafetensors } from '../formats/safetensors.ts';
import { addCheckpointOptions, checkpointConfig, loadCheckpointModel, type CheckpointFlags } from './checkpoint-model.ts';
import { describeGuidance, describeGuidanceOptions } from '../mdt/diffusion/cfg.ts';
import { addGuidanceOptions, guideChannelsFrom, guidanceFrom, type GuidanceFlags } from './guidance.ts';
import { pixelChannels, tile } from './images.ts';
import { decodeInParts, openVae, type Vae } from './vae-file.ts';
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
  readonly latentsOut?: string;
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
    .addOption(option('--batch-size <n>', 'images per sampler call (the noise depends on it; a call the wasm heap cannot hold runs in parts, with the same noise)', { default: 16, parse: intArg(1, 100_000) }))
    .addOption(option('--steps <respacing>', 'sampler steps: 250, ddim50, 25,25, … of 1000 diffusion steps', { default: '250', parse: respacingArg }))
    .addOption(option('--sampler <name>', 'ancestral DDPM or DDIM', { defaultText: 'ddim when --steps is ddimN, else ddpm', choices: ['ddpm', 'ddim'] }))
    .addOption(option('--eta <x>', 'DDIM η (0 = deterministic)', { default: 0, parse: numberArg(0, Infinity) }));
  addGuidanceOptions(cmd)
    .addOption(option('--seed <n>', 'seed of the sampling noise', { default: 0, parse: intArg(0) }))
    .addOption(option('--vae <file>', 'SD VAE (diffusers .safetensors) to decode latents to pixels; needed for latent models', { defaultText: 'none' }))
    .addOption(option('--out <dir>', 'output directory', { defaultText: 'samples/<checkpoint>-<timestamp>' }))
    .addOption(option('--latents-out <file>', 'also save the raw latents (N, C, H, W) float32: .npy, or .safetensors with their labels; a latent model then needs no --vae', { defaultText: 'none' }))
    .addOption(backendOption())
    .addOption(option('--engine <name>', 'what runs the network: the compiled tfjs graph, or onnxruntime-node on an .onnx file from mdt export (given as --ckpt)', { default: 'tfjs', choices: ['tfjs', 'onnx'] }))
    .action(async (f: SampleFlags) => runSample(f, io));
  return cmd;
}

/** What --latents-out writes, by its extension. */
function latentsFormat(path: string): 'npy' | 'safetensors' {
  if (path.endsWith('.npy')) return 'npy';
  if (path.endsWith('.safetensors')) return 'safetensors';
  throw new UsageError(`--latents-out: expected a file name ending in .npy or .safetensors, got ${path}`);
}

async function runSample(f: SampleFlags, io: CliIO): Promise<void> {
  const latents = f.latentsOut === undefined ? null : { path: f.latentsOut, format: latentsFormat(f.latentsOut) };
  if (latents !== null) await checkOutputDir('--latents-out', dirname(resolve(latents.path)));
  await startBackend(f.backend);
  // Everything that can be refused is, before the weights load.
  const engine = f.engine === 'onnx' ? await onnxEngine(f) : await tfjsEngine(f, io);
  const c = engine.config;
  let vae: Vae | null = null;
  let sampler: EngineSampler | null = null;
  try {
    const classes = resolveClasses(f.class, c.numClasses);
    vae = f.vae === undefined ? null : await openVae(f.vae);
    if (vae !== null && c.inChannels !== vae.config.latentChannels) throw new UsageError(`--vae: the VAE decodes ${vae.config.latentChannels}-channel latents, the model makes ${c.inChannels} channels`);
    // Latents without a decoder are still worth keeping (--latents-out); only the PNGs need pixels.
    const pngs = vae !== null || latents === null || c.inChannels === 1 || c.inChannels === 3;
    const channels = pngs ? pixelChannels(vae === null ? c.inChannels : vae.config.outChannels, vae === null ? 'the model\'s output' : 'the VAE\'s output') : null;
    const outDir = f.out ?? join('samples', sanitize(`${basename(resolve(f.ckpt))}-${timestamp()}`));
    if (pngs) await checkOutputDir('--out', outDir);
    sampler = await engine.load();
    const labels = Int32Array.from({ length: classes.length * f.count }, (_, i) => classes[i % classes.length]!);
    const K = respacedTables(1000, f.steps).T;
    const batches = Math.ceil(labels.length / f.batchSize);
    const dest = [pngs ? outDir : null, latents?.path ?? null].filter((d) => d !== null).join(' and ');
    say(io, `sampling ${labels.length} images (${f.count} × classes ${classes.join(',')}) with ${c.variant} ${c.inputSize}×${c.inputSize}×${c.inChannels}, ${K} steps, ${engine.guidance} → ${dest}`);
    const key = keyFromSeed(f.seed);
    const bar = startProgress(io, { label: 'sampling', total: batches * K, unit: 'steps', every: Math.max(1, Math.ceil(K / 4)) });
    const raw: Float32Array[] = [];
    for (let b = 0; b < batches; b++) {
      const y = labels.subarray(b * f.batchSize, (b + 1) * f.batchSize);
      const x = await sampler.sample(y, foldIn(key, b), (done, total) => bar.update(Math.floor(b * K + (K * done) / total)));
      raw.push((await x.data()) as Float32Array);
      x.dispose();
    }
    bar.stop();
    // The model is done: its weights leave the heap before the VAE needs room to decode.
    const done = sampler;
    sampler = null;
    await done.dispose();
    if (latents !== null) {
      const shape = [labels.length, c.inChannels, c.inputSize, c.inputSize];
      const data = concatFloats(raw);
      if (latents.format === 'npy') await writeNpy(latents.path, data, shape);
      else {
        await writeSafetensors(latents.path, {
          latents: { dtype: 'F32', shape, data },
          labels: { dtype: 'I32', shape: [labels.length], data: labels },
        }, { format: 'mdt-ts latents', model: c.variant, steps: f.steps, seed: String(f.seed), guidance: engine.guidance });
      }
      say(io, `wrote ${latents.path} (${shape.join('×')} float32 latents${latents.format === 'safetensors' ? ' and their labels' : ''}; an SD VAE decodes latents / 0.18215)`);
    }
    if (channels === null) return;
    const all = tf.tensor4d(concatFloats(raw), [labels.length, c.inChannels, c.inputSize, c.inputSize]);
    let pixels: tf.Tensor4D;
    try {
      pixels = vae === null ? all.clone() : decodeInParts(vae, all, f.batchSize, (n) => say(io, `note: ${n}`));
    } finally {
      all.dispose();
    }
    const side = pixels.shape[2];
    const images = (await pixels.data()) as Float32Array;
    pixels.dispose();
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
    await sampler?.dispose();
    await engine.dispose();
  }
}

function concatFloats(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A loaded network with the sampler on it; dispose frees its weights. */
interface EngineSampler {
  sample(labels: Int32Array, key: Key, progress?: (done: number, total: number) => void): tf.Tensor4D | Promise<tf.Tensor4D>;
  dispose(): Promise<void> | void;
}

/** What samples, known before its weights load: the model it was made for and its guidance. */
interface Engine {
  readonly config: ModelConfig;
  /** The guidance, in words. */
  readonly guidance: string;
  load(): Promise<EngineSampler>;
  dispose(): Promise<void> | void;
}

const samplerOptions = (f: SampleFlags) => ({ steps: f.steps, sampler: f.sampler ?? (f.steps.startsWith('ddim') ? 'ddim' as const : 'ddpm' as const), eta: f.eta });

async function tfjsEngine(f: SampleFlags, io: CliIO): Promise<Engine> {
  if (f.ckpt.endsWith('.onnx')) throw new UsageError(`--ckpt ${f.ckpt} is an exported ONNX model: sample it with --engine onnx`);
  const c = await checkpointConfig(f, io);
  const guidance = guidanceFrom(f, c);
  const guideChannels = guideChannelsFrom(f, c);
  return {
    config: c,
    guidance: describeGuidance(guidance, guideChannels),
    async load() {
      const { model, values } = await loadCheckpointModel(f, io, { inference: true, config: c });
      const sampler = compileSampler(model, values, { ...samplerOptions(f), guidance, guideChannels, onNote: (n) => say(io, `note: ${n}`) });
      return {
        sample: (labels, key, progress) => sampler.sample(labels, key, progress),
        dispose() {
          sampler.dispose();
          tf.dispose([...values.values()]);
        },
      };
    },
    dispose() {},
  };
}

async function onnxEngine(f: SampleFlags): Promise<Engine> {
  if (!f.ckpt.endsWith('.onnx')) throw new UsageError(`--engine onnx samples an .onnx file written by mdt export --format onnx; --ckpt ${f.ckpt} is not one (export it first)`);
  const given = (['cfgScale', 'cfgSchedule', 'guideChannels'] as const).filter((k) => f[k] !== undefined);
  if (given.length > 0) throw new UsageError(`--engine onnx: guidance is part of the exported graph; drop ${given.map((k) => `--${k.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`)}`).join(', ')} (or export again with them)`);
  const den = await openOnnxFile(f.ckpt);
  return {
    config: den.config,
    guidance: `${describeGuidanceOptions(den.guidance)} (exported in ${basename(f.ckpt)}), on onnxruntime`,
    load: () => onnxSampler(den, samplerOptions(f)),
    dispose: () => den.dispose(),
  };
}
