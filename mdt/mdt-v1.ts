/**
 * MDT v1 (the paper): an encoder of depth − dl blocks that sees only the kept tokens when
 * masked, the side-interpolater, and a decoder of dl blocks on all N tokens.
 */
import { stack, type Layer } from '../dsl/layer.ts';
import { mergeDecls, param } from '../dsl/param.ts';
import { add } from '../dsl/ops.ts';
import type { Dim } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { adaLNBlock, type AdaLNBlock, type BlockCtx } from '../layers/adaln-block.ts';
import type { ConfigCheck, ModelConfig, TokensOf } from './config.ts';
import { keepTokens, sideInterpolater } from './side-interpolater.ts';
import { B, L, checkInputs, sincosInit, trunk, type DiffusionModel } from './trunk.ts';

/** A block of config C on sequences of length Len (the N tokens, or the symbol L the mask plan binds). */
export type ModelBlock<C extends ModelConfig, Len extends Dim> = AdaLNBlock<Len, C['hiddenSize'], C['mlpRatio']>;
/** How the forward passes run any block: sizes checked when traced, not in types. */
export type TracedBlock = Layer<readonly [B, L, number], readonly [B, L, number], BlockCtx>;

/** A block of `c` on sequences of length `len` (default: the symbol L, bound per call). */
export function mdtBlock<C extends ModelConfig, Len extends Dim = L>(c: C, grid: number, skip: boolean, len: Len = L as unknown as Len): ModelBlock<C, Len> {
  return adaLNBlock<Len, C['hiddenSize'], C['numHeads'], C['mlpRatio']>(B, len, c.hiddenSize, { heads: c.numHeads as never, mlpRatio: c.mlpRatio, grid, skip });
}

/** MDT v1 with its blocks typed by the config's sizes. */
export interface MdtV1<C extends ModelConfig> extends DiffusionModel {
  readonly config: C;
  /** `blocks.0 …` on all N tokens: the inference graph, and the decoder of the masked one. */
  readonly blocks: readonly ModelBlock<C, TokensOf<C>>[];
  /** The encoder blocks (the same parameters) as the masked graph runs them, on the L kept tokens. */
  readonly maskedEncoder: readonly ModelBlock<C, L>[];
}

export function mdtV1<const C extends ModelConfig>(config: C & ConfigCheck<C>): MdtV1<C> {
  const c: C = config;
  const base = trunk(c);
  const blocks = stack('blocks', c.depth, () => mdtBlock(c, base.grid, false, base.tokens as TokensOf<C>));
  const decoderStart = c.depth - c.decodeLayer;
  const maskedEncoder = stack('blocks', decoderStart, () => mdtBlock(c, base.grid, false));
  const side = sideInterpolater(mdtBlock(c, base.grid, false));
  const [full, masked] = [blocks, maskedEncoder] as unknown as [TracedBlock[], TracedBlock[]];
  return {
    config: c,
    blocks,
    maskedEncoder,
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
      full.forEach((fullBlk, i) => {
        const blk = mask && i < decoderStart ? masked[i]! : fullBlk;
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
