/**
 * A feature set: `count` rows of `dim` float32 features, row-major, as the metrics take them.
 * Pairwise products run as tfjs matrix products in row blocks (a 10k × 10k float32 Gram matrix
 * would be 400 MB at once).
 */
import * as tf from '@tensorflow/tfjs';

export interface Features {
  readonly dim: number;
  readonly count: number;
  readonly data: Float32Array;
}

export function features(data: Float32Array, dim: number, what = 'features'): Features {
  if (!Number.isInteger(dim) || dim < 1 || data.length % dim !== 0) throw new Error(`${what}: ${data.length} values do not split into rows of ${dim}`);
  return { dim, count: data.length / dim, data };
}

/** The rows `rows` of `f`, in that order. */
export function pickRows(f: Features, rows: ArrayLike<number>): Features {
  const out = new Float32Array(rows.length * f.dim);
  for (let k = 0; k < rows.length; k++) out.set(f.data.subarray(rows[k]! * f.dim, (rows[k]! + 1) * f.dim), k * f.dim);
  return { dim: f.dim, count: rows.length, data: out };
}

export function checkSameDim(a: Features, b: Features, what: string): void {
  if (a.dim !== b.dim) throw new Error(`${what}: the two feature sets have ${a.dim} and ${b.dim} features per sample: were they computed by the same network?`);
}

/** Rows per block of a pairwise product (a block is blockRows × other.count float32 values). */
const BLOCK = 1024;

/**
 * Calls `each(start, block)` for consecutive row blocks of a·bᵀ: `block` holds rows
 * start … start + rows − 1 of the (a.count × b.count) product, row-major.
 */
export function forEachProductBlock(a: Features, b: Features, each: (start: number, rows: number, block: Float32Array) => void): void {
  checkSameDim(a, b, 'pairwise product');
  const bt = tf.tensor2d(b.data, [b.count, b.dim]);
  try {
    for (let start = 0; start < a.count; start += BLOCK) {
      const rows = Math.min(BLOCK, a.count - start);
      const block = tf.tidy(() => tf.matMul(tf.tensor2d(a.data.subarray(start * a.dim, (start + rows) * a.dim), [rows, a.dim]), bt, false, true));
      const values = block.dataSync() as Float32Array;
      block.dispose();
      each(start, rows, values);
    }
  } finally {
    bt.dispose();
  }
}

/** Squared norms of the rows, in float64. */
export function rowNorms2(f: Features): Float64Array {
  const out = new Float64Array(f.count);
  for (let r = 0; r < f.count; r++) {
    let s = 0;
    for (let i = r * f.dim; i < (r + 1) * f.dim; i++) s += f.data[i]! * f.data[i]!;
    out[r] = s;
  }
  return out;
}
