// Classifier-free guidance as the official `forward_with_cfg` (MDT and DiT, FORMAT.md §7.3).
// The batch holds 2B rows: B conditional rows, then the same B with the null label.

import { add, chunk, concat, constant, gatherRows, mul, reshape, slice, sub } from '../../dsl/ops.ts';
import { guidanceWeight, type GuidanceSchedule } from './guidance-weight.ts';
import { checkSameShape, type Denoiser, type Maps } from './gaussian.ts';

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

/** A schedule in words, as the CLI and the page print it. */
export function describeGuidance(g: GuidanceSchedule | null, channels: NonNullable<GuidanceOptions['channels']>): string {
  if (g === null) return 'no guidance';
  return `guidance ${g.kind} w=${g.scale}${g.kind === 'constant' ? '' : ` s=${g.power}`} on ${channels} channels`;
}

/** Options as an exported file records them (null: unguided), in words. */
export const describeGuidanceOptions = (g: GuidanceOptions | null): string => (g === null ? 'no guidance' : describeGuidance(g.schedule, g.channels ?? 'first3'));

/**
 * Wraps `model` so that one call on 2B rows returns guided ε: the first half of x is duplicated
 * (x[B:] is ignored), the model runs once on 2B rows, and g = e_u + w_t·(e_c − e_u) with w_t from
 * the ORIGINAL step t of each conditional row replaces the guided channels of both halves. The
 * other channels (the unguided ε channels and v) keep each half's own output. w_t is read from a
 * table over the T original steps (a constant of the graph).
 */
export function withGuidance(model: Denoiser, opts: GuidanceOptions): Denoiser {
  const { schedule, channels = 'first3', T = 1000, inChannels: C } = opts;
  if (!Number.isInteger(C) || C < 1) throw new Error(`withGuidance: expected inChannels to be a positive integer, got ${C}`);
  if (channels !== 'first3' && channels !== 'all') throw new Error(`withGuidance: expected channels 'first3' or 'all', got ${String(channels)}`);
  if (channels === 'first3' && C < 3) {
    throw new Error(`withGuidance: channels 'first3' needs at least 3 ε channels, got inChannels = ${C} (use channels 'all')`);
  }
  const guided = channels === 'first3' ? 3 : C;
  const weights = Float32Array.from({ length: T + 1 }, (_, s) => guidanceWeight(schedule, s, T));
  return (x, t, y) => {
    const [rows, ch, h, w] = x.shape as unknown as [number, number, number, number];
    if (rows % 2 !== 0) throw new Error(`withGuidance: expected an even number of rows (B conditional, then B unconditional), got ${rows}`);
    if (ch !== C) throw new Error(`withGuidance: expected x with ${C} channels, got shape [${x.shape.join(', ')}]`);
    if (t.shape[0] !== rows || y.shape[0] !== rows) {
      throw new Error(`withGuidance: expected t and y of length ${rows} (one per row), got ${t.shape[0]} and ${y.shape[0]}`);
    }
    const b = rows / 2;
    const half = slice(x, [0, 0, 0, 0], [b, C, h, w]);
    const out = model(concat([half, half], 0) as Maps, t, y);
    checkSameShape('withGuidance', 'model output', [rows, 2 * C, h, w], out.shape);
    const eps = slice(out, [0, 0, 0, 0], [rows, guided, h, w]);
    const rest = slice(out, [0, guided, 0, 0], [rows, 2 * C - guided, h, w]);
    const [cond, uncond] = chunk(eps, 2, 0) as [Maps, Maps];
    const table = constant(t, weights, [T + 1, 1] as const);
    const wt = reshape(gatherRows(table, slice(t, [0], [b])), [b, 1, 1, 1] as const);
    const g = add(uncond, mul(wt, sub(cond, uncond)));
    return concat([concat([g, g], 0), rest], 1) as unknown as Maps;
  };
}
