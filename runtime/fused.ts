/**
 * Fused pointwise steps — GELU, adaLN's LayerNorm + modulate and attention's softmax (each
 * direction) in the transformer block, the whole of attention for inference, and the optimizer
 * and EMA updates — as tfjs kernels
 * where the backend has one (runtime/native.ts registers them on wasm when the native addon runs:
 * one pass over memory instead of 5–20 bandwidth-bound wasm kernels), and as the same math in
 * tfjs ops everywhere else. Both forms take and return the same tensors, so a piece's saved
 * values mean the same thing on every backend. AdamW and EMA run as list kernels on the
 * parameter tensors themselves; their flat forms here are the tfjs-op fallback.
 */
import * as tf from '@tensorflow/tfjs';

export const FUSED = {
  gelu: 'MdtGelu',
  geluGrad: 'MdtGeluGrad',
  lnModulate: 'MdtLnModulate',
  lnModulateGrad: 'MdtLnModulateGrad',
  softmaxBias: 'MdtSoftmaxBias',
  softmaxGrad: 'MdtSoftmaxGrad',
  attention: 'MdtAttention',
  adamwList: 'MdtAdamWList',
  adan: 'MdtAdan',
  emaList: 'MdtEmaList',
} as const;

function hasKernel(name: string): boolean {
  return tf.getKernel(name, tf.getBackend()) !== undefined;
}

function run(name: string, inputs: tf.NamedTensorMap, attrs: Record<string, number> = {}): tf.Tensor | tf.Tensor[] {
  return tf.engine().runKernel(name, inputs, attrs as unknown as tf.NamedAttrMap);
}

// 0.5·(1 + tanh(u)) = σ(2u): the tanh form as one sigmoid, which wasm runs vectorised
// (its tanh is ~15× slower), with u = √(2/π)·(x + 0.044715·x³) written as x·(A + B·x²).
export const GELU_A = 2 * Math.sqrt(2 / Math.PI);
export const GELU_B = GELU_A * 0.044715;

/** σ(x·(A + B·x²)): GELU(x) = x·geluGate(x). */
function geluGate(x: tf.Tensor): tf.Tensor {
  return tf.sigmoid(tf.mul(x, tf.add(tf.mul(tf.mul(x, x), GELU_B), GELU_A)));
}

/** GELU, tanh form (PyTorch `approximate="tanh"`). */
export function gelu(x: tf.Tensor): tf.Tensor {
  return hasKernel(FUSED.gelu) ? (run(FUSED.gelu, { x }) as tf.Tensor) : tf.mul(x, geluGate(x));
}

/** dy·GELU'(x), with d/dx x·σ(z) = σ(z)·(1 + x·(1 − σ(z))·z') and z' = A + 3B·x². */
export function geluGrad(dy: tf.Tensor, x: tf.Tensor): tf.Tensor {
  if (hasKernel(FUSED.geluGrad)) return run(FUSED.geluGrad, { dy, x }) as tf.Tensor;
  const s = geluGate(x);
  const dz = tf.add(tf.mul(tf.mul(x, x), 3 * GELU_B), GELU_A);
  return tf.mul(dy, tf.mul(s, tf.add(tf.mul(tf.mul(x, tf.sub(1, s)), dz), 1)));
}

/** (x − mean)·rsqrt(var + eps) over the last axis (biased variance), with mean and the rsqrt factor (keepDims). */
export function normalize(x: tf.Tensor, eps: number): { y: tf.Tensor; mean: tf.Tensor; r: tf.Tensor } {
  const axis = x.rank - 1;
  const mean = tf.mean(x, axis, true);
  const centered = tf.sub(x, mean);
  const r = tf.rsqrt(tf.add(tf.mean(tf.mul(centered, centered), axis, true), eps));
  return { y: tf.mul(centered, r), mean, r };
}

/** dx of y = normalize(x) from dy: r·(dy − mean(dy) − y·mean(dy·y)), all over the last axis. */
export function normalizeGrad(dy: tf.Tensor, y: tf.Tensor, r: tf.Tensor): tf.Tensor {
  const axis = y.rank - 1;
  const proj = tf.mul(y, tf.mean(tf.mul(dy, y), axis, true));
  return tf.mul(tf.sub(tf.sub(dy, tf.mean(dy, axis, true)), proj), r);
}

/** x as (1, rows, D), the form lnModulate takes, with a zero modulation for it: (1, D). */
function asModulated(x: tf.Tensor): { rows: tf.Tensor; none: tf.Tensor } {
  const d = x.shape[x.rank - 1]!;
  return { rows: tf.reshape(x, [1, -1, d]), none: tf.zeros([1, d]) };
}

/** LayerNorm over the last axis without affine parameters: one pass where the fused kernel runs. */
export function layerNorm(x: tf.Tensor, eps: number): tf.Tensor {
  if (!hasKernel(FUSED.lnModulate)) return normalize(x, eps).y;
  const { rows, none } = asModulated(x);
  return tf.reshape(lnModulate(rows, none, none, eps).z, x.shape);
}

/** dx of layerNorm from dy; with the fused kernels, the statistics pass and the gradient pass. */
export function layerNormGrad(dy: tf.Tensor, x: tf.Tensor, eps: number): tf.Tensor {
  if (!hasKernel(FUSED.lnModulateGrad)) {
    const { y, r } = normalize(x, eps);
    return normalizeGrad(dy, y, r);
  }
  const { rows, none } = asModulated(x);
  const [dx] = lnModulateGrad(tf.reshape(dy, rows.shape), lnModulate(rows, none, none, eps).saved);
  return tf.reshape(dx, x.shape);
}

/** What the backward pass of lnModulate needs besides dz. */
export interface LnSaved {
  readonly x: tf.Tensor;
  readonly mean: tf.Tensor;
  readonly rstd: tf.Tensor;
  readonly scale: tf.Tensor;
}

/**
 * adaLN's modulate(LN(x), shift, scale) = LN(x)·(1 + scale) + shift: x (G, L, D), shift and
 * scale (G, D) broadcast over L. Returns z and the row statistics (mean, rstd: (G, L) from
 * the native kernel, (G, L, 1) from the ops; only lnModulateGrad reads them).
 */
export function lnModulate(x: tf.Tensor, shift: tf.Tensor, scale: tf.Tensor, eps: number): { z: tf.Tensor; saved: LnSaved } {
  if (hasKernel(FUSED.lnModulate)) {
    const [z, mean, rstd] = run(FUSED.lnModulate, { x, shift, scale }, { eps }) as tf.Tensor[];
    return { z: z!, saved: { x, mean: mean!, rstd: rstd!, scale } };
  }
  const { y, mean, r } = normalize(x, eps);
  const z = tf.add(tf.mul(y, tf.add(tf.expandDims(scale, 1), 1)), tf.expandDims(shift, 1));
  return { z, saved: { x, mean, rstd: r, scale } };
}

/** [dx (+ residual when given), dshift, dscale] of lnModulate from dz; dshift and dscale are sums over L. */
export function lnModulateGrad(dz: tf.Tensor, s: LnSaved, residual?: tf.Tensor): [tf.Tensor, tf.Tensor, tf.Tensor] {
  if (hasKernel(FUSED.lnModulateGrad)) {
    const inputs: tf.NamedTensorMap = { dz, x: s.x, mean: s.mean, rstd: s.rstd, scale: s.scale, ...(residual ? { residual } : {}) };
    return run(FUSED.lnModulateGrad, inputs) as [tf.Tensor, tf.Tensor, tf.Tensor];
  }
  const y = tf.mul(tf.sub(s.x, s.mean), s.rstd);
  const dx = normalizeGrad(tf.mul(dz, tf.add(tf.expandDims(s.scale, 1), 1)), y, s.rstd);
  return [residual ? tf.add(residual, dx) : dx, tf.sum(dz, 1), tf.sum(tf.mul(dz, y), 1)];
}

/**
 * softmax(x + bias) over the last axis: x (G, L, L) with G = samples·heads, bias
 * (1 or samples, heads, L, L) or null.
 */
export function softmaxBias(x: tf.Tensor3D, bias: tf.Tensor4D | null): tf.Tensor3D {
  if (hasKernel(FUSED.softmaxBias)) {
    const heads = bias?.shape[1] ?? 1;
    return run(FUSED.softmaxBias, bias === null ? { x } : { x, bias }, { heads }) as tf.Tensor3D;
  }
  if (bias === null) return tf.softmax(x);
  const [g, l] = x.shape;
  const heads = bias.shape[1];
  return tf.softmax(tf.reshape(tf.add(tf.reshape(x, [g / heads, heads, l, l]), bias), [g, l, l]));
}

/**
 * Self-attention from the qkv projection, for inference: qkv (B, L, 3·heads·hd) holds q, k, v
 * as its thirds, bias (1 or B, heads, L, L) or null; returns softmax(scale·q·kᵀ + bias)·v with
 * the heads merged, (B, L, heads·hd). The native kernel works per (sample, head) in cache from
 * qkv as it lies, with no copy of q, k or v and no (B, heads, L, L) tensor.
 */
export function attention(qkv: tf.Tensor3D, bias: tf.Tensor4D | null, heads: number, scale: number): tf.Tensor3D {
  if (hasKernel(FUSED.attention)) return run(FUSED.attention, bias === null ? { qkv } : { qkv, bias }, { heads, scale }) as tf.Tensor3D;
  const [b, l, d3] = qkv.shape;
  const d = d3 / 3;
  const [q, k, v] = tf.split(qkv, 3, 2).map((t) => tf.transpose(tf.reshape(t, [b, l, heads, d / heads]), [0, 2, 1, 3]));
  const logits = tf.matMul(tf.mul(q!, scale), k!, false, true);
  const p = tf.softmax(bias === null ? logits : tf.add(logits, bias));
  return tf.reshape(tf.transpose(tf.matMul(p, v!), [0, 2, 1, 3]), [b, l, d]);
}

/** The logits' gradient of p = softmax(logits) from dp: p·(dp − Σ_row p·dp). */
export function softmaxGrad(p: tf.Tensor3D, dp: tf.Tensor3D): tf.Tensor3D {
  if (hasKernel(FUSED.softmaxGrad)) return run(FUSED.softmaxGrad, { p, dp }) as tf.Tensor3D;
  return tf.mul(p, tf.sub(dp, tf.sum(tf.mul(p, dp), 2, true)));
}

/** AdamW's constants for one step: bc1 = 1 − b1^t, bc2Sqrt = sqrt(1 − b2^t). */
export interface AdamWHyper {
  readonly lr: number;
  readonly b1: number;
  readonly b2: number;
  readonly eps: number;
  readonly wd: number;
  readonly bc1: number;
  readonly bc2Sqrt: number;
}

/** PyTorch's AdamW on flat vectors: [p', m', v']. */
export function adamwUpdate(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, h: AdamWHyper): [tf.Tensor, tf.Tensor, tf.Tensor] {
  const m1 = tf.add(tf.mul(m, h.b1), tf.mul(g, 1 - h.b1));
  const v1 = tf.add(tf.mul(v, h.b2), tf.mul(tf.mul(g, g), 1 - h.b2));
  const decayed = h.wd === 0 ? p : tf.mul(p, 1 - h.lr * h.wd);
  const denom = tf.add(tf.div(tf.sqrt(v1), h.bc2Sqrt), h.eps);
  return [tf.sub(decayed, tf.mul(tf.div(m1, denom), h.lr / h.bc1)), m1, v1];
}

const listInputs = (lists: Record<string, readonly tf.Tensor[]>, rest: tf.NamedTensorMap = {}): tf.NamedTensorMap => ({
  ...Object.fromEntries(Object.entries(lists).flatMap(([k, ts]) => ts.map((t, i) => [`${k}${i}`, t]))),
  ...rest,
});

/**
 * adamwUpdate on a chunk of parameters and their gradients as they are (lists, no flat copies)
 * with the chunk's flat slots m, v (their elements in list order): the parameters' new
 * values, then m', v'. Null where the backend has no such kernel: the caller flattens.
 */
export function adamwUpdateList(ps: readonly tf.Tensor[], gs: readonly tf.Tensor[], m: tf.Tensor, v: tf.Tensor, h: AdamWHyper): tf.Tensor[] | null {
  if (!hasKernel(FUSED.adamwList)) return null;
  return run(FUSED.adamwList, listInputs({ p: ps, g: gs }, { m, v }), { ...h, n: ps.length }) as tf.Tensor[];
}

/** emaUpdate on lists of EMA values and parameters; null where the backend has no such kernel. */
export function emaUpdateList(es: readonly tf.Tensor[], ps: readonly tf.Tensor[], decay: number): tf.Tensor[] | null {
  if (!hasKernel(FUSED.emaList)) return null;
  const out = run(FUSED.emaList, listInputs({ e: es, p: ps }), { decay, n: es.length });
  return Array.isArray(out) ? out : [out];
}

/** Adan's constants for one step: bc_i = 1 − b_i^t; `first` is 1 at the first step, when the previous gradient is the current one. */
export interface AdanHyper {
  readonly lr: number;
  readonly b1: number;
  readonly b2: number;
  readonly b3: number;
  readonly eps: number;
  readonly wd: number;
  readonly bc1: number;
  readonly bc2: number;
  readonly bc3Sqrt: number;
  readonly first: 0 | 1;
}

/**
 * sail-sg's Adan on flat vectors, on the gradient g·clip (clip: a scalar tensor, the global
 * norm clip factor): [p', exp_avg', exp_avg_sq', exp_avg_diff', neg_pre_grad'].
 */
export function adanUpdate(
  p: tf.Tensor, g0: tf.Tensor, m: tf.Tensor, n: tf.Tensor, diff: tf.Tensor, neg: tf.Tensor, clip: tf.Scalar, h: AdanHyper,
): [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor] {
  if (hasKernel(FUSED.adan)) return run(FUSED.adan, { p, g: g0, m, n, diff, neg, clip }, { ...h }) as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
  const g = tf.mul(g0, clip);
  const gd = h.first === 1 ? tf.zerosLike(g) : tf.add(neg, g);
  const m1 = tf.add(tf.mul(m, h.b1), tf.mul(g, 1 - h.b1));
  const d1 = tf.add(tf.mul(diff, h.b2), tf.mul(gd, 1 - h.b2));
  const u = tf.add(tf.mul(gd, h.b2), g);
  const n1 = tf.add(tf.mul(n, h.b3), tf.mul(tf.mul(u, u), 1 - h.b3));
  const denom = tf.add(tf.div(tf.sqrt(n1), h.bc3Sqrt), h.eps);
  let p1 = tf.sub(tf.sub(p, tf.mul(tf.div(m1, denom), h.lr / h.bc1)), tf.mul(tf.div(d1, denom), (h.lr * h.b2) / h.bc2));
  if (h.wd !== 0) p1 = tf.div(p1, 1 + h.lr * h.wd);
  return [p1, m1, n1, d1, tf.neg(g)];
}

/** decay·e + (1 − decay)·p. */
export function emaUpdate(e: tf.Tensor, p: tf.Tensor, decay: number): tf.Tensor {
  return tf.add(tf.mul(e, decay), tf.mul(p, 1 - decay));
}
