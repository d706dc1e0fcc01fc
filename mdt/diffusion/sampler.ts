// DDPM ancestral sampling and DDIM on any respacing. `tables` are the respaced tables: steps are
// respaced indices k, the network always receives the original step timestepMap[k], and the
// learned variance interpolates between the RESPACED β_k and σ̃²_k.

import * as tf from '@tensorflow/tfjs';
import { foldIn, normal, split } from '../../dsl/random.ts';
import type { Key } from '../../dsl/random.ts';
import type { DiffusionTables } from './schedule.ts';
import {
  checkSameShape, checkSteps, lookup, originalSteps, pMeanVariance, predictXstart, rowConstants, splitModelOutput,
} from './gaussian.ts';
import type { Denoiser } from './gaussian.ts';

const fr = Math.fround;

export type PSampleOutput = {
  xPrev: tf.Tensor4D;
  mean: tf.Tensor4D;
  logVariance: tf.Tensor4D;
  predXstart: tf.Tensor4D;
  modelOutput: tf.Tensor4D;
};

export type DdimStepOutput = {
  xPrev: tf.Tensor4D;
  predXstart: tf.Tensor4D;
  modelOutput: tf.Tensor4D;
};

function checkStepInputs(fn: string, tables: DiffusionTables, x: tf.Tensor4D, k: Int32Array, y: Int32Array, noise: tf.Tensor4D | null): void {
  if (x.rank !== 4) throw new Error(`${fn}: expected x of rank 4 (B, C, H, W), got shape [${x.shape.join(', ')}]`);
  checkSteps(fn, 'k', tables, k, x.shape[0]);
  if (y.length !== x.shape[0]) throw new Error(`${fn}: expected y of length ${x.shape[0]} (one label per row), got length ${y.length}`);
  if (noise !== null) checkSameShape(fn, 'noise', x.shape, noise.shape);
}

/** 1 for rows with k ≠ 0 (the last step adds no noise), as a (B,1,1,1) constant. */
function nonzeroMask(k: Int32Array): tf.Tensor4D {
  return rowConstants(Array.from(k, (i) => (i === 0 ? 0 : 1)));
}

/** One DDPM step x_k → x_{k−1} = μ + [k ≠ 0]·exp(½ log σ²)·noise. Every returned tensor belongs to the caller. */
export function pSampleStep(
  model: Denoiser,
  tables: DiffusionTables,
  x: tf.Tensor4D,
  k: Int32Array,
  y: Int32Array,
  noise: tf.Tensor4D,
): PSampleOutput {
  checkStepInputs('pSampleStep', tables, x, k, y, noise);
  return tf.tidy(() => {
    const modelOutput = model(x, originalSteps(tables, k), y);
    const { mean, logVariance, predXstart } = pMeanVariance(tables, modelOutput, x, k);
    const xPrev: tf.Tensor4D = tf.add(mean, tf.mul(tf.mul(nonzeroMask(k), tf.exp(tf.mul(0.5, logVariance))), noise));
    return { xPrev, mean, logVariance, predXstart, modelOutput };
  });
}

/**
 * One DDIM step (ADM's `ddim_sample`): ε' re-derived from x̂0, σ = η·√((1−ᾱ_prev)/(1−ᾱ))·√(1−ᾱ/ᾱ_prev),
 * x_{k−1} = x̂0·√ᾱ_prev + √(1−ᾱ_prev−σ²)·ε' + [k ≠ 0]·σ·noise. The learned variance is ignored.
 * `noise` may be null when η = 0. Every returned tensor belongs to the caller.
 */
export function ddimStep(
  model: Denoiser,
  tables: DiffusionTables,
  x: tf.Tensor4D,
  k: Int32Array,
  y: Int32Array,
  noise: tf.Tensor4D | null,
  eta = 0,
): DdimStepOutput {
  checkStepInputs('ddimStep', tables, x, k, y, noise);
  if (!(eta >= 0) || !Number.isFinite(eta)) throw new Error(`ddimStep: expected a finite eta >= 0, got ${eta}`);
  if (eta > 0 && noise === null && k.some((i) => i !== 0)) {
    throw new Error(`ddimStep: expected a noise tensor when eta > 0 (got eta = ${eta} and noise = null)`);
  }
  // The official code does this scalar arithmetic in float32 on the float32-cast lookups.
  const sigma = new Float32Array(k.length);
  const direction = new Float32Array(k.length);
  k.forEach((i, b) => {
    const ab = fr(tables.alphasCumprod[i]);
    const abPrev = fr(tables.alphasCumprodPrev[i]);
    sigma[b] = fr(fr(eta * fr(Math.sqrt(fr(fr(1 - abPrev) / fr(1 - ab))))) * fr(Math.sqrt(fr(1 - fr(ab / abPrev)))));
    // Clamped at 0: at k = 0 with η > 0 rounding can leave 1 − ᾱ_prev − σ² a hair below zero.
    direction[b] = fr(Math.sqrt(Math.max(0, fr(fr(1 - abPrev) - fr(sigma[b] * sigma[b])))));
  });
  const sqrtAbPrev = Array.from(k, (i) => Math.sqrt(fr(tables.alphasCumprodPrev[i])));
  return tf.tidy(() => {
    const modelOutput = model(x, originalSteps(tables, k), y);
    const [eps] = splitModelOutput('ddimStep', modelOutput, x);
    const predXstart = predictXstart(tables, x, eps, k);
    const epsPrime = tf.div(tf.sub(tf.mul(lookup(tables.sqrtRecipAlphasCumprod, k), x), predXstart), lookup(tables.sqrtRecipm1AlphasCumprod, k));
    const meanPred: tf.Tensor4D = tf.add(tf.mul(predXstart, rowConstants(sqrtAbPrev)), tf.mul(rowConstants(direction), epsPrime));
    const xPrev: tf.Tensor4D =
      noise === null || sigma.every((s) => s === 0) ? meanPred : tf.add(meanPred, tf.mul(tf.mul(nonzeroMask(k), rowConstants(sigma)), noise));
    return { xPrev, predXstart, modelOutput };
  });
}

/** Gaussian noise for a sampling loop: x_T, then the noise of each respaced step k. */
export interface NoiseSource {
  initial(n: number): Float32Array;
  step(k: number, n: number): Float32Array;
}

/**
 * The key-driven source: x_T from split(key)[0], step k's noise from foldIn(split(key)[1], k).
 * x_T does not depend on the respacing, so one key starts every sampler from the same x_T.
 */
export function noiseFromKey(key: Key): NoiseSource {
  const [initialKey, stepKey] = split(key);
  return {
    initial: (n) => normal(initialKey, n),
    step: (k, n) => normal(foldIn(stepKey, k), n),
  };
}

export interface LoopOptions {
  /** Called after each step with the number of steps done and the total K. */
  progress?: (done: number, total: number) => void;
}

export interface DdimLoopOptions extends LoopOptions {
  /** 0 (the default) is deterministic DDIM; 1 matches DDPM's marginals. */
  eta?: number;
}

/** `drawNoise` makes step k's noise tensor; a step that needs none never calls it, so nothing is drawn. */
type StepFn = (x: tf.Tensor4D, k: Int32Array, drawNoise: () => tf.Tensor4D) => tf.Tensor4D;

function runLoop(
  fn: string,
  tables: DiffusionTables,
  shape: [number, number, number, number],
  y: Int32Array,
  source: Key | NoiseSource,
  opts: LoopOptions,
  step: StepFn,
): tf.Tensor4D {
  if (shape.length !== 4 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(`${fn}: expected shape [B, C, H, W] of positive integers, got [${shape.join(', ')}]`);
  }
  if (y.length !== shape[0]) throw new Error(`${fn}: expected y of length ${shape[0]} (one label per row), got length ${y.length}`);
  const noise = 'initial' in source ? source : noiseFromKey(source);
  const n = shape.reduce((a, b) => a * b, 1);
  const K = tables.T;
  let x = tf.tensor4d(noise.initial(n), shape);
  try {
    for (let k = K - 1; k >= 0; k--) {
      const ks = new Int32Array(shape[0]).fill(k);
      const next = tf.tidy(() => step(x, ks, () => tf.tensor4d(noise.step(k, n), shape)));
      x.dispose();
      x = next;
      opts.progress?.(K - k, K);
    }
  } catch (err) {
    x.dispose();
    throw err;
  }
  return x;
}

/**
 * DDPM ancestral sampling over every step of `tables` (K−1 … 0). Returns x_0 of `shape`; no
 * intermediate tensor outlives the call. With a CFG denoiser keep the first half of the rows.
 */
export function pSampleLoop(
  model: Denoiser,
  tables: DiffusionTables,
  shape: [number, number, number, number],
  y: Int32Array,
  noise: Key | NoiseSource,
  opts: LoopOptions = {},
): tf.Tensor4D {
  return runLoop('pSampleLoop', tables, shape, y, noise, opts, (x, k, drawNoise) =>
    pSampleStep(model, tables, x, k, y, drawNoise()).xPrev,
  );
}

/** DDIM sampling over every step of `tables`; step noise is drawn only when η > 0. */
export function ddimSampleLoop(
  model: Denoiser,
  tables: DiffusionTables,
  shape: [number, number, number, number],
  y: Int32Array,
  noise: Key | NoiseSource,
  opts: DdimLoopOptions = {},
): tf.Tensor4D {
  const eta = opts.eta ?? 0;
  return runLoop('ddimSampleLoop', tables, shape, y, noise, opts, (x, k, drawNoise) =>
    ddimStep(model, tables, x, k, y, eta > 0 ? drawNoise() : null, eta).xPrev,
  );
}
