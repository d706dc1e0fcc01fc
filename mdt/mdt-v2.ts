/**
 * MDTv2: a U-Net-like encoder (en_inblocks push, en_outblocks pop: LIFO long skips), the
 * side-interpolater, and de_blocks that each also see the pre-masking input embedding.
 */
import { stack } from '../dsl/layer.ts';
import { mergeDecls, param } from '../dsl/param.ts';
import { add } from '../dsl/ops.ts';
import type { Tensor } from '../dsl/tensor.ts';
import type { AttnCtx } from '../layers/attention.ts';
import { halfDepth, type ConfigCheck, type ModelConfig, type TokensOf } from './config.ts';
import { mdtBlock, type ModelBlock, type TracedBlock } from './mdt-v1.ts';
import { keepTokens, sideInterpolater } from './side-interpolater.ts';
import { checkInputs, sincosInit, trunk, type B, type L, type DiffusionModel } from './trunk.ts';

/** MDTv2 with its blocks typed by the config's sizes. */
export interface MdtV2<C extends ModelConfig> extends DiffusionModel {
  readonly config: C;
  /** The encoder halves run on L tokens: the kept ones when masked, all N otherwise (L bound per call). */
  readonly enIn: readonly ModelBlock<C, L>[];
  readonly enOut: readonly ModelBlock<C, L>[];
  /** The decoder always sees all N tokens. */
  readonly de: readonly ModelBlock<C, TokensOf<C>>[];
}

export function mdtV2<const C extends ModelConfig>(config: C & ConfigCheck<C>): MdtV2<C> {
  const c: C = config;
  const base = trunk(c);
  const half = halfDepth(c);
  const enIn = stack('en_inblocks', half, () => mdtBlock(c, base.grid, false));
  const enOut = stack('en_outblocks', half, () => mdtBlock(c, base.grid, true));
  const de = stack('de_blocks', c.decodeLayer, () => mdtBlock(c, base.grid, true, base.tokens as TokensOf<C>));
  const side = sideInterpolater(mdtBlock(c, base.grid, false));
  const [encoderIn, encoderOut, decoder] = [enIn, enOut, de] as unknown as [TracedBlock[], TracedBlock[], TracedBlock[]];
  return {
    config: c,
    enIn,
    enOut,
    de,
    params: mergeDecls(
      base.params,
      { decoder_pos_embed: param([1, base.tokens, c.hiddenSize], sincosInit(c)) },
      ...[...enIn, ...enOut, ...de].map((b) => b.params),
      side.params,
    ),
    forward(p, x, t, y, opts = {}) {
      checkInputs(c, x, t, y);
      const mask = opts.mask ?? null;
      const trace = opts.trace;
      let h = base.embed(p, x, trace);
      const cond = base.condition(p, t, y, trace);
      const inputSkip = h;
      let bias: AttnCtx = {};
      if (mask) {
        h = keepTokens(h, mask);
        bias = { biasIndex: mask.biasIndex };
      }
      const skips: Tensor<readonly [B, L, number]>[] = [];
      encoderIn.forEach((blk, i) => {
        h = blk.apply(p, h, { c: cond, ...bias });
        trace?.(`block_out/en_inblocks.${i}`, h);
        skips.push(h);
      });
      encoderOut.forEach((blk, i) => {
        h = blk.apply(p, h, { c: cond, ...bias, skip: skips.pop()! });
        trace?.(`block_out/en_outblocks.${i}`, h);
      });
      h = mask ? side.apply(p, h, mask, { c: cond }, trace) : (add(h, p.get('decoder_pos_embed')) as unknown as Tensor<readonly [B, L, number]>);
      decoder.forEach((blk, i) => {
        h = blk.apply(p, h, { c: cond, skip: inputSkip });
        trace?.(`block_out/de_blocks.${i}`, h);
      });
      return base.head(p, h, cond, trace);
    },
  };
}
