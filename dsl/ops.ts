/**
 * Typed ops: each records IR primitives (compile/primitives.ts) into the graph its inputs
 * belong to. Positions that must agree with an earlier argument use `NoInfer`, so a mismatch
 * is reported at the wrong argument ("Type '15' is not assignable to type '16'"). Models are
 * written with these in reference form (as the official PyTorch code reads); which kernels
 * run is decided by compile/'s rewrite rules and lowering, never here.
 */
import { formatShape, isSymDim, ShapeCheckError, type Dim, type Shape } from './shape.ts';
import type { Add, BroadcastCheck, Checked, BroadcastShape, ConcatCheck, ExpandDims, Mul, Permute, PermCheck, ReshapeCheck, Reshaped, SumAxis, Squeeze, WithAxis } from './size-types.ts';
import { tensorOf, type Tensor } from './tensor.ts';
import { currentMemo } from './memo.ts';
import type { Attrs, DType, GraphBuilder } from '../compile/ir.ts';

type AnyTensor = Tensor<Shape>;

function graphOf(...ts: AnyTensor[]): GraphBuilder {
  const g = ts[0]!.graph;
  if (ts.some((t) => t.graph !== g)) throw new Error('ops: tensors from two different traces cannot be combined');
  return g;
}

/** Records `op` on `ins`; the result's type is the caller's claim, its shape the primitive's inference. */
function prim<S extends Shape>(op: string, ins: AnyTensor[], attrs: Attrs = {}): Tensor<S> {
  const g = graphOf(...ins);
  return tensorOf<S>(g, g.emit(op, ins.map((t) => t.id), attrs));
}

/** A constant in `like`'s graph: a scalar (broadcasts), or values of a given shape. */
export function constant<const S extends Shape>(like: AnyTensor, values: number | Float32Array | Int32Array, shape: S = [] as unknown as S, dtype: DType = 'float32'): Tensor<S> {
  return tensorOf<S>(like.graph, like.graph.constant(values, shape, dtype));
}

/** A named data input of a trace (x, t, y, noise, mask-plan indices). */
export function dataInput<const S extends Shape>(graph: GraphBuilder, name: string, shape: S, dtype: DType = 'float32'): Tensor<S> {
  return tensorOf<S>(graph, graph.input(name, 'data', shape, dtype));
}

const rows = (s: readonly number[]) => s.slice(0, -1).reduce((a, b) => a * b, 1);

/** x @ w for a rank-2 `w`: contracts x's last dim with w's first. */
export function matmul<const S extends Shape, K extends Dim, N extends Dim>(
  x: Tensor<readonly [...S, K]>,
  w: Tensor<readonly [NoInfer<K>, N]>,
): Tensor<readonly [...S, N]> {
  const flat = reshapeTo(x, [rows(x.shape), x.shape[x.shape.length - 1]!]);
  const y = prim('matmul', [flat, w], { transposeA: false, transposeB: false });
  return reshapeTo(y, [...x.shape.slice(0, -1), w.shape[1]!]);
}

/** PyTorch's nn.Linear: y = x·Wᵀ + b with W stored (out, in), as in official state dicts. */
export function linear<const S extends Shape, I extends Dim, O extends Dim>(
  x: Tensor<readonly [...S, I]>,
  weight: Tensor<readonly [O, NoInfer<I>]>,
  bias?: Tensor<readonly [NoInfer<O>]>,
): Tensor<readonly [...S, O]> {
  const flat = reshapeTo(x, [rows(x.shape), x.shape[x.shape.length - 1]!]);
  const y = prim<Shape>('matmul', [flat, weight], { transposeA: false, transposeB: true });
  return reshapeTo(bias === undefined ? y : prim('add', [y, bias]), [...x.shape.slice(0, -1), weight.shape[0]!]);
}

/**
 * Batched product over leading axes: a (..., M, K) · b (..., K, N), or with `transposeB`
 * a · bᵀ for b (..., N, K) — attention's q·kᵀ.
 */
export function batchMatmul<const S extends Shape, M extends Dim, K extends Dim, N extends Dim>(
  a: Tensor<readonly [...S, M, K]>,
  b: Tensor<readonly [...S, NoInfer<K>, N]>,
): Tensor<readonly [...S, M, N]>;
export function batchMatmul<const S extends Shape, M extends Dim, K extends Dim, N extends Dim>(
  a: Tensor<readonly [...S, M, K]>,
  b: Tensor<readonly [...S, N, NoInfer<K>]>,
  transposeB: true,
): Tensor<readonly [...S, M, N]>;
export function batchMatmul(a: AnyTensor, b: AnyTensor, transposeB = false): AnyTensor {
  return prim('matmul', [a, b], { transposeA: false, transposeB });
}

/**
 * A binary elementwise op; shapes broadcast as numpy does (right-aligned, rank-extending: a
 * `[D]` bias onto `[B, L, D]`). Sizes that cannot broadcast — two literals, two symbols, or a
 * symbol and a literal other than 1 — are a type error at the second argument; sizes known
 * only at run time are checked when traced.
 */
const binary = (op: string) => <const S extends Shape, const T extends Shape>(a: Tensor<S>, b: Tensor<T> & BroadcastCheck<S, T>): Tensor<BroadcastShape<S, T>> => prim(op, [a, b]);
export const add = binary('add');
export const sub = binary('sub');
export const mul = binary('mul');
export const div = binary('div');
export const maximum = binary('maximum');
export const less = binary('less');
export const greater = binary('greater');
/** cond ? a : b elementwise (cond is a bool tensor from `less`/`greater`). */
export function where<const S extends Shape>(cond: AnyTensor, a: Tensor<S>, b: AnyTensor): Tensor<S> {
  return prim('where', [cond, a, b]);
}
/** a·s for a number s. */
export function scale<const S extends Shape>(a: Tensor<S>, s: number): Tensor<S> {
  return prim('mul', [a, constant(a, s)]);
}
/** a + s for a number s. */
export function shift<const S extends Shape>(a: Tensor<S>, s: number): Tensor<S> {
  return prim('add', [a, constant(a, s)]);
}

const unary = (op: string) => <const S extends Shape>(x: Tensor<S>): Tensor<S> => prim(op, [x]);
export const neg = unary('neg');
export const exp = unary('exp');
export const log = unary('log');
export const sqrt = unary('sqrt');
export const rsqrt = unary('rsqrt');
export const tanh = unary('tanh');
export const sigmoid = unary('sigmoid');
export const cos = unary('cos');
export const sin = unary('sin');
export const square = unary('square');
/** An identity whose gradient is zero (PyTorch's `detach`). */
export const stopGradient = unary('stop_gradient');

export function cast<const S extends Shape>(x: Tensor<S>, dtype: DType): Tensor<S> {
  return prim('cast', [x], { dtype });
}

/** x·σ(x). */
export function silu<const S extends Shape>(x: Tensor<S>): Tensor<S> {
  const v: AnyTensor = x;
  return mul(v, sigmoid(v)) as unknown as Tensor<S>;
}

/** GELU, tanh approximation (PyTorch `approximate="tanh"`): ½x(1 + tanh(√(2/π)(x + 0.044715x³))). */
export function geluTanh<const S extends Shape>(x: Tensor<S>): Tensor<S> {
  // Written on the widened type: checks of a generic S could not be decided here.
  const v: AnyTensor = x;
  const inner = scale(add(v, scale(mul(v, mul(v, v)), 0.044715)), Math.sqrt(2 / Math.PI));
  return mul(scale(v, 0.5), shift(tanh(inner), 1)) as unknown as Tensor<S>;
}

/** Σ over `axes`. */
export function sum<const S extends Shape>(x: Tensor<S>, axes: readonly number[], keepDims = false): Tensor<Shape> {
  return prim('sum', [x], { axes: [...axes], keepDims });
}

/** Mean over `axes`. */
export function mean<const S extends Shape>(x: Tensor<S>, axes: readonly number[], keepDims = false): Tensor<Shape> {
  const count = axes.reduce((a, i) => a * x.shape[i < 0 ? i + x.shape.length : i]!, 1);
  return scale(sum(x, axes, keepDims), 1 / count);
}

/** Softmax over the last axis. */
export function softmax<const S extends Shape>(x: Tensor<S>): Tensor<S> {
  return prim('softmax', [x]);
}

/** LayerNorm over the last axis without affine parameters (biased variance). */
export function layerNorm<const S extends Shape>(x: Tensor<S>, eps: number): Tensor<S> {
  return prim('layer_norm', [x], { eps });
}

/** Reshape to sizes known only as numbers (internal: the typed `reshape` checks counts in types). */
function reshapeTo<S extends Shape>(x: AnyTensor, shape: readonly number[]): Tensor<S> {
  return prim('reshape', [x], { shape: [...shape] });
}

/**
 * The concrete target of a reshape: symbols take their sizes from the enclosing named layer's
 * bindings, and one unknown size (a -1, or a symbol not bound there) is what the element count
 * leaves for it.
 */
function resolveTarget(x: AnyTensor, shape: Shape): number[] {
  const bound = currentMemo(x.graph)?.bindings ?? {};
  const dims = shape.map((d) => (isSymDim(d) ? (bound[d.name] ?? null) : d === -1 ? null : d));
  const open = dims.flatMap((d, i) => (d === null ? [i] : []));
  const total = x.shape.reduce((a, b) => a * b, 1);
  const known = dims.reduce<number>((a, d) => a * (d ?? 1), 1);
  const fail = (why: string): never => {
    throw new ShapeCheckError(`reshape of [${x.shape.join(', ')}] (${total} elements) to ${formatShape(shape)}: ${why}`);
  };
  if (dims.some((d) => d !== null && !(Number.isInteger(d) && d >= 0))) fail('sizes must be non-negative integers, or -1 for the one inferred size');
  if (open.length > 1) fail(`${open.length} sizes are unknown here (${open.map((i) => formatShape([shape[i]!]).slice(1, -1)).join(', ')}); at most one can be inferred`);
  if (open.length === 1) {
    if (known === 0 || total % known !== 0) fail(`the other sizes multiply to ${known}, which does not divide ${total}`);
    dims[open[0]!] = total / known;
  }
  return dims as number[];
}

/**
 * Reshape. Symbols and one -1 are allowed in the target (`reshape(x, [B, 1024])`,
 * `reshape(x, [-1, 1024])`). The element count is compared in types as symbols plus the
 * product of literals, so `[B, 16, 64]` → `[B, 1023]` is a compile error at the argument;
 * the -1 is typed as what it must be (a literal, or the one symbol left over) where that is
 * exact, else `number`.
 */
export function reshape<const S extends Shape, const T extends Shape>(x: Tensor<S>, shape: T & ReshapeCheck<S, T>): Tensor<Reshaped<S, T> extends infer R extends Shape ? R : Shape> {
  return reshapeTo(x, resolveTarget(x, shape));
}

/** Permutes axes: output axis i is input axis perm[i]; a perm that is not a permutation of x's axes is a compile error. */
export function transpose<const S extends Shape, const P extends readonly number[]>(x: Tensor<S>, perm: P & PermCheck<S, P>): Tensor<Permute<S, P>> {
  const rank = x.shape.length;
  if (perm.length !== rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    throw new ShapeCheckError(`transpose: [${perm.join(', ')}] is not a permutation of the ${rank} axes of [${x.shape.join(', ')}]`);
  }
  return prim('transpose', [x], { perm: [...perm] });
}

/** Repeats size-1 axes (and prepends axes) to reach `shape`. */
export function broadcastTo<const T extends Shape>(x: AnyTensor, shape: T): Tensor<T> {
  return prim('broadcast_to', [x], { shape: [...shape] });
}

/** Concatenates two tensors along the last axis (all other dims must agree). */
export function concatLast<const S extends Shape, X extends Dim, Y extends Dim>(a: Tensor<readonly [...S, X]>, b: Tensor<readonly [...S, Y]>): Tensor<readonly [...S, Add<X, Y>]> {
  return prim('concat', [a, b], { axis: a.shape.length - 1 });
}

type ShapesOf<Xs extends readonly AnyTensor[]> = { [K in keyof Xs]: Xs[K] extends Tensor<infer S> ? S : never };
type Concatenated<Xs extends readonly AnyTensor[], A extends number> = ShapesOf<Xs> extends readonly [infer F extends Shape, ...Shape[]] ? WithAxis<F, A, SumAxis<ShapesOf<Xs>, A>> : Shape;
/** Concatenates along `axis` (negative counts from the end); the other dims must agree, which is a compile error where they are known. */
export function concat<const Xs extends readonly AnyTensor[], const A extends number>(xs: Xs & ConcatCheck<ShapesOf<Xs>, A>, axis: A): Tensor<Concatenated<Xs, A>> {
  return prim('concat', [...xs], { axis: axis < 0 ? xs[0]!.shape.length + axis : axis });
}

type Pieces<S extends Shape, A extends number, Sizes extends readonly number[]> = { -readonly [K in keyof Sizes]: Tensor<WithAxis<S, A, Sizes[K]>> };
/** Splits `axis` into consecutive pieces of the given sizes (torch.split with a list); they must sum to the axis. */
export function split<const S extends Shape, const Sizes extends readonly number[], const A extends number>(x: Tensor<S>, sizes: Sizes, axis: A): Pieces<S, A, Sizes> {
  const ax = axis < 0 ? x.shape.length + axis : axis;
  const total = x.shape[ax];
  if (total === undefined) throw new ShapeCheckError(`split: axis ${axis} is not an axis of [${x.shape.join(', ')}]`);
  if (sizes.reduce((a, b) => a + b, 0) !== total) throw new ShapeCheckError(`split: sizes [${sizes.join(', ')}] do not sum to axis ${axis} of [${x.shape.join(', ')}] (${total})`);
  let at = 0;
  return sizes.map((n) => {
    const piece = slice(x, x.shape.map((_, i) => (i === ax ? at : 0)), x.shape.map((d, i) => (i === ax ? n : d)));
    at += n;
    return piece;
  }) as unknown as Pieces<S, A, Sizes>;
}

/** The box [begin, begin + size) of x. */
export function slice(x: AnyTensor, begin: readonly number[], size: readonly number[]): AnyTensor {
  return prim('slice', [x], { begin: [...begin], size: [...size] });
}

/** Splits `axis` into `n` equal chunks (PyTorch's `chunk`). */
export function chunk<const S extends Shape>(x: Tensor<S>, n: number, axis: number): Tensor<Shape>[] {
  const size = x.shape[axis]!;
  if (size % n !== 0) throw new Error(`chunk: axis ${axis} of size ${size} does not split into ${n} equal chunks`);
  const part = size / n;
  return Array.from({ length: n }, (_, i) => slice(x, x.shape.map((_, a) => (a === axis ? i * part : 0)), x.shape.map((d, a) => (a === axis ? part : d))));
}

/** Splits the last axis into `n` equal chunks of size `size` (n·size must equal the axis). */
export function chunkLast<const S extends Shape, N extends number, C extends Dim>(x: Tensor<readonly [...S, Dim]>, n: N, size: C): Tensor<readonly [...S, C]>[] {
  const last = x.shape[x.shape.length - 1]!;
  if (n * size !== last) throw new Error(`chunkLast: ${n} chunks of ${size} do not cover the last axis of size ${last}`);
  return chunk(x, n, x.shape.length - 1) as Tensor<readonly [...S, C]>[];
}

/** Inserts a size-1 axis at `axis` (-1: after the last). */
export function expandDims<const S extends Shape, const A extends number>(x: Tensor<S>, axis: A): Tensor<ExpandDims<S, A>> {
  const s = [...x.shape];
  const at = axis < 0 ? s.length + 1 + axis : axis;
  if (!(at >= 0 && at <= s.length)) throw new ShapeCheckError(`expandDims: axis ${axis} is out of range for [${x.shape.join(', ')}]`);
  s.splice(at, 0, 1);
  return reshapeTo(x, s);
}

/** Removes the size-1 axis `axis` (a compile error when that axis is known not to be 1). */
export function squeeze<const S extends Shape, const A extends number>(x: Tensor<S>, axis: A & Checked<Squeeze<S, A>>): Tensor<Squeeze<S, A> extends infer R extends Shape ? R : Shape> {
  const at = axis < 0 ? x.shape.length + axis : axis;
  if (x.shape[at] !== 1) throw new ShapeCheckError(`squeeze: axis ${axis} of [${x.shape.join(', ')}] is not 1`);
  return reshapeTo(x, x.shape.filter((_, i) => i !== at));
}

/** Rows of a table picked by an int32 index tensor: table[idx] with shape [...idx, D]. */
export function gatherRows<const I extends Shape, R extends Dim, D extends Dim>(table: Tensor<readonly [R, D]>, idx: Tensor<I>): Tensor<readonly [...I, D]> {
  return prim('gather', [table, idx]);
}

/** Conv2d on NHWC maps with an HWIO filter; `pads` (top, bottom, left, right). */
export function conv2dNhwc(x: AnyTensor, filter: AnyTensor, stride: number, pads: readonly [number, number, number, number]): Tensor<readonly [Dim, Dim, Dim, Dim]> {
  return prim('conv2d', [x, filter], { stride, pads: [...pads] });
}

/** Max or average pooling of NHWC maps; 'same' pads as TensorFlow and leaves the padding out of averages (count_include_pad=False). */
export function pool2dNhwc(kind: 'max' | 'avg', x: AnyTensor, size: number, stride: number, pad: 'valid' | 'same'): Tensor<readonly [Dim, Dim, Dim, Dim]> {
  return prim(kind === 'max' ? 'max_pool' : 'avg_pool', [x], { size, stride, pad });
}

/** Bilinear resize of NHWC maps with half-pixel centres (PyTorch's align_corners=False, no antialias). */
export function resizeBilinearNhwc(x: AnyTensor, height: number, width: number): Tensor<readonly [Dim, Dim, Dim, Dim]> {
  return prim('resize_bilinear', [x], { size: [height, width] });
}

/**
 * Patch embedding input: (B, C, h·p, h·p) → (B, h·h, C·p·p), each token's vector ordered
 * (channel, dy, dx) like a Conv2d weight's (C, p, p) view. Sizes come as products, never quotients.
 */
export function patchify<B extends Dim, C extends Dim, G extends number, P extends number>(
  x: Tensor<readonly [B, C, Mul<G, P>, Mul<G, P>]>,
  grid: G,
  patch: P,
): Tensor<readonly [B, Mul<G, G>, Mul<C, Mul<P, P>>]> {
  const [b, c] = x.shape as unknown as [number, number];
  const t = reshapeTo(x, [b, c, grid, patch, grid, patch]);
  return reshapeTo(transpose(t, [0, 2, 4, 1, 3, 5]), [b, grid * grid, c * patch * patch]);
}

/**
 * Inverse layout of the final layer: (B, h·h, p·p·C) → (B, C, h·p, h·p), with the channel
 * fastest inside a token (dy, dx, channel), as the official `unpatchify`.
 */
export function unpatchify<B extends Dim, C extends number, G extends number, P extends number>(
  x: Tensor<readonly [B, Mul<G, G>, Mul<Mul<P, P>, C>]>,
  grid: G,
  patch: P,
  channels: C,
): Tensor<readonly [B, C, Mul<G, P>, Mul<G, P>]> {
  const b = x.shape[0] as number;
  const t = reshapeTo(x, [b, grid, grid, patch, patch, channels]);
  return reshapeTo(transpose(t, [0, 5, 1, 3, 2, 4]), [b, channels, grid * patch, grid * patch]);
}
