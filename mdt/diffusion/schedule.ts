// Diffusion schedule tables in float64, with the exact order of operations of the
// IDDPM/ADM `GaussianDiffusion.__init__` (which DiT and MDT import unchanged), so the
// tables agree with the official numpy values to the last few bits.

/** Every table is indexed by the (possibly respaced) step index k in 0..T−1. */
export interface DiffusionTables {
  /** Number of steps in these tables (the respaced count K, not necessarily 1000). */
  T: number;
  /** Respaced index k → original diffusion step the network is called with. */
  timestepMap: Int32Array;
  betas: Float64Array;
  alphasCumprod: Float64Array;
  alphasCumprodPrev: Float64Array;
  alphasCumprodNext: Float64Array;
  sqrtAlphasCumprod: Float64Array;
  sqrtOneMinusAlphasCumprod: Float64Array;
  logOneMinusAlphasCumprod: Float64Array;
  sqrtRecipAlphasCumprod: Float64Array;
  sqrtRecipm1AlphasCumprod: Float64Array;
  posteriorVariance: Float64Array;
  posteriorLogVarianceClipped: Float64Array;
  posteriorMeanCoef1: Float64Array;
  posteriorMeanCoef2: Float64Array;
}

function assertStepCount(T: number, what: string): void {
  if (!Number.isInteger(T) || T < 1) {
    throw new Error(`${what}: expected a positive integer number of diffusion steps, got ${T}`);
  }
}

/**
 * ADM's linear schedule: np.linspace(scale·1e−4, scale·0.02, T) with scale = 1000/T.
 * numpy computes i·step + start with step = (stop − start)/(T − 1) and then overwrites the
 * last element with stop; we repeat that arithmetic rather than interpolating differently.
 */
export function linearBetas(T: number): Float64Array {
  assertStepCount(T, 'linearBetas');
  const scale = 1000 / T;
  const start = scale * 0.0001;
  const stop = scale * 0.02;
  const betas = new Float64Array(T);
  if (T === 1) {
    betas[0] = start;
    return betas;
  }
  const step = (stop - start) / (T - 1);
  for (let i = 0; i < T; i++) betas[i] = i * step + start;
  betas[T - 1] = stop;
  return betas;
}

/** Builds every table from `betas` the way ADM does (betas must lie in (0, 1]). */
export function tablesFromBetas(betas: Float64Array, timestepMap: Int32Array): DiffusionTables {
  const T = betas.length;
  assertStepCount(T, 'tablesFromBetas');
  if (timestepMap.length !== T) {
    throw new Error(`tablesFromBetas: expected timestepMap of length ${T} (one entry per beta), got ${timestepMap.length}`);
  }
  for (let i = 0; i < T; i++) {
    const b = betas[i];
    if (!(b > 0 && b <= 1)) throw new Error(`tablesFromBetas: expected every beta in (0, 1], got betas[${i}] = ${b}`);
  }

  const alphas = new Float64Array(T);
  const alphasCumprod = new Float64Array(T);
  let acc = 1;
  for (let i = 0; i < T; i++) {
    alphas[i] = 1.0 - betas[i];
    // np.cumprod is a plain left-to-right running product.
    acc = i === 0 ? alphas[0] : acc * alphas[i];
    alphasCumprod[i] = acc;
  }

  const alphasCumprodPrev = new Float64Array(T);
  const alphasCumprodNext = new Float64Array(T);
  alphasCumprodPrev[0] = 1.0;
  for (let i = 1; i < T; i++) alphasCumprodPrev[i] = alphasCumprod[i - 1];
  for (let i = 0; i < T - 1; i++) alphasCumprodNext[i] = alphasCumprod[i + 1];
  alphasCumprodNext[T - 1] = 0.0;

  const sqrtAlphasCumprod = new Float64Array(T);
  const sqrtOneMinusAlphasCumprod = new Float64Array(T);
  const logOneMinusAlphasCumprod = new Float64Array(T);
  const sqrtRecipAlphasCumprod = new Float64Array(T);
  const sqrtRecipm1AlphasCumprod = new Float64Array(T);
  const posteriorVariance = new Float64Array(T);
  const posteriorMeanCoef1 = new Float64Array(T);
  const posteriorMeanCoef2 = new Float64Array(T);
  for (let i = 0; i < T; i++) {
    const ab = alphasCumprod[i];
    const abPrev = alphasCumprodPrev[i];
    sqrtAlphasCumprod[i] = Math.sqrt(ab);
    sqrtOneMinusAlphasCumprod[i] = Math.sqrt(1.0 - ab);
    logOneMinusAlphasCumprod[i] = Math.log(1.0 - ab);
    sqrtRecipAlphasCumprod[i] = Math.sqrt(1.0 / ab);
    sqrtRecipm1AlphasCumprod[i] = Math.sqrt(1.0 / ab - 1);
    posteriorVariance[i] = (betas[i] * (1.0 - abPrev)) / (1.0 - ab);
    posteriorMeanCoef1[i] = (betas[i] * Math.sqrt(abPrev)) / (1.0 - ab);
    posteriorMeanCoef2[i] = ((1.0 - abPrev) * Math.sqrt(alphas[i])) / (1.0 - ab);
  }

  // ADM: log(append(post_var[1], post_var[1:])) — post_var[0] is 0, so it borrows index 1.
  // ADM leaves the table empty when T = 1; we store log(beta_0) instead so lookups stay finite
  // (the single step is k = 0, where samplers add no noise).
  const posteriorLogVarianceClipped = new Float64Array(T);
  if (T === 1) {
    posteriorLogVarianceClipped[0] = Math.log(betas[0]);
  } else {
    posteriorLogVarianceClipped[0] = Math.log(posteriorVariance[1]);
    for (let i = 1; i < T; i++) posteriorLogVarianceClipped[i] = Math.log(posteriorVariance[i]);
  }

  return {
    T,
    timestepMap,
    betas,
    alphasCumprod,
    alphasCumprodPrev,
    alphasCumprodNext,
    sqrtAlphasCumprod,
    sqrtOneMinusAlphasCumprod,
    logOneMinusAlphasCumprod,
    sqrtRecipAlphasCumprod,
    sqrtRecipm1AlphasCumprod,
    posteriorVariance,
    posteriorLogVarianceClipped,
    posteriorMeanCoef1,
    posteriorMeanCoef2,
  };
}

/** The float32 cast the official code applies to every table lookup (round to nearest even). */
export function f32(table: Float64Array): Float32Array {
  return Float32Array.from(table);
}
