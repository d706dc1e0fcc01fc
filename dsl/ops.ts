/**
 * Typed ops: each records IR primitives (compile/primitives.ts) into the graph its inputs
 * belong to. Positions that must agree with an earlier argument use `NoInfer`, so a mismatch
 * is reported at the wrong argument ("Type '15' is not assignable to type '16'"). Models are
 * written with these in reference form (as the official PyTorch code reads); which kernels
 * run is decided by compile/'s rewrite rules and lowering, never here.
 */
import type { Broadcast, Dim, Mul, Numel, Shape, ShapeError } from './shape.ts';
import { tensorOf, type Tensor } from './tensor.ts';
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

/** A binary elementwise op; shapes broadcast as numpy does (checked when traced). */
const binary = (op: string) => <const S extends Shape, const T extends Shape>(a: Tensor<S>, b: Tensor<T>): Tensor<Broadcast<S, T>> => prim(op, [a, b]);
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
  return mul(x, sigmoid(x)) as unknown as Tensor<S>;
}

/** GELU, tanh approximation (PyTorch `approximate="tanh"`): ½x(1 + tanh(√(2/π)(x + 0.044715x³))). */
export function geluTanh<const S extends Shape>(x: Tensor<S>): Tensor<S> {
  const inner = scale(add(x, scale(mul(x, mul(x, x)), 0.044715)), Math.sqrt(2 / Math.PI));
  return mul(scale(x, 0.5), shift(tanh(inner), 1)) as unknown as Tensor<S>;
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

/** Reshape; a wrong element count is a compile error when both shapes are small literals. */
export function reshape<const S extends Shape, const T extends Shape>(
  x: Tensor<S>,
  shape: Numel<S> extends Numel<T> ? T : number extends Numel<S> | Numel<T> ? T : ShapeError<`reshape changes the element count: ${Numel<S> & number} vs ${Numel<T> & number}`>,
): Tensor<T> {
  return reshapeTo(x, shape as unknown as readonly number[]);
}

type Permute<S extends Shape, P extends readonly number[]> = { -readonly [K in keyof P]: S[P[K] & number] };
/** Permutes axes: output axis i is input axis perm[i]. */
export function transpose<const S extends Shape, const P extends readonly number[]>(x: Tensor<S>, perm: P): Tensor<Permute<S, P>> {
  return prim('transpose', [x], { perm: [...perm] });
}

/** Repeats size-1 axes (and prepends axes) to reach `shape`. */
export function broadcastTo<const T extends Shape>(x: AnyTensor, shape: T): Tensor<T> {
  return prim('broadcast_to', [x], { shape: [...shape] });
}

type AddDims<X, Y> = [X, Y] extends [infer P extends number, infer Q extends number] ? LenAdd<P, Q> : number;
type LenAdd<P extends number, Q extends number> = number extends P | Q ? number : [...TupleOf<P>, ...TupleOf<Q>]['length'] & number;
type TupleOf<N extends number, Acc extends unknown[] = []> = Acc['length'] extends N ? Acc : Acc['length'] extends 10000 ? unknown[] : TupleOf<N, [...Acc, 0]>;

/** Concatenates two tensors along the last axis (all other dims must agree). */
export function concatLast<const S extends Shape, X extends Dim, Y extends Dim>(a: Tensor<readonly [...S, X]>, b: Tensor<readonly [...S, Y]>): Tensor<readonly [...S, AddDims<X, Y>]> {
  return prim('concat', [a, b], { axis: a.shape.length - 1 });
}

/** Concatenates along `axis` (all other dims must agree). */
export function concat(xs: readonly AnyTensor[], axis: number): AnyTensor {
  return prim('concat', [...xs], { axis });
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

/** Inserts a size-1 axis. */
export function expandDims<const S extends Shape>(x: Tensor<S>, axis: number): Tensor<Shape> {
  const s = [...x.shape];
  s.splice(axis < 0 ? s.length + 1 + axis : axis, 0, 1);
  return reshapeTo(x, s);
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
