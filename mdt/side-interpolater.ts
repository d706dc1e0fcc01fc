/**
 * MDT's masked-training pieces: the kept-token gather, and the side-interpolater with the
 * masked shortcut (the paper's Fig. 4 right; spec §3.4).
 */
import * as tf from '@tensorflow/tfjs';
import { named, type Layer } from '../dsl/layer.ts';
import { mergeDecls, markTrainOnly, param, type ParamDecls, type ParamView } from '../dsl/param.ts';
import { wrap, type Tensor } from '../dsl/tensor.ts';
import { normal } from '../layers/linear.ts';
import type { BlockCtx } from '../layers/adaln-block.ts';
import type { MaskPlan } from './masking.ts';
import type { B, L } from './trunk.ts';

type Tokens = Tensor<readonly [B, L, number]>;

/** Rows b·N + ids[b, j] of the flattened (B·N, D) tokens. */
function gatherTokens(x: tf.Tensor, batch: number, tokens: number, ids: Int32Array, perSample: number): tf.Tensor {
  const d = x.shape[2]!;
  const flat = new Int32Array(ids.length);
  for (let i = 0; i < ids.length; i++) flat[i] = Math.floor(i / perSample) * tokens + ids[i]!;
  return tf.reshape(tf.gather(tf.reshape(x, [batch * tokens, d]), tf.tensor1d(flat, 'int32'), 0), [batch, perSample, d]);
}

/** x[b, ids_keep[b]] : (B, N, D) → (B, L, D), in the plan's sequence order. */
export function keepTokens(x: Tokens, plan: MaskPlan): Tokens {
  return wrap(gatherTokens(x.raw, plan.batch, plan.tokens, plan.idsKeep, plan.lenKeep));
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
    apply(p: ParamView, x: Tokens, plan: MaskPlan, ctx: BlockCtx, trace?: (name: string, t: tf.Tensor) => void): Tokens {
      const { batch, tokens, lenKeep } = plan;
      const d = x.raw.shape[2]!;
      // One gather from [kept rows; mask_token] puts every token in place: a broadcast
      // mask_token (a Tile) would cost a slice and an add per filled row in the backward pass.
      const rows = tf.concat([tf.reshape(x.raw, [batch * lenKeep, d]), tf.reshape(p.get('mask_token').raw, [1, d])], 0);
      const placed = tf.reshape(tf.gather(rows, tf.tensor1d(restoreRows(plan), 'int32'), 0), [batch, tokens, d]);
      const full = tf.add(placed, p.get('decoder_pos_embed').raw);
      const s = side.apply(p, wrap(full), ctx);
      trace?.('block_out/sideblocks.0', s.raw);
      const m = tf.tensor3d(plan.mask, [batch, tokens, 1]);
      const out = tf.add(tf.mul(m, s.raw), tf.mul(tf.sub(1, m), full));
      trace?.('side_interpolater_out', out);
      return wrap(out);
    },
  };
}

/** For each (sample, original token): its row among the B·L kept rows, or B·L (the mask token) if removed. */
function restoreRows(plan: MaskPlan): Int32Array {
  const { batch, tokens, lenKeep, idsRestore } = plan;
  const out = new Int32Array(batch * tokens);
  for (let b = 0; b < batch; b++) {
    for (let n = 0; n < tokens; n++) {
      const j = idsRestore[b * tokens + n]!;
      out[b * tokens + n] = j < lenKeep ? b * lenKeep + j : batch * lenKeep;
    }
  }
  return out;
}
