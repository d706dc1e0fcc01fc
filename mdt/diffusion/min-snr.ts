// MDTv2's "timestep-adapted" MSE weight (min-SNR-γ for ε-prediction): w(t) = min(SNR_t, γ)/SNR_t.
// Not applied to the VLB term.

import type { DiffusionTables } from './schedule.ts';

const fr = Math.fround;

/**
 * The official code computes SNR in float32 from the float32-cast table lookups:
 * SNR = (f32(√ᾱ_t)/f32(√(1−ᾱ_t)))², then min(SNR, γ)/SNR, so w is exactly 1 while SNR ≤ γ.
 */
export function minSnrWeight(sqrtAb: number, sqrt1mAb: number, gamma = 5): number {
  if (!(sqrtAb > 0 && sqrt1mAb > 0)) {
    throw new Error(`minSnrWeight: expected sqrt(alphas_cumprod) > 0 and sqrt(1 - alphas_cumprod) > 0, got ${sqrtAb} and ${sqrt1mAb}`);
  }
  if (!(gamma > 0) || !Number.isFinite(gamma)) throw new Error(`minSnrWeight: expected a finite gamma > 0, got ${gamma}`);
  const ratio = fr(fr(sqrtAb) / fr(sqrt1mAb));
  const snr = fr(ratio * ratio);
  return fr(Math.min(snr, fr(gamma)) / snr);
}

/** The weight for every step of `tables` (index = step index of the tables). */
export function minSnrWeights(tables: DiffusionTables, gamma = 5): Float32Array {
  return Float32Array.from({ length: tables.T }, (_, t) =>
    minSnrWeight(tables.sqrtAlphasCumprod[t], tables.sqrtOneMinusAlphasCumprod[t], gamma),
  );
}
