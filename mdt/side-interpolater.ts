/**
 * MDT's masked-training pieces: the kept-token gather, and the side-interpolater with the
 * masked shortcut (the paper's Fig. 4 right; spec §3.4).
 */
import { named, type Layer } from '../dsl/layer.ts';
import { mergeDecls, markTrainOnly, param, type ParamDecls, type ParamView } from '../dsl/param.ts';
import { add, concat, gatherRows, mul, reshape, scale, shift } from '../dsl/ops.ts';
import type { Shape } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { normal } from '../layers/linear.ts';
import type { BlockCtx } from '../layers/adaln-block.ts';
import type { MaskTensors } from './masking.ts';
import type { B, L } from './trunk.ts';

type Tokens = Tensor<readonly [B, L, number]>;

/** x[b, ids_keep[b]] : (B, N, D) → (B, L, D), in the plan's sequence order (a row gather of the flattened tokens). */
export function keepTokens(x: Tokens, mask: MaskTensors): Tokens {
  const [b, n, d] = x.shape as unknown as [number, number, number];
  const rows = gatherRows(reshape(x, [b * n, d] as const), mask.keep);
  return reshape(rows, [b, mask.keep.shape[0] / b, d] as const) as unknown as Tokens;
}

/**
 * The side-interpolater: refill removed positions with `mask_token`, un-shuffle, add
 * `decoder_pos_embed`, run `sideblocks.0` on all N tokens, then the masked shortcut —
 * removed positions take the side block's prediction, kept ones keep the encoder features.
 */
export function sideInterpolater(block: Layer<readonly [B, L, number], readonly [B, L, number], BlockCtx>) {
  const side = named('sideblocks.0', block);
  const params: ParamDecls = markTrainOnly(mergeDecls(side.params, { mask_token: param([1, 1, block.inShape[2]], normal(0.02)) }));
  return {
    params,
    apply(p: ParamView, x: Tokens, mask: MaskTensors, ctx: BlockCtx, trace?: (name: string, t: Tensor<Shape>) => void): Tokens {
      const [b, l, d] = x.shape as unknown as [number, number, number];
      const n = mask.removed.shape[1] as number;
      // One gather from [kept rows; mask_token] puts every token in place (the official
      // cat + gather by ids_restore, with the mask token as one shared extra row).
      const rows = concat([reshape(x, [b * l, d] as const), reshape(p.get('mask_token'), [1, d] as const)], 0);
      const placed = reshape(gatherRows(rows as Tensor<readonly [number, number]>, mask.restore), [b, n, d] as const);
      const full = add(placed, p.get('decoder_pos_embed')) as unknown as Tokens;
      const s = side.apply(p, full, ctx);
      trace?.('block_out/sideblocks.0', s);
      const keep = shift(scale(mask.removed, -1), 1);
      const out = add(mul(mask.removed, s), mul(keep, full)) as unknown as Tokens;
      trace?.('side_interpolater_out', out);
      return out;
    },
  };
}
