/**
 * MDTv2: a U-Net-like encoder (en_inblocks push, en_outblocks pop: LIFO long skips), the
 * side-interpolater, and de_blocks that each also see the pre-masking input embedding.
 */
import * as tf from '@tensorflow/tfjs';
import { stack } from '../dsl/layer.ts';
import { mergeDecls, param } from '../dsl/param.ts';
import { wrap, type Tensor } from '../dsl/tensor.ts';
import { biasPlan } from '../layers/relpos.ts';
import { halfDepth, type ModelConfig } from './config.ts';
import { mdtBlock } from './mdt-v1.ts';
import { keepTokens, sideInterpolater } from './side-interpolater.ts';
import { checkInputs, sincosInit, trunk, type B, type L, type DiffusionModel } from './trunk.ts';

export function mdtV2(c: ModelConfig): DiffusionModel {
  const base = trunk(c);
  const half = halfDepth(c);
  const enIn = stack('en_inblocks', half, () => mdtBlock(c, base.grid, false));
  const enOut = stack('en_outblocks', half, () => mdtBlock(c, base.grid, true));
  const de = stack('de_blocks', c.decodeLayer, () => mdtBlock(c, base.grid, true));
  const side = sideInterpolater(mdtBlock(c, base.grid, false));
  return {
    config: c,
    params: mergeDecls(
      base.params,
      { decoder_pos_embed: param([1, base.tokens, c.hiddenSize], sincosInit(c)) },
      ...[...enIn, ...enOut, ...de].map((b) => b.params),
      side.params,
    ),
    forward(p, x, t, y, opts = {}) {
      checkInputs(c, x, t, y);
      const plan = opts.mask ?? null;
      const trace = opts.trace;
      const fullBias = biasPlan(base.grid, null);
      let h = base.embed(p, x, trace);
      const cond = base.condition(p, t, y, trace);
      const inputSkip = h;
      let bias = fullBias;
      if (plan) {
        h = keepTokens(h, plan);
        bias = biasPlan(base.grid, { ids: plan.idsKeep, batch: plan.batch, len: plan.lenKeep });
      }
      const skips: Tensor<readonly [B, L, number]>[] = [];
      enIn.forEach((blk, i) => {
        h = blk.apply(p, h, { c: cond, bias });
        trace?.(`block_out/en_inblocks.${i}`, h.raw);
        skips.push(h);
      });
      enOut.forEach((blk, i) => {
        h = blk.apply(p, h, { c: cond, bias, skip: skips.pop()! });
        trace?.(`block_out/en_outblocks.${i}`, h.raw);
      });
      h = plan ? side.apply(p, h, plan, { c: cond, bias: fullBias }, trace) : wrap(tf.add(h.raw, p.get('decoder_pos_embed').raw));
      de.forEach((blk, i) => {
        h = blk.apply(p, h, { c: cond, bias: fullBias, skip: inputSkip });
        trace?.(`block_out/de_blocks.${i}`, h.raw);
      });
      return base.head(p, h, cond, trace);
    },
  };
}
