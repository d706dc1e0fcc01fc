/**
 * Products in the forms each backend runs fastest, with hand-written gradients.
 *
 * The wasm backend's matmul takes XNNPACK's fast path only for a plain rank-2 product without
 * transpose flags (~25 GFLOP/s on one core); transposeA/transposeB and every rank-3 product
 * run a generic loop at ~2 GFLOP/s. tfjs's own BatchMatMul gradient passes those flags, so
 * every gradient here is written as explicit transposes plus plain products, transposing
 * whichever operand is smaller. Batched products (attention) run on wasm as a depthwise
 * convolution, which XNNPACK runs as one grouped GEMM (~10 GFLOP/s, ~5× the batched matmul).
 * Where BatchMatMul handles flags and batches well (flexibleProducts) the plain forms are used.
 */
import * as tf from '@tensorflow/tfjs';
import { nativeKernelsStatus } from './native.ts';
import { softmaxBias, softmaxGrad } from './fused.ts';

type Grad = Parameters<typeof tf.customGrad>[0];

/**
 * Whether BatchMatMul runs transpose flags and batches at full speed: everywhere but on
 * tfjs-backend-wasm's own kernel, whose fast path is plain rank-2 only — unless the native
 * kernels (dsl/native.ts) have replaced it.
 */
export function flexibleProducts(): boolean {
  return tf.getBackend() !== 'wasm' || nativeKernelsStatus().enabled;
}

/**
 * The two halves of an op with a hand-written gradient: `forward` returns the value and the
 * tensors `backward` needs, `backward` the gradient of each input. Pieces compose into larger
 * ops (see adaLNResidual) before they become one (customOp).
 */
export interface Piece {
  forward(...xs: tf.Tensor[]): { value: tf.Tensor; saved: tf.Tensor[] };
  backward(dy: tf.Tensor, saved: tf.Tensor[]): tf.Tensor[];
}

/**
 * A piece as a tfjs op typed `F`: one tape node. Each pass runs in its own tidy scope, so its
 * temporaries are freed at once; otherwise they would live until the step's gradient scope
 * ends, as the tape keeps every intermediate gradient of the step alive until then.
 */
export function customOp<F>(piece: Piece): F {
  return tf.customGrad(((...args: unknown[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const { value, saved } = tf.tidy(() => piece.forward(...(args as tf.Tensor[])));
    save(saved);
    return { value, gradFunc: (dy: tf.Tensor, kept: tf.Tensor[]) => tf.tidy(() => piece.backward(dy, kept)) };
  }) as unknown as Grad) as unknown as F;
}

/**
 * Σ over axis `axis` of x, the leading axis of (M, N) or the middle one of (G, L, D): with the
 * native product kernels, as a product with ones (a fraction of any Sum kernel's time there).
 */
export function sumRows(x: tf.Tensor, axis: 0 | 1): tf.Tensor {
  if (tf.getBackend() !== 'wasm' || !nativeKernelsStatus().enabled) return tf.sum(x, axis);
  const shape = x.shape;
  const ones = tf.ones(axis === 0 ? [1, shape[0]!] : [1, 1, shape[1]!]);
  return tf.reshape(tf.matMul(ones, x), shape.filter((_, i) => i !== axis));
}

/** aᵀ·b for rank-2 a (M, K), b (M, N); with plain products only, transposes the narrower of the two. */
function transposedProduct(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  if (flexibleProducts()) return tf.matMul(a, b, true, false);
  return a.shape[1] <= b.shape[1] ? tf.matMul(tf.transpose(a), b) : tf.transpose(tf.matMul(tf.transpose(b), a)) as tf.Tensor2D;
}

/** a·bᵀ for rank-2 a (M, K), b (N, K). */
function productTransposed(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return flexibleProducts() ? tf.matMul(a, b, false, true) : tf.matMul(a, tf.transpose(b));
}

/** a (M, K) · b (K, N). */
export const matmul2d = customOp<(a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D>({
  forward: (a, b) => ({ value: tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D), saved: [a, b] }),
  backward: (dy, [a, b]) => [productTransposed(dy as tf.Tensor2D, b as tf.Tensor2D), transposedProduct(a as tf.Tensor2D, dy as tf.Tensor2D)],
});

/**
 * nn.Linear's x (M, I)·wᵀ + b with w stored (O, I). Where products take transpose flags at
 * full speed, one tf.fused.matMul (the native kernels add the bias inside the product); on
 * wasm's own kernels a plain product plus a broadcast add, as its _FusedMatMul has no fast
 * transposed path.
 */
export function linearForward(x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor2D {
  if (b !== undefined && flexibleProducts()) return tf.fused.matMul({ a: x, b: w, transposeB: true, bias: b }) as tf.Tensor2D;
  const y = productTransposed(x, w);
  return b === undefined ? y : (tf.add(y, b) as tf.Tensor2D);
}

/** dx, dw (and db) of linearForward: dx = dy·w needs no transpose at all. */
export function linearBackward(dy: tf.Tensor2D, x: tf.Tensor2D, w: tf.Tensor2D, withBias: boolean): tf.Tensor[] {
  const grads: tf.Tensor[] = [tf.matMul(dy, w), transposedProduct(dy, x)];
  if (withBias) grads.push(sumRows(dy, 0));
  return grads;
}

const linearNoBias = customOp<(x: tf.Tensor2D, w: tf.Tensor2D) => tf.Tensor2D>({
  forward: (x, w) => ({ value: linearForward(x as tf.Tensor2D, w as tf.Tensor2D), saved: [x, w] }),
  backward: (dy, [x, w]) => linearBackward(dy as tf.Tensor2D, x as tf.Tensor2D, w as tf.Tensor2D, false),
});

const linearBias = customOp<(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D) => tf.Tensor2D>({
  forward: (x, w, b) => ({ value: linearForward(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D), saved: [x, w] }),
  backward: (dy, [x, w]) => linearBackward(dy as tf.Tensor2D, x as tf.Tensor2D, w as tf.Tensor2D, true),
});

/** PyTorch's nn.Linear on rows: x (M, I) · wᵀ + b, with w stored (O, I). */
export function linear2d(x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor2D {
  return b === undefined ? linearNoBias(x, w) : linearBias(x, w, b);
}

/**
 * out[p, g, m] = Σ_k x[p, k, g]·f[k, g, m] as a depthwise convolution: x is a (1, P, K, G)
 * image, f a (1, K, G, M) filter with channel multiplier M. With `contractLeading`, x is
 * (K, P, G) instead, read as a (1, K, P, G) image against a (K, 1, G, M) filter.
 */
function groupConv(x: tf.Tensor3D, f: tf.Tensor3D, contractLeading: boolean): tf.Tensor3D {
  const [a0, a1, g] = x.shape;
  const [k, , m] = f.shape;
  const img = tf.reshape(x, [1, a0, a1, g]) as tf.Tensor4D;
  const filter = tf.reshape(f, contractLeading ? [k, 1, g, m] : [1, k, g, m]) as tf.Tensor4D;
  return tf.reshape(tf.depthwiseConv2d(img, filter, 1, 'valid'), [contractLeading ? a1 : a0, g, m]);
}

/** (out, heads, L, L) sums to (1, heads, L, L) when the bias was shared across samples. */
function biasGrad(dLogits4: tf.Tensor4D, rows: number, sampleAxis: number): tf.Tensor {
  return rows === 1 ? tf.sum(dLogits4, sampleAxis, true) : dLogits4;
}

/**
 * How attention lays out its products per group g = (sample, head), with the matching
 * relative-position bias layout (layers/relpos.ts). Both compute softmax(q·kᵀ + bias)·v with q
 * already scaled; `forward` returns the value and what `backward` needs.
 */
export interface AttentionLayout {
  readonly name: 'token-major' | 'batch-major';
  /** x (B, L, D) → its rows (B·L, D) in this layout's order. */
  rows(x: tf.Tensor): tf.Tensor2D;
  /** The inverse of rows. */
  unrows(r: tf.Tensor, b: number, l: number): tf.Tensor3D;
  /** Rows (B·L, heads·hd) of a projection → the products' operand. */
  split(r: tf.Tensor, b: number, l: number, heads: number): tf.Tensor3D;
  /** The inverse of split. */
  merge(t: tf.Tensor, b: number, l: number, heads: number): tf.Tensor2D;
  forward(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, bias: tf.Tensor4D | null): { value: tf.Tensor3D; saved: tf.Tensor[] };
  /** dq, dk, dv (and dbias, summed over samples when shared). */
  backward(dOut: tf.Tensor3D, saved: readonly tf.Tensor[]): tf.Tensor[];
}

/**
 * For wasm's own kernels: rows are (token, sample), so q, k, v and the result are (L, G, hd)
 * views of 2-D products, and each batched product is a depthwise convolution (groupConv)
 * whose filter operand is read as-is in this layout — one operand per product is transposed,
 * 3 forward and 4 backward. The bias is (L, 1 or B, heads, L). Only the transposed
 * probabilities are kept (the largest tensor here).
 */
export const tokenMajorAttention: AttentionLayout = {
  name: 'token-major',
  rows: (x) => tf.reshape(tf.transpose(x, [1, 0, 2]), [-1, x.shape[2]!]) as tf.Tensor2D,
  unrows: (r, b, l) => tf.transpose(tf.reshape(r, [l, b, -1]), [1, 0, 2]) as tf.Tensor3D,
  split: (r, b, l, heads) => tf.reshape(r, [l, b * heads, -1]) as tf.Tensor3D,
  merge: (t, b, l) => tf.reshape(t, [l * b, -1]) as tf.Tensor2D,
  forward(q, k, v, bias) {
    const [l, g] = q.shape;
    let logits = groupConv(tf.transpose(q, [0, 2, 1]), tf.transpose(k, [2, 1, 0]), false);
    if (bias !== null) {
      const heads = bias.shape[2];
      logits = tf.reshape(tf.add(tf.reshape(logits, [l, g / heads, heads, l]), bias), [l, g, l]);
    }
    const pt = tf.transpose(tf.softmax(logits), [0, 2, 1]) as tf.Tensor3D;
    return { value: groupConv(pt, v, false), saved: bias === null ? [q, k, v, pt] : [q, k, v, pt, bias] };
  },
  backward(dOut, saved) {
    const [q, k, v, pt, bias] = saved as [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D, tf.Tensor3D, tf.Tensor4D | undefined];
    const [l, g] = q.shape;
    const p = tf.transpose(pt, [0, 2, 1]);
    // out[i,g,d] = Σ_j p[i,g,j]·v[j,g,d]
    const dv = groupConv(pt, dOut, true);
    const dp = groupConv(tf.transpose(dOut, [0, 2, 1]), tf.transpose(v, [2, 1, 0]), false);
    const dLogits = tf.mul(p, tf.sub(dp, tf.sum(tf.mul(p, dp), 2, true))) as tf.Tensor3D;
    // logits[i,g,j] = Σ_d q[i,g,d]·k[j,g,d]
    const dlt = tf.transpose(dLogits, [0, 2, 1]);
    const grads: tf.Tensor[] = [groupConv(dlt, k, false), groupConv(dlt, q, true), dv];
    if (bias !== undefined) grads.push(biasGrad(tf.reshape(dLogits, [l, g / bias.shape[2], bias.shape[2], l]), bias.shape[1], 1));
    return grads;
  },
};

/**
 * Where BatchMatMul takes batches and transpose flags at full speed (native kernels, cpu,
 * tensorflow): (G, L, hd) operands and plain batched products with flags. The bias is
 * (1 or B, heads, L, L); q, k, v and the merge cost one rank-4 transpose each.
 */
export const batchMajorAttention: AttentionLayout = {
  name: 'batch-major',
  rows: (x) => tf.reshape(x, [-1, x.shape[2]!]) as tf.Tensor2D,
  unrows: (r, b, l) => tf.reshape(r, [b, l, -1]) as tf.Tensor3D,
  split: (r, b, l, heads) => tf.reshape(tf.transpose(tf.reshape(r, [b, l, heads, -1]), [0, 2, 1, 3]), [b * heads, l, -1]) as tf.Tensor3D,
  merge: (t, b, l, heads) => tf.reshape(tf.transpose(tf.reshape(t, [b, heads, l, -1]), [0, 2, 1, 3]), [b * l, -1]) as tf.Tensor2D,
  forward(q, k, v, bias) {
    const p = softmaxBias(tf.matMul(q, k, false, true), bias);
    return { value: tf.matMul(p, v), saved: bias === null ? [q, k, v, p] : [q, k, v, p, bias] };
  },
  backward(dOut, saved) {
    const [q, k, v, p, bias] = saved as [tf.Tensor3D, tf.Tensor3D, tf.Tensor3D, tf.Tensor3D, tf.Tensor4D | undefined];
    const [g, l] = q.shape;
    const dLogits = softmaxGrad(p, tf.matMul(dOut, v, false, true));
    const grads: tf.Tensor[] = [tf.matMul(dLogits, k), tf.matMul(dLogits, q, true, false), tf.matMul(p, dOut, true, false)];
    if (bias !== undefined) grads.push(biasGrad(tf.reshape(dLogits, [g / bias.shape[1], bias.shape[1], l, l]), bias.shape[0], 0));
    return grads;
  },
};

/** The layout the active backend runs fastest. */
export function attentionLayout(): AttentionLayout {
  return flexibleProducts() ? batchMajorAttention : tokenMajorAttention;
}
