// ADM/IDDPM Gaussian diffusion as DiT and MDT use it (EPSILON mean, LEARNED_RANGE variance, MSE
// loss plus the un-rescaled VLB term): forward noising, the model's posterior, the training
// losses of one branch and one sampling step, written with the DSL's ops so that each traces
// into one graph with the network. The network stays abstract (a Denoiser), like DiT's `diffusion/`.
//
// Schedule lookups are gathers from constant tables indexed by the int32 step tensor: every
// table value is cast to float32 (as the official `_extract_into_tensor` does) and becomes a
// per-row (B,1,1,1) factor; the compiler folds the tables once per executable.

import { add, chunk, constant, div, exp, gatherRows, greater, less, log, maximum, mean, mul, neg, reshape, scale, shift, square, stopGradient, sub, tanh, where } from '../../dsl/ops.ts';
import type { Dim, Shape, Sym } from '../../dsl/shape.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import type { DiffusionTables } from './schedule.ts';
import { minSnrWeights } from './min-snr.ts';

type B = Sym<'B'>;
/** (B, C, H, W) float32. */
export type Maps = Tensor<readonly [B, Dim, Dim, Dim]>;
/** (B) int32 step indices. */
export type Steps = Tensor<readonly [B]>;
/** (B) per-row values. */
export type Rows = Tensor<readonly [B]>;
type Any = Tensor<Shape>;

/**
 * The network as the diffusion sees it: x (B, C, H, W); t the ORIGINAL diffusion steps (B,
 * int32); y labels (B, int32). Returns (B, 2C, H, W): ε then v.
 */
export type Denoiser = (x: Maps, t: Steps, y: Steps) => Maps;

const fr = Math.fround;
const asMaps = (t: Any) => t as unknown as Maps;

/** Throws unless `shape` is (B, C, H, W). */
function checkMaps(fn: string, what: string, x: Any): void {
  if (x.shape.length !== 4) throw new Error(`${fn}: expected ${what} of rank 4 (B, C, H, W), got shape [${x.shape.join(', ')}]`);
}

export function checkSameShape(fn: string, what: string, expected: readonly number[], got: readonly number[]): void {
  if (expected.length !== got.length || expected.some((d, i) => d !== got[i])) {
    throw new Error(`${fn}: expected ${what} of shape [${expected.join(', ')}], got [${got.join(', ')}]`);
  }
}

function checkSteps(fn: string, what: string, k: Steps, rows: number): void {
  if (k.dtype !== 'int32' || k.shape.length !== 1 || k.shape[0] !== rows) {
    throw new Error(`${fn}: expected ${what} as int32 of shape [${rows}] (one per batch row), got ${k.dtype} [${k.shape.join(', ')}]`);
  }
}

/** `values[k[b]]` as a (B,1,1,1) float32 factor. */
export function lookup(values: ArrayLike<number>, k: Steps): Maps {
  const table = constant(k, Float32Array.from(values, fr), [values.length, 1] as const);
  return reshape(gatherRows(table, k), [k.shape[0], 1, 1, 1] as const) as unknown as Maps;
}

/** Original steps the network is called with: timestepMap[k] for each row. */
export function originalSteps(tables: DiffusionTables, k: Steps): Steps {
  const map = constant(k, tables.timestepMap, [tables.T, 1] as const, 'int32');
  return reshape(gatherRows(map, k), [k.shape[0]] as const) as unknown as Steps;
}

/** Splits (B, 2C, H, W) into ε (B, C, H, W) and v (B, C, H, W), checking it matches x (B, C, H, W). */
export function splitModelOutput(fn: string, modelOutput: Maps, x: Maps): [Maps, Maps] {
  const [b, c, h, w] = x.shape as unknown as number[];
  checkSameShape(fn, 'model output (ε then v)', [b!, 2 * c!, h!, w!], modelOutput.shape);
  return chunk(modelOutput, 2, 1) as unknown as [Maps, Maps];
}

/** x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·noise. `t` indexes `tables`. */
export function qSample(tables: DiffusionTables, x0: Maps, t: Steps, noise: Maps): Maps {
  checkMaps('qSample', 'x0', x0);
  checkSameShape('qSample', 'noise', x0.shape, noise.shape);
  checkSteps('qSample', 't', t, x0.shape[0]);
  return asMaps(add(mul(lookup(tables.sqrtAlphasCumprod, t), x0), mul(lookup(tables.sqrtOneMinusAlphasCumprod, t), noise)));
}

/** The true posterior q(x_{t−1} | x_t, x0): mean c1·x0 + c2·x_t and the clipped log variance (B,1,1,1). */
export function qPosterior(tables: DiffusionTables, x0: Maps, xt: Maps, t: Steps): { mean: Maps; logVarianceClipped: Maps } {
  return {
    mean: asMaps(add(mul(lookup(tables.posteriorMeanCoef1, t), x0), mul(lookup(tables.posteriorMeanCoef2, t), xt))),
    logVarianceClipped: lookup(tables.posteriorLogVarianceClipped, t),
  };
}

/** x̂0 = √(1/ᾱ_k)·x_k − √(1/ᾱ_k − 1)·ε̂ (no clipping: latents). */
export function predictXstart(tables: DiffusionTables, x: Maps, eps: Maps, k: Steps): Maps {
  return asMaps(sub(mul(lookup(tables.sqrtRecipAlphasCumprod, k), x), mul(lookup(tables.sqrtRecipm1AlphasCumprod, k), eps)));
}

export interface ModelPosterior {
  readonly mean: Maps;
  readonly logVariance: Maps;
  readonly predXstart: Maps;
}

/**
 * p(x_{k−1} | x_k) from ε̂ and v at table index k: μ = c1·x̂0 + c2·x_k and log σ² = frac·log β_k
 * + (1 − frac)·log σ̃²_k with frac = (v + 1)/2, β the betas of `tables`.
 */
function modelPosterior(tables: DiffusionTables, eps: Maps, v: Maps, x: Maps, k: Steps): ModelPosterior {
  const predXstart = predictXstart(tables, x, eps, k);
  const mean = asMaps(add(mul(lookup(tables.posteriorMeanCoef1, k), predXstart), mul(lookup(tables.posteriorMeanCoef2, k), x)));
  const maxLog = lookup(Array.from(tables.betas, Math.log), k);
  const minLog = lookup(tables.posteriorLogVarianceClipped, k);
  const frac = scale(shift(v, 1), 0.5);
  const logVariance = asMaps(add(mul(frac, maxLog), mul(shift(neg(frac), 1), minLog)));
  return { mean, logVariance, predXstart };
}

/** The model's posterior from its output (ε̂, v) at table index k. */
export function pMeanVariance(tables: DiffusionTables, modelOutput: Maps, x: Maps, k: Steps): ModelPosterior {
  checkMaps('pMeanVariance', 'x', x);
  checkSteps('pMeanVariance', 'k', k, x.shape[0]);
  const [eps, v] = splitModelOutput('pMeanVariance', modelOutput, x);
  return modelPosterior(tables, eps, v, x, k);
}

/** KL(N(mean1, e^logvar1) ‖ N(mean2, e^logvar2)) elementwise, in nats, in ADM's order of operations. */
export function normalKl(mean1: Any, logvar1: Any, mean2: Any, logvar2: Any): Any {
  const sum = add(add(sub(shift(logvar2, -1), logvar1), exp(sub(logvar1, logvar2))), mul(square(sub(mean1, mean2)), exp(neg(logvar2))));
  return scale(sum, 0.5);
}

/** ADM's tanh approximation of the standard normal CDF. */
export function approxStandardNormalCdf(z: Any): Any {
  const cubic = add(z, scale(mul(mul(z, z), z), 0.044715));
  return scale(shift(tanh(scale(cubic, Math.sqrt(2 / Math.PI))), 1), 0.5);
}

/**
 * log-likelihood of x under a Gaussian discretized into bins of half-width 1/255, the edge bins
 * (x < −0.999, x > 0.999) extending to ±∞, each log clamped at 1e−12. Designed for pixels in
 * [−1, 1]; the official code applies it to latents as well.
 */
export function discretizedGaussianLogLikelihood(x: Any, means: Any, logScales: Any): Any {
  const centered = sub(x, means);
  const invStdv = exp(neg(logScales));
  const cdfPlus = approxStandardNormalCdf(mul(invStdv, shift(centered, 1 / 255)));
  const cdfMin = approxStandardNormalCdf(mul(invStdv, shift(centered, -1 / 255)));
  const floor = constant(x, 1e-12);
  const logCdfPlus = log(maximum(cdfPlus, floor));
  const logOneMinusCdfMin = log(maximum(shift(neg(cdfMin), 1), floor));
  const logCdfDelta = log(maximum(sub(cdfPlus, cdfMin), floor));
  return where(less(x, constant(x, -0.999)), logCdfPlus, where(greater(x, constant(x, 0.999)), logOneMinusCdfMin, logCdfDelta));
}

/** Mean over C, H, W: (B, C, H, W) → (B). */
function meanFlat(x: Any): Rows {
  return mean(x, [1, 2, 3]) as unknown as Rows;
}

/**
 * The VLB term in bits per dimension, (B): KL(q ‖ p) for t > 0, the decoder NLL of x0 for t = 0
 * (both are computed; each row keeps its own).
 */
function vbTermsBpd(tables: DiffusionTables, model: ModelPosterior, x0: Maps, xt: Maps, t: Steps): Rows {
  const truth = qPosterior(tables, x0, xt, t);
  const kl = scale(meanFlat(normalKl(truth.mean, truth.logVarianceClipped, model.mean, model.logVariance)), 1 / Math.LN2);
  const nll = scale(meanFlat(neg(discretizedGaussianLogLikelihood(x0, model.mean, scale(model.logVariance, 0.5)))), 1 / Math.LN2);
  return where(less(t, constant(t, 1, [], 'int32')), nll, kl) as unknown as Rows;
}

export interface TrainingLossOptions {
  /** MDTv2's min-SNR-γ weight on the MSE term (γ = 5 in the official code); absent for MDT v1 and DiT. */
  minSnrGamma?: number;
}

export interface BranchLosses {
  /** mean_{C,H,W}((noise − ε̂)²), times the min-SNR weight when requested; (B). */
  readonly mse: Rows;
  /** The VLB term in bits (gradient only into v); (B). */
  readonly vb: Rows;
  /** mse + vb; (B). */
  readonly loss: Rows;
  /** What the model returned, (B, 2C, H, W). */
  readonly modelOutput: Maps;
}

/**
 * One branch of ADM's `training_losses` (FORMAT.md §8.3). `t` indexes `tables` (for the training
 * diffusion "" that is the original step); the model is called with `tables.timestepMap[t]`.
 */
export function trainingLosses(model: Denoiser, tables: DiffusionTables, x0: Maps, t: Steps, y: Steps, noise: Maps, opts: TrainingLossOptions = {}): BranchLosses {
  checkMaps('trainingLosses', 'x0', x0);
  checkSameShape('trainingLosses', 'noise', x0.shape, noise.shape);
  checkSteps('trainingLosses', 't', t, x0.shape[0]);
  checkSteps('trainingLosses', 'y', y, x0.shape[0]);
  const xt = qSample(tables, x0, t, noise);
  const modelOutput = model(xt, originalSteps(tables, t), y);
  const [eps, v] = splitModelOutput('trainingLosses', modelOutput, xt);
  const frozen = modelPosterior(tables, stopGradient(eps), v, xt, t);
  const vb = vbTermsBpd(tables, frozen, x0, xt, t);
  const squared = meanFlat(square(sub(noise, eps)));
  const mse = opts.minSnrGamma === undefined ? squared : (mul(squared, reshape(lookup(minSnrWeights(tables, opts.minSnrGamma), t), [t.shape[0]] as const)) as unknown as Rows);
  return { mse, vb, loss: add(mse, vb) as unknown as Rows, modelOutput };
}

export interface StepOutput {
  readonly xPrev: Maps;
  readonly predXstart: Maps;
  readonly modelOutput: Maps;
}

/** One DDPM step x_k → x_{k−1} = μ + [k ≠ 0]·exp(½ log σ²)·noise. */
export function pSampleStep(model: Denoiser, tables: DiffusionTables, x: Maps, k: Steps, y: Steps, noise: Maps): StepOutput & ModelPosterior {
  checkMaps('pSampleStep', 'x', x);
  checkSteps('pSampleStep', 'k', k, x.shape[0]);
  checkSteps('pSampleStep', 'y', y, x.shape[0]);
  checkSameShape('pSampleStep', 'noise', x.shape, noise.shape);
  const modelOutput = model(x, originalSteps(tables, k), y);
  const post = pMeanVariance(tables, modelOutput, x, k);
  const nonzero = lookup(Array.from({ length: tables.T }, (_, i) => (i === 0 ? 0 : 1)), k);
  const xPrev = asMaps(add(post.mean, mul(mul(nonzero, exp(scale(post.logVariance, 0.5))), noise)));
  return { ...post, xPrev, modelOutput };
}

/** DDIM's per-step factors for every k, in the official float32 scalar arithmetic. */
function ddimFactors(tables: DiffusionTables, eta: number) {
  const sigma = new Float32Array(tables.T);
  const direction = new Float32Array(tables.T);
  const sqrtAbPrev = new Float32Array(tables.T);
  for (let i = 0; i < tables.T; i++) {
    const ab = fr(tables.alphasCumprod[i]!);
    const abPrev = fr(tables.alphasCumprodPrev[i]!);
    sigma[i] = fr(fr(eta * fr(Math.sqrt(fr(fr(1 - abPrev) / fr(1 - ab))))) * fr(Math.sqrt(fr(1 - fr(ab / abPrev)))));
    // Clamped at 0: at k = 0 with η > 0 rounding can leave 1 − ᾱ_prev − σ² a hair below zero.
    direction[i] = fr(Math.sqrt(Math.max(0, fr(fr(1 - abPrev) - fr(sigma[i]! * sigma[i]!)))));
    sqrtAbPrev[i] = Math.sqrt(abPrev);
  }
  // The last step adds no noise.
  const noiseScale = Float32Array.from(sigma, (s, i) => (i === 0 ? 0 : s));
  return { sigma, direction, sqrtAbPrev, noiseScale };
}

/**
 * One DDIM step (ADM's `ddim_sample`): ε' re-derived from x̂0, σ = η·√((1−ᾱ_prev)/(1−ᾱ))·√(1−ᾱ/ᾱ_prev),
 * x_{k−1} = x̂0·√ᾱ_prev + √(1−ᾱ_prev−σ²)·ε' + [k ≠ 0]·σ·noise. The learned variance is ignored.
 * `noise` may be null when η = 0.
 */
export function ddimStep(model: Denoiser, tables: DiffusionTables, x: Maps, k: Steps, y: Steps, noise: Maps | null, eta = 0): StepOutput {
  checkMaps('ddimStep', 'x', x);
  checkSteps('ddimStep', 'k', k, x.shape[0]);
  checkSteps('ddimStep', 'y', y, x.shape[0]);
  if (!(eta >= 0) || !Number.isFinite(eta)) throw new Error(`ddimStep: expected a finite eta >= 0, got ${eta}`);
  if (eta > 0 && noise === null) throw new Error(`ddimStep: expected a noise tensor when eta > 0 (got eta = ${eta} and noise = null)`);
  const f = ddimFactors(tables, eta);
  const modelOutput = model(x, originalSteps(tables, k), y);
  const [eps] = splitModelOutput('ddimStep', modelOutput, x);
  const predXstart = predictXstart(tables, x, eps, k);
  const epsPrime = div(sub(mul(lookup(tables.sqrtRecipAlphasCumprod, k), x), predXstart), lookup(tables.sqrtRecipm1AlphasCumprod, k));
  const meanPred = add(mul(predXstart, lookup(f.sqrtAbPrev, k)), mul(lookup(f.direction, k), epsPrime));
  const xPrev = asMaps(noise === null ? meanPred : add(meanPred, mul(lookup(f.noiseScale, k), noise)));
  return { xPrev, predXstart, modelOutput };
}
