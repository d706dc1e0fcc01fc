/**
 * `mdt inpaint`: completes the white region of --mask in --image with an MDT's side-interpolater
 * (compile/inpaint.ts). Writes inpainted.png and comparison.png (input, masked region grey | output).
 */
import * as tf from '@tensorflow/tfjs';
import { mkdir } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import type { Command } from 'commander';
import { keyFromSeed } from '../dsl/random.ts';
import { inpaint } from '../compile/inpaint.ts';
import { imageGrid, writePng } from '../mdt/viz/png.ts';
import { addCheckpointOptions, loadCheckpointModel, type CheckpointFlags } from './checkpoint-model.ts';
import { describeGuidance } from '../mdt/diffusion/cfg.ts';
import { addGuidanceOptions, guideChannelsFrom, guidanceFrom, type GuidanceFlags } from './guidance.ts';
import { imageToChw, knownFromMask, pixelChannels, readImage, tile } from './images.ts';
import { openVae, type Vae } from './vae-file.ts';
import { say, type CliIO } from './io.ts';
import { checkOutputDir } from './output-dir.ts';
import { backendOption, intArg, numberArg, option, respacingArg, sanitize, startBackend, timestamp, UsageError, type BackendChoice } from './options.ts';

interface InpaintFlags extends CheckpointFlags, GuidanceFlags {
  readonly image: string;
  readonly mask: string;
  readonly class?: number;
  readonly steps: string;
  readonly switch: number;
  readonly seed: number;
  readonly vae?: string;
  readonly out?: string;
  readonly backend: BackendChoice;
}

export function inpaintCommand(program: Command, io: CliIO): Command {
  const cmd = program.command('inpaint').description("fill the white (≥ 128) region of --mask in --image with an MDT's side-interpolater");
  addCheckpointOptions(cmd);
  cmd
    .addOption(option('--image <file>', "PNG or JPEG image to complete, at the model's input size (× 8 with --vae)", { required: true }))
    .addOption(option('--mask <file>', 'PNG or JPEG, same size as --image; white (≥ 128) = region to generate, dark = kept', { required: true }))
    .addOption(option('--class <k>', 'class to condition on', { defaultText: 'none: unconditional (the null class), no guidance', parse: intArg(0) }))
    .addOption(option('--steps <respacing>', 'DDPM steps: 100, 250, 25,25, … of 1000 diffusion steps', { default: '100', parse: respacingArg }))
    .addOption(option('--switch <fraction>', 'fraction of the (first, noisiest) steps that run the side-interpolater', { default: 0.3, parse: numberArg(0, 1) }));
  addGuidanceOptions(cmd)
    .addOption(option('--seed <n>', 'seed of the sampling noise', { default: 0, parse: intArg(0) }))
    .addOption(option('--vae <file>', 'SD VAE (diffusers .safetensors) for latent models: encodes the image, decodes the result', { defaultText: 'none' }))
    .addOption(option('--out <dir>', 'output directory', { defaultText: 'inpaint/<image>-<timestamp>' }))
    .addOption(backendOption())
    .action(async (f: InpaintFlags) => runInpaint(f, io));
  return cmd;
}

/** A latent pixel is known only if its whole f×f footprint in the image is. */
function downsampleKnown(known: readonly boolean[], side: number, f: number): boolean[] {
  const s = side / f;
  return Array.from({ length: s * s }, (_, q) => {
    const [r, c] = [Math.floor(q / s), q % s];
    for (let dy = 0; dy < f; dy++) for (let dx = 0; dx < f; dx++) if (!known[(r * f + dy) * side + c * f + dx]) return false;
    return true;
  });
}

async function runInpaint(f: InpaintFlags, io: CliIO): Promise<void> {
  const outDir = f.out ?? join('inpaint', sanitize(`${basename(f.image, extname(f.image))}-${timestamp()}`));
  await checkOutputDir('--out', outDir);
  await startBackend(f.backend);
  const { model, values } = await loadCheckpointModel(f, io);
  const c = model.config;
  if (c.variant === 'dit') throw new UsageError('--ckpt: inpainting needs an MDT or MDTv2 checkpoint (a DiT has no side-interpolater)');
  if (f.class !== undefined && f.class >= c.numClasses) throw new UsageError(`--class: ${f.class} out of range; the model has classes 0..${c.numClasses - 1}`);
  if (f.class === undefined && f.cfgScale !== undefined && f.cfgScale !== 1) throw new UsageError('--cfg-scale: guidance needs a --class to guide towards');
  const vae: Vae | null = f.vae === undefined ? null : await openVae(f.vae);
  const tensors: tf.Tensor[] = [];
  try {
    if (vae !== null && c.inChannels !== vae.config.latentChannels) throw new UsageError(`--vae: the VAE makes ${vae.config.latentChannels}-channel latents, the model takes ${c.inChannels} channels`);
    const channels = pixelChannels(vae === null ? c.inChannels : vae.config.inChannels, vae === null ? 'the model\'s input' : 'the VAE\'s input');
    const side = vae === null ? c.inputSize : c.inputSize * vae.factor;
    const image = readImage(f.image, '--image');
    const mask = readImage(f.mask, '--mask');
    for (const [flag, path, img] of [['--image', f.image, image], ['--mask', f.mask, mask]] as const) {
      if (img.width !== side || img.height !== side) {
        throw new UsageError(`${flag}: ${path} is ${img.width}×${img.height}; the model takes ${side}×${side} images${vae === null ? '' : ` (${c.inputSize}×${c.inputSize} latents × ${vae.factor})`}`);
      }
    }
    const pixels = imageToChw(image, channels);
    const known = knownFromMask(mask);
    const x = tf.tensor4d(pixels, [1, channels, side, side]);
    tensors.push(x);
    const z = vae === null ? x : vae.encode(x);
    tensors.push(z);
    const guidance = f.class === undefined ? null : guidanceFrom(f, c);
    const guideChannels = guideChannelsFrom(f, c);
    say(io, `inpainting ${f.image} (${known.filter((k) => !k).length} of ${known.length} pixels to generate), ${f.class === undefined ? 'unconditional' : `class ${f.class}`}, ${describeGuidance(guidance, guideChannels)}`);
    const out = inpaint(model, values, {
      image: z,
      knownPixels: vae === null ? known : downsampleKnown(known, side, vae.factor),
      labels: Int32Array.of(f.class ?? c.numClasses),
      steps: f.steps,
      switchFraction: f.switch,
      guidance,
      guideChannels,
      key: keyFromSeed(f.seed),
    });
    tensors.push(out);
    const result = vae === null ? out : vae.decode(out);
    tensors.push(result);
    const resultData = (await result.data()) as Float32Array;
    const greyed = pixels.map((v, i) => (known[i % known.length] ? v : 0));
    const both = new Float32Array(2 * pixels.length);
    both.set(greyed);
    both.set(resultData, pixels.length);
    await mkdir(outDir, { recursive: true });
    await writePng(join(outDir, 'inpainted.png'), tile(resultData, 0, channels, side, side));
    await writePng(join(outDir, 'comparison.png'), imageGrid(both, 2, channels, side, side, 2));
    say(io, `wrote ${join(outDir, 'inpainted.png')} and comparison.png`);
  } finally {
    vae?.dispose();
    tf.dispose([...new Set(tensors), ...values.values()]);
  }
}
