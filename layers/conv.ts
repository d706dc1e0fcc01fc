/**
 * Conv2d with PyTorch's weight layout (out, in, kh, kw) and nearest ×2 up-sampling. Tensors are
 * NCHW at the API, as in PyTorch; `layout: 'NHWC'` runs the same layer on channels-last tensors,
 * which is what tf.conv2d takes, so a network that stays NHWC inside transposes only at its ends.
 */
import * as tf from '@tensorflow/tfjs';
import { checkShape, sym, type Dim, type Sym } from '../dsl/shape.ts';
import { layer, type Layer } from '../dsl/layer.ts';
import { param, type ParamDecls } from '../dsl/param.ts';
import { wrap, type Tensor } from '../dsl/tensor.ts';
import { xavier, zeros } from './linear.ts';

export type B = Sym<'B'>;
export type Layout = 'NCHW' | 'NHWC';
/** A batch of feature maps in either layout; which axis is which is the layer's `layout`. */
export type Maps = readonly [B, Dim, Dim, Dim];

/** Zero padding in F.pad order for the last two axes: (left, right, top, bottom); a number pads all four sides. */
export type Padding = number | readonly [left: number, right: number, top: number, bottom: number];

export interface Conv2dSpec {
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernel: number;
  readonly stride?: number;
  readonly padding?: Padding;
  readonly layout?: Layout;
}

function padSides(padding: Padding): readonly [number, number, number, number] {
  const sides = typeof padding === 'number' ? ([padding, padding, padding, padding] as const) : padding;
  if (sides.length !== 4 || sides.some((s) => !Number.isInteger(s) || s < 0)) {
    throw new Error(`conv2d: padding must be a non-negative integer or (left, right, top, bottom), got ${JSON.stringify(padding)}`);
  }
  return sides;
}

export function toNhwc(x: tf.Tensor): tf.Tensor4D {
  return tf.transpose(x, [0, 2, 3, 1]) as tf.Tensor4D;
}

export function toNchw(x: tf.Tensor): tf.Tensor4D {
  return tf.transpose(x, [0, 3, 1, 2]) as tf.Tensor4D;
}

/** Conv on NHWC `x` with a PyTorch (out, in, kh, kw) weight and an (out) bias. */
export function conv2dNhwc(x: tf.Tensor4D, weight: tf.Tensor, bias: tf.Tensor, stride = 1, padding: Padding = 0): tf.Tensor4D {
  const [left, right, top, bottom] = padSides(padding);
  return tf.tidy(() => tf.fused.conv2d({
    x,
    filter: tf.transpose(weight, [2, 3, 1, 0]) as tf.Tensor4D,
    strides: stride,
    pad: [[0, 0], [top, bottom], [left, right], [0, 0]],
    bias,
  }));
}

/** Parameters of nn.Conv2d(in, out, k): `weight` (out, in, k, k), `bias` (out); Xavier-uniform over the receptive field, zero bias. */
export function conv2dDecls(inChannels: number, outChannels: number, kernel: number): ParamDecls {
  const rf = kernel * kernel;
  return {
    weight: param([outChannels, inChannels, kernel, kernel], xavier(inChannels * rf, outChannels * rf)),
    bias: param([outChannels], zeros),
  };
}

/** nn.Conv2d as a layer; spatial sizes are free (checked only by the convolution itself). */
export function conv2d(spec: Conv2dSpec): Layer<Maps, Maps> {
  const { inChannels, outChannels, kernel } = spec;
  const stride = spec.stride ?? 1;
  const padding = spec.padding ?? 0;
  const layout = spec.layout ?? 'NCHW';
  const [left, right, top, bottom] = padSides(padding);
  const b = sym('B') as B;
  const h = sym('H');
  const w = sym('W');
  const keepsSize = stride === 1 && top + bottom === kernel - 1 && left + right === kernel - 1;
  const ho = keepsSize ? h : sym('Ho');
  const wo = keepsSize ? w : sym('Wo');
  const inShape = (layout === 'NCHW' ? [b, inChannels, h, w] : [b, h, w, inChannels]) as Maps;
  const outShape = (layout === 'NCHW' ? [b, outChannels, ho, wo] : [b, ho, wo, outChannels]) as Maps;
  return layer(inShape, outShape, conv2dDecls(inChannels, outChannels, kernel), (p, x) => {
    checkShape(`conv2d(${inChannels}→${outChannels}, ${kernel}×${kernel}) input (${layout})`, x.raw.shape, inShape);
    const wt = p.get('weight').raw;
    const bias = p.get('bias').raw;
    if (layout === 'NHWC') return wrap<Maps>(conv2dNhwc(x.raw as tf.Tensor4D, wt, bias, stride, padding));
    return wrap<Maps>(toNchw(conv2dNhwc(toNhwc(x.raw), wt, bias, stride, padding)));
  });
}

/** Nearest-neighbour ×2 up-sampling (F.interpolate(scale_factor=2, mode="nearest")): out[i, j] = in[⌊i/2⌋, ⌊j/2⌋]. */
export function upsampleNearest2x(x: Tensor<Maps>, layout: Layout = 'NCHW'): Tensor<Maps> {
  // tfjs's kernel (no corner alignment, no half-pixel centres) samples in[⌊i·in/out⌋], exactly ⌊i/2⌋ here.
  const up = (t: tf.Tensor4D) => tf.image.resizeNearestNeighbor(t, [2 * t.shape[1], 2 * t.shape[2]]);
  return wrap<Maps>(layout === 'NHWC' ? up(x.raw as tf.Tensor4D) : tf.tidy(() => toNchw(up(toNhwc(x.raw)))));
}
