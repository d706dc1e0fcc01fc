// Classifier-free guidance weight w_t as a function of the ORIGINAL diffusion step t
// (T at pure noise, 0 at the end of sampling). The guided eps is e_u + w_t·(e_c − e_u).

import { match } from 'ts-pattern';

export interface PowerCosineOptions {
  /** The guidance scale w (cfg_scale). */
  scale: number;
  /** The exponent s (scale_pow). */
  power: number;
  /** T_d (diffusion_steps); the official default is 1000 even when sampling is respaced. */
  T?: number;
}

export type GuidanceSchedule =
  | { kind: 'power-cosine'; scale: number; power: number }
  | { kind: 'paper'; scale: number; power: number }
  | { kind: 'constant'; scale: number };

function checkArgs(fn: string, t: number, T: number, scale: number, power: number): void {
  if (!Number.isFinite(T) || T <= 0) throw new Error(`${fn}: expected diffusion steps T > 0, got ${T}`);
  if (!Number.isFinite(t) || t < 0 || t > T) throw new Error(`${fn}: expected step t in [0, ${T}], got ${t}`);
  if (!Number.isFinite(scale)) throw new Error(`${fn}: expected a finite guidance scale, got ${scale}`);
  if (!Number.isFinite(power) || power < 0) throw new Error(`${fn}: expected a finite power >= 0, got ${power}`);
}

const fr = Math.fround;

/**
 * The official MDT `forward_with_cfg` schedule (what the released code and FID numbers use):
 *   w_t = (w − 1)·(1 − cos(π·(1 − t/T)^s))/2 + 1,
 * which interpolates from 1 (no guidance, t = T) to w (t = 0). Every operation is rounded to
 * float32 in the same order as the torch expression, since the official values are float32.
 */
export function powerCosineWeight(t: number, { scale, power, T = 1000 }: PowerCosineOptions): number {
  checkArgs('powerCosineWeight', t, T, scale, power);
  const remaining = fr(1 - fr(t / T));
  const angle = fr(fr(Math.pow(remaining, power)) * fr(Math.PI));
  const step = fr(fr(1 - fr(Math.cos(angle))) / 2);
  return fr(fr(fr(scale - 1) * step) + 1);
}

/**
 * The paper's form as MDT-SPEC §7 records it (from recollection, unverified against the PDF):
 *   w_t = (1 − cos(π·(t'/T)^s))/2 · w,
 * where t' must count sampling progress (t' = T − t in diffusion steps) for the schedule to grow
 * during sampling. It rises from 0 (pure unconditional eps) to w and scales w itself, whereas the
 * official code scales w − 1. No official code uses it, so it is computed in float64.
 */
export function paperWeight(t: number, { scale, power, T = 1000 }: PowerCosineOptions): number {
  checkArgs('paperWeight', t, T, scale, power);
  const progress = (T - t) / T;
  return ((1 - Math.cos(Math.PI * Math.pow(progress, power))) / 2) * scale;
}

/** DiT's guidance: the same w at every step. */
export function constantWeight({ scale }: { scale: number }): number {
  if (!Number.isFinite(scale)) throw new Error(`constantWeight: expected a finite guidance scale, got ${scale}`);
  return scale;
}

export function guidanceWeight(schedule: GuidanceSchedule, t: number, T: number): number {
  return match(schedule)
    .with({ kind: 'power-cosine' }, (s) => powerCosineWeight(t, { scale: s.scale, power: s.power, T }))
    .with({ kind: 'paper' }, (s) => paperWeight(t, { scale: s.scale, power: s.power, T }))
    .with({ kind: 'constant' }, (s) => constantWeight(s))
    .exhaustive();
}
