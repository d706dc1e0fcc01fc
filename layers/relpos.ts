/** BEiT-style relative position bias, as MDT uses it (one learned table per block). */
import { param, type ParamDecls, type ParamView } from '../dsl/param.ts';
import { gatherRows, reshape, transpose } from '../dsl/ops.ts';
import type { Dim } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';

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

/** The kept tokens' rows of the full index: (B, L, L) for kept original ids (B, L), row-major. */
export function keptBiasIndex(grid: number, ids: Int32Array, batch: number, len: number): Int32Array {
  const full = relPosIndex(grid);
  const n = grid * grid;
  const out = new Int32Array(batch * len * len);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < len; i++) {
      const ti = ids[b * len + i]!;
      for (let j = 0; j < len; j++) out[(b * len + i) * len + j] = full[ti * n + ids[b * len + j]!]!;
    }
  }
  return out;
}

/** `relative_position_bias_table` ((2h−1)²+3, heads) and the persistent int buffer `relative_position_index` (N, N). */
export function relPosDecls(grid: number, heads: number): ParamDecls {
  return {
    'rel_pos_bias.relative_position_bias_table': param([relPosTableRows(grid), heads], { kind: 'truncNormal', std: 0.02, lo: -2, hi: 2 }),
    'rel_pos_bias.relative_position_index': param([grid * grid, grid * grid], { kind: 'values', values: () => relPosIndex(grid) }, { dtype: 'int32', trainable: false }),
  };
}

/**
 * table[index.view(−1)].view(R, L, L, heads).permute(0, 3, 1, 2): the (R, heads, L, L) bias,
 * R = 1 for the full grid (the module's own index buffer) or B for per-sample kept tokens.
 */
export function relPosBias(p: ParamView, heads: number, index?: Tensor<readonly [Dim, Dim, Dim]>): Tensor<readonly [Dim, Dim, Dim, Dim]> {
  const own = () => {
    const full = p.get<readonly [Dim, Dim]>('relative_position_index');
    return reshape(full, [1, ...full.shape] as readonly [Dim, Dim, Dim]);
  };
  const idx = index ?? own();
  const [r, l, m] = idx.shape as unknown as [number, number, number];
  const rows = gatherRows(p.get<readonly [Dim, Dim]>('relative_position_bias_table'), reshape(idx, [r * l * m] as const));
  return transpose(reshape(rows, [r, l, m, heads] as const), [0, 3, 1, 2] as const);
}
