/**
 * Notebook 05 — a new attention in a dozen lines of DSL ops: 2-D ALiBi (a distance penalty
 * with one learned slope per head) in place of MDT's learned relative-position table, swapped
 * into every block of a small MDT, trained for a few steps with compiled gradients on
 * Fashion-MNIST 16×16, and the compiled graph it makes.
 *   npx tsx examples/05-new-attention.ts [STEPS=30]
 */
import { noMoreArgs, positiveIntArg } from './notebook.ts';
import * as tf from '@tensorflow/tfjs';
import { startRuntime } from '../runtime/start.ts';
import { initParams } from '../compile/init.ts';
import { compileTraining } from '../compile/train.ts';
import { formatGraphReport, formatModuleListing, graphReport } from '../compile/graph-report.ts';
import { summary } from '../compile/summary.ts';
import { foldIn, keyFromSeed } from '../dsl/random.ts';
import { layer, named, stack, type Layer } from '../dsl/layer.ts';
import { mergeDecls, param } from '../dsl/param.ts';
import { add, batchMatmul, constant, exp, expandDims, gatherRows, layerNorm, mul, neg, reshape, scale, slice, softmax, transpose } from '../dsl/ops.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { linear } from '../layers/linear.ts';
import { mlp } from '../layers/mlp.ts';
import { relPosIndex, relPosTableRows } from '../layers/relpos.ts';
import type { AttnCtx } from '../layers/attention.ts';
import { adaLNChunks, adaLNDecls, LN_EPS, modulate, type BlockCtx } from '../layers/adaln-block.ts';
import { namedConfig, type ModelConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { keepTokens, sideInterpolater } from '../mdt/side-interpolater.ts';
import { B, L, checkInputs, sincosInit, trunk, type DiffusionModel } from '../mdt/trunk.ts';
import { loadBuiltinDataset } from '../mdt/data/builtin.ts';
import { resizeTo } from '../mdt/data/resize.ts';
import { batchAt } from '../mdt/data/batches.ts';

const steps = positiveIntArg(0, 'STEPS', 30);
noMoreArgs(1, '[STEPS=30]');

type Tokens = Tensor<readonly [B, L, number]>;

/**
 * 1. The new attention. 2-D ALiBi: logits −= slope_h·‖pos_i − pos_j‖, slope_h = exp(log_slope_h)
 * learned (initialised to ALiBi's 2^(−8h/H)). Distances are read through the same relative-offset
 * index as MDT's bias — the block's own buffer on the full grid, the kept tokens' rows
 * (ctx.biasIndex) in the masked encoder — so masking works unchanged.
 */
function alibiAttention(dim: number, heads: number, grid: number): Layer<readonly [B, L, number], readonly [B, L, number], AttnCtx> {
  const hd = dim / heads, n = grid * grid, side = 2 * grid - 1;
  const qkv = named('qkv', linear([B, L] as const, dim, 3 * dim));
  const proj = named('proj', linear([B, L] as const, dim, dim));
  const distance = Float32Array.from({ length: relPosTableRows(grid) }, (_, r) => (r < side * side ? Math.hypot(Math.floor(r / side) - grid + 1, (r % side) - grid + 1) : 0));
  const params = {
    ...qkv.params, ...proj.params,
    'alibi.log_slope': param([1, heads], { kind: 'values', values: () => Float32Array.from({ length: heads }, (_, h) => (-8 * (h + 1) / heads) * Math.LN2) }),
    'alibi.relative_position_index': param([n, n], { kind: 'values', values: () => relPosIndex(grid) }, { dtype: 'int32', trainable: false }),
  };
  return layer([B, L, dim] as const, [B, L, dim] as const, params, (p, x, ctx) => {
    const [b, l] = x.shape as unknown as [number, number];
    const parts = transpose(reshape(qkv.apply(p, x, undefined), [b, l, 3, heads, hd] as const), [2, 0, 3, 1, 4] as const);
    const [q, k, v] = [0, 1, 2].map((i) => reshape(slice(parts, [i, 0, 0, 0, 0], [1, b, heads, l, hd]), [b, heads, l, hd] as const));
    const idx = ctx.biasIndex ?? reshape(p.get('alibi.relative_position_index', [n, n] as const), [1, n, n] as const);
    const r = idx.shape[0] as number;
    const dist = gatherRows(constant(x, distance, [distance.length, 1] as const), reshape(idx, [r * l * l] as const)); // (R·L·L, 1)
    const bias = transpose(reshape(mul(dist, neg(exp(p.get('alibi.log_slope', [1, heads] as const)))), [r, l, l, heads] as const), [0, 3, 1, 2] as const);
    const attn = softmax(add(batchMatmul(scale(q!, hd ** -0.5), k!, true), bias));
    return proj.apply(p, reshape(transpose(batchMatmul(attn, v!), [0, 2, 1, 3] as const), [b, l, dim] as const) as unknown as Tokens, undefined);
  });
}

/** 2. The adaLN-Zero block (layers/adaln-block.ts) with that attention. */
function alibiBlock(c: ModelConfig, grid: number): Layer<readonly [B, L, number], readonly [B, L, number], BlockCtx> {
  const d = c.hiddenSize;
  const attn = named('attn', alibiAttention(d, c.numHeads, grid));
  const ff = named('mlp', mlp([B, L] as const, d, Math.round(d * c.mlpRatio)));
  return layer([B, L, d] as const, [B, L, d] as const, mergeDecls(attn.params, ff.params, adaLNDecls(d, 6)), (p, x, ctx) => {
    const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp] = adaLNChunks(p.scope('adaLN_modulation.1'), ctx.c, 6, d) as Tensor<readonly [B, number]>[];
    const h = add(x, mul(expandDims(gateMsa!, 1), attn.apply(p, modulate(layerNorm(x, LN_EPS), shiftMsa!, scaleMsa!), ctx))) as unknown as Tokens;
    return add(h, mul(expandDims(gateMlp!, 1), ff.apply(p, modulate(layerNorm(h, LN_EPS), shiftMlp!, scaleMlp!), undefined))) as unknown as Tokens;
  });
}

/** 3. MDT v1 (mdt/mdt-v1.ts) built from any block: encoder, side-interpolater, decoder. */
function mdtWith(c: ModelConfig, makeBlock: (grid: number) => Layer<readonly [B, L, number], readonly [B, L, number], BlockCtx>): DiffusionModel {
  const base = trunk(c);
  const blocks = stack('blocks', c.depth, () => makeBlock(base.grid));
  const side = sideInterpolater(makeBlock(base.grid));
  const decoderStart = c.depth - c.decodeLayer;
  return {
    config: c,
    params: mergeDecls(base.params, { decoder_pos_embed: param([1, base.tokens, c.hiddenSize], sincosInit(c)) }, ...blocks.map((b) => b.params), side.params),
    forward(p, x, t, y, opts = {}) {
      checkInputs(c, x, t, y);
      const mask = opts.mask ?? null;
      let h = base.embed(p, x);
      const cond = base.condition(p, t, y);
      let ctx: BlockCtx = mask ? { c: cond, biasIndex: mask.biasIndex } : { c: cond };
      if (mask) h = keepTokens(h, mask);
      blocks.forEach((blk, i) => {
        if (i === decoderStart) {
          h = mask ? side.apply(p, h, mask, { c: cond }) : (add(h, p.get('decoder_pos_embed')) as unknown as Tokens);
          ctx = { c: cond };
        }
        h = blk.apply(p, h, ctx);
      });
      return base.head(p, h, cond);
    },
  };
}

const info = await startRuntime();
console.log(`backend: ${info.name}`);
const config = namedConfig('MDT-S/2', { depth: 4, hiddenSize: 64, numHeads: 4, inputSize: 16, patchSize: 2, inChannels: 1, numClasses: 10, decodeLayer: 1 });
const model = mdtWith(config, (grid) => alibiBlock(config, grid));

// 4. The summary counts the new block from its graph: ALiBi has fewer parameters than the
// relative-position table and the same products.
for (const [name, m] of [['MDT (relative-position table)', buildModel(config)], ['MDT with 2-D ALiBi', model]] as const) {
  const s = summary(m);
  console.log(`${name.padEnd(30)} ${s.totalParams.toLocaleString('en-US').padStart(9)} params, ${(s.macs / 1e6).toFixed(2)} MMAC per image, ${(s.maskedMacs / 1e6).toFixed(2)} masked (keep ${s.lenKeep})`);
}

// 5. Train it: both MDT branches, gradients from the IR, AdamW.
const data = resizeTo(loadBuiltinDataset('fashion-mnist', 'train'), 16, 'resize');
const batchSize = 16;
const trainer = compileTraining(model, initParams(model.params, keyFromSeed(0)), { optimizer: { kind: 'adamw', lr: 2e-3 }, emaDecay: 0.999 });
const key = keyFromSeed(1);
const every = Math.max(1, Math.ceil(steps / 6));
let window: { loss: number; masked: number }[] = [];
const t0 = performance.now();
for (let step = 0; step < steps; step++) {
  const batch = batchAt(data, key, step, batchSize);
  const x0 = tf.tensor4d(batch.images, [batchSize, 1, 16, 16]);
  const l = await trainer.step(x0, batch.labels, foldIn(key, 1_000_000 + step));
  x0.dispose();
  window.push({ loss: l.loss, masked: l.m_loss ?? NaN });
  if ((step + 1) % every === 0 || step === steps - 1) {
    const mean = (f: (w: { loss: number; masked: number }) => number) => window.reduce((a, w) => a + f(w), 0) / window.length;
    console.log(`step ${String(step + 1).padStart(4)}  loss ${mean((w) => w.loss).toFixed(4)}  masked-branch loss ${mean((w) => w.masked).toFixed(4)}  (mean of ${window.length})  ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    window = [];
  }
}
trainer.dispose();

// 6. What the compiler made of it: the training step's graphs, and the new attention as IR.
console.log();
console.log(formatGraphReport(graphReport(model, 'train', { batch: batchSize }), 'MDT with 2-D ALiBi'));
console.log();
console.log(formatModuleListing(graphReport(model, 'forward').parts[0]!, 'blocks.0.attn'));
