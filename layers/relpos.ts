/** BEiT-style relative position bias, as MDT uses it (one learned table per block). */
import * as tf from '@tensorflow/tfjs';

/** Rows of the bias table for an h×h grid: (2h−1)² offsets plus BEiT's 3 unused cls rows. */
export function relPosTableRows(grid: number): number {
  return (2 * grid - 1) ** 2 + 3;
}

/** idx(i, j) = (r_i − r_j + h − 1)·(2h − 1) + (c_i − c_j + h − 1), tokens row-major; shape (N, N). */
export function relPosIndex(grid: number): Int32Array {
  const n = grid * grid;
  const out = new Int32Array(n * n);
  for (let i = 0; i < n; i++) {
    const ri = Math.floor(i / grid), ci = i % grid;
    for (let j = 0; j < n; j++) {
      const rj = Math.floor(j / grid), cj = j % grid;
      out[i * n + j] = (ri - rj + grid - 1) * (2 * grid - 1) + (ci - cj + grid - 1);
    }
  }
  return out;
}

/**
 * Which table rows each attention logit reads. `tokens` null: the full grid (one shared
 * (N, N) pattern). Otherwise the kept original token ids per sample (B × L, in sequence
 * order): the kept tokens carry their grid positions through the gather.
 */
export interface BiasPlan {
  readonly index: tf.Tensor1D;
  readonly rows: number;
  readonly len: number;
}

export function biasPlan(grid: number, tokens: { ids: Int32Array; batch: number; len: number } | null): BiasPlan {
  const full = relPosIndex(grid);
  const n = grid * grid;
  if (tokens === null) return { index: tf.tensor1d(full, 'int32'), rows: 1, len: n };
  const { ids, batch, len } = tokens;
  const out = new Int32Array(batch * len * len);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < len; i++) {
      const ti = ids[b * len + i]!;
      for (let j = 0; j < len; j++) out[(b * len + i) * len + j] = full[ti * n + ids[b * len + j]!]!;
    }
  }
  return { index: tf.tensor1d(out, 'int32'), rows: batch, len };
}

/** (rows, heads, L, L) bias from a (R, heads) table. */
export function gatherBias(table: tf.Tensor, plan: BiasPlan): tf.Tensor4D {
  const heads = table.shape[1]!;
  const g = tf.reshape(tf.gather(table, plan.index, 0), [plan.rows, plan.len, plan.len, heads]);
  return tf.transpose(g, [0, 3, 1, 2]) as tf.Tensor4D;
}
