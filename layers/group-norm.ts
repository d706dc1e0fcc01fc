/** nn.GroupNorm(groups, channels, eps, affine=True) on NCHW or NHWC feature maps. */
import * as tf from '@tensorflow/tfjs';
import { checkShape, sym } from '../dsl/shape.ts';
import { layer, type Layer } from '../dsl/layer.ts';
import { param, type ParamDecls } from '../dsl/param.ts';
import { wrap } from '../dsl/tensor.ts';
import { zeros } from './linear.ts';
import type { B, Layout, Maps } from './conv.ts';

/** diffusers' VAE blocks all use this epsilon. */
export const GROUP_NORM_EPS = 1e-6;

/**
 * Normalises each (sample, group) over its channels and positions with the biased variance,
 * then applies the per-channel affine map, as torch.nn.functional.group_norm. Two passes (mean,
 * then the mean of squared deviations), so a large mean costs no precision.
 */
export function groupNormRaw(x: tf.Tensor4D, weight: tf.Tensor, bias: tf.Tensor, groups: number, eps: number, layout: Layout): tf.Tensor4D {
  return tf.tidy(() => (layout === 'NCHW' ? groupNormNchw(x, weight, bias, groups, eps) : groupNormNhwc(x, weight, bias, groups, eps)));
}

// A group is contiguous here, so both reductions run over the innermost axis.
function groupNormNchw(x: tf.Tensor4D, weight: tf.Tensor, bias: tf.Tensor, groups: number, eps: number): tf.Tensor4D {
  const [n, c, h, w] = x.shape;
  const g = tf.reshape(x, [n, groups, (c / groups) * h * w]);
  const { mean, variance } = tf.moments(g, 2, true);
  const normed = tf.reshape(tf.mul(tf.sub(g, mean), tf.rsqrt(tf.add(variance, eps))), x.shape);
  return tf.add(tf.mul(normed, tf.reshape(weight, [1, c, 1, 1])), tf.reshape(bias, [1, c, 1, 1]));
}

// Channels-last, a group is strided over positions; reducing it in one step makes tfjs transpose
// the whole map around each moment. Averaging positions per channel first, then channels per group,
// is the same mean; the affine map folds into one per-channel scale on the centred values.
function groupNormNhwc(x: tf.Tensor4D, weight: tf.Tensor, bias: tf.Tensor, groups: number, eps: number): tf.Tensor4D {
  const [n, h, w, c] = x.shape;
  const per = c / groups;
  const flat = tf.reshape(x, [n, h * w, c]);
  const groupMean = (t: tf.Tensor) => tf.mean(tf.reshape(tf.mean(t, 1), [n, groups, per]), 2, true);
  const perChannel = (t: tf.Tensor) => tf.reshape(tf.broadcastTo(t, [n, groups, per]), [n, 1, c]);
  const centered = tf.sub(flat, perChannel(groupMean(flat)));
  const scale = tf.mul(perChannel(tf.rsqrt(tf.add(groupMean(tf.square(centered)), eps))), weight);
  return tf.reshape(tf.add(tf.mul(centered, scale), bias), x.shape);
}

export function groupNormDecls(channels: number): ParamDecls {
  return {
    weight: param([channels], { kind: 'values', values: () => new Float32Array(channels).fill(1) }),
    bias: param([channels], zeros),
  };
}

/** GroupNorm layer with `weight` (C) initialised to 1 and `bias` (C) to 0, like PyTorch. */
export function groupNorm(channels: number, groups: number, eps = GROUP_NORM_EPS, layout: Layout = 'NCHW'): Layer<Maps, Maps> {
  if (!Number.isInteger(groups) || groups < 1 || channels % groups !== 0) {
    throw new Error(`groupNorm: ${channels} channels cannot be split into ${groups} groups (expected a divisor of ${channels})`);
  }
  const b = sym('B') as B;
  const shape = (layout === 'NCHW' ? [b, channels, sym('H'), sym('W')] : [b, sym('H'), sym('W'), channels]) as Maps;
  return layer(shape, shape, groupNormDecls(channels), (p, x) => {
    checkShape(`groupNorm(${groups} groups, ${channels} channels) input (${layout})`, x.raw.shape, shape);
    return wrap<Maps>(groupNormRaw(x.raw as tf.Tensor4D, p.get('weight').raw, p.get('bias').raw, groups, eps, layout));
  });
}
