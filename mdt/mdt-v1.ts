/**
 * MDT v1 (the paper): an encoder of depth − dl blocks that sees only the kept tokens when
 * masked, the side-interpolater, and a decoder of dl blocks on all N tokens.
 */
import * as tf from '@tensorflow/tfjs';
import { stack } from '../dsl/layer.ts';
import { mergeDecls, param } from '../dsl/param.ts';
import { wrap } from '../dsl/tensor.ts';
import { adaLNBlock } from '../layers/adaln-block.ts';
import { biasPlan } from '../layers/relpos.ts';
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
      const plan = opts.mask ?? null;
      const fullBias = biasPlan(base.grid, null);
      let h = base.embed(p, x, opts.trace);
      const cond = base.condition(p, t, y, opts.trace);
      let bias = fullBias;
      if (plan) {
        h = keepTokens(h, plan);
        bias = biasPlan(base.grid, { ids: plan.idsKeep, batch: plan.batch, len: plan.lenKeep });
      }
      blocks.forEach((blk, i) => {
        if (i === decoderStart) {
          h = plan ? side.apply(p, h, plan, { c: cond, bias: fullBias }, opts.trace) : wrap(tf.add(h.raw, p.get('decoder_pos_embed').raw));
          bias = fullBias;
        }
        h = blk.apply(p, h, { c: cond, bias });
        opts.trace?.(`block_out/blocks.${i}`, h.raw);
      });
      return base.head(p, h, cond, opts.trace);
    },
  };
}
