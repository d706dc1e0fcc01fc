/**
 * Typed ops. Positions that must agree with an earlier argument use `NoInfer`, so a mismatch
 * is reported at the wrong argument ("Type '15' is not assignable to type '16'").
 * Every op here has a gradient on every backend (see dsl/kernels.ts for the wasm additions),
 * and products are written as plain 2-D matmuls, the form all backends run fastest.
 */
import * as tf from '@tensorflow/tfjs';
import type { Broadcast, Dim, Mul, Numel, Shape, ShapeError } from './shape.ts';
import { wrap, type Tensor } from './tensor.ts';
import { matmul2d } from './matmul.ts';

type Last<S extends Shape> = S extends readonly [...Shape, infer L] ? L : never;
type Init<S extends Shape> = S extends readonly [...infer I extends Shape, Dim] ? I : never;

/** x @ w for a rank-2 `w`: contracts x's last dim with w's first. */
export function matmul<const S extends Shape, K extends Dim, N extends Dim>(
  x: Tensor<readonly [...S, K]>,
  w: Tensor<readonly [NoInfer<K>, N]>,
): Tensor<readonly [...S, N]> {
  const k = x.raw.shape[x.raw.rank - 1]!;
  const lead = x.raw.shape.slice(0, -1);
  const y = matmul2d(tf.reshape(x.raw, [-1, k]) as tf.Tensor2D, w.raw as tf.Tensor2D);
  return wrap(tf.reshape(y, [...lead, w.raw.shape[1]!]));
}

/** PyTorch's nn.Linear: y = x·Wᵀ + b with W stored (out, in), as in official state dicts. */
export function linear<const S extends Shape, I extends Dim, O extends Dim>(
  x: Tensor<readonly [...S, I]>,
  weight: Tensor<readonly [O, NoInfer<I>]>,
  bias?: Tensor<readonly [NoInfer<O>]>,
): Tensor<readonly [...S, O]> {
  const i = x.raw.shape[x.raw.rank - 1]!;
  const lead = x.raw.shape.slice(0, -1);
  let y = matmul2d(tf.reshape(x.raw, [-1, i]) as tf.Tensor2D, tf.transpose(weight.raw) as tf.Tensor2D) as tf.Tensor;
  if (bias) y = tf.add(y, bias.raw);
  return wrap(tf.reshape(y, [...lead, weight.raw.shape[0]!]));
}

export function add<const S extends Shape, const T extends Shape>(a: Tensor<S>, b: Tensor<T>): Tensor<Broadcast<S, T>> {
  return wrap(tf.add(a.raw, b.raw));
}
export function sub<const S extends Shape, const T extends Shape>(a: Tensor<S>, b: Tensor<T>): Tensor<Broadcast<S, T>> {
  return wrap(tf.sub(a.raw, b.raw));
}
export function mul<const S extends Shape, const T extends Shape>(a: Tensor<S>, b: Tensor<T>): Tensor<Broadcast<S, T>> {
  return wrap(tf.mul(a.raw, b.raw));
}
export function scale<const S extends Shape>(a: Tensor<S>, s: number): Tensor<S> {
  return wrap(tf.mul(a.raw, s));
}

export function silu<const S extends Shape>(x: Tensor<S>): Tensor<S> {
  return wrap(tf.mul(x.raw, tf.sigmoid(x.raw)));
}

const GELU_C = Math.sqrt(2 / Math.PI);
/** GELU, tanh approximation (PyTorch `approximate="tanh"`), the form DiT/MDT use. */
export function geluTanh<const S extends Shape>(x: Tensor<S>): Tensor<S> {
  const r = x.raw;
  const inner = tf.mul(tf.add(r, tf.mul(tf.pow(r, 3), 0.044715)), GELU_C);
  return wrap(tf.mul(tf.mul(r, 0.5), tf.add(tf.tanh(inner), 1)));
}

/** Softmax over the last axis. */
export function softmax<const S extends Shape>(x: Tensor<S>): Tensor<S> {
  return wrap(tf.softmax(x.raw));
}

/** LayerNorm over the last axis without affine parameters (biased variance). */
export function layerNorm<const S extends Shape>(x: Tensor<S>, eps: number): Tensor<S> {
  const r = x.raw;
  const axis = r.rank - 1;
  const mean = tf.mean(r, axis, true);
  const centered = tf.sub(r, mean);
  const variance = tf.mean(tf.square(centered), axis, true);
  return wrap(tf.mul(centered, tf.rsqrt(tf.add(variance, eps))));
}

/** Reshape; a wrong element count is a compile error when both shapes are small literals. */
export function reshape<const S extends Shape, const T extends Shape>(
  x: Tensor<S>,
  shape: Numel<S> extends Numel<T> ? T : number extends Numel<S> | Numel<T> ? T : ShapeError<`reshape changes the element count: ${Numel<S> & number} vs ${Numel<T> & number}`>,
): Tensor<T> {
  const target = shape as unknown as readonly number[];
  const from = x.raw.size;
  const to = target.reduce((a, b) => a * b, 1);
  if (from !== to) throw new Error(`reshape: [${x.raw.shape.join(', ')}] has ${from} elements, target [${target.join(', ')}] has ${to}`);
  return wrap(tf.reshape(x.raw, target as number[]));
}

type Permute<S extends Shape, P extends readonly number[]> = { -readonly [K in keyof P]: S[P[K] & number] };
/** Permutes axes: output axis i is input axis perm[i]. */
export function transpose<const S extends Shape, const P extends readonly number[]>(x: Tensor<S>, perm: P): Tensor<Permute<S, P>> {
  return wrap(tf.transpose(x.raw, perm as unknown as number[]));
}


type AddDims<X, Y> = [X, Y] extends [infer P extends number, infer Q extends number] ? LenAdd<P, Q> : number;
type LenAdd<P extends number, Q extends number> = number extends P | Q ? number : [...TupleOf<P>, ...TupleOf<Q>]['length'] & number;
type TupleOf<N extends number, Acc extends unknown[] = []> = Acc['length'] extends N ? Acc : Acc['length'] extends 10000 ? unknown[] : TupleOf<N, [...Acc, 0]>;

/** Concatenates two tensors along the last axis (all other dims must agree). */
export function concatLast<const S extends Shape, X extends Dim, Y extends Dim>(a: Tensor<readonly [...S, X]>, b: Tensor<readonly [...S, Y]>): Tensor<readonly [...S, AddDims<X, Y>]> {
  return wrap(tf.concat([a.raw, b.raw], a.raw.rank - 1));
}

/** Splits the last axis into `n` equal chunks of size `size` (n·size must equal the axis). */
export function chunkLast<const S extends Shape, N extends number, C extends Dim>(x: Tensor<readonly [...S, Dim]>, n: N, size: C): Tensor<readonly [...S, C]>[] {
  const last = x.raw.shape[x.raw.rank - 1]!;
  if (n * size !== last) throw new Error(`chunkLast: ${n} chunks of ${size} do not cover the last axis of size ${last}`);
  return tf.split(x.raw, n, x.raw.rank - 1).map((t) => wrap<readonly [...S, C]>(t));
}

/** Inserts a size-1 axis. */
export function expandDims<const S extends Shape, const A extends number>(x: Tensor<S>, axis: A): Tensor<Shape> {
  return wrap(tf.expandDims(x.raw, axis));
}

/** Rows of a table picked by an int32 index tensor: table[idx] with shape [...idx, D]. */
export function gatherRows<const I extends Shape, R extends Dim, D extends Dim>(table: Tensor<readonly [R, D]>, idx: Tensor<I>): Tensor<readonly [...I, D]> {
  return wrap(tf.gather(table.raw, idx.raw as tf.Tensor, 0));
}

/**
 * Patch embedding input: (B, C, h·p, h·p) → (B, h·h, C·p·p), each token's vector ordered
 * (channel, dy, dx) like a Conv2d weight's (C, p, p) view. Sizes come as products, never quotients.
 */
export function patchify<B extends Dim, C extends Dim, G extends number, P extends number>(
  x: Tensor<readonly [B, C, Mul<G, P>, Mul<G, P>]>,
  grid: G,
  patch: P,
): Tensor<readonly [B, Mul<G, G>, Mul<C, Mul<P, P>>]> {
  const [b, c] = x.raw.shape as [number, number];
  const t = tf.reshape(x.raw, [b, c, grid, patch, grid, patch]);
  const perm = tf.transpose(t, [0, 2, 4, 1, 3, 5]);
  return wrap(tf.reshape(perm, [b, grid * grid, c * patch * patch]));
}

/**
 * Inverse layout of the final layer: (B, h·h, p·p·C) → (B, C, h·p, h·p), with the channel
 * fastest inside a token (dy, dx, channel), as the official `unpatchify`.
 */
export function unpatchify<B extends Dim, C extends number, G extends number, P extends number>(
  x: Tensor<readonly [B, Mul<G, G>, Mul<Mul<P, P>, C>]>,
  grid: G,
  patch: P,
  channels: C,
): Tensor<readonly [B, C, Mul<G, P>, Mul<G, P>]> {
  const b = x.raw.shape[0]!;
  const t = tf.reshape(x.raw, [b, grid, grid, patch, patch, channels]);
  const perm = tf.transpose(t, [0, 5, 1, 3, 2, 4]);
  return wrap(tf.reshape(perm, [b, channels, grid * patch, grid * patch]));
}
