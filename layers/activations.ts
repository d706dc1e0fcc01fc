import type { Shape } from '../dsl/shape.ts';
import { layer, type Layer } from '../dsl/layer.ts';
import { geluTanh, silu } from '../dsl/ops.ts';

/** GELU with the tanh approximation (timm Mlp in DiT/MDT uses `approximate="tanh"`). */
export function gelu<const S extends Shape>(shape: S): Layer<S, S> {
  return layer(shape, shape, {}, (_p, x) => geluTanh(x));
}

export function siluLayer<const S extends Shape>(shape: S): Layer<S, S> {
  return layer(shape, shape, {}, (_p, x) => silu(x));
}
