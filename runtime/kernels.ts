/**
 * Kernels the wasm backend lacks, and replacements for wasm kernels that are slow for reasons
 * unrelated to their arithmetic, registered by registerMissingKernels() once the wasm package
 * is loaded; each runs in JS on views of the wasm heap. Also the optimizer's flat-vector
 * kernels (FLAT_CONCAT, FLAT_SPLIT), for wasm and cpu.
 *
 * - UnsortedSegmentSum: missing in tfjs-backend-wasm 4.22; it is the gradient of every gather
 *   (label embedding, kept-token gather, relative-position bias).
 * - Identity and same-dtype Cast: the engine clones every tensor a gradient saves, and Mul's
 *   gradient casts float32 to float32; wasm copies each time. Tensors are immutable (variables
 *   swap their buffer on assign), so sharing the buffer, as the cpu backend does, is safe.
 * - Slice, SplitV, Unpack: wasm's Slice first copies the WHOLE input out of the heap
 *   (readSync), so slicing a small piece of a large tensor costs the large tensor.
 * - GatherV2: wasm's Gather walks element by element with stride arithmetic (~30 ns/element);
 *   copying rows is ~50× faster. With the native kernels on (runtime/native.ts), plain row gathers
 *   and UnsortedSegmentSum run there, threaded (the relative-position bias gathers 1.5 M
 *   single floats per block and batch of the masked branch).
 * - Sum over leading or middle axes (bias and modulation gradients): wasm transposes the
 *   reduced axes to the end first; accumulating rows in place is ~4× faster (natively, threaded,
 *   when the native kernels are on). Sums over the trailing axes keep the shipped kernel.
 * - Transpose of what is, once unit and adjacent axes merge, a plain 2-D transpose (weight
 *   gradients): wasm walks it without blocking (~5 ns/element); a 16×16-blocked copy is up to
 *   2× faster. Other permutations keep the shipped kernel, which handles them well.
 * - Tile (also tf.broadcastTo's kernel): wasm computes each output element's source index
 *   (~100 ns/element at rank 6: nearest ×2 up-sampling as broadcast_to took 50× a resize).
 *   Copying whole innermost runs and then repeating finished blocks is memcpy-bound. Tiles
 *   whose innermost run is short keep the shipped kernel.
 */
import * as tf from '@tensorflow/tfjs';
import { rowKernels } from './native.ts';

type Heap = Float32Array | Int32Array | Uint8Array;

interface WasmBackendLike {
  typedArrayFromHeap(t: tf.TensorInfo): Heap;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  incRef(dataId: tf.DataId): void;
}

type KernelArgs = Parameters<tf.KernelFunc>[0];

const replaced = new Set<tf.KernelFunc>();

/**
 * Registers `kernelFunc` for `name` on wasm, replacing the shipped kernel (kept as `previous`).
 * Does nothing once ours is in place, or while the wasm package is not loaded.
 */
function install(name: string, make: (previous: tf.KernelFunc | undefined) => tf.KernelFunc, missingOnly = false): void {
  const current = tf.getKernel(name, 'wasm');
  if (current !== undefined && replaced.has(current.kernelFunc)) return;
  if (current !== undefined && missingOnly) return;
  if (current === undefined && !missingOnly) return;
  const kernelFunc = make(current?.kernelFunc);
  replaced.add(kernelFunc);
  if (current !== undefined) tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc, ...(current?.setupFunc ? { setupFunc: current.setupFunc } : {}) });
}

function wasmOf(args: KernelArgs): WasmBackendLike {
  return args.backend as unknown as WasmBackendLike;
}

function share(backend: WasmBackendLike, x: tf.TensorInfo, dtype: tf.DataType = x.dtype): tf.TensorInfo {
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype };
}

function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1]! * shape[i + 1]!;
  return s;
}

/** Copies the box [begin, begin + size) of `x` into a new tensor (output allocated before any heap view is taken). */
function sliceBox(backend: WasmBackendLike, x: tf.TensorInfo, begin: readonly number[], size: readonly number[]): tf.TensorInfo {
  const out = backend.makeOutput([...size], x.dtype);
  const total = size.reduce((a, b) => a * b, 1);
  if (total === 0) return out;
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  const xs = strides(x.shape);
  // The innermost run that is contiguous in both: trailing axes taken whole, plus one more.
  let inner = x.shape.length - 1;
  let run = size[inner]!;
  while (inner > 0 && size[inner] === x.shape[inner]) {
    inner -= 1;
    run *= size[inner]!;
  }
  const outer = size.slice(0, inner);
  const idx = new Array<number>(inner).fill(0);
  for (let o = 0; o < total; o += run) {
    let off = begin[inner]! * xs[inner]!;
    for (let a = 0; a < inner; a++) off += (begin[a]! + idx[a]!) * xs[a]!;
    dst.set(src.subarray(off, off + run), o);
    for (let a = inner - 1; a >= 0; a--) {
      if (++idx[a]! < outer[a]!) break;
      idx[a] = 0;
    }
  }
  return out;
}

function sliceKernel(args: KernelArgs): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo;
  const { begin, size } = args.attrs as unknown as { begin: number | number[]; size?: number | number[] };
  const [b, s] = tf.slice_util.parseSliceParams(x as tf.Tensor, begin, size);
  return sliceBox(wasmOf(args), x, b, s);
}

function splitVKernel(args: KernelArgs): tf.TensorInfo[] {
  const x = args.inputs.x as tf.TensorInfo;
  const { numOrSizeSplits, axis } = args.attrs as unknown as { numOrSizeSplits: number | number[]; axis: number };
  const ax = tf.util.parseAxisParam(axis, x.shape)[0]!;
  const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, ax);
  const begin = new Array<number>(x.shape.length).fill(0);
  return sizes.map((n) => {
    const size = [...x.shape];
    size[ax] = n;
    const out = sliceBox(wasmOf(args), x, begin, size);
    begin[ax]! += n;
    return out;
  });
}

function unpackKernel(args: KernelArgs): tf.TensorInfo[] {
  const value = args.inputs.value as tf.TensorInfo;
  const rank = value.shape.length;
  const axis = ((args.attrs as unknown as { axis: number }).axis + rank) % rank;
  const begin = new Array<number>(rank).fill(0);
  const size = [...value.shape];
  size[axis] = 1;
  const outShape = value.shape.filter((_, i) => i !== axis);
  return Array.from({ length: value.shape[axis]! }, (_, i) => {
    begin[axis] = i;
    const out = sliceBox(wasmOf(args), value, begin, size);
    return { ...out, shape: outShape };
  });
}

function gatherKernel(args: KernelArgs): tf.TensorInfo {
  const backend = wasmOf(args);
  const { x, indices } = args.inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
  const { axis, batchDims } = args.attrs as unknown as { axis: number; batchDims: number };
  const ax = tf.util.parseAxisParam(axis, x.shape)[0]!;
  const info = tf.backend_util.segment_util.collectGatherOpShapeInfo(x as tf.Tensor, indices as tf.Tensor, ax, batchDims);
  const { batchSize, outerSize, dimSize, sliceSize } = info;
  const out = backend.makeOutput(info.outputShape, x.dtype);
  const src = backend.typedArrayFromHeap(x);
  const ids = backend.typedArrayFromHeap(indices);
  const dst = backend.typedArrayFromHeap(out);
  const native = rowKernels();
  if (native !== null && batchSize === 1 && outerSize === 1 && x.dtype === 'float32') {
    native.gather(src as Float32Array, sliceSize, ids as Int32Array, dst as Float32Array);
    return out;
  }
  const perBatch = ids.length / batchSize;
  for (let i = 0; i < ids.length; i++) {
    if (!(ids[i]! >= 0 && ids[i]! < dimSize)) throw new Error(`GatherV2: index ${ids[i]} at position ${i} is not in [0, ${dimSize - 1}]`);
  }
  let o = 0;
  for (let b = 0; b < batchSize; b++) {
    for (let r = 0; r < outerSize; r++) {
      const base = (b * outerSize + r) * dimSize;
      for (let j = 0; j < perBatch; j++) {
        const s = (base + ids[b * perBatch + j]!) * sliceSize;
        if (sliceSize >= 16) dst.set(src.subarray(s, s + sliceSize), o);
        else for (let k = 0; k < sliceSize; k++) dst[o + k] = src[s + k]!;
        o += sliceSize;
      }
    }
  }
  return out;
}

function sumKernel(args: KernelArgs, previous: tf.KernelFunc): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo;
  const { axis, keepDims } = args.attrs as unknown as { axis: number | number[]; keepDims: boolean };
  const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
  const first = axes[0];
  const last = axes[axes.length - 1];
  const contiguous = first !== undefined && last! - first === axes.length - 1;
  if (x.dtype !== 'float32' || !contiguous || last === x.shape.length - 1) return previous(args) as tf.TensorInfo;
  const backend = wasmOf(args);
  const size = (a: number, b: number) => x.shape.slice(a, b).reduce((p, d) => p * d, 1);
  const [outer, reduced, inner] = [size(0, first), size(first, last! + 1), size(last! + 1, x.shape.length)];
  const outShape = keepDims ? x.shape.map((d, i) => (i >= first && i <= last! ? 1 : d)) : x.shape.filter((_, i) => i < first || i > last!);
  const out = backend.makeOutput(outShape, 'float32');
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  const native = rowKernels();
  if (native !== null) {
    native.sumMiddle(src as Float32Array, outer, reduced, inner, dst as Float32Array);
    return out;
  }
  // Row by row into float64 accumulators, four rows per pass over them.
  const acc = new Float64Array(inner);
  for (let o = 0; o < outer; o++) {
    acc.fill(0);
    const base = o * reduced * inner;
    let r = 0;
    for (; r + 4 <= reduced; r += 4) {
      const r0 = base + r * inner;
      const [r1, r2, r3] = [r0 + inner, r0 + 2 * inner, r0 + 3 * inner];
      for (let i = 0; i < inner; i++) acc[i]! += src[r0 + i]! + src[r1 + i]! + (src[r2 + i]! + src[r3 + i]!);
    }
    for (; r < reduced; r++) {
      const r0 = base + r * inner;
      for (let i = 0; i < inner; i++) acc[i]! += src[r0 + i]!;
    }
    dst.set(acc, o * inner);
  }
  return out;
}

/** `shape` permuted by `perm` with unit axes dropped and axes that stay adjacent merged. */
function collapsePermutation(shape: readonly number[], perm: readonly number[]): { shape: number[]; perm: number[] } {
  // Unit axes go first, and the others are renumbered, so axes a unit axis separated count as adjacent.
  const squeezed = new Map(shape.flatMap((d, a) => (d === 1 ? [] : [a])).map((a, k) => [a, k]));
  const kept = perm.filter((a) => shape[a] !== 1).map((a) => squeezed.get(a)!);
  const dims = shape.filter((d) => d !== 1);
  const runs: number[][] = [];
  for (const a of kept) {
    const run = runs[runs.length - 1];
    if (run !== undefined && run[run.length - 1]! + 1 === a) run.push(a);
    else runs.push([a]);
  }
  const order = [...runs].sort((r, q) => r[0]! - q[0]!);
  return {
    shape: order.map((r) => r.reduce((p, a) => p * dims[a]!, 1)),
    perm: runs.map((r) => order.indexOf(r)),
  };
}

function transposeKernel(args: KernelArgs, previous: tf.KernelFunc): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo;
  const perm = (args.attrs as unknown as { perm: number[] }).perm;
  const c = collapsePermutation(x.shape, perm);
  if (x.dtype === 'string' || c.perm.length !== 2) return previous(args) as tf.TensorInfo;
  const backend = wasmOf(args);
  const out = backend.makeOutput(perm.map((a) => x.shape[a]!), x.dtype);
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  transpose2d(src, dst, c.shape[0]!, c.shape[1]!);
  return out;
}

const TRANSPOSE_TILE = 16;

function transpose2d(src: Heap, dst: Heap, rows: number, cols: number): void {
  // Tiles walk the output row by row, so writes stream and reads stay within a few cache lines.
  for (let j0 = 0; j0 < cols; j0 += TRANSPOSE_TILE) {
    const j1 = Math.min(j0 + TRANSPOSE_TILE, cols);
    for (let i0 = 0; i0 < rows; i0 += TRANSPOSE_TILE) {
      const i1 = Math.min(i0 + TRANSPOSE_TILE, rows);
      for (let j = j0; j < j1; j++) {
        const d = j * rows;
        for (let i = i0; i < i1; i++) dst[d + i] = src[i * cols + j]!;
      }
    }
  }
}

/** Runs shorter than this stay with the shipped Tile kernel (per-run call overhead). */
const TILE_MIN_RUN = 16;

function tileKernel(args: KernelArgs, previous: tf.KernelFunc): tf.TensorInfo {
  const x = args.inputs.x as tf.TensorInfo;
  const reps = (args.attrs as unknown as { reps: number[] }).reps;
  // Unit axes that are not repeated go; adjacent axes that are not repeated merge (contiguous in and out).
  const shape: number[] = [];
  const rep: number[] = [];
  x.shape.forEach((d, i) => {
    const r = reps[i]!;
    if (d === 1 && r === 1) return;
    const k = shape.length - 1;
    if (k >= 0 && r === 1 && rep[k] === 1) shape[k]! *= d;
    else {
      shape.push(d);
      rep.push(r);
    }
  });
  const rank = shape.length;
  const lastRun = rank === 0 ? 0 : shape[rank - 1] === 1 ? rep[rank - 1]! : shape[rank - 1]!;
  if (lastRun < TILE_MIN_RUN) return previous(args) as tf.TensorInfo;
  const backend = wasmOf(args);
  const out = backend.makeOutput(x.shape.map((d, i) => d * reps[i]!), x.dtype);
  const src = backend.typedArrayFromHeap(x);
  const dst = backend.typedArrayFromHeap(out);
  const inStrides = strides(shape);
  const outStrides = strides(shape.map((d, i) => d * rep[i]!));
  // Writes the output block of `axis` (all its repeats) at `o` from the input block at `i`.
  const fill = (axis: number, i: number, o: number): void => {
    const d = shape[axis]!;
    const r = rep[axis]!;
    if (axis === rank - 1) {
      if (d === 1) {
        dst.fill(src[i]!, o, o + r);
        return;
      }
      dst.set(src.subarray(i, i + d), o);
    } else {
      for (let j = 0; j < d; j++) fill(axis + 1, i + j * inStrides[axis]!, o + j * outStrides[axis]!);
    }
    const block = axis === rank - 1 ? d : d * outStrides[axis]!;
    for (let k = 1; k < r; k++) dst.copyWithin(o + k * block, o, o + block);
  };
  fill(0, 0, 0);
  return out;
}

function unsortedSegmentSumKernel(args: KernelArgs): tf.TensorInfo {
  const backend = wasmOf(args);
  const { x, segmentIds } = args.inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const numSegments = (args.attrs as unknown as { numSegments: number }).numSegments;
  if (x.dtype !== 'float32') throw new Error(`UnsortedSegmentSum (wasm): only float32 is supported, got ${x.dtype}`);
  const inner = x.shape.slice(segmentIds.shape.length).reduce((a, b) => a * b, 1);
  const out = backend.makeOutput([numSegments, ...x.shape.slice(segmentIds.shape.length)], 'float32');
  const ids = backend.typedArrayFromHeap(segmentIds);
  const dst = backend.typedArrayFromHeap(out) as Float32Array;
  const src = backend.typedArrayFromHeap(x) as Float32Array;
  const native = rowKernels();
  if (native !== null && inner > 0) {
    native.segmentSum(src, inner, ids as Int32Array, dst);
    return out;
  }
  dst.fill(0);
  for (let i = 0; i < ids.length; i++) {
    const s = ids[i]!;
    if (s < 0 || s >= numSegments) continue;
    const so = i * inner;
    const d = s * inner;
    for (let j = 0; j < inner; j++) dst[d + j]! += src[so + j]!;
  }
  return out;
}

/** Ours for numeric tensors of rank ≥ 1; string tensors (not on the heap) and scalars keep the shipped kernel. */
function numericOnly(ours: (args: KernelArgs) => tf.TensorInfo | tf.TensorInfo[], previous: tf.KernelFunc, input: string): tf.KernelFunc {
  return ((args: KernelArgs) => {
    const x = args.inputs[input] as tf.TensorInfo;
    return x.dtype === 'string' || x.shape.length === 0 ? previous(args) : ours(args);
  }) as tf.KernelFunc;
}

/**
 * Flat parameter vectors for the optimizer (compile/optim.ts): FLAT_CONCAT lays its float32
 * inputs end to end, FLAT_SPLIT cuts one back into tensors of the given shapes. One kernel
 * each, instead of a Reshape per parameter around a Concat or SplitV (~15 µs per Reshape).
 * Not differentiable; registered for wasm and cpu.
 */
export const FLAT_CONCAT = 'MdtFlatConcat';
export const FLAT_SPLIT = 'MdtFlatSplit';

interface CpuBackendLike {
  data: { get(dataId: tf.DataId): { values?: ArrayLike<number> } };
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Float32Array): tf.TensorInfo;
}

/** Values and fresh outputs on one backend; `output` fills the values before they are handed over. */
interface FlatStore {
  values(t: tf.TensorInfo): ArrayLike<number>;
  output(shape: number[], fill: (dst: Float32Array) => void): tf.TensorInfo;
}

const flatStores: Record<'wasm' | 'cpu', (backend: unknown) => FlatStore> = {
  wasm: (b) => {
    const backend = b as WasmBackendLike;
    return {
      values: (t) => backend.typedArrayFromHeap(t),
      output(shape, fill) {
        const out = backend.makeOutput(shape, 'float32');
        fill(backend.typedArrayFromHeap(out) as Float32Array);
        return out;
      },
    };
  },
  cpu: (b) => {
    const backend = b as CpuBackendLike;
    return {
      values: (t) => backend.data.get(t.dataId).values!,
      output(shape, fill) {
        const dst = new Float32Array(shape.reduce((a, d) => a * d, 1));
        fill(dst);
        return backend.makeTensorInfo(shape, 'float32', dst);
      },
    };
  },
};

function flatConcatKernel(store: FlatStore, inputs: tf.TensorInfo[]): tf.TensorInfo {
  const total = inputs.reduce((a, t) => a + t.shape.reduce((p, d) => p * d, 1), 0);
  return store.output([total], (dst) => {
    let at = 0;
    for (const t of inputs) {
      const v = store.values(t);
      dst.set(v, at);
      at += v.length;
    }
  });
}

function flatSplitKernel(store: FlatStore, x: tf.TensorInfo, shapes: number[][]): tf.TensorInfo[] {
  let at = 0;
  return shapes.map((shape) => {
    const n = shape.reduce((p, d) => p * d, 1);
    const from = at;
    at += n;
    return store.output(shape, (dst) => {
      const src = store.values(x) as Float32Array;
      dst.set(src.subarray(from, from + n));
    });
  });
}

function registerFlatKernels(): void {
  for (const backendName of ['wasm', 'cpu'] as const) {
    if (tf.getKernel(FLAT_CONCAT, backendName) !== undefined) continue;
    const store = flatStores[backendName];
    tf.registerKernel({
      kernelName: FLAT_CONCAT,
      backendName,
      kernelFunc: ({ inputs, backend }) => {
        const ts = Object.values(inputs) as tf.TensorInfo[];
        for (const t of ts) if (t.dtype !== 'float32') throw new Error(`${FLAT_CONCAT}: float32 tensors only, got ${t.dtype}`);
        return flatConcatKernel(store(backend), ts);
      },
    });
    tf.registerKernel({
      kernelName: FLAT_SPLIT,
      backendName,
      kernelFunc: ({ inputs, backend, attrs }) => {
        const x = inputs.x as tf.TensorInfo;
        const shapes = (attrs as unknown as { shapes: number[][] }).shapes;
        const total = shapes.reduce((a, s) => a + s.reduce((p, d) => p * d, 1), 0);
        if (x.dtype !== 'float32' || x.shape.length !== 1 || x.shape[0] !== total) throw new Error(`${FLAT_SPLIT}: expected a float32 vector of ${total} values, got ${x.dtype} [${x.shape.join(', ')}]`);
        return flatSplitKernel(store(backend), x, shapes);
      },
    });
  }
}

export function registerMissingKernels(): void {
  registerFlatKernels();
  install('UnsortedSegmentSum', () => unsortedSegmentSumKernel as tf.KernelFunc, true);
  install('Identity', (previous) => numericOnly((args) => share(wasmOf(args), args.inputs.x as tf.TensorInfo), previous!, 'x'));
  install('Cast', (previous) => ((args: KernelArgs) => {
    const x = args.inputs.x as tf.TensorInfo;
    const dtype = (args.attrs as unknown as { dtype: tf.DataType }).dtype;
    return x.dtype === dtype ? share(wasmOf(args), x) : previous!(args);
  }) as tf.KernelFunc);
  install('Slice', (previous) => numericOnly(sliceKernel, previous!, 'x'));
  install('SplitV', (previous) => numericOnly(splitVKernel, previous!, 'x'));
  install('Unpack', (previous) => numericOnly(unpackKernel, previous!, 'value'));
  install('GatherV2', (previous) => numericOnly(gatherKernel, previous!, 'x'));
  install('Sum', (previous) => ((args: KernelArgs) => sumKernel(args, previous!)) as tf.KernelFunc);
  install('Transpose', (previous) => ((args: KernelArgs) => transposeKernel(args, previous!)) as tf.KernelFunc);
  install('Tile', (previous) => numericOnly((args) => tileKernel(args, previous!), previous!, 'x'));
}
