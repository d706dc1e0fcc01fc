/** Multi-head self-attention (timm Attention layout) with an optional relative position bias. */
import * as tf from '@tensorflow/tfjs';
import type { Dim, Sym } from '../dsl/shape.ts';
import { layer, type Layer } from '../dsl/layer.ts';
import { param, type ParamDecls } from '../dsl/param.ts';
import { attentionLayout, batchMajorAttention, customOp, linearBackward, linearForward, tokenMajorAttention, type AttentionLayout, type Piece } from '../dsl/matmul.ts';
import type { ParamView } from '../dsl/param.ts';
import { wrap, type Tensor } from '../dsl/tensor.ts';
import { xavier, zeros } from './linear.ts';
import { gatherBias, gatherBiasTokenMajor, relPosIndex, relPosTableRows, type BiasPlan } from './relpos.ts';

export type B = Sym<'B'>;
export interface AttnCtx {
  readonly bias: BiasPlan | null;
}

/**
 * The whole layer as one piece, its products laid out by `layout` (see AttentionLayout).
 * Inputs: x (B, L, D), qkv weight and bias, proj weight and bias, and with `withBias` the
 * bias in the layout's order. Keeps x's rows, q, k, v, the probabilities and the heads' output.
 */
function attentionPiece(heads: number, withBias: boolean, layout: AttentionLayout): Piece {
  return {
    forward: (x, wqkv, bqkv, wp, bp, bias) => {
      const [b, l, d] = x!.shape as [number, number, number];
      const scale = (d / heads) ** -0.5;
      const rows = layout.rows(x!);
      const [wq, wk, wv] = tf.split(wqkv!, 3, 0) as tf.Tensor2D[];
      const [bq, bk, bv] = tf.split(bqkv!, 3, 0) as tf.Tensor1D[];
      const project = (w: tf.Tensor2D, bb: tf.Tensor1D) => layout.split(linearForward(rows, w, bb), b, l, heads);
      // hd^−½ folded into q's (D, D) weight rather than applied to the (B·heads, L, L) logits.
      const core = layout.forward(project(tf.mul(wq!, scale), tf.mul(bq!, scale)), project(wk!, bk!), project(wv!, bv!), withBias ? (bias as tf.Tensor4D) : null);
      const merged = layout.merge(core.value, b, l, heads);
      return { value: layout.unrows(linearForward(merged, wp as tf.Tensor2D, bp as tf.Tensor1D), b, l), saved: [rows, wqkv!, merged, wp!, ...core.saved] };
    },
    backward: (dy, saved) => {
      const [rows, wqkv, merged, wp, ...coreSaved] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, tf.Tensor2D, ...tf.Tensor[]];
      const [b, l, d] = dy.shape as [number, number, number];
      const [dMerged, dwp, dbp] = linearBackward(layout.rows(dy), merged, wp, true);
      const [dq, dk, dv, dbias] = layout.backward(layout.split(dMerged!, b, l, heads), coreSaved);
      // q = rows·(s·wq)ᵀ + s·bq: with dq scaled by s, the three projections' gradients are one
      // product against the stored (unscaled) qkv weight.
      const dqkv = tf.concat([tf.mul(dq!, (d / heads) ** -0.5), dk!, dv!].map((t) => layout.merge(t, b, l, heads)), 1) as tf.Tensor2D;
      const [dRows, dwqkv, dbqkv] = linearBackward(dqkv, rows, wqkv, true);
      const dx = layout.unrows(dRows!, b, l);
      return withBias ? [dx, dwqkv!, dbqkv!, dwp!, dbp!, dbias!] : [dx, dwqkv!, dbqkv!, dwp!, dbp!];
    },
  };
}

/**
 * An attention layer that can also run inside a larger fused op: its piece for each product
 * layout, and the piece's inputs after x.
 */
export interface AttentionLayer<L extends Dim, D extends Dim> extends Layer<readonly [B, L, D], readonly [B, L, D], AttnCtx> {
  readonly pieces: Readonly<Record<AttentionLayout['name'], Piece>>;
  inputs(p: ParamView, ctx: AttnCtx, layout: AttentionLayout): tf.Tensor[];
}

/**
 * qkv = Linear(D→3D) split as (3, heads, hd); softmax(q·kᵀ·hd^−½ + bias)·v; proj. The products
 * take the layout the backend runs fastest (attentionLayout), decided at each call.
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
  const pieces = {
    'token-major': attentionPiece(heads, grid !== null, tokenMajorAttention),
    'batch-major': attentionPiece(heads, grid !== null, batchMajorAttention),
  };
  const ops = {
    'token-major': customOp<(x: tf.Tensor, ...rest: tf.Tensor[]) => tf.Tensor>(pieces['token-major']),
    'batch-major': customOp<(x: tf.Tensor, ...rest: tf.Tensor[]) => tf.Tensor>(pieces['batch-major']),
  };
  const inputs = (p: ParamView, ctx: AttnCtx, layout: AttentionLayout): tf.Tensor[] => {
    const weights = ['qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias'].map((n) => p.get(n).raw);
    if (grid === null) return weights;
    if (ctx.bias === null) throw new Error('attention: this block has a relative position bias but no bias plan was given');
    const table = p.get('rel_pos_bias.relative_position_bias_table').raw;
    return [...weights, layout === tokenMajorAttention ? gatherBiasTokenMajor(table, ctx.bias) : gatherBias(table, ctx.bias)];
  };
  const l = layer<readonly [B, L, D], readonly [B, L, D], AttnCtx>([b, len, dim] as const, [b, len, dim] as const, decls, (p, x, ctx) => {
    const layout = attentionLayout();
    return wrap<readonly [B, L, D]>(ops[layout.name](x.raw, ...inputs(p, ctx, layout))) as Tensor<readonly [B, L, D]>;
  });
  return { ...l, pieces, inputs };
}
