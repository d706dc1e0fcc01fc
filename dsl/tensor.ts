import * as tf from '@tensorflow/tfjs';
import { checkShape, type Bindings, type Shape } from './shape.ts';

/**
 * A typed view over a tf.Tensor: the shape lives in the type (`S`) and in the value
 * (`shape`, the concrete sizes). Typed ops take and return these; `raw` is the tfjs tensor.
 */
export interface Tensor<S extends Shape> {
  readonly raw: tf.Tensor;
  readonly shape: S;
}

/** Wraps a raw tensor whose shape an op has already established. Internal to the DSL's ops. */
export function wrap<S extends Shape>(raw: tf.Tensor): Tensor<S> {
  return { raw, shape: raw.shape as unknown as S };
}

/**
 * The one escape hatch: asserts that `t` has the declared shape, checking it at run time
 * (symbolic dims bind against `bindings` and each other).
 */
export function unsafeCast<const S extends Shape>(t: tf.Tensor | Tensor<Shape>, declared: S, what = 'unsafeCast', bindings: Bindings = {}): Tensor<S> {
  const raw = t instanceof tf.Tensor ? t : t.raw;
  checkShape(what, raw.shape, declared, bindings);
  return wrap<S>(raw);
}

export function dispose(...ts: ReadonlyArray<Tensor<Shape> | tf.Tensor | undefined>): void {
  for (const t of ts) {
    if (t === undefined) continue;
    (t instanceof tf.Tensor ? t : t.raw).dispose();
  }
}
