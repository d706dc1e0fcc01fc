/** nn.GroupNorm(groups, channels, eps, affine=True) on NCHW or NHWC feature maps, in reference form. */
import { checkShape, sym, type Dim } from '../dsl/shape.ts';
import { layer, type Layer } from '../dsl/layer.ts';
import { add, broadcastTo, mean, mul, reshape, rsqrt, shift, square, sub } from '../dsl/ops.ts';
import { param, type ParamDecls } from '../dsl/param.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { zeros } from './linear.ts';
import type { B, Layout, Maps } from './conv.ts';

/** diffusers' VAE blocks all use this epsilon. */
export const GROUP_NORM_EPS = 1e-6;

/**
 * torch.nn.functional.group_norm: each (sample, group) is normalised over its channels and
 * positions with the biased variance, then the per-channel affine map is applied. Two passes
 * (the mean, then the mean of squared deviations), so a large mean costs no precision.
 */
export function groupNormOp(x: Tensor<Maps>, weight: Tensor<readonly [Dim]>, bias: Tensor<readonly [Dim]>, groups: number, eps: number, layout: Layout): Tensor<Maps> {
  return layout === 'NCHW' ? groupNormNchw(x, weight, bias, groups, eps) : groupNormNhwc(x, weight, bias, groups, eps);
}

// A group is contiguous here: (N, G, C/G·H·W), both statistics over the last axis.
function groupNormNchw(x: Tensor<Maps>, weight: Tensor<readonly [Dim]>, bias: Tensor<readonly [Dim]>, groups: number, eps: number): Tensor<Maps> {
  const [n, c, h, w] = x.shape;
  const g: Tensor<readonly Dim[]> = reshape(x, [n, groups, (c / groups) * h * w]);
  const centered: Tensor<readonly Dim[]> = sub(g, mean(g, [2], true));
  const variance = mean(square(centered), [2], true);
  const normed: Tensor<readonly Dim[]> = reshape(mul(centered, rsqrt(shift(variance, eps))), [n, c, h, w]);
  return add(mul(normed, reshape(weight, [1, c, 1, 1])), reshape(bias, [1, c, 1, 1])) as unknown as Tensor<Maps>;
}

/**
 * Channels-last, a group is strided over the positions of (N, H·W, C). A group's mean is the
 * mean over its channels of the per-channel means over positions (equal counts), taken back to
 * one value per channel (N, 1, C): the full maps are then only ever reduced over their leading
 * position axis and combined with per-channel rows, the forms kernels run well.
 */
function groupNormNhwc(x: Tensor<Maps>, weight: Tensor<readonly [Dim]>, bias: Tensor<readonly [Dim]>, groups: number, eps: number): Tensor<Maps> {
  const [n, h, w, c] = x.shape;
  const per = c / groups;
  const flat: Tensor<readonly Dim[]> = reshape(x, [n, h * w, c]);
  const groupMean = (t: Tensor<readonly Dim[]>): Tensor<readonly Dim[]> => {
    const perGroup = mean(reshape(mean(t, [1]), [n, groups, per]), [2], true);
    return reshape(broadcastTo(perGroup, [n, groups, per]), [n, 1, c]);
  };
  const centered: Tensor<readonly Dim[]> = sub(flat, groupMean(flat));
  const variance = groupMean(square(centered));
  const normed: Tensor<readonly Dim[]> = mul(centered, rsqrt(shift(variance, eps)));
  return reshape(add(mul(normed, weight), bias), [n, h, w, c]) as unknown as Tensor<Maps>;
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
    checkShape(`groupNorm(${groups} groups, ${channels} channels) input (${layout})`, x.shape, shape);
    return groupNormOp(x, p.get('weight'), p.get('bias'), groups, eps, layout);
  });
}
