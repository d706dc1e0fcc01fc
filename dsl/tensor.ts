import { checkShape, type Bindings, type Shape } from './shape.ts';
import type { DType, GraphBuilder } from '../compile/ir.ts';

/**
 * A typed value of a traced program: the shape lives in the type (`S`) and in the value
 * (`shape`, the concrete sizes of this trace). Typed ops record primitives into `graph`
 * (compile/ir.ts); compile/ turns the graph into an executable. A tensor never holds data.
 */
export interface Tensor<S extends Shape> {
  readonly shape: S;
  readonly dtype: DType;
  /** The node of `graph` that computes it. */
  readonly id: number;
  readonly graph: GraphBuilder;
}

/** The tensor a node of `graph` computes. Internal to the DSL's ops. */
export function tensorOf<S extends Shape>(graph: GraphBuilder, id: number): Tensor<S> {
  const n = graph.node(id);
  return { shape: n.shape as unknown as S, dtype: n.dtype, id, graph };
}

/**
 * The one escape hatch: asserts that `t` has the declared shape, checking it at trace time
 * (symbolic dims bind against `bindings` and each other).
 */
export function unsafeCast<const S extends Shape>(t: Tensor<Shape>, declared: S, what = 'unsafeCast', bindings: Bindings = {}): Tensor<S> {
  checkShape(what, t.shape, declared, bindings);
  return t as unknown as Tensor<S>;
}
