/**
 * Layers as values: declared parameters plus a pure apply (stax's init/apply pair, with
 * haiku-style paths). Combinators compose them; a composition's type error lands on the
 * layer that does not fit, and the declared shapes are checked once more when built.
 */
import type { Shape } from './shape.ts';
import { formatShape, isSymDim, ShapeCheckError } from './shape.ts';
import type { Tensor } from './tensor.ts';
import { add } from './ops.ts';
import { mergeDecls, prefixDecls, type ParamDecls, type ParamView } from './param.ts';
import { withMemo } from './memo.ts';

/** A layer from `In` to `Out`; `Ctx` is side input shared by a stack (conditioning, bias). */
export interface Layer<In extends Shape, Out extends Shape, Ctx = void> {
  readonly inShape: In;
  readonly outShape: Out;
  readonly params: ParamDecls;
  /** Declared shapes of tensor fields of `ctx`, checked with the input's bindings when the layer is applied under `named`. */
  readonly ctxShapes?: CtxShapes<Ctx>;
  apply(p: ParamView, x: Tensor<In>, ctx: Ctx): Tensor<Out>;
}

/** Shapes of the tensor-valued fields of a side input. */
export type CtxShapes<Ctx> = { readonly [K in keyof Ctx]?: NonNullable<Ctx[K]> extends Tensor<infer S> ? S : never };

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyLayer = Layer<any, any, any>;
type InOf<L extends AnyLayer> = L['inShape'];
type OutOf<L extends AnyLayer> = L['outShape'];
type CtxOf<L extends AnyLayer> = Parameters<L['apply']>[2];
type LastOf<Ls extends readonly AnyLayer[]> = Ls extends readonly [...AnyLayer[], infer L extends AnyLayer] ? L : never;

/** Each position must accept what the previous one returns: the error names that argument. */
type Chained<Ls extends readonly AnyLayer[]> = {
  [K in keyof Ls]: K extends '0' ? Ls[K] : Layer<[never, ...Ls][K & keyof [never, ...Ls]]['outShape'], Ls[K]['outShape'], CtxOf<Ls[K]>>;
};

export function layer<const In extends Shape, const Out extends Shape, Ctx = void>(
  inShape: In,
  outShape: Out,
  params: ParamDecls,
  apply: (p: ParamView, x: Tensor<In>, ctx: Ctx) => Tensor<Out>,
  ctxShapes?: CtxShapes<Ctx>,
): Layer<In, Out, Ctx> {
  return { inShape, outShape, params, apply, ...(ctxShapes ? { ctxShapes } : {}) };
}

function sameDims(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => {
    const e = b[i]!;
    if (isSymDim(d) || isSymDim(e)) return isSymDim(d) && isSymDim(e) && d.name === e.name;
    return d === e;
  });
}

/** Sequential composition. */
export function seq<const Ls extends readonly [AnyLayer, ...AnyLayer[]]>(...layers: Chained<Ls>): Layer<InOf<Ls[0]>, OutOf<LastOf<Ls>>, CtxOf<Ls[0]>> {
  const ls = layers as unknown as AnyLayer[];
  for (let i = 1; i < ls.length; i++) {
    if (!sameDims(ls[i - 1]!.outShape, ls[i]!.inShape)) {
      throw new ShapeCheckError(`seq: layer ${i - 1} returns ${formatShape(ls[i - 1]!.outShape)} but layer ${i} takes ${formatShape(ls[i]!.inShape)}`);
    }
  }
  return {
    inShape: ls[0]!.inShape,
    outShape: ls[ls.length - 1]!.outShape,
    params: mergeDecls(...ls.map((l) => l.params)),
    apply: (p, x, ctx) => ls.reduce((h, l) => l.apply(p, h, ctx), x as Tensor<Shape>),
  } as Layer<InOf<Ls[0]>, OutOf<LastOf<Ls>>, CtxOf<Ls[0]>>;
}

/**
 * Puts a layer's parameters under `name.` (`attn` → `attn.qkv.weight`) and its nodes in module
 * `name`. When traced, its input, declared side inputs and output are checked against the
 * declared shapes with one binding memo per call (dsl/memo.ts).
 */
export function named<In extends Shape, Out extends Shape, Ctx>(name: string, l: Layer<In, Out, Ctx>): Layer<In, Out, Ctx> {
  return {
    inShape: l.inShape,
    outShape: l.outShape,
    params: prefixDecls(name, l.params),
    ...(l.ctxShapes ? { ctxShapes: l.ctxShapes } : {}),
    // The graph records the module path too: per-module FLOPs and fusion reports read it.
    apply: (p, x, ctx) => x.graph.scoped(name, () => withMemo(x.graph, name, (memo) => {
      memo.check('input', x.shape, l.inShape);
      for (const [k, declared] of Object.entries(l.ctxShapes ?? {}) as [string, Shape][]) {
        const v = (ctx as Record<string, Tensor<Shape> | undefined>)[k];
        if (v !== undefined) memo.check(`ctx.${k}`, v.shape, declared);
      }
      const y = l.apply(p.scope(name), x, ctx);
      memo.check('output', y.shape, l.outShape);
      return y;
    })),
  };
}

/** Layers `name.0 … name.{n-1}`, for stacks whose members are called one by one (skips, stages); extra fields of the made layers are kept. */
export function stack<In extends Shape, Out extends Shape, Ctx, X extends object = object>(name: string, n: number, make: (i: number) => Layer<In, Out, Ctx> & X): (Layer<In, Out, Ctx> & X)[] {
  return Array.from({ length: n }, (_, i) => {
    const l = make(i);
    return { ...l, ...named(`${name}.${i}`, l) };
  });
}

/** `n` copies of a shape-preserving block under `name.0 … name.{n-1}`; type cost is constant in n. */
export function repeat<S extends Shape, Ctx>(name: string, n: number, make: (i: number) => Layer<S, S, Ctx>): Layer<S, S, Ctx> {
  if (n < 1) throw new Error(`repeat(${name}): n must be ≥ 1, got ${n}`);
  return seq(...(stack(name, n, make) as unknown as [AnyLayer, ...AnyLayer[]])) as unknown as Layer<S, S, Ctx>;
}

/** x + f(x) for a shape-preserving layer (checked when built: a cast cannot slip a d → d+1 layer in). */
export function residual<S extends Shape, Ctx>(l: Layer<S, S, Ctx>): Layer<S, S, Ctx> {
  if (!sameDims(l.inShape, l.outShape)) throw new ShapeCheckError(`residual: the layer maps ${formatShape(l.inShape)} to ${formatShape(l.outShape)}; x + f(x) needs the same shape`);
  return { ...l, apply: (p, x, ctx) => add<Shape, Shape>(x, l.apply(p, x, ctx)) as unknown as Tensor<S> };
}
