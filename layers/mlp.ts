import type { Dim, Shape } from '../dsl/shape.ts';
import { named, seq, type Layer } from '../dsl/layer.ts';
import { linear } from './linear.ts';
import { gelu } from './activations.ts';

/** timm Mlp: fc1 → GELU(tanh) → fc2; `fc1` is exposed so its hidden width shows in types. */
export function mlp<const S extends Shape, D extends Dim, M extends Dim>(lead: S, dim: D, hidden: M): Layer<readonly [...S, D], readonly [...S, D]> & { readonly fc1: Layer<readonly [...S, D], readonly [...S, M]> } {
  const fc1 = named('fc1', linear(lead, dim, hidden));
  return { ...seq(fc1, gelu([...lead, hidden] as const), named('fc2', linear(lead, hidden, dim))), fc1 };
}
