/**
 * How each primitive runs on tfjs: one function per op from its input tensors to its output.
 * Backend-specific choices live here, not in layers: where the native kernels are registered
 * (runtime/fused.ts checks), GELU, LayerNorm + modulate, softmax + bias and their gradients run as
 * single-pass kernels; products take the form the backend runs fastest.
 */
import * as tf from '@tensorflow/tfjs';
import type { Node } from './ir.ts';
import { attention, gelu, geluGrad, layerNorm, layerNormGrad, lnModulate, softmaxBias, softmaxGrad } from '../runtime/fused.ts';
import { nativeKernelsStatus } from '../runtime/native.ts';

export type Lowering = (ins: readonly tf.Tensor[], node: Node) => tf.Tensor;

/**
 * Whether BatchMatMul runs transpose flags and batches at full speed: everywhere but on
 * tfjs-backend-wasm's own kernel, whose fast path is a plain rank-2 product (XNNPACK, ~25
 * GFLOP/s a core; flags and batches take a generic loop at ~2) — unless the native kernels
 * (runtime/native.ts) have replaced it.
 */
function flexibleProducts(): boolean {
  return tf.getBackend() !== 'wasm' || nativeKernelsStatus().enabled;
}

/**
 * A kernel called directly: tf.matMul and tf.fused.matMul re-check and re-shape their operands
 * and wrap themselves for gradients on every call (~100 µs for a 256×96·96×288 product with a
 * bias, about what the product costs); the graph's shapes are already checked.
 */
function kernel(name: string, inputs: tf.NamedTensorMap, attrs: Record<string, unknown>): tf.Tensor {
  return tf.engine().runKernel(name, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor;
}

/** Batched op(a)·op(b) on rank-3 operands, as the BatchMatMul kernels take them. */
const batchProduct = (a: tf.Tensor, b: tf.Tensor, transposeA: boolean, transposeB: boolean) => kernel('BatchMatMul', { a, b }, { transposeA, transposeB });

const as3 = (t: tf.Tensor) => tf.reshape(t, [-1, t.shape[t.rank - 2]!, t.shape[t.rank - 1]!]);

/** op(a)·op(b) for rank-2 operands; on wasm's own kernel, flags become explicit transposes of the smaller side. */
function product2d(a: tf.Tensor2D, b: tf.Tensor2D, ta: boolean, tb: boolean): tf.Tensor2D {
  if (flexibleProducts() || (!ta && !tb)) return tf.reshape(batchProduct(as3(a), as3(b), ta, tb), [ta ? a.shape[1] : a.shape[0], tb ? b.shape[0] : b.shape[1]]);
  if (ta && !tb && a.shape[1] > b.shape[1]) return tf.transpose(tf.matMul(tf.transpose(b), a)) as tf.Tensor2D;
  return tf.matMul(ta ? tf.transpose(a) : a, tb ? tf.transpose(b) : b);
}

function matmul(ins: readonly tf.Tensor[], node: Node): tf.Tensor {
  const [a, b] = ins as [tf.Tensor, tf.Tensor];
  const ta = node.attrs['transposeA'] === true, tb = node.attrs['transposeB'] === true;
  if (a.rank === 2) return product2d(a as tf.Tensor2D, b as tf.Tensor2D, ta, tb);
  // The kernels take rank-3 batches: leading axes merge into one.
  return tf.reshape(batchProduct(as3(a), as3(b), ta, tb), node.shape as number[]);
}

/** nn.Linear on rows; the bias goes inside the product where the backend fuses it (never wasm's own _FusedMatMul: it adds a 1-D bias twice). */
function linear(ins: readonly tf.Tensor[]): tf.Tensor {
  const [x, w, b] = ins as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D | undefined];
  if (b !== undefined && flexibleProducts()) {
    const y = kernel('_FusedMatMul', { a: as3(x), b: as3(w), bias: b }, { transposeA: false, transposeB: true, activation: 'linear', leakyreluAlpha: 0.2 });
    return tf.reshape(y, [x.shape[0], w.shape[0]]);
  }
  const y = product2d(x, w, false, true);
  return b === undefined ? y : tf.add(y, b);
}

const attr = <T>(node: Node, key: string) => node.attrs[key] as T;

/** Rows of the last axis as (1, rows, width), the form the fused softmax kernels take. */
const asRows = (t: tf.Tensor) => tf.reshape(t, [1, -1, t.shape[t.rank - 1]!]) as tf.Tensor3D;

export const LOWERINGS: Readonly<Record<string, Lowering>> = {
  add: ([a, b]) => tf.add(a!, b!),
  sub: ([a, b]) => tf.sub(a!, b!),
  mul: ([a, b]) => tf.mul(a!, b!),
  div: ([a, b]) => tf.div(a!, b!),
  maximum: ([a, b]) => tf.maximum(a!, b!),
  minimum: ([a, b]) => tf.minimum(a!, b!),
  less: ([a, b]) => tf.less(a!, b!),
  greater: ([a, b]) => tf.greater(a!, b!),
  where: ([c, a, b]) => tf.where(c!, a!, b!),
  neg: ([x]) => tf.neg(x!),
  exp: ([x]) => tf.exp(x!),
  log: ([x]) => tf.log(x!),
  sqrt: ([x]) => tf.sqrt(x!),
  rsqrt: ([x]) => tf.rsqrt(x!),
  tanh: ([x]) => tf.tanh(x!),
  sigmoid: ([x]) => tf.sigmoid(x!),
  cos: ([x]) => tf.cos(x!),
  sin: ([x]) => tf.sin(x!),
  square: ([x]) => tf.square(x!),
  stop_gradient: ([x]) => tf.clone(x!),
  cast: ([x], n) => tf.cast(x!, n.dtype),
  sum: ([x], n) => tf.sum(x!, attr<number[]>(n, 'axes'), attr<boolean>(n, 'keepDims')),
  reshape: ([x], n) => tf.reshape(x!, n.shape as number[]),
  transpose: ([x], n) => tf.transpose(x!, attr<number[]>(n, 'perm')),
  broadcast_to: ([x], n) => tf.broadcastTo(x!, n.shape as number[]),
  slice: ([x], n) => tf.slice(x!, attr<number[]>(n, 'begin'), attr<number[]>(n, 'size')),
  pad: ([x], n) => {
    const pads = attr<number[]>(n, 'pads');
    return tf.pad(x!, x!.shape.map((_, i) => [pads[2 * i]!, pads[2 * i + 1]!] as [number, number]));
  },
  concat: (xs, n) => tf.concat(xs as tf.Tensor[], attr<number>(n, 'axis')),
  gather: ([table, idx]) => tf.gather(table!, idx!, 0),
  segment_sum: ([x, idx], n) => tf.unsortedSegmentSum(x!, idx as tf.Tensor1D, attr<number>(n, 'segments')),
  matmul,
  conv2d: ([x, w], n) => {
    const [top, bottom, left, right] = attr<number[]>(n, 'pads') as [number, number, number, number];
    return tf.conv2d(x as tf.Tensor4D, w as tf.Tensor4D, attr<number>(n, 'stride'), [[0, 0], [top, bottom], [left, right], [0, 0]]);
  },
  max_pool: ([x], n) => tf.maxPool(x as tf.Tensor4D, attr<number>(n, 'size'), attr<number>(n, 'stride'), attr<'valid' | 'same'>(n, 'pad')),
  avg_pool: ([x], n) => tf.avgPool(x as tf.Tensor4D, attr<number>(n, 'size'), attr<number>(n, 'stride'), attr<'valid' | 'same'>(n, 'pad')),
  // Half-pixel centres: PyTorch's F.interpolate(mode="bilinear", align_corners=False).
  resize_bilinear: ([x], n) => tf.image.resizeBilinear(x as tf.Tensor4D, attr<[number, number]>(n, 'size'), false, true),
  softmax: ([x]) => tf.softmax(x!),
  softmax_grad: ([p, dy], n) => tf.reshape(softmaxGrad(asRows(p!), asRows(dy!)), n.shape as number[]),
  layer_norm: ([x], n) => layerNorm(x!, attr<number>(n, 'eps')),
  layer_norm_grad: ([dy, x], n) => layerNormGrad(dy!, x!, attr<number>(n, 'eps')),
  gelu_tanh: ([x]) => gelu(x!),
  gelu_tanh_grad: ([dy, x]) => geluGrad(dy!, x!),
  linear,
  ln_modulate: ([x, shift, scale], n) => lnModulate(x!, shift!, scale!, attr<number>(n, 'eps')).z,
  attention: ([qkv, bias], n) => attention(qkv as tf.Tensor3D, (bias ?? null) as tf.Tensor4D | null, attr<number>(n, 'heads'), attr<number>(n, 'scale')),
  softmax_bias: ([x, bias], n) => {
    const [b, h, l, m] = n.shape as [number, number, number, number];
    return tf.reshape(softmaxBias(tf.reshape(x!, [b * h, l, m]) as tf.Tensor3D, bias as tf.Tensor4D), n.shape as number[]);
  },
};
