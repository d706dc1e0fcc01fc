/**
 * The primitives of the IR and their rules: shape/dtype inference, the vector-Jacobian product
 * (reverse-mode autodiff writes each as more IR, so a layer built from primitives trains with
 * no hand-written gradient) and the multiply-accumulates a node costs. How a primitive runs is
 * a backend's business (compile/lowering.ts); nothing here imports tfjs.
 *
 *   elementwise  add sub mul div maximum minimum less greater where neg exp log sqrt rsqrt
 *                tanh sigmoid cos sin square cast stop_gradient
 *   reductions   sum (axes, keepDims)
 *   layout       reshape transpose broadcast_to slice concat pad
 *   indexing     gather (rows of a table by an int32 index tensor) segment_sum (its adjoint)
 *   products     matmul (batched, transpose flags) conv2d (NHWC, HWIO filter, explicit pads)
 *   image        max_pool avg_pool (NHWC; 'same' excludes the padding) resize_bilinear (half-pixel), inference only
 *   nn           softmax layer_norm gelu_tanh (last axis), and their *_grad companions
 *   fused        linear ln_modulate softmax_bias, and attention (inference only): introduced by
 *                rewrite rules (compile/fusion.ts)
 *   leaves       input const
 *
 * Binary elementwise ops broadcast as numpy does (right-aligned, rank-extending).
 */
import type { Attrs, DType, GraphBuilder, Node } from './ir.ts';
import { formatShape, numel } from './ir.ts';

export interface Inferred {
  readonly shape: number[];
  readonly dtype: DType;
}

/** What autodiff asks of a primitive: the gradient of each input (null: none), as new nodes. */
export type Vjp = (b: GraphBuilder, node: Node, dy: number) => (number | null)[];

export interface Prim {
  infer(ins: readonly Node[], attrs: Attrs): Inferred;
  /** Absent: the op is not differentiable (autodiff names it if a gradient must flow through). */
  readonly vjp?: Vjp;
  /** Multiply-accumulates of one execution (products only; elementwise work counts 0). */
  macs?(node: Node, ins: readonly Node[]): number;
}

class IrShapeError extends Error {
  override readonly name = 'IrShapeError';
}

function fail(op: string, ins: readonly Node[], why: string): never {
  throw new IrShapeError(`${op}: ${why} (inputs ${ins.map((n) => `${formatShape(n.shape)} ${n.dtype}`).join(', ')})`);
}

export function broadcastShapes(op: string, ins: readonly Node[]): number[] {
  const rank = Math.max(...ins.map((n) => n.shape.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const n of ins) {
      const s = n.shape[n.shape.length - rank + i] ?? 1;
      if (s === 1) continue;
      if (d !== 1 && d !== s) fail(op, ins, `axis ${i} (from the right: ${rank - i}) has sizes ${d} and ${s}, which do not broadcast`);
      d = s;
    }
    out.push(d);
  }
  return out;
}

const same = (ins: readonly Node[]): Inferred => ({ shape: [...ins[0]!.shape], dtype: ins[0]!.dtype });
const axesOf = (attrs: Attrs, rank: number): number[] => (attrs['axes'] as readonly number[]).map((a) => (a < 0 ? a + rank : a));

// ---- helpers that write gradient IR ----

/** Sums `dy` down to `shape` over the axes broadcasting expanded. */
export function unbroadcast(b: GraphBuilder, dy: number, shape: readonly number[]): number {
  const from = b.node(dy).shape;
  if (formatShape(from) === formatShape(shape)) return dy;
  const lead = from.length - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < from.length; i++) if (i < lead || (shape[i - lead] === 1 && from[i] !== 1)) axes.push(i);
  const summed = axes.length > 0 ? b.emit('sum', [dy], { axes, keepDims: false }) : dy;
  return b.emit('reshape', [summed], { shape: [...shape] });
}

const scalar = (b: GraphBuilder, v: number) => b.constant(v, []);
const emit = (b: GraphBuilder, op: string, ...inputs: number[]) => b.emit(op, inputs);

const binary = (vjp?: Vjp, dtype?: DType): Prim => ({
  infer: (ins) => {
    if (ins.length !== 2) fail('binary op', ins, 'expects 2 inputs');
    if (dtype === undefined && ins[0]!.dtype !== ins[1]!.dtype) fail('binary op', ins, 'dtypes differ');
    return { shape: broadcastShapes('binary op', ins), dtype: dtype ?? ins[0]!.dtype };
  },
  ...(vjp ? { vjp } : {}),
});

const unary = (vjp?: Vjp): Prim => ({ infer: same, ...(vjp ? { vjp } : {}) });

function matmulInfer(ins: readonly Node[], attrs: Attrs): Inferred {
  const [a, w] = ins as [Node, Node];
  const ta = attrs['transposeA'] === true, tb = attrs['transposeB'] === true;
  if (a.shape.length < 2 || a.shape.length !== w.shape.length) fail('matmul', ins, 'operands must have the same rank ≥ 2');
  const r = a.shape.length;
  for (let i = 0; i < r - 2; i++) if (a.shape[i] !== w.shape[i]) fail('matmul', ins, `batch axis ${i} differs`);
  const [m, k] = ta ? [a.shape[r - 1]!, a.shape[r - 2]!] : [a.shape[r - 2]!, a.shape[r - 1]!];
  const [k2, n] = tb ? [w.shape[r - 1]!, w.shape[r - 2]!] : [w.shape[r - 2]!, w.shape[r - 1]!];
  if (k !== k2) fail('matmul', ins, `contracted sizes differ: ${k} vs ${k2}`);
  return { shape: [...a.shape.slice(0, r - 2), m, n], dtype: 'float32' };
}

function matmulMacs(node: Node, ins: readonly Node[]): number {
  const a = ins[0]!;
  const k = node.attrs['transposeA'] === true ? a.shape[a.shape.length - 2]! : a.shape[a.shape.length - 1]!;
  return numel(node.shape) * k;
}

/** Gradients of C = op(A)·op(B), each again a product with flags (no transpose nodes). */
const matmulVjp: Vjp = (b, node, dy) => {
  const [a, w] = node.inputs as [number, number];
  const ta = node.attrs['transposeA'] === true, tb = node.attrs['transposeB'] === true;
  const mm = (x: number, y: number, transposeA: boolean, transposeB: boolean) => b.emit('matmul', [x, y], { transposeA, transposeB });
  if (!ta && !tb) return [mm(dy, w, false, true), mm(a, dy, true, false)];
  if (!ta && tb) return [mm(dy, w, false, false), mm(dy, a, true, false)];
  if (ta && !tb) return [mm(w, dy, false, true), mm(a, dy, false, false)];
  return [mm(w, dy, true, true), mm(dy, a, true, true)];
};

/** Every s-th row and column of NHWC `t` from the first, `ho` × `wo` of them (`t` holds at least (ho − 1)·s + 1 rows). */
function subsample(b: GraphBuilder, t: number, s: number, ho: number, wo: number): number {
  const [n, , , c] = b.node(t).shape as [number, number, number, number];
  const span = b.emit('slice', [t], { begin: [0, 0, 0, 0], size: [n, (ho - 1) * s + 1, (wo - 1) * s + 1, c] });
  if (s === 1) return span;
  const full = b.emit('pad', [span], { pads: [0, 0, 0, s - 1, 0, s - 1, 0, 0] });
  const cells = b.emit('reshape', [full], { shape: [n, ho, s, wo, s, c] });
  return b.emit('reshape', [b.emit('slice', [cells], { begin: [0, 0, 0, 0, 0, 0], size: [n, ho, 1, wo, 1, c] })], { shape: [n, ho, wo, c] });
}

/**
 * Gradients of y = conv2d(x, w) (NHWC, HWIO, stride s, pads) written with the other primitives:
 * dx is the full correlation of dy (dilated by s) with the spatially flipped, in/out-swapped
 * filter, cropped to x; dw is the product of x's patches (im2col) with dy.
 */
const conv2dVjp: Vjp = (b, node, dy) => {
  const [xId, wId] = node.inputs as [number, number];
  const [n, h, w, ci] = b.node(xId).shape as [number, number, number, number];
  const [kh, kw, , co] = b.node(wId).shape as [number, number, number, number];
  const [, ho, wo] = node.shape as [number, number, number, number];
  const s = node.attrs['stride'] as number;
  const [top, bottom, left, right] = layoutOf(node.attrs, 'pads') as [number, number, number, number];
  const hp = h + top + bottom, wp = w + left + right;
  // dx
  const hd = (ho - 1) * s + 1, wd = (wo - 1) * s + 1;
  let dilated = dy;
  if (s > 1) {
    const cells = b.emit('pad', [b.emit('reshape', [dy], { shape: [n, ho, 1, wo, 1, co] })], { pads: [0, 0, 0, 0, 0, s - 1, 0, 0, 0, s - 1, 0, 0] });
    dilated = b.emit('slice', [b.emit('reshape', [cells], { shape: [n, ho * s, wo * s, co] })], { begin: [0, 0, 0, 0], size: [n, hd, wd, co] });
  }
  const padded = b.emit('pad', [dilated], { pads: [0, 0, kh - 1, hp - hd, kw - 1, wp - wd, 0, 0] });
  const reversed = b.constant(Int32Array.from({ length: kh * kw }, (_, i) => kh * kw - 1 - i), [kh * kw], 'int32');
  const flipped = b.emit('reshape', [b.emit('gather', [b.emit('reshape', [wId], { shape: [kh * kw, ci * co] }), reversed])], { shape: [kh, kw, ci, co] });
  const swapped = b.emit('transpose', [flipped], { perm: [0, 1, 3, 2] });
  const dxp = b.emit('conv2d', [padded, swapped], { stride: 1, pads: [0, 0, 0, 0] });
  const dx = b.emit('slice', [dxp], { begin: [0, top, left, 0], size: [n, h, w, ci] });
  // dw
  const xp = b.emit('pad', [xId], { pads: [0, 0, top, bottom, left, right, 0, 0] });
  const patches: number[] = [];
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) patches.push(subsample(b, b.emit('slice', [xp], { begin: [0, i, j, 0], size: [n, hp - i, wp - j, ci] }), s, ho, wo));
  }
  const cols = b.emit('reshape', [b.emit('concat', patches, { axis: 3 })], { shape: [n * ho * wo, kh * kw * ci] });
  const dyRows = b.emit('reshape', [dy], { shape: [n * ho * wo, co] });
  const dw = b.emit('reshape', [b.emit('matmul', [cols, dyRows], { transposeA: true, transposeB: false })], { shape: [kh, kw, ci, co] });
  return [dx, dw];
};

/** NHWC pooling windows of `size`, `stride`, padding 'valid' or 'same' (TensorFlow's rule). */
function poolInfer(op: string, ins: readonly Node[], attrs: Attrs): Inferred {
  const x = ins[0]!;
  const size = attrs['size'] as number, stride = attrs['stride'] as number, pad = attrs['pad'];
  if (x.shape.length !== 4 || (pad !== 'valid' && pad !== 'same')) fail(op, ins, "expects NHWC maps and pad 'valid' or 'same'");
  const out = (d: number) => (pad === 'same' ? Math.ceil(d / stride) : Math.floor((d - size) / stride) + 1);
  return { shape: [x.shape[0]!, out(x.shape[1]!), out(x.shape[2]!), x.shape[3]!], dtype: x.dtype };
}

function layoutOf(attrs: Attrs, key: string): number[] {
  return [...(attrs[key] as readonly number[])];
}

export const PRIMS: Readonly<Record<string, Prim>> = {
  input: { infer: (ins) => fail('input', ins, 'inputs are created by GraphBuilder.input') },
  const: { infer: (ins) => fail('const', ins, 'constants are created by GraphBuilder.constant') },

  add: binary((b, n, dy) => n.inputs.map((i) => unbroadcast(b, dy, b.node(i).shape))),
  sub: binary((b, n, dy) => [unbroadcast(b, dy, b.node(n.inputs[0]!).shape), unbroadcast(b, emit(b, 'neg', dy), b.node(n.inputs[1]!).shape)]),
  mul: binary((b, n, dy) => {
    const [x, y] = n.inputs as [number, number];
    return [unbroadcast(b, emit(b, 'mul', dy, y), b.node(x).shape), unbroadcast(b, emit(b, 'mul', dy, x), b.node(y).shape)];
  }),
  div: binary((b, n, dy) => {
    const [x, y] = n.inputs as [number, number];
    const dx = emit(b, 'div', dy, y);
    return [unbroadcast(b, dx, b.node(x).shape), unbroadcast(b, emit(b, 'neg', emit(b, 'mul', dx, n.id)), b.node(y).shape)];
  }),
  maximum: binary((b, n, dy) => {
    const [x, y] = n.inputs as [number, number];
    const xLess = emit(b, 'less', x, y);
    const zero = scalar(b, 0);
    return [unbroadcast(b, b.emit('where', [xLess, zero, dy]), b.node(x).shape), unbroadcast(b, b.emit('where', [xLess, dy, zero]), b.node(y).shape)];
  }),
  minimum: binary((b, n, dy) => {
    const [x, y] = n.inputs as [number, number];
    const yLess = emit(b, 'less', y, x);
    const zero = scalar(b, 0);
    return [unbroadcast(b, b.emit('where', [yLess, zero, dy]), b.node(x).shape), unbroadcast(b, b.emit('where', [yLess, dy, zero]), b.node(y).shape)];
  }),
  less: binary(undefined, 'bool'),
  greater: binary(undefined, 'bool'),
  where: {
    infer: (ins) => {
      if (ins.length !== 3 || ins[0]!.dtype !== 'bool' || ins[1]!.dtype !== ins[2]!.dtype) fail('where', ins, 'expects (bool condition, a, b) with a and b of one dtype');
      return { shape: broadcastShapes('where', ins), dtype: ins[1]!.dtype };
    },
    vjp: (b, n, dy) => {
      const [c, x, y] = n.inputs as [number, number, number];
      const zero = scalar(b, 0);
      return [null, unbroadcast(b, b.emit('where', [c, dy, zero]), b.node(x).shape), unbroadcast(b, b.emit('where', [c, zero, dy]), b.node(y).shape)];
    },
  },

  neg: unary((b, _n, dy) => [emit(b, 'neg', dy)]),
  exp: unary((b, n, dy) => [emit(b, 'mul', dy, n.id)]),
  log: unary((b, n, dy) => [emit(b, 'div', dy, n.inputs[0]!)]),
  sqrt: unary((b, n, dy) => [emit(b, 'div', emit(b, 'mul', dy, scalar(b, 0.5)), n.id)]),
  // d/dx x^−½ = −½·y³
  rsqrt: unary((b, n, dy) => [emit(b, 'mul', dy, emit(b, 'mul', scalar(b, -0.5), emit(b, 'mul', n.id, emit(b, 'square', n.id))))]),
  tanh: unary((b, n, dy) => [emit(b, 'mul', dy, emit(b, 'sub', scalar(b, 1), emit(b, 'square', n.id)))]),
  sigmoid: unary((b, n, dy) => [emit(b, 'mul', dy, emit(b, 'mul', n.id, emit(b, 'sub', scalar(b, 1), n.id)))]),
  cos: unary((b, n, dy) => [emit(b, 'neg', emit(b, 'mul', dy, emit(b, 'sin', n.inputs[0]!)))]),
  sin: unary((b, n, dy) => [emit(b, 'mul', dy, emit(b, 'cos', n.inputs[0]!))]),
  square: unary((b, n, dy) => [emit(b, 'mul', dy, emit(b, 'mul', n.inputs[0]!, scalar(b, 2)))]),
  stop_gradient: unary((_b, _n, _dy) => [null]),
  cast: {
    infer: (ins, attrs) => ({ shape: [...ins[0]!.shape], dtype: attrs['dtype'] as DType }),
    vjp: (b, n, dy) => [b.node(n.inputs[0]!).dtype === 'float32' && n.dtype === 'float32' ? dy : null],
  },

  sum: {
    infer: (ins, attrs) => {
      const x = ins[0]!;
      const axes = axesOf(attrs, x.shape.length);
      if (axes.some((a) => a < 0 || a >= x.shape.length)) fail('sum', ins, `axes ${axes.join(', ')} out of range`);
      const keep = attrs['keepDims'] === true;
      const shape = x.shape.flatMap((d, i) => (axes.includes(i) ? (keep ? [1] : []) : [d]));
      return { shape, dtype: x.dtype };
    },
    vjp: (b, n, dy) => {
      const x = b.node(n.inputs[0]!);
      const axes = axesOf(n.attrs, x.shape.length);
      const kept = b.emit('reshape', [dy], { shape: x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) });
      return [b.emit('broadcast_to', [kept], { shape: [...x.shape] })];
    },
  },

  reshape: {
    infer: (ins, attrs) => {
      const shape = layoutOf(attrs, 'shape');
      if (numel(shape) !== numel(ins[0]!.shape)) fail('reshape', ins, `target ${formatShape(shape)} has ${numel(shape)} elements, the input ${numel(ins[0]!.shape)}`);
      return { shape, dtype: ins[0]!.dtype };
    },
    vjp: (b, n, dy) => [b.emit('reshape', [dy], { shape: [...b.node(n.inputs[0]!).shape] })],
  },
  transpose: {
    infer: (ins, attrs) => {
      const perm = layoutOf(attrs, 'perm');
      const x = ins[0]!;
      if (perm.length !== x.shape.length || [...perm].sort((p, q) => p - q).some((p, i) => p !== i)) fail('transpose', ins, `[${perm.join(', ')}] is not a permutation of the ${x.shape.length} axes`);
      return { shape: perm.map((p) => x.shape[p]!), dtype: x.dtype };
    },
    vjp: (b, n, dy) => {
      const perm = layoutOf(n.attrs, 'perm');
      const inv = perm.map((_, i) => perm.indexOf(i));
      return [b.emit('transpose', [dy], { perm: inv })];
    },
  },
  broadcast_to: {
    infer: (ins, attrs) => {
      const shape = layoutOf(attrs, 'shape');
      const x = ins[0]!;
      const lead = shape.length - x.shape.length;
      if (lead < 0 || x.shape.some((d, i) => d !== 1 && d !== shape[lead + i])) fail('broadcast_to', ins, `cannot broadcast to ${formatShape(shape)}`);
      return { shape, dtype: x.dtype };
    },
    vjp: (b, n, dy) => [unbroadcast(b, dy, b.node(n.inputs[0]!).shape)],
  },
  slice: {
    infer: (ins, attrs) => {
      const begin = layoutOf(attrs, 'begin');
      const size = layoutOf(attrs, 'size');
      const x = ins[0]!;
      if (begin.length !== x.shape.length || size.length !== x.shape.length || begin.some((s, i) => s < 0 || s + size[i]! > x.shape[i]!)) {
        fail('slice', ins, `box begin [${begin.join(', ')}] size [${size.join(', ')}] is outside the input`);
      }
      return { shape: size, dtype: x.dtype };
    },
    vjp: (b, n, dy) => {
      const x = b.node(n.inputs[0]!);
      const begin = layoutOf(n.attrs, 'begin');
      const size = layoutOf(n.attrs, 'size');
      return [b.emit('pad', [dy], { pads: x.shape.flatMap((d, i) => [begin[i]!, d - begin[i]! - size[i]!]) })];
    },
  },
  pad: {
    infer: (ins, attrs) => {
      const pads = layoutOf(attrs, 'pads');
      const x = ins[0]!;
      if (pads.length !== 2 * x.shape.length || pads.some((p) => p < 0)) fail('pad', ins, `pads [${pads.join(', ')}] must be (before, after) per axis, non-negative`);
      return { shape: x.shape.map((d, i) => d + pads[2 * i]! + pads[2 * i + 1]!), dtype: x.dtype };
    },
    vjp: (b, n, dy) => {
      const pads = layoutOf(n.attrs, 'pads');
      const x = b.node(n.inputs[0]!);
      return [b.emit('slice', [dy], { begin: x.shape.map((_, i) => pads[2 * i]!), size: [...x.shape] })];
    },
  },
  concat: {
    infer: (ins, attrs) => {
      const axis = attrs['axis'] as number;
      const first = ins[0]!;
      const ok = ins.every((n) => n.dtype === first.dtype && n.shape.length === first.shape.length && n.shape.every((d, i) => i === axis || d === first.shape[i]));
      if (!ok || axis < 0 || axis >= first.shape.length) fail('concat', ins, `inputs must agree on every axis but ${axis}`);
      return { shape: first.shape.map((d, i) => (i === axis ? ins.reduce((s, n) => s + n.shape[axis]!, 0) : d)), dtype: first.dtype };
    },
    vjp: (b, n, dy) => {
      const axis = n.attrs['axis'] as number;
      let offset = 0;
      return n.inputs.map((i) => {
        const x = b.node(i);
        const begin = x.shape.map((_, k) => (k === axis ? offset : 0));
        offset += x.shape[axis]!;
        return b.emit('slice', [dy], { begin, size: [...x.shape] });
      });
    },
  },

  gather: {
    infer: (ins) => {
      const [table, idx] = ins as [Node, Node];
      if (idx.dtype !== 'int32' || table.shape.length < 1) fail('gather', ins, 'expects (table, int32 indices)');
      return { shape: [...idx.shape, ...table.shape.slice(1)], dtype: table.dtype };
    },
    vjp: (b, n, dy) => {
      const [table, idx] = n.inputs.map((i) => b.node(i)) as [Node, Node];
      const rows = b.emit('reshape', [dy], { shape: [numel(idx.shape), ...table.shape.slice(1)] });
      const flatIdx = b.emit('reshape', [idx.id], { shape: [numel(idx.shape)] });
      return [b.emit('segment_sum', [rows, flatIdx], { segments: table.shape[0]! }), null];
    },
  },
  segment_sum: {
    infer: (ins, attrs) => {
      const [x, idx] = ins as [Node, Node];
      if (idx.dtype !== 'int32' || idx.shape.length !== 1 || idx.shape[0] !== x.shape[0]) fail('segment_sum', ins, 'expects (rows, int32 segment ids, one per row)');
      return { shape: [attrs['segments'] as number, ...x.shape.slice(1)], dtype: x.dtype };
    },
    vjp: (b, n, dy) => [b.emit('gather', [dy, n.inputs[1]!]), null],
  },

  matmul: { infer: matmulInfer, vjp: matmulVjp, macs: matmulMacs },
  conv2d: {
    infer: (ins, attrs) => {
      const [x, w] = ins as [Node, Node];
      const stride = attrs['stride'] as number;
      const [top, bottom, left, right] = layoutOf(attrs, 'pads') as [number, number, number, number];
      if (x.shape.length !== 4 || w.shape.length !== 4 || x.shape[3] !== w.shape[2]) fail('conv2d', ins, 'expects NHWC maps and an HWIO filter with matching channels');
      const ho = Math.floor((x.shape[1]! + top + bottom - w.shape[0]!) / stride) + 1;
      const wo = Math.floor((x.shape[2]! + left + right - w.shape[1]!) / stride) + 1;
      return { shape: [x.shape[0]!, ho, wo, w.shape[3]!], dtype: 'float32' };
    },
    vjp: conv2dVjp,
    macs: (node, ins) => numel(node.shape) * ins[1]!.shape[0]! * ins[1]!.shape[1]! * ins[1]!.shape[2]!,
  },

  max_pool: { infer: (ins, attrs) => poolInfer('max_pool', ins, attrs) },
  avg_pool: { infer: (ins, attrs) => poolInfer('avg_pool', ins, attrs) },
  resize_bilinear: {
    infer: (ins, attrs) => {
      const x = ins[0]!;
      const [h, w] = layoutOf(attrs, 'size') as [number, number];
      if (x.shape.length !== 4 || !(h >= 1 && w >= 1)) fail('resize_bilinear', ins, 'expects NHWC maps and a size (h, w) ≥ 1');
      return { shape: [x.shape[0]!, h, w, x.shape[3]!], dtype: x.dtype };
    },
  },
  softmax: { infer: same, vjp: (b, n, dy) => [b.emit('softmax_grad', [n.id, dy])] },
  softmax_grad: { infer: same },
  layer_norm: { infer: same, vjp: (b, n, dy) => [b.emit('layer_norm_grad', [dy, n.inputs[0]!], n.attrs)] },
  layer_norm_grad: { infer: same },
  gelu_tanh: { infer: same, vjp: (b, n, dy) => [b.emit('gelu_tanh_grad', [dy, n.inputs[0]!])] },
  gelu_tanh_grad: { infer: same },

  /** x (M, I)·wᵀ + b with w stored (O, I): nn.Linear on rows. */
  linear: {
    infer: (ins) => {
      const [x, w, bias] = ins as [Node, Node, Node | undefined];
      if (x.shape.length !== 2 || w.shape.length !== 2 || x.shape[1] !== w.shape[1] || (bias && formatShape(bias.shape) !== formatShape([w.shape[0]!]))) {
        fail('linear', ins, 'expects x (M, I), weight (O, I) and optionally bias (O)');
      }
      return { shape: [x.shape[0]!, w.shape[0]!], dtype: 'float32' };
    },
    vjp: (b, n, dy) => {
      const [x, w, bias] = n.inputs as [number, number, number | undefined];
      const grads = [b.emit('matmul', [dy, w], { transposeA: false, transposeB: false }), b.emit('matmul', [dy, x], { transposeA: true, transposeB: false })];
      return bias === undefined ? grads : [...grads, b.emit('sum', [dy], { axes: [0], keepDims: false })];
    },
    macs: (node, ins) => numel(node.shape) * ins[0]!.shape[1]!,
  },
  /** LayerNorm(x)·(1 + scale) + shift over the last axis: x (G, L, D), shift and scale (G, D). */
  ln_modulate: {
    infer: (ins) => {
      const [x, shift, scale] = ins as [Node, Node, Node];
      const gd = formatShape([x.shape[0]!, x.shape[2]!]);
      if (x.shape.length !== 3 || formatShape(shift.shape) !== gd || formatShape(scale.shape) !== gd) fail('ln_modulate', ins, 'expects x (G, L, D), shift and scale (G, D)');
      return same(ins);
    },
    vjp: (b, n, dy) => {
      const [x, , scale] = n.inputs as [number, number, number];
      const [g, , d] = b.node(x).shape as [number, number, number];
      const factor = emit(b, 'add', b.emit('reshape', [scale], { shape: [g, 1, d] }), scalar(b, 1));
      const y = b.emit('layer_norm', [x], n.attrs);
      return [
        b.emit('layer_norm_grad', [emit(b, 'mul', dy, factor), x], n.attrs),
        b.emit('sum', [dy], { axes: [1], keepDims: false }),
        b.emit('sum', [emit(b, 'mul', dy, y)], { axes: [1], keepDims: false }),
      ];
    },
  },
  /** softmax(x + bias) over the last axis: x (B, H, L, L), bias broadcast to it. */
  softmax_bias: {
    infer: (ins) => {
      const [x] = ins as [Node, Node];
      if (formatShape(broadcastShapes('softmax_bias', ins)) !== formatShape(x.shape)) fail('softmax_bias', ins, 'the bias must broadcast to the logits');
      return same(ins);
    },
    vjp: (b, n, dy) => {
      const dLogits = b.emit('softmax_grad', [n.id, dy]);
      return [dLogits, unbroadcast(b, dLogits, b.node(n.inputs[1]!).shape)];
    },
  },
  /**
   * softmax(scale·q·kᵀ + bias)·v, heads merged: qkv (B, L, 3·D) holds q, k, v as its thirds,
   * each (B, L, heads, D/heads); bias (1|B, heads, L, L) optional; out (B, L, D). Inference
   * graphs only, so it has no VJP.
   */
  attention: {
    infer: (ins, attrs) => {
      const [qkv, bias] = ins as [Node, Node | undefined];
      const heads = attrs['heads'] as number;
      const [b, l, d3] = qkv.shape as [number, number, number];
      if (qkv.shape.length !== 3 || d3 % (3 * heads) !== 0) fail('attention', ins, `expects qkv (B, L, 3·D) with D divisible by ${heads} heads`);
      if (bias !== undefined && (bias.shape.length !== 4 || (bias.shape[0] !== 1 && bias.shape[0] !== b) || formatShape(bias.shape.slice(1)) !== formatShape([heads, l, l]))) {
        fail('attention', ins, `expects a bias (1 or ${b}, ${heads}, ${l}, ${l})`);
      }
      return { shape: [b, l, d3 / 3], dtype: 'float32' };
    },
    macs: (node) => {
      const [b, l, d] = node.shape as [number, number, number];
      return 2 * b * l * l * d;
    },
  },
};
