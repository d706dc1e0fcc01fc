/** The adaLN-Zero transformer block (DiT), with MDT's relative bias and MDTv2's skip input. */
import type { Dim, Shape, Sym } from '../dsl/shape.ts';
import type { Checked, Div, Mul } from '../dsl/size-types.ts';
import { layer, named, type Layer } from '../dsl/layer.ts';
import { mergeDecls, prefixDecls, type ParamDecls, type ParamView } from '../dsl/param.ts';
import { add, chunkLast, concatLast, expandDims, layerNorm, linear as linearOp, mul, shift, silu } from '../dsl/ops.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { linear, zeros } from './linear.ts';
import { mlp } from './mlp.ts';
import { attention, type AttnCtx } from './attention.ts';

export type B = Sym<'B'>;
export const LN_EPS = 1e-6;

export interface BlockCtx<D extends Dim = Dim> extends AttnCtx {
  /** Conditioning c = t_emb + y_emb, (B, D). */
  readonly c: Tensor<readonly [B, D]>;
  /** MDTv2 long/dense skip input, (B, L, D); required by blocks built with `skip`. */
  readonly skip?: Tensor<readonly [B, Dim, D]>;
}

/** SiLU(c) → Linear(D → n·D), zero-initialised (adaLN-Zero), split into n chunks in declaration order. */
export function adaLNChunks<D extends Dim>(p: ParamView, c: Tensor<readonly [B, D]>, n: number, dim: D): Tensor<readonly [B, D]>[] {
  const mod = linearOp(silu(c), p.get('weight', [n * dim, dim] as const), p.get('bias', [n * dim] as const));
  return chunkLast(mod, n, dim);
}

export function adaLNDecls(dim: number, n: number): ParamDecls {
  return prefixDecls('adaLN_modulation.1', linear([] as const, dim, n * dim, zeros).params);
}

/** modulate(x, shift, scale) = x·(1 + scale.unsqueeze(1)) + shift.unsqueeze(1). */
export function modulate<L extends Dim, D extends Dim>(x: Tensor<readonly [B, L, D]>, shiftBy: Tensor<readonly [B, D]>, scaleBy: Tensor<readonly [B, D]>): Tensor<readonly [B, L, D]> {
  const [h, s, b]: Tensor<Shape>[] = [x, expandDims(shiftBy, 1), expandDims(scaleBy, 1)];
  return add(mul(h, shift(b, 1)), s) as unknown as Tensor<readonly [B, L, D]>;
}

/** x + gate.unsqueeze(1)·y: the gated residual of adaLN-Zero. */
function gated<L extends Dim, D extends Dim>(x: Tensor<readonly [B, L, D]>, gate: Tensor<readonly [B, D]>, y: Tensor<readonly [B, L, D]>): Tensor<readonly [B, L, D]> {
  const [h, g, f]: Tensor<Shape>[] = [x, expandDims(gate, 1), y];
  return add(h, mul(g, f)) as unknown as Tensor<readonly [B, L, D]>;
}

export interface BlockOptions<D extends number = number, H extends number = number, R extends number = number> {
  /** Must divide the width: a literal that does not is a compile error on this property. */
  readonly heads: H & Checked<Div<D, H>>;
  readonly mlpRatio: R;
  /** Grid side for the relative position bias (MDT); null for DiT. */
  readonly grid: number | null;
  /** MDTv2: `skip_linear` (2D → D) applied to concat([x, skip]) first. */
  readonly skip: boolean;
}

/**
 * x ← x + gate_msa·Attn(modulate(LN(x), shift_msa, scale_msa))
 * x ← x + gate_mlp·MLP(modulate(LN(x), shift_mlp, scale_mlp))
 * with (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp) from adaLN(c), in that order.
 */
export function adaLNBlock<L extends Dim, D extends Dim, H extends number = number, R extends number = number>(b: B, len: L, dim: D, o: BlockOptions<D, H, R>): AdaLNBlock<L, D, R> {
  const attn = named('attn', attention<L, D, H>(b, len, dim, o.heads, o.grid));
  const hidden = Math.round(dim * o.mlpRatio) as Mul<D, R>;
  const ff = named('mlp', mlp([b, len] as const, dim, hidden));
  const skipLinear = o.skip ? named('skip_linear', linear([b, len] as const, (2 * dim) as Mul<2, D>, dim)) : null;
  const params = mergeDecls(attn.params, ff.params, adaLNDecls(dim, 6), skipLinear ? skipLinear.params : {});
  const block = layer<readonly [B, L, D], readonly [B, L, D], BlockCtx<D>>([b, len, dim] as const, [b, len, dim] as const, params, (p, input, ctx) => {
    let x = input;
    if (skipLinear) {
      if (!ctx.skip) throw new Error('adaLNBlock: this block has skip_linear but no skip input was given');
      x = skipLinear.apply(p, concatLast(x, ctx.skip as Tensor<readonly [B, L, D]>) as unknown as Tensor<readonly [B, L, Mul<2, D>]>, undefined);
    }
    const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = adaLNChunks(p.scope('adaLN_modulation.1'), ctx.c, 6, dim) as [Tensor<readonly [B, D]>, Tensor<readonly [B, D]>, Tensor<readonly [B, D]>, Tensor<readonly [B, D]>, Tensor<readonly [B, D]>, Tensor<readonly [B, D]>];
    x = gated(x, gateMsa, attn.apply(p, modulate(layerNorm(x, LN_EPS), shiftMsa, scaleMsa), ctx));
    return gated(x, gateMlp, ff.apply(p, modulate(layerNorm(x, LN_EPS), shiftMlp, scaleMlp), undefined));
  }, { c: [b, dim] as const, skip: [b, len, dim] as const });
  return { ...block, mlpHidden: [b, len, hidden] as const };
}

/** The block, with its MLP's hidden shape (D·mlpRatio, exact in types for literal sizes). */
export type AdaLNBlock<L extends Dim, D extends Dim, R extends number = number> = Layer<readonly [B, L, D], readonly [B, L, D], BlockCtx<D>> & {
  readonly mlpHidden: readonly [B, L, Mul<D, R>];
};

/** DiT FinalLayer: LN → modulate with (shift, scale) (shift first) → Linear(D → p²·Cout), zero-initialised. */
export function finalLayer<L extends Dim, D extends Dim, O extends Dim>(b: B, len: L, dim: D, out: O): Layer<readonly [B, L, D], readonly [B, L, O], { readonly c: Tensor<readonly [B, D]> }> {
  const proj = named('linear', linear([b, len] as const, dim, out, zeros));
  return layer<readonly [B, L, D], readonly [B, L, O], { readonly c: Tensor<readonly [B, D]> }>([b, len, dim] as const, [b, len, out] as const, mergeDecls(proj.params, adaLNDecls(dim, 2)), (p, x, ctx) => {
    const [shiftBy, scaleBy] = adaLNChunks(p.scope('adaLN_modulation.1'), ctx.c, 2, dim) as [Tensor<readonly [B, D]>, Tensor<readonly [B, D]>];
    return proj.apply(p, modulate(layerNorm(x, LN_EPS), shiftBy, scaleBy), undefined);
  }, { c: [b, dim] as const });
}
