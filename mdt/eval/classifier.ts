/**
 * The feature network of `mdt eval` for the built-in data: a small classifier on 32×32
 * single-channel images in [-1, 1] (MNIST / Fashion-MNIST padded, the main job's input). A 3×3
 * convolution, then three 2×2 patch merges (stride-2 2×2 convolutions written as a reshape and
 * one product, which is what makes training fast on CPU: every trainable layer is a matrix
 * product), GELU after each (one fused kernel each way on the native backend), and a 256-wide hidden layer whose GELU output is the feature vector FID, KID and
 * precision/recall use, as pool3 of InceptionV3 is for ImageNet; the head gives class logits.
 */
import { sym, type Dim } from '../../dsl/shape.ts';
import { named, type Layer } from '../../dsl/layer.ts';
import { constant, conv2dNhwc, geluTanh, log, maximum, mean, mul, neg, reshape, softmax, sum, transpose } from '../../dsl/ops.ts';
import { mergeDecls, type ParamDecls, type ParamView } from '../../dsl/param.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import type { Program } from '../../compile/trace.ts';
import { toNhwc, type B, type Maps } from '../../layers/conv.ts';
import { linear } from '../../layers/linear.ts';

export const CLASSIFIER_SIZE = 32;
export const FEATURE_DIM = 256;
export const NUM_CLASSES = 10;

/** Channels after the 3×3 stem and after each 2×2 merge (32 → 16 → 8 → 4 pixels). */
const WIDTHS = [32, 64, 128, 128] as const;
const FLAT = 4 * 4 * WIDTHS[3];

const b = sym('B') as B;
type Rows = Layer<readonly [B, number], readonly [B, number]>;
const stem: Rows = named('stem', linear([b], 9, WIDTHS[0]));
const merges: Rows[] = [1, 2, 3].map((i) => named(`merge${i}`, linear([b], 4 * WIDTHS[i - 1]!, WIDTHS[i]!)));
const hidden: Rows = named('fc', linear([b], FLAT, FEATURE_DIM));
const head: Rows = named('head', linear([b], FEATURE_DIM, NUM_CLASSES));

export const CLASSIFIER_PARAMS: ParamDecls = mergeDecls(stem.params, ...merges.map((m) => m.params), hidden.params, head.params);

/** A one-hot 3×3 filter: convolving with it lays each pixel's 3×3 neighbourhood (zero-padded) along the channels. */
function unfold3x3(x: Tensor<Maps>): Tensor<Maps> {
  const eye = new Float32Array(81);
  for (let k = 0; k < 9; k++) eye[k * 9 + k] = 1;
  return conv2dNhwc(x, constant(x, eye, [3, 3, 1, 9]), 1, [1, 1, 1, 1]) as unknown as Tensor<Maps>;
}

/** (B, H, W, C) → (B, H/2, W/2, 4C): each 2×2 block's pixels side by side (space-to-depth). */
function merge2x2(x: Tensor<Maps>): Tensor<Maps> {
  const [n, h, w, c] = x.shape;
  const blocks = transpose(reshape(x, [n, h / 2, 2, w / 2, 2, c]), [0, 1, 3, 2, 4, 5]);
  return reshape(blocks, [n, h / 2, w / 2, 4 * c]) as unknown as Tensor<Maps>;
}

/** A per-pixel layer: the maps' rows through `l`, then GELU. */
function pixelwise(p: ParamView, l: Rows, x: Tensor<Maps>): Tensor<Maps> {
  const [n, h, w, c] = x.shape;
  const rows = reshape(x, [n * h * w, c]) as unknown as Tensor<readonly [B, number]>;
  return reshape(geluTanh(l.apply(p, rows)), [n, h, w, l.outShape[1]]) as unknown as Tensor<Maps>;
}

/** Features (B, 256) and logits (B, 10) of images (B, 1, 32, 32). */
export function classify(p: ParamView, images: Tensor<readonly [B, 1, 32, 32]>): { features: Tensor<readonly [B, 256]>; logits: Tensor<readonly [B, 10]> } {
  const n = images.shape[0];
  let h = pixelwise(p, stem, unfold3x3(toNhwc(images as unknown as Tensor<Maps>)));
  for (const m of merges) h = pixelwise(p, m, merge2x2(h));
  const flat = reshape(h, [n, FLAT]) as unknown as Tensor<readonly [B, number]>;
  const features = geluTanh(hidden.apply(p, flat)) as unknown as Tensor<readonly [B, 256]>;
  return { features, logits: head.apply(p, features) as unknown as Tensor<readonly [B, 10]> };
}

/** Inference: `images` → `features`, `logits`. */
export const classifierProgram: Program = (io) => classify(io.params(CLASSIFIER_PARAMS), io.data('images'));

/** Training: mean cross-entropy of the logits against one-hot `targets` (B, 10). */
export const classifierLossProgram: Program = (io) => {
  const { logits } = classify(io.params(CLASSIFIER_PARAMS), io.data('images'));
  // log p clamped away from 0: a sample classified wrong with p < 1e-30 adds a bounded loss.
  const logp = log(maximum(softmax(logits), constant(logits, 1e-30)));
  return { loss: neg(mean(sum(mul(io.data<readonly [Dim, 10]>('targets'), logp), [1]), [0])) };
};
