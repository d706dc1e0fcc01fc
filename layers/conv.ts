/**
 * Conv2d with PyTorch's weight layout (out, in, kh, kw) and nearest ×2 up-sampling, in reference
 * form on the DSL's ops. Tensors are NCHW at the API, as in PyTorch; `layout: 'NHWC'` runs the
 * same layer on channels-last tensors, which is what the conv2d primitive takes, so a network
 * that stays NHWC inside transposes only at its ends.
 */
import { checkShape, sym, type Dim, type Sym } from '../dsl/shape.ts';
import { layer, type Layer } from '../dsl/layer.ts';
import { add, broadcastTo, conv2dNhwc, reshape, transpose } from '../dsl/ops.ts';
import { param, type ParamDecls } from '../dsl/param.ts';
import type { Tensor } from '../dsl/tensor.ts';
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

/** NCHW → NHWC. */
export function toNhwc(x: Tensor<Maps>): Tensor<Maps> {
  return transpose(x, [0, 2, 3, 1]) as unknown as Tensor<Maps>;
}

/** NHWC → NCHW. */
export function toNchw(x: Tensor<Maps>): Tensor<Maps> {
  return transpose(x, [0, 3, 1, 2]) as unknown as Tensor<Maps>;
}

/**
 * F.conv2d on NHWC `x` with a PyTorch (out, in, kh, kw) weight and an (out) bias: the weight is
 * permuted to the primitive's (kh, kw, in, out) in the graph, the bias added to the channels.
 */
export function conv2dTorchWeight(x: Tensor<Maps>, weight: Tensor<readonly Dim[]>, bias: Tensor<readonly [Dim]>, stride = 1, padding: Padding = 0): Tensor<Maps> {
  const [left, right, top, bottom] = padSides(padding);
  const filter = transpose(weight, [2, 3, 1, 0]);
  return add(conv2dNhwc(x, filter, stride, [top, bottom, left, right]), bias) as unknown as Tensor<Maps>;
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
    checkShape(`conv2d(${inChannels}→${outChannels}, ${kernel}×${kernel}) input (${layout})`, x.shape, inShape);
    const conv = (t: Tensor<Maps>) => conv2dTorchWeight(t, p.get('weight'), p.get('bias'), stride, padding);
    return layout === 'NHWC' ? conv(x) : toNchw(conv(toNhwc(x)));
  });
}

/**
 * Nearest-neighbour ×2 up-sampling (F.interpolate(scale_factor=2, mode="nearest")):
 * out[i, j] = in[⌊i/2⌋, ⌊j/2⌋], as each pixel broadcast into a 2×2 block.
 */
export function upsampleNearest2x(x: Tensor<Maps>, layout: Layout = 'NCHW'): Tensor<Maps> {
  const up = (t: Tensor<Maps>): Tensor<Maps> => {
    const [n, h, w, c] = t.shape;
    const cells = broadcastTo(reshape(t, [n, h, 1, w, 1, c]), [n, h, 2, w, 2, c]);
    return reshape(cells, [n, 2 * h, 2 * w, c]) as unknown as Tensor<Maps>;
  };
  return layout === 'NHWC' ? up(x) : toNchw(up(toNhwc(x)));
}
