/** Multi-head self-attention (timm's Attention) with MDT's optional relative position bias. */
import type { Dim, Sym } from '../dsl/shape.ts';
import type { Checked, Div, Mul } from '../dsl/size-types.ts';
import { layer, named, type Layer } from '../dsl/layer.ts';
import { param, type ParamDecls } from '../dsl/param.ts';
import { add, batchMatmul, chunk, reshape, scale, softmax, transpose } from '../dsl/ops.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { linear, xavier } from './linear.ts';
import { relPosBias, relPosDecls } from './relpos.ts';

export type B = Sym<'B'>;
export interface AttnCtx {
  /**
   * Which bias-table row each logit reads, (1 or B, L, L) int32: absent for the full grid,
   * where the block's own `relative_position_index` buffer is used; the masked encoder passes
   * the kept tokens' rows of it.
   */
  readonly biasIndex?: Tensor<readonly [Dim, Dim, Dim]>;
}

/**
 * qkv = Linear(D→3D); q, k, v its thirds, each viewed (B, L, heads, hd) and permuted to
 * (B, heads, L, hd) — timm's reshape(B, L, 3, heads, hd).permute(2, 0, 3, 1, 4) without the
 * rank-5 transpose; softmax(q·hd^−½·kᵀ + bias)·v; heads merged back to (B, L, D); proj. With
 * `grid` set, the bias comes from `rel_pos_bias` (layers/relpos.ts).
 */
export function attention<L extends Dim, D extends Dim, H extends number>(b: B, len: L, dim: D, headCount: H & Checked<Div<D, H>>, grid: number | null): Layer<readonly [B, L, D], readonly [B, L, D], AttnCtx> {
  const heads: number = headCount;
  const hd = dim / heads;
  if (!Number.isInteger(hd)) throw new Error(`attention: width ${dim} is not divisible by ${heads} heads`);
  const qkv = named('qkv', linear([b, len] as const, dim, (3 * dim) as Mul<3, D>, xavier(dim, 3 * dim)));
  const proj = named('proj', linear([b, len] as const, dim, dim));
  const params: ParamDecls = { ...qkv.params, ...proj.params, ...(grid === null ? {} : relPosDecls(grid, heads)) };
  return layer([b, len, dim] as const, [b, len, dim] as const, params, (p, x, ctx) => {
    const [n, l] = x.shape as unknown as [number, number];
    const [q, k, v] = chunk(qkv.apply(p, x, undefined), 3, 2).map((t) => transpose(reshape(t, [n, l, heads, hd] as const), [0, 2, 1, 3] as const));
    let logits = batchMatmul(scale(q!, hd ** -0.5), k!, true);
    if (grid !== null) logits = add(logits, relPosBias(p.scope('rel_pos_bias'), heads, ctx.biasIndex)) as typeof logits;
    const out = batchMatmul(softmax(logits), v!);
    const merged = reshape(transpose(out, [0, 2, 1, 3] as const), [n, l, dim as number] as const);
    return proj.apply(p, merged as unknown as Tensor<readonly [B, L, D]>, undefined);
  });
}
