/** DiT (Peebles & Xie): patch embed → adaLN-Zero blocks → final layer. */
import { stack } from '../dsl/layer.ts';
import { mergeDecls } from '../dsl/param.ts';
import { adaLNBlock } from '../layers/adaln-block.ts';
import type { ConfigCheck, ModelConfig, TokensOf } from './config.ts';
import type { ModelBlock, TracedBlock } from './mdt-v1.ts';
import { B, checkInputs, trunk, type DiffusionModel } from './trunk.ts';

/** DiT with its blocks typed by the config's sizes (always on all N tokens). */
export interface DiT<C extends ModelConfig> extends DiffusionModel {
  readonly config: C;
  readonly blocks: readonly ModelBlock<C, TokensOf<C>>[];
}

export function dit<const C extends ModelConfig>(config: C & ConfigCheck<C>): DiT<C> {
  const c: C = config;
  const base = trunk(c);
  const blocks = stack('blocks', c.depth, () => adaLNBlock<TokensOf<C>, C['hiddenSize'], C['numHeads'], C['mlpRatio']>(B, base.tokens as TokensOf<C>, c.hiddenSize, { heads: c.numHeads as never, mlpRatio: c.mlpRatio, grid: null, skip: false }));
  const traced = blocks as unknown as TracedBlock[];
  return {
    config: c,
    blocks,
    params: mergeDecls(base.params, ...blocks.map((b) => b.params)),
    forward(p, x, t, y, opts = {}) {
      checkInputs(c, x, t, y);
      if (opts.mask) throw new Error('DiT has no masked forward');
      let h = base.embed(p, x, opts.trace);
      const cond = base.condition(p, t, y, opts.trace);
      traced.forEach((blk, i) => {
        h = blk.apply(p, h, { c: cond });
        opts.trace?.(`block_out/blocks.${i}`, h);
      });
      return base.head(p, h, cond, opts.trace);
    },
  };
}
