/**
 * MDT v1 (the paper): an encoder of depth − dl blocks that sees only the kept tokens when
 * masked, the side-interpolater, and a decoder of dl blocks on all N tokens.
 */
import { stack } from '../dsl/layer.ts';
import { mergeDecls, param } from '../dsl/param.ts';
import { add } from '../dsl/ops.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { adaLNBlock, type BlockCtx } from '../layers/adaln-block.ts';
import type { ModelConfig } from './config.ts';
import { keepTokens, sideInterpolater } from './side-interpolater.ts';
import { B, L, checkInputs, sincosInit, trunk, type DiffusionModel } from './trunk.ts';

export function mdtBlock(c: ModelConfig, grid: number, skip: boolean) {
  return adaLNBlock(B, L, c.hiddenSize, { heads: c.numHeads, mlpRatio: c.mlpRatio, grid, skip });
}

export function mdtV1(c: ModelConfig): DiffusionModel {
  const base = trunk(c);
  const blocks = stack('blocks', c.depth, () => mdtBlock(c, base.grid, false));
  const side = sideInterpolater(mdtBlock(c, base.grid, false));
  const decoderStart = c.depth - c.decodeLayer;
  return {
    config: c,
    params: mergeDecls(
      base.params,
      { decoder_pos_embed: param([1, base.tokens, c.hiddenSize], sincosInit(c)) },
      ...blocks.map((b) => b.params),
      side.params,
    ),
    forward(p, x, t, y, opts = {}) {
      checkInputs(c, x, t, y);
      const mask = opts.mask ?? null;
      let h = base.embed(p, x, opts.trace);
      const cond = base.condition(p, t, y, opts.trace);
      let ctx: BlockCtx = { c: cond };
      if (mask) {
        h = keepTokens(h, mask);
        ctx = { c: cond, biasIndex: mask.biasIndex };
      }
      blocks.forEach((blk, i) => {
        if (i === decoderStart) {
          h = mask ? side.apply(p, h, mask, { c: cond }, opts.trace) : (add(h, p.get('decoder_pos_embed')) as unknown as Tensor<readonly [B, L, number]>);
          ctx = { c: cond };
        }
        h = blk.apply(p, h, ctx);
        opts.trace?.(`block_out/blocks.${i}`, h);
      });
      return base.head(p, h, cond, opts.trace);
    },
  };
}
