/** DiT (Peebles & Xie): patch embed → adaLN-Zero blocks → final layer. */
import { stack } from '../dsl/layer.ts';
import { mergeDecls } from '../dsl/param.ts';
import { adaLNBlock } from '../layers/adaln-block.ts';
import type { ModelConfig } from './config.ts';
import { B, L, checkInputs, trunk, type DiffusionModel } from './trunk.ts';

export function dit(c: ModelConfig): DiffusionModel {
  const base = trunk(c);
  const blocks = stack('blocks', c.depth, () => adaLNBlock(B, L, c.hiddenSize, { heads: c.numHeads, mlpRatio: c.mlpRatio, grid: null, skip: false }));
  return {
    config: c,
    params: mergeDecls(base.params, ...blocks.map((b) => b.params)),
    forward(p, x, t, y, opts = {}) {
      checkInputs(c, x, t, y);
      if (opts.mask) throw new Error('DiT has no masked forward');
      let h = base.embed(p, x, opts.trace);
      const cond = base.condition(p, t, y, opts.trace);
      blocks.forEach((blk, i) => {
        h = blk.apply(p, h, { c: cond });
        opts.trace?.(`block_out/blocks.${i}`, h);
      });
      return base.head(p, h, cond, opts.trace);
    },
  };
}
