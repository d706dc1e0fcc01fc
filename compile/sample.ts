/**
 * The sampling graph: no masking and no side-interpolater (the decoder position embedding
 * is added instead). Train-only parameters are not even handed to it.
 */
import * as tf from '@tensorflow/tfjs';
import type { Key } from '../dsl/random.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { ddimSampleLoop, pSampleLoop } from '../mdt/diffusion/sampler.ts';
import { withGuidance } from '../mdt/diffusion/cfg.ts';
import type { GuidanceSchedule } from '../mdt/diffusion/guidance-weight.ts';
import type { Denoiser } from '../mdt/diffusion/gaussian.ts';
import { denoiserOf } from './train.ts';

export interface SamplerOptions {
  /** Respacing: "250" (DDPM default), "ddim25", "25,25", … */
  readonly steps: string;
  readonly sampler: 'ddpm' | 'ddim';
  readonly eta?: number;
  /** null: no classifier-free guidance. */
  readonly guidance: GuidanceSchedule | null;
  /** 'first3': the official (DiT-inherited) 3 of 4 latent channels; 'all' guides every channel. */
  readonly guideChannels?: 'first3' | 'all';
  readonly diffusionSteps?: number;
}

export interface Sampler {
  /** Samples one image per label; the result is the caller's, (B, C, H, W). */
  sample(labels: Int32Array, key: Key, progress?: (done: number, total: number) => void): tf.Tensor4D;
  /** The guided or plain network this sampler calls (for custom loops such as inpainting). */
  readonly denoiser: Denoiser;
}

/** Only what inference reads: drops train-only parameters (side block, mask token). */
export function inferenceParams(model: DiffusionModel, values: ReadonlyMap<string, tf.Tensor>): Map<string, tf.Tensor> {
  return new Map([...values].filter(([k]) => model.params[k] !== undefined && !model.params[k]!.trainOnly));
}

export function compileSampler(model: DiffusionModel, values: ReadonlyMap<string, tf.Tensor>, opts: SamplerOptions): Sampler {
  const c = model.config;
  const T = opts.diffusionSteps ?? 1000;
  const tables = respacedTables(T, opts.steps);
  const plain = denoiserOf(model, inferenceParams(model, values));
  const guided = opts.guidance === null
    ? plain
    : withGuidance(plain, { schedule: opts.guidance, channels: opts.guideChannels ?? 'first3', T, inChannels: c.inChannels });
  return {
    denoiser: guided,
    sample(labels, key, progress) {
      for (const y of labels) if (!(Number.isInteger(y) && y >= 0 && y < c.numClasses)) throw new Error(`sample: class ${y} is out of range [0, ${c.numClasses - 1}]`);
      const b = labels.length;
      // CFG runs 2B rows: [labels; null], the wrapper keeps both halves' inputs identical.
      const y = opts.guidance === null ? labels : Int32Array.from([...labels, ...new Array<number>(b).fill(c.numClasses)]);
      const shape: [number, number, number, number] = [y.length, c.inChannels, c.inputSize, c.inputSize];
      const loopOpts = progress ? { progress } : {};
      const out = opts.sampler === 'ddim'
        ? ddimSampleLoop(guided, tables, shape, y, key, { ...loopOpts, eta: opts.eta ?? 0 })
        : pSampleLoop(guided, tables, shape, y, key, loopOpts);
      if (opts.guidance === null) return out;
      const first = tf.slice(out, [0, 0, 0, 0], [b, -1, -1, -1]);
      out.dispose();
      return first;
    },
  };
}
