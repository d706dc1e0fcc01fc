/**
 * Inpainting with the side-interpolater (paper appendix C; the official code never released
 * it; procedure of MDT-SPEC §9): known tokens are re-noised to the current step, during the
 * first fraction of the steps the masked forward keeps exactly the known tokens and the
 * side-interpolater predicts the rest, then plain steps; the known region is pasted back.
 */
import * as tf from '@tensorflow/tfjs';
import { foldIn, normal, split, type Key } from '../dsl/random.ts';
import { paramView } from '../dsl/param.ts';
import { gridSize } from './config.ts';
import { planKeeping } from './masking.ts';
import type { DiffusionModel } from './trunk.ts';
import { respacedTables } from './diffusion/respace.ts';
import { qSample, type Denoiser } from './diffusion/gaussian.ts';
import { pSampleStep } from './diffusion/sampler.ts';
import { withGuidance } from './diffusion/cfg.ts';
import type { GuidanceSchedule } from './diffusion/guidance-weight.ts';

export interface InpaintOptions {
  /** The image (pixels or latents) to complete, (B, C, H, W); only its known region is used. */
  readonly image: tf.Tensor4D;
  /** Per pixel (H·W, row-major): true where the image is known, false where it must be generated. */
  readonly knownPixels: ArrayLike<boolean>;
  readonly labels: Int32Array;
  /** Respacing of the DDPM sampler, e.g. "250" or "100". */
  readonly steps: string;
  /** Fraction ρ of the (first, noisiest) steps that run the masked forward. */
  readonly switchFraction: number;
  readonly guidance: GuidanceSchedule | null;
  readonly guideChannels?: 'first3' | 'all';
  readonly key: Key;
}

/** A token is known only if every pixel of its p×p patch is known. */
export function knownTokens(knownPixels: ArrayLike<boolean>, grid: number, patch: number): boolean[] {
  const side = grid * patch;
  if (knownPixels.length !== side * side) throw new Error(`inpaint: mask has ${knownPixels.length} pixels, expected ${side}×${side}`);
  const out: boolean[] = [];
  for (let r = 0; r < grid; r++) {
    for (let c = 0; c < grid; c++) {
      let all = true;
      for (let dy = 0; dy < patch && all; dy++) for (let dx = 0; dx < patch && all; dx++) all = !!knownPixels[(r * patch + dy) * side + c * patch + dx];
      out.push(all);
    }
  }
  return out;
}

/** The token mask expanded back to pixels, as a (1, 1, H, W) float tensor (1 = known). */
function tokenMaskPixels(tokens: readonly boolean[], grid: number, patch: number): tf.Tensor4D {
  const side = grid * patch;
  const m = new Float32Array(side * side);
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) m[y * side + x] = tokens[Math.floor(y / patch) * grid + Math.floor(x / patch)] ? 1 : 0;
  return tf.tensor4d(m, [1, 1, side, side]);
}

export function inpaint(model: DiffusionModel, values: ReadonlyMap<string, tf.Tensor>, o: InpaintOptions): tf.Tensor4D {
  const c = model.config;
  if (c.variant === 'dit') throw new Error('inpaint needs an MDT model (DiT has no side-interpolater)');
  for (const k of ['sideblocks.0.adaLN_modulation.1.weight', 'mask_token']) {
    if (!values.has(k)) throw new Error(`inpaint needs the side-interpolater weights, but the checkpoint has no ${k}`);
  }
  if (!(o.switchFraction >= 0 && o.switchFraction <= 1)) throw new Error(`inpaint: switch fraction must be in [0, 1], got ${o.switchFraction}`);
  const [b, ch, h, w] = o.image.shape;
  if (ch !== c.inChannels || h !== c.inputSize || w !== c.inputSize) throw new Error(`inpaint: image is ${ch}×${h}×${w}, the model takes ${c.inChannels}×${c.inputSize}×${c.inputSize}`);
  if (o.labels.length !== b) throw new Error(`inpaint: ${b} images but ${o.labels.length} labels`);
  const grid = gridSize(c);
  const tokens = knownTokens(o.knownPixels, grid, c.patchSize);
  if (!tokens.some((k) => k)) throw new Error('inpaint: no token is fully known; the mask leaves nothing to condition on');
  const tables = respacedTables(1000, o.steps);
  const base = respacedTables(1000, '');
  const p = paramView(values);
  const rows = o.guidance === null ? b : 2 * b;
  const y = o.guidance === null ? o.labels : Int32Array.from([...o.labels, ...new Array<number>(b).fill(c.numClasses)]);
  const plan = planKeeping(tokens, rows);
  const wrap = (f: Denoiser): Denoiser => (o.guidance === null ? f : withGuidance(f, { schedule: o.guidance, channels: o.guideChannels ?? 'first3', inChannels: c.inChannels }));
  const masked = wrap((x, t, yy) => model.forward(p, x, t, yy, { mask: plan }));
  const plain = wrap((x, t, yy) => model.forward(p, x, t, yy));
  const K = tables.T;
  const switchAt = K - Math.round(o.switchFraction * K);
  const [initKey, stepKey, renoiseKey] = split(o.key, 3) as [Key, Key, Key];
  const n = rows * ch * h * w;
  const known = tokenMaskPixels(tokens, grid, c.patchSize);
  const z0 = o.guidance === null ? o.image.clone() : tf.concat([o.image, o.image]);
  let x = tf.tensor4d(normal(initKey, n), [rows, ch, h, w]);
  try {
    for (let k = K - 1; k >= 0; k--) {
      const ks = new Int32Array(rows).fill(k);
      const next = tf.tidy(() => {
        const t = Int32Array.from(ks, (kk) => tables.timestepMap[kk]!);
        const renoised = qSample(base, z0, t, tf.tensor4d(normal(foldIn(renoiseKey, k), n), [rows, ch, h, w]));
        const xIn = tf.add(tf.mul(known, renoised), tf.mul(tf.sub(1, known), x)) as tf.Tensor4D;
        const r = pSampleStep(k >= switchAt ? masked : plain, tables, xIn, ks, y, tf.tensor4d(normal(foldIn(stepKey, k), n), [rows, ch, h, w]));
        return r.xPrev;
      });
      x.dispose();
      x = next;
    }
    return tf.tidy(() => {
      const out = tf.add(tf.mul(known, z0), tf.mul(tf.sub(1, known), x));
      return tf.slice(out, [0, 0, 0, 0], [b, -1, -1, -1]) as tf.Tensor4D;
    });
  } finally {
    tf.dispose([x, known, z0]);
  }
}
