// Classifier-free guidance as the official `forward_with_cfg` (MDT and DiT, FORMAT.md §7.3).
// The batch holds 2B rows: B conditional rows, then the same B with the null label.

import * as tf from '@tensorflow/tfjs';
import { guidanceWeight } from './guidance-weight.ts';
import type { GuidanceSchedule } from './guidance-weight.ts';
import { checkSameShape, rowConstants } from './gaussian.ts';
import type { Denoiser } from './gaussian.ts';

export interface GuidanceOptions {
  /** MDT: `{ kind: 'power-cosine', scale, power }`; DiT: `{ kind: 'constant', scale }`. */
  schedule: GuidanceSchedule;
  /**
   * 'first3' (default) guides ε channels 0..2 only, the DiT quirk MDT kept (its FID numbers use it);
   * 'all' guides every ε channel.
   */
  channels?: 'first3' | 'all';
  /** T_d of the schedule: the official default is 1000 whatever the respacing. */
  T?: number;
  /** C, the channels of x (the model returns 2C). */
  inChannels: number;
}

/**
 * Wraps `model` so that one call on 2B rows returns guided ε: the first half of x is duplicated
 * (x[B:] is ignored), the model runs once on 2B rows, and g = e_u + w_t·(e_c − e_u) with w_t from
 * the ORIGINAL step t of each conditional row replaces the guided channels of both halves. The
 * other channels (the unguided ε channels and v) keep each half's own output.
 */
export function withGuidance(model: Denoiser, opts: GuidanceOptions): Denoiser {
  const { schedule, channels = 'first3', T = 1000, inChannels: C } = opts;
  if (!Number.isInteger(C) || C < 1) throw new Error(`withGuidance: expected inChannels to be a positive integer, got ${C}`);
  if (channels !== 'first3' && channels !== 'all') throw new Error(`withGuidance: expected channels 'first3' or 'all', got ${String(channels)}`);
  if (channels === 'first3' && C < 3) {
    throw new Error(`withGuidance: channels 'first3' needs at least 3 ε channels, got inChannels = ${C} (use channels 'all')`);
  }
  const guided = channels === 'first3' ? 3 : C;
  return (x, t, y) => {
    const rows = x.shape[0];
    if (rows % 2 !== 0) throw new Error(`withGuidance: expected an even number of rows (B conditional, then B unconditional), got ${rows}`);
    if (x.shape[1] !== C) throw new Error(`withGuidance: expected x with ${C} channels, got shape [${x.shape.join(', ')}]`);
    if (t.length !== rows || y.length !== rows) {
      throw new Error(`withGuidance: expected t and y of length ${rows} (one per row), got ${t.length} and ${y.length}`);
    }
    const B = rows / 2;
    const w = Array.from(t.subarray(0, B), (step) => guidanceWeight(schedule, step, T));
    return tf.tidy(() => {
      const half = tf.slice(x, [0, 0, 0, 0], [B, -1, -1, -1]);
      const out = model(tf.concat([half, half], 0), t, y);
      checkSameShape('withGuidance', 'model output', [rows, 2 * C, x.shape[2], x.shape[3]], out.shape);
      const [eps, rest] = tf.split(out, [guided, 2 * C - guided], 1);
      const [cond, uncond] = tf.split(eps, 2, 0);
      const g = tf.add(uncond, tf.mul(rowConstants(w), tf.sub(cond, uncond)));
      return tf.concat([tf.concat([g, g], 0), rest], 1) as tf.Tensor4D;
    });
  };
}
