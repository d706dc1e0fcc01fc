/** Multi-head self-attention (timm Attention layout) with an optional relative position bias. */
import * as tf from '@tensorflow/tfjs';
import type { Dim, Sym } from '../dsl/shape.ts';
import { layer, type Layer } from '../dsl/layer.ts';
import { param, type ParamDecls } from '../dsl/param.ts';
import { linear as linearOp } from '../dsl/ops.ts';
import { wrap, type Tensor } from '../dsl/tensor.ts';
import { xavier, zeros } from './linear.ts';
import { gatherBias, relPosIndex, relPosTableRows, type BiasPlan } from './relpos.ts';

export type B = Sym<'B'>;
export interface AttnCtx {
  readonly bias: BiasPlan | null;
}

/**
 * qkv = Linear(D→3D) split as (3, heads, hd); softmax(q·kᵀ·hd^−½ + bias)·v; proj.
 * With `grid` set, declares `rel_pos_bias.relative_position_bias_table` ((2h−1)²+3, heads)
 * and the persistent int buffer `rel_pos_bias.relative_position_index` (N, N).
 */
export function attention<L extends Dim, D extends Dim>(b: B, len: L, dim: D, heads: number, grid: number | null): Layer<readonly [B, L, D], readonly [B, L, D], AttnCtx> {
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
  const scale = hd ** -0.5;
  return layer([b, len, dim] as const, [b, len, dim] as const, decls, (p, x, ctx) => {
    const [bs, l] = x.raw.shape as [number, number, number];
    const qkv = linearOp(x, p.get<readonly [number, D]>('qkv.weight'), p.get<readonly [number]>('qkv.bias'));
    const split = tf.transpose(tf.reshape(qkv.raw, [bs, l, 3, heads, hd]), [2, 0, 3, 1, 4]);
    const [q, k, v] = tf.unstack(split, 0) as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
    let logits: tf.Tensor = tf.mul(tf.matMul(q, tf.transpose(k, [0, 1, 3, 2])), scale);
    if (grid !== null) {
      if (ctx.bias === null) throw new Error('attention: this block has a relative position bias but no bias plan was given');
      logits = tf.add(logits, gatherBias(p.get('rel_pos_bias.relative_position_bias_table').raw, ctx.bias));
    }
    const out = tf.matMul(tf.softmax(logits), v);
    const merged = wrap<readonly [B, L, D]>(tf.reshape(tf.transpose(out, [0, 2, 1, 3]), [bs, l, dim]));
    return linearOp(merged, p.get<readonly [D, D]>('proj.weight'), p.get<readonly [D]>('proj.bias')) as unknown as Tensor<readonly [B, L, D]>;
  });
}
