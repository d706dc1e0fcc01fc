/** Multi-head self-attention (timm Attention layout) with an optional relative position bias. */
import * as tf from '@tensorflow/tfjs';
import type { Dim, Sym } from '../dsl/shape.ts';
import { layer, type Layer } from '../dsl/layer.ts';
import { param, type ParamDecls } from '../dsl/param.ts';
import { attentionCoreBackward, attentionCoreForward, customOp, linearBackward, linearForward, type Piece } from '../dsl/matmul.ts';
import type { ParamView } from '../dsl/param.ts';
import { wrap, type Tensor } from '../dsl/tensor.ts';
import { xavier, zeros } from './linear.ts';
import { gatherBiasTokenMajor, relPosIndex, relPosTableRows, type BiasPlan } from './relpos.ts';

export type B = Sym<'B'>;
export interface AttnCtx {
  readonly bias: BiasPlan | null;
}

/**
 * The whole layer as one piece, computed token-major: rows are (token, sample), so q, k, v
 * and the heads' output are plain (L, B·heads, hd) views of 2-D products (see
 * attentionCoreForward). Inputs: x (B, L, D), qkv weight and bias, proj weight and bias, and
 * with `withBias` the (L, 1 or B, heads, L) bias. Keeps x's rows, q, k, v, the probabilities
 * and the heads' output.
 */
function attentionPiece(heads: number, withBias: boolean): Piece {
  return {
    forward: (x, wqkv, bqkv, wp, bp, bias) => {
      const [b, l, d] = x!.shape as [number, number, number];
      const hd = d / heads;
      const scale = hd ** -0.5;
      const rows = tf.reshape(tf.transpose(x!, [1, 0, 2]), [l * b, d]) as tf.Tensor2D;
      const [wq, wk, wv] = tf.split(wqkv!, 3, 0) as tf.Tensor2D[];
      const [bq, bk, bv] = tf.split(bqkv!, 3, 0) as tf.Tensor1D[];
      const project = (w: tf.Tensor2D, bb: tf.Tensor1D) => tf.reshape(linearForward(rows, w, bb), [l, b * heads, hd]) as tf.Tensor3D;
      // hd^−½ folded into q's (D, D) weight rather than applied to (L, B·heads, L) logits.
      const core = attentionCoreForward(project(tf.mul(wq!, scale), tf.mul(bq!, scale)), project(wk!, bk!), project(wv!, bv!), withBias ? (bias as tf.Tensor4D) : null);
      const merged = tf.reshape(core.value, [l * b, d]) as tf.Tensor2D;
      const y = linearForward(merged, wp as tf.Tensor2D, bp as tf.Tensor1D);
      return { value: tf.transpose(tf.reshape(y, [l, b, d]), [1, 0, 2]), saved: [rows, wqkv!, merged, wp!, ...core.saved] };
    },
    backward: (dy, saved) => {
      const [rows, wqkv, merged, wp, ...coreSaved] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, ...tf.Tensor[]];
      const [l, g, hd] = coreSaved[0]!.shape as [number, number, number];
      const [m, d] = rows.shape;
      const [dMerged, dwp, dbp] = linearBackward(tf.reshape(tf.transpose(dy, [1, 0, 2]), [m, d]) as tf.Tensor2D, merged, wp, true);
      const [dq, dk, dv, dbias] = attentionCoreBackward(tf.reshape(dMerged!, [l, g, hd]) as tf.Tensor3D, coreSaved);
      // q = rows·(s·wq)ᵀ + s·bq: with dq scaled by s, the three projections' gradients are one
      // product against the stored (unscaled) qkv weight.
      const dqkv = tf.concat([tf.mul(dq!, hd ** -0.5), dk!, dv!].map((t) => tf.reshape(t, [m, d])), 1) as tf.Tensor2D;
      const [dRows, dwqkv, dbqkv] = linearBackward(dqkv, rows, wqkv, true);
      const dx = tf.transpose(tf.reshape(dRows!, [l, m / l, d]), [1, 0, 2]);
      return withBias ? [dx, dwqkv!, dbqkv!, dwp!, dbp!, dbias!] : [dx, dwqkv!, dbqkv!, dwp!, dbp!];
    },
  };
}

/** An attention layer that can also run inside a larger fused op: its piece, and the piece's inputs after x. */
export interface AttentionLayer<L extends Dim, D extends Dim> extends Layer<readonly [B, L, D], readonly [B, L, D], AttnCtx> {
  readonly piece: Piece;
  inputs(p: ParamView, ctx: AttnCtx): tf.Tensor[];
}

/**
 * qkv = Linear(D→3D) split as (3, heads, hd); softmax(q·kᵀ·hd^−½ + bias)·v; proj.
 * With `grid` set, declares `rel_pos_bias.relative_position_bias_table` ((2h−1)²+3, heads)
 * and the persistent int buffer `rel_pos_bias.relative_position_index` (N, N).
 */
export function attention<L extends Dim, D extends Dim>(b: B, len: L, dim: D, heads: number, grid: number | null): AttentionLayer<L, D> {
  const hd = dim / heads;
  if (!Number.isInteger(hd)) throw new Error(`attention: width ${dim} is not divisible by ${heads} heads`);
  const decls: Record<string, ParamDecls[string]> = {
    'qkv.weight': param([3 * dim, dim], xavier(dim, 3 * dim)),
    'qkv.bias': param([3 * dim], zeros),
    'proj.weight': param([dim, dim], xavier(dim, dim)),
    'proj.bias': param([dim], zeros),
  };
  if (grid !== null) {
    decls['rel_pos_bias.relative_position_bias_table'] = param([relPosTableRows(grid), heads], { kind: 'truncNormal', std: 0.02, lo: -2, hi: 2 });
    decls['rel_pos_bias.relative_position_index'] = param([grid * grid, grid * grid], { kind: 'values', values: () => relPosIndex(grid) }, { dtype: 'int32', trainable: false });
  }
  const piece = attentionPiece(heads, grid !== null);
  const op = customOp<(x: tf.Tensor, ...rest: tf.Tensor[]) => tf.Tensor>(piece);
  const inputs = (p: ParamView, ctx: AttnCtx): tf.Tensor[] => {
    const weights = ['qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias'].map((n) => p.get(n).raw);
    if (grid === null) return weights;
    if (ctx.bias === null) throw new Error('attention: this block has a relative position bias but no bias plan was given');
    return [...weights, gatherBiasTokenMajor(p.get('rel_pos_bias.relative_position_bias_table').raw, ctx.bias)];
  };
  const l = layer<readonly [B, L, D], readonly [B, L, D], AttnCtx>([b, len, dim] as const, [b, len, dim] as const, decls, (p, x, ctx) => wrap<readonly [B, L, D]>(op(x.raw, ...inputs(p, ctx))) as Tensor<readonly [B, L, D]>);
  return { ...l, piece, inputs };
}
