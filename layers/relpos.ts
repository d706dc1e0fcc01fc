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
 * Which table rows each attention logit reads, as plain indices (no tensors: a plan can be
 * built anywhere and outlive any tidy scope). `rows` 1: the full grid, one (N, N) pattern
 * shared by the batch. Otherwise one (L, L) pattern per sample from its kept original token
 * ids: the kept tokens carry their grid positions through the gather.
 */
export interface BiasPlan {
  readonly rows: number;
  readonly len: number;
  /** The bias-table row of each logit, (rows, len, len). */
  readonly index: Int32Array;
}

export function biasPlan(grid: number, tokens: { ids: Int32Array; batch: number; len: number } | null): BiasPlan {
  const full = relPosIndex(grid);
  const n = grid * grid;
  if (tokens === null) return { index: full, rows: 1, len: n };
  const { ids, batch, len } = tokens;
  const out = new Int32Array(batch * len * len);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < len; i++) {
      const ti = ids[b * len + i]!;
      for (let j = 0; j < len; j++) out[(b * len + i) * len + j] = full[ti * n + ids[b * len + j]!]!;
    }
  }
  return { index: out, rows: batch, len };
}

const flatIndex = new WeakMap<BiasPlan, Map<string, Int32Array>>();

/**
 * Positions into the flattened transposed table (heads, R) — h·R + index[r, i, j] — in the
 * order of the bias layout: batch-major (rows, heads, L, L), the official one, or token-major
 * (L, rows, heads, L). Cached per plan.
 */
function headIndex(plan: BiasPlan, tableRows: number, heads: number, tokenMajor: boolean): Int32Array {
  let byShape = flatIndex.get(plan);
  if (byShape === undefined) flatIndex.set(plan, (byShape = new Map()));
  const key = `${tableRows}x${heads}${tokenMajor ? 't' : 'b'}`;
  let out = byShape.get(key);
  if (out !== undefined) return out;
  const { rows, len, index } = plan;
  out = new Int32Array(len * rows * heads * len);
  let o = 0;
  for (let a = 0; a < (tokenMajor ? len : rows); a++) {
    for (let c = 0; c < (tokenMajor ? rows : heads); c++) {
      for (let e = 0; e < (tokenMajor ? heads : len); e++) {
        const [r, h, i] = tokenMajor ? [c, e, a] : [a, c, e];
        const src = (r * len + i) * len;
        const base = h * tableRows;
        for (let j = 0; j < len; j++) out[o++] = base + index[src + j]!;
      }
    }
  }
  byShape.set(key, out);
  return out;
}

function gatherFlat(table: tf.Tensor, plan: BiasPlan, tokenMajor: boolean): tf.Tensor4D {
  const [tableRows, heads] = table.shape as [number, number];
  const flat = tf.reshape(tf.transpose(table), [-1]);
  const g = tf.gather(flat, tf.tensor1d(headIndex(plan, tableRows, heads, tokenMajor), 'int32'), 0);
  return tf.reshape(g, tokenMajor ? [plan.len, plan.rows, heads, plan.len] : [plan.rows, heads, plan.len, plan.len]) as tf.Tensor4D;
}

/** (rows, heads, L, L) bias from a (R, heads) table: the official layout, and batch-major attention's. */
export function gatherBias(table: tf.Tensor, plan: BiasPlan): tf.Tensor4D {
  return gatherFlat(table, plan, false);
}

/** The bias in token-major attention's layout, (L, rows, heads, L): [query][sample][head][key]. */
export function gatherBiasTokenMajor(table: tf.Tensor, plan: BiasPlan): tf.Tensor4D {
  return gatherFlat(table, plan, true);
}
