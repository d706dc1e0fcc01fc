/** DiT's input embedders: patch, timestep, label. */
import type { Dim, Mul, Shape, Sym } from '../dsl/shape.ts';
import { named, seq, layer, type Layer } from '../dsl/layer.ts';
import { param } from '../dsl/param.ts';
import { cast, concatLast, constant, cos, gatherRows, linear as linearOp, mul, patchify, reshape, sin } from '../dsl/ops.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { linear, normal, xavier } from './linear.ts';
import { siluLayer } from './activations.ts';
import { timestepFreqs } from './sincos.ts';

export type B = Sym<'B'>;

/**
 * timm PatchEmbed: Conv2d(C→D, kernel p, stride p) written as patchify + a product with the
 * conv weight's (D, C·p·p) view, which trains on every backend (wasm has no conv filter gradient).
 */
export function patchEmbed<C extends Dim, G extends number, P extends number, D extends Dim>(
  b: B, channels: C, grid: G, patch: P, dim: D,
): Layer<readonly [B, C, Mul<G, P>, Mul<G, P>], readonly [B, Mul<G, G>, D]> {
  const side = (grid * patch) as Mul<G, P>;
  return layer([b, channels, side, side] as const, [b, (grid * grid) as Mul<G, G>, dim] as const, {
    'proj.weight': param([dim, channels, patch, patch], xavier(channels * patch * patch, dim)),
    'proj.bias': param([dim], { kind: 'zeros' }),
  }, (p, x) => {
    const conv: Tensor<Shape> = p.get('proj.weight', [dim, channels, patch, patch] as const);
    const w = reshape(conv, [dim, channels * patch * patch]) as unknown as Tensor<readonly [D, Mul<C, Mul<P, P>>]>;
    return linearOp(patchify(x, grid, patch), w, p.get('proj.bias', [dim] as const)) as unknown as Tensor<readonly [B, Mul<G, G>, D]>;
  });
}

/** Frequency-embedding width of DiT's TimestepEmbedder. */
export const TIMESTEP_FREQ_DIM = 256;

/** `t_embedder.mlp`: Linear(256→D) → SiLU → Linear(D→D), weights N(0, 0.02). Input: the cos-first sinusoid. */
export function timestepMlp<D extends Dim>(b: B, dim: D): Layer<readonly [B, typeof TIMESTEP_FREQ_DIM], readonly [B, D]> {
  return seq(
    named('mlp.0', linear([b] as const, TIMESTEP_FREQ_DIM, dim, normal(0.02))),
    siluLayer([b, dim] as const),
    named('mlp.2', linear([b] as const, dim, dim, normal(0.02))),
  );
}

/** DiT's `timestep_embedding`: [cos(t·f), sin(t·f)] for int32 steps t (B), frequencies folded to a constant; (B, 256). */
export function timestepFeatures(t: Tensor<readonly [B]>): Tensor<readonly [B, typeof TIMESTEP_FREQ_DIM]> {
  const half = TIMESTEP_FREQ_DIM / 2;
  const args = mul(reshape(cast(t, 'float32'), [t.shape[0], 1] as const), constant(t, timestepFreqs(half), [1, half] as const));
  return concatLast(cos(args), sin(args)) as unknown as Tensor<readonly [B, typeof TIMESTEP_FREQ_DIM]>;
}

/** `y_embedder.embedding_table`: (classes + 1, D); the last row is the null class for CFG. */
export function labelEmbedder<D extends Dim>(b: B, numClasses: number, dim: D): Layer<readonly [B], readonly [B, D], void> & { readonly nullLabel: number } {
  const l = layer([b] as const, [b, dim] as const, {
    'embedding_table.weight': param([numClasses + 1, dim], normal(0.02)),
  }, (p, y) => gatherRows(p.get('embedding_table.weight', [numClasses + 1, dim] as const), y) as unknown as Tensor<readonly [B, D]>);
  return { ...l, nullLabel: numClasses };
}

/** Labels with independent dropout to the null class (train-time CFG dropout), decided by `drop`. */
export function dropLabels(y: ArrayLike<number>, drop: ArrayLike<number>, nullLabel: number): Int32Array {
  return Int32Array.from({ length: y.length }, (_, i) => (drop[i] ? nullLabel : y[i]!));
}
