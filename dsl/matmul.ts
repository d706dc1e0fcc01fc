/**
 * Products in the forms each backend runs fastest, with hand-written gradients.
 *
 * The wasm backend's matmul takes XNNPACK's fast path only for a plain rank-2 product without
 * transpose flags (~25 GFLOP/s on one core); transposeA/transposeB and every rank-3 product
 * run a generic loop at ~2 GFLOP/s. tfjs's own BatchMatMul gradient passes those flags, so
 * every gradient here is written as explicit transposes plus plain products, transposing
 * whichever operand is smaller. Batched products (attention) run on wasm as a depthwise
 * convolution, which XNNPACK runs as one grouped GEMM (~10 GFLOP/s, ~5× the batched matmul).
 */
import * as tf from '@tensorflow/tfjs';

type Grad = Parameters<typeof tf.customGrad>[0];

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

/** aᵀ·b for rank-2 a (M, K), b (M, N): transposes the narrower of the two. */
function transposedProduct(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return a.shape[1] <= b.shape[1] ? tf.matMul(tf.transpose(a), b) : tf.transpose(tf.matMul(tf.transpose(b), a)) as tf.Tensor2D;
}

/** a (M, K) · b (K, N). */
export const matmul2d = customOp<(a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D>({
  forward: (a, b) => ({ value: tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D), saved: [a, b] }),
  backward: (dy, [a, b]) => [tf.matMul(dy as tf.Tensor2D, tf.transpose(b as tf.Tensor2D)), transposedProduct(a as tf.Tensor2D, dy as tf.Tensor2D)],
});

/**
 * nn.Linear's x (M, I)·wᵀ + b with w stored (O, I). A plain product plus a broadcast add, not
 * tf.fused.matMul: its _FusedMatMul kernel would bypass any faster BatchMatMul registered over
 * wasm's (dsl/native.ts).
 */
export function linearForward(x: tf.Tensor2D, w: tf.Tensor2D, b?: tf.Tensor1D): tf.Tensor2D {
  const y = tf.matMul(x, tf.transpose(w)) as tf.Tensor2D;
  return b === undefined ? y : (tf.add(y, b) as tf.Tensor2D);
}

/** dx, dw (and db) of linearForward: dx = dy·w needs no transpose at all. */
export function linearBackward(dy: tf.Tensor2D, x: tf.Tensor2D, w: tf.Tensor2D, withBias: boolean): tf.Tensor[] {
  const grads: tf.Tensor[] = [tf.matMul(dy, w), transposedProduct(dy, x)];
  if (withBias) grads.push(tf.sum(dy, 0));
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

/**
 * softmax(q·kᵀ + bias)·v for every group g (sample × head) at once, token-major: q, k, v and
 * the result are (L, G, hd), [token][group][channel] — plain views of 2-D projections.
 * `bias` is (L, R, H, L) with G = R·H, or R = 1 to share it across samples. The caller
 * scales q. Returns the value and what attentionCoreBackward needs.
 *
 * Each batched product is a depthwise convolution (see groupConv), whose filter operand is
 * read as-is in this layout: one operand per product is transposed, 3 forward and 4 backward.
 * Only the transposed probabilities are kept (they are the largest tensor here).
 */
export function attentionCoreForward(q: tf.Tensor3D, k: tf.Tensor3D, v: tf.Tensor3D, bias: tf.Tensor4D | null): { value: tf.Tensor3D; saved: tf.Tensor[] } {
  const [l, g, hd] = q.shape;
  for (const [name, t] of [['k', k], ['v', v]] as const) {
    if (t.shape[0] !== l || t.shape[1] !== g || t.shape[2] !== hd) throw new Error(`attention: q is (${q.shape.join(', ')}) so ${name} must be too, got (${t.shape.join(', ')})`);
  }
  let logits = groupConv(tf.transpose(q, [0, 2, 1]), tf.transpose(k, [2, 1, 0]), false);
  if (bias !== null) {
    const [bl, rows, heads, bl2] = bias.shape;
    if (bl !== l || bl2 !== l || g % heads !== 0 || (rows !== 1 && rows * heads !== g)) {
      throw new Error(`attention: the bias must be (${l}, 1 or ${g}/heads, heads, ${l}) for q (${q.shape.join(', ')}), got (${bias.shape.join(', ')})`);
    }
    logits = tf.reshape(tf.add(tf.reshape(logits, [l, g / heads, heads, l]), bias), [l, g, l]);
  }
  const pt = tf.transpose(tf.softmax(logits), [0, 2, 1]) as tf.Tensor3D;
  return { value: groupConv(pt, v, false), saved: bias === null ? [q, k, v, pt] : [q, k, v, pt, bias] };
}

/** dq, dk, dv (and dbias, summed over samples when shared) of attentionCoreForward. */
export function attentionCoreBackward(dOut: tf.Tensor3D, saved: readonly tf.Tensor[]): tf.Tensor[] {
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
  if (bias !== undefined) {
    const [, rows, heads] = bias.shape;
    const d4 = tf.reshape(dLogits, [l, g / heads, heads, l]);
    grads.push(rows === 1 ? tf.sum(d4, 1, true) : d4);
  }
  return grads;
}
