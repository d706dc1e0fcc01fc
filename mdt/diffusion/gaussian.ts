// ADM/IDDPM Gaussian diffusion as DiT and MDT use it (EPSILON mean, LEARNED_RANGE variance, MSE
// loss plus the un-rescaled VLB term): forward noising, the model's posterior, and the training
// losses of one branch. The network stays abstract (a Denoiser), like DiT's `diffusion/`.
//
// Schedule lookups happen in JS: every table value is cast to float32 (as the official
// `_extract_into_tensor` does) and enters the graph as a per-sample (B,1,1,1) constant, so a
// step never reads a tensor back.

import * as tf from '@tensorflow/tfjs';
import type { DiffusionTables } from './schedule.ts';
import { minSnrWeight } from './min-snr.ts';

/**
 * The network as the diffusion sees it. x: (B, C, H, W) float32; t: ORIGINAL diffusion steps
 * (length B); y: labels (length B). Returns (B, 2C, H, W): ε then v.
 */
export type Denoiser = (x: tf.Tensor4D, t: Int32Array, y: Int32Array) => tf.Tensor4D;

const fr = Math.fround;

/** Float32 per-sample constants of shape (B,1,1,1). */
export function rowConstants(values: ArrayLike<number>): tf.Tensor4D {
  return tf.tensor4d(Float32Array.from(values, fr), [values.length, 1, 1, 1]);
}

/** `table[idx[b]]` cast to float32, as a (B,1,1,1) constant. */
export function lookup(table: Float64Array, idx: Int32Array): tf.Tensor4D {
  return rowConstants(Array.from(idx, (i) => table[i]));
}

/** Throws unless `idx` holds `rows` integer indices into tables of `tables.T` steps. */
export function checkSteps(fn: string, what: string, tables: DiffusionTables, idx: Int32Array, rows: number): void {
  if (idx.length !== rows) throw new Error(`${fn}: expected ${what} of length ${rows} (one per batch row), got length ${idx.length}`);
  for (let b = 0; b < idx.length; b++) {
    if (idx[b] < 0 || idx[b] >= tables.T) {
      throw new Error(`${fn}: expected ${what} in [0, ${tables.T - 1}] (indices into the ${tables.T}-step tables), got ${what}[${b}] = ${idx[b]}`);
    }
  }
}

export function checkSameShape(fn: string, what: string, expected: readonly number[], got: readonly number[]): void {
  if (expected.length !== got.length || expected.some((d, i) => d !== got[i])) {
    throw new Error(`${fn}: expected ${what} of shape [${expected.join(', ')}], got [${got.join(', ')}]`);
  }
}

function checkLatent(fn: string, what: string, x: tf.Tensor): void {
  if (x.rank !== 4) throw new Error(`${fn}: expected ${what} of rank 4 (B, C, H, W), got shape [${x.shape.join(', ')}]`);
}

/** Original steps the network is called with: timestepMap[k] for each row. */
export function originalSteps(tables: DiffusionTables, k: Int32Array): Int32Array {
  return Int32Array.from(k, (i) => tables.timestepMap[i]);
}

/** Splits (B, 2C, H, W) into ε (B, C, H, W) and v (B, C, H, W), checking it matches x (B, C, H, W). */
export function splitModelOutput(fn: string, modelOutput: tf.Tensor4D, x: tf.Tensor4D): [tf.Tensor4D, tf.Tensor4D] {
  const [B, C, H, W] = x.shape;
  checkSameShape(fn, 'model output (ε then v)', [B, 2 * C, H, W], modelOutput.shape);
  return tf.split(modelOutput, 2, 1) as [tf.Tensor4D, tf.Tensor4D];
}

/**
 * An identity whose gradient is zero: tfjs has no stop_gradient/detach. The VLB term uses it so
 * that only the learned variance is trained by it (ADM's `model_output.detach()`).
 */
export const stopGradient = tf.customGrad(((x: tf.Tensor) => ({
  value: x.clone(),
  gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
})) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as <T extends tf.Tensor>(x: T) => T;

/** x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise. `t` indexes `tables`. */
export function qSample(tables: DiffusionTables, x0: tf.Tensor4D, t: Int32Array, noise: tf.Tensor4D): tf.Tensor4D {
  checkLatent('qSample', 'x0', x0);
  checkSameShape('qSample', 'noise', x0.shape, noise.shape);
  checkSteps('qSample', 't', tables, t, x0.shape[0]);
  return tf.tidy(() =>
    tf.add(tf.mul(lookup(tables.sqrtAlphasCumprod, t), x0), tf.mul(lookup(tables.sqrtOneMinusAlphasCumprod, t), noise)),
  );
}

export type Posterior = {
  mean: tf.Tensor4D;
  /** (B,1,1,1): the true posterior's log variance does not depend on the data. */
  logVarianceClipped: tf.Tensor4D;
};

/** The true posterior q(x_{t−1} | x_t, x0): mean c1·x0 + c2·x_t and the clipped log variance. */
export function qPosterior(tables: DiffusionTables, x0: tf.Tensor4D, xt: tf.Tensor4D, t: Int32Array): Posterior {
  checkLatent('qPosterior', 'x0', x0);
  checkSameShape('qPosterior', 'x_t', x0.shape, xt.shape);
  checkSteps('qPosterior', 't', tables, t, x0.shape[0]);
  return tf.tidy(() => ({
    mean: tf.add(tf.mul(lookup(tables.posteriorMeanCoef1, t), x0), tf.mul(lookup(tables.posteriorMeanCoef2, t), xt)),
    logVarianceClipped: lookup(tables.posteriorLogVarianceClipped, t),
  }));
}

/** x̂0 = √(1/ᾱ_k)·x_k − √(1/ᾱ_k − 1)·ε̂ (no clipping: latents). */
export function predictXstart(tables: DiffusionTables, x: tf.Tensor4D, eps: tf.Tensor4D, k: Int32Array): tf.Tensor4D {
  return tf.tidy(() =>
    tf.sub(tf.mul(lookup(tables.sqrtRecipAlphasCumprod, k), x), tf.mul(lookup(tables.sqrtRecipm1AlphasCumprod, k), eps)),
  );
}

export type ModelPosterior = {
  mean: tf.Tensor4D;
  logVariance: tf.Tensor4D;
  predXstart: tf.Tensor4D;
};

function modelPosterior(tables: DiffusionTables, eps: tf.Tensor4D, v: tf.Tensor4D, x: tf.Tensor4D, k: Int32Array): ModelPosterior {
  return tf.tidy(() => {
    const predXstart = predictXstart(tables, x, eps, k);
    const mean: tf.Tensor4D = tf.add(tf.mul(lookup(tables.posteriorMeanCoef1, k), predXstart), tf.mul(lookup(tables.posteriorMeanCoef2, k), x));
    const maxLog = rowConstants(Array.from(k, (i) => Math.log(tables.betas[i])));
    const minLog = lookup(tables.posteriorLogVarianceClipped, k);
    const frac = tf.div(tf.add(v, 1), 2);
    const logVariance: tf.Tensor4D = tf.add(tf.mul(frac, maxLog), tf.mul(tf.sub(1, frac), minLog));
    return { mean, logVariance, predXstart };
  });
}

/**
 * p(x_{k−1} | x_k) from the network output (ε̂, v) at table index k (respaced index when sampling):
 * μ = c1·x̂0 + c2·x_k and log σ² = frac·log β_k + (1 − frac)·log σ̃²_k with frac = (v + 1)/2,
 * where β are the betas of `tables` (the respaced betas when sampling).
 */
export function pMeanVariance(tables: DiffusionTables, modelOutput: tf.Tensor4D, x: tf.Tensor4D, k: Int32Array): ModelPosterior {
  checkLatent('pMeanVariance', 'x', x);
  checkSteps('pMeanVariance', 'k', tables, k, x.shape[0]);
  return tf.tidy(() => {
    const [eps, v] = splitModelOutput('pMeanVariance', modelOutput, x);
    return modelPosterior(tables, eps, v, x, k);
  });
}

/** KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats, in ADM's order of operations. */
export function normalKl(mean1: tf.Tensor, logvar1: tf.Tensor, mean2: tf.Tensor, logvar2: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const sum = tf.add(
      tf.add(tf.sub(tf.add(-1, logvar2), logvar1), tf.exp(tf.sub(logvar1, logvar2))),
      tf.mul(tf.square(tf.sub(mean1, mean2)), tf.exp(tf.neg(logvar2))),
    );
    return tf.mul(0.5, sum);
  });
}

/** ADM's tanh approximation of the standard normal CDF. */
export function approxStandardNormalCdf(z: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    // z·z·z rather than pow(z, 3): tfjs's Pow gradient also builds the (unused) exponent gradient,
    // a log and a select over the whole tensor.
    const cubic = tf.add(z, tf.mul(0.044715, tf.mul(tf.mul(z, z), z)));
    return tf.mul(0.5, tf.add(1, tf.tanh(tf.mul(Math.sqrt(2 / Math.PI), cubic))));
  });
}

/**
 * log-likelihood of x under a Gaussian discretized into bins of half-width 1/255, the edge bins
 * (x < −0.999, x > 0.999) extending to ±∞, each log clamped at 1e−12. Designed for pixels in
 * [−1, 1]; the official code applies it to latents as well.
 */
export function discretizedGaussianLogLikelihood(x: tf.Tensor, means: tf.Tensor, logScales: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const centered = tf.sub(x, means);
    const invStdv = tf.exp(tf.neg(logScales));
    const cdfPlus = approxStandardNormalCdf(tf.mul(invStdv, tf.add(centered, 1 / 255)));
    const cdfMin = approxStandardNormalCdf(tf.mul(invStdv, tf.sub(centered, 1 / 255)));
    const logCdfPlus = tf.log(tf.maximum(cdfPlus, 1e-12));
    const logOneMinusCdfMin = tf.log(tf.maximum(tf.sub(1, cdfMin), 1e-12));
    const logCdfDelta = tf.log(tf.maximum(tf.sub(cdfPlus, cdfMin), 1e-12));
    return tf.where(tf.less(x, -0.999), logCdfPlus, tf.where(tf.greater(x, 0.999), logOneMinusCdfMin, logCdfDelta));
  });
}

function meanFlat(x: tf.Tensor): tf.Tensor1D {
  return tf.mean(x, [1, 2, 3]);
}

/**
 * The VLB term in bits per dimension, (B): KL(q ‖ p) for t > 0, the decoder NLL of x0 for t = 0.
 * Only the branch some row needs is computed, so a batch without t = 0 never builds the NLL.
 */
function vbTermsBpd(tables: DiffusionTables, model: ModelPosterior, x0: tf.Tensor4D, xt: tf.Tensor4D, t: Int32Array): tf.Tensor1D {
  return tf.tidy(() => {
    const isZero = Array.from(t, (s) => s === 0);
    const kl = () => {
      const truth = qPosterior(tables, x0, xt, t);
      return tf.div(meanFlat(normalKl(truth.mean, truth.logVarianceClipped, model.mean, model.logVariance)), Math.LN2) as tf.Tensor1D;
    };
    const nll = () =>
      tf.div(meanFlat(tf.neg(discretizedGaussianLogLikelihood(x0, model.mean, tf.mul(0.5, model.logVariance)))), Math.LN2) as tf.Tensor1D;
    if (isZero.every(Boolean)) return nll();
    if (!isZero.some(Boolean)) return kl();
    return tf.where(tf.tensor1d(isZero, 'bool'), nll(), kl());
  });
}

export interface TrainingLossOptions {
  /** MDTv2's min-SNR-γ weight on the MSE term (γ = 5 in the official code); absent for MDT v1 and DiT. */
  minSnrGamma?: number;
}

export type BranchLosses = {
  /** mean_{C,H,W}((noise − ε̂)²), times the min-SNR weight when requested; (B). */
  mse: tf.Tensor1D;
  /** The VLB term in bits (gradient only into v); (B). */
  vb: tf.Tensor1D;
  /** mse + vb; (B). */
  loss: tf.Tensor1D;
  /** What the model returned, (B, 2C, H, W). */
  modelOutput: tf.Tensor4D;
};

/**
 * One branch of ADM's `training_losses` (FORMAT.md §8.3). `t` indexes `tables` (for the training
 * diffusion "" that is the original step); the model is called with `tables.timestepMap[t]`.
 * Every returned tensor belongs to the caller.
 */
export function trainingLosses(
  model: Denoiser,
  tables: DiffusionTables,
  x0: tf.Tensor4D,
  t: Int32Array,
  y: Int32Array,
  noise: tf.Tensor4D,
  opts: TrainingLossOptions = {},
): BranchLosses {
  checkLatent('trainingLosses', 'x0', x0);
  checkSameShape('trainingLosses', 'noise', x0.shape, noise.shape);
  checkSteps('trainingLosses', 't', tables, t, x0.shape[0]);
  if (y.length !== x0.shape[0]) throw new Error(`trainingLosses: expected y of length ${x0.shape[0]} (one label per row), got length ${y.length}`);
  const { minSnrGamma } = opts;
  const weights =
    minSnrGamma === undefined
      ? null
      : Array.from(t, (i) => minSnrWeight(tables.sqrtAlphasCumprod[i], tables.sqrtOneMinusAlphasCumprod[i], minSnrGamma));
  return tf.tidy(() => {
    const xt = qSample(tables, x0, t, noise);
    const modelOutput = model(xt, originalSteps(tables, t), y);
    const [eps, v] = splitModelOutput('trainingLosses', modelOutput, xt);
    const frozen = modelPosterior(tables, stopGradient(eps), v, xt, t);
    const vb = vbTermsBpd(tables, frozen, x0, xt, t);
    const squared = meanFlat(tf.squaredDifference(noise, eps));
    const mse: tf.Tensor1D = weights === null ? squared : tf.mul(squared, tf.tensor1d(weights));
    const loss: tf.Tensor1D = tf.add(mse, vb);
    return { mse, vb, loss, modelOutput };
  });
}
