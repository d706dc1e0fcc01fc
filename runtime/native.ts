/**
 * Native kernels for the wasm backend. WebAssembly SIMD has no fused multiply-add, which caps
 * tfjs-backend-wasm's products at about a quarter of what this CPU does natively; the optional
 * addon in runtime/native/ (an AVX2/AVX-512 SGEMM, built from source at install by
 * runtime/native/build.mjs) computes BatchMatMul in place on the wasm heap instead. It also runs
 * the fused pointwise kernels of runtime/fused.ts (GELU and adaLN's LayerNorm + modulate, each
 * direction one pass over memory instead of 5–15 wasm kernels) and the row gather and segment
 * sum behind the relative-position bias (rowKernels(), used by runtime/kernels.ts), the
 * inference attention straight from qkv, Transpose and Slice as one strided copy, and float32
 * Add/Sub/Multiply with broadcasting (wasm runs those on one thread here). Everything else stays
 * on wasm. Without the addon, or with MDT_NATIVE=0, the wasm kernels are kept.
 * Environment: MDT_NATIVE=0|1, MDT_NATIVE_THREADS (default: the available cores),
 * MDT_NATIVE_ISA=auto|avx2|avx512 (auto: the widest this CPU has).
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { FUSED } from './fused.ts';
import { normal, type Key } from '../dsl/random.ts';

export interface NativeStatus {
  enabled: boolean;
  /** Why the native kernels are on or off, for doctor and logs. */
  reason: string;
  /** Threads of the native pool (0 when not enabled). */
  threads: number;
  /** The kernel build in use: 'avx512', 'avx2', or 'none'. */
  isa: string;
  /** BatchMatMul calls the native kernel has run in this process. */
  calls: number;
}

export interface NativeOptions {
  /** Threads for native products; defaults to MDT_NATIVE_THREADS, then to the available cores. */
  threads?: number;
}

export const NATIVE_MAX_THREADS = 64;
const ISAS = ['auto', 'avx2', 'avx512'] as const;
type Isa = (typeof ISAS)[number];

interface Addon {
  gemm(
    a: Float32Array, b: Float32Array, c: Float32Array, m: number, n: number, k: number,
    transposeA: boolean, transposeB: boolean, aIndex: Int32Array | null, bIndex: Int32Array | null, bias?: Float32Array | null,
  ): void;
  setThreads(n: number): void;
  threads(): number;
  setIsa(isa: Isa): string;
  gelu(x: Float32Array, y: Float32Array): void;
  geluGrad(dy: Float32Array, x: Float32Array, dx: Float32Array): void;
  lnModulate(x: Float32Array, shift: Float32Array, scale: Float32Array, z: Float32Array, mean: Float32Array, rstd: Float32Array, eps: number, l: number, d: number): void;
  lnModulateGrad(
    dz: Float32Array, x: Float32Array, mean: Float32Array, rstd: Float32Array, scale: Float32Array, residual: Float32Array | null,
    dx: Float32Array, dshift: Float32Array, dscale: Float32Array, l: number, d: number,
  ): void;
  gather(table: Float32Array, rowLength: number, index: Int32Array, out: Float32Array): void;
  segmentSum(values: Float32Array, rowLength: number, index: Int32Array, out: Float32Array): void;
  sumMiddle(x: Float32Array, outer: number, reduced: number, inner: number, out: Float32Array): void;
  softmaxBias(x: Float32Array, bias: Float32Array | null, p: Float32Array, l: number, heads: number, biasBatches: number): void;
  softmaxGrad(p: Float32Array, dp: Float32Array, dx: Float32Array, l: number): void;
  attention(qkv: Float32Array, bias: Float32Array | null, out: Float32Array, batch: number, l: number, heads: number, hd: number, biasBatches: number, scale: number): void;
  adamw(...args: [...Float32Array[], Float64Array]): void;
  adan(...args: [...Float32Array[], Float64Array]): void;
  ema(e: Float32Array, p: Float32Array, out: Float32Array, h: Float64Array): void;
  countNonFinite(x: Float32Array): number;
  normal(k0: number, k1: number, out: Float32Array, from: number): void;
  readonly api?: number;
  binary(op: number, a: Float32Array, b: Float32Array, out: Float32Array, shape: Int32Array, aStride: Int32Array, bStride: Int32Array): void;
  stridedCopy(x: Float32Array | Int32Array, out: Float32Array | Int32Array, shape: Int32Array, stride: Int32Array, base: number): void;
}

interface WasmBackendLike {
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

const ADDON_URL = new URL('./native/build/Release/mdt_native.node', import.meta.url);
const BUILD_LOG_URL = new URL('./native/build/build.log', import.meta.url);

type Loaded = { ok: true; addon: Addon; isa: string } | { ok: false; reason: string };
let loaded: Loaded | null = null;

function parseIsa(): Isa {
  const v = process.env.MDT_NATIVE_ISA?.trim() ?? '';
  if (v === '') return 'auto';
  if (!(ISAS as readonly string[]).includes(v)) throw new Error(`MDT_NATIVE_ISA must be one of ${ISAS.join(', ')}; got ${JSON.stringify(v)}`);
  return v as Isa;
}

/** The version of the addon's function signatures this file calls (addon.cc's kAddonApi). */
const ADDON_API = 2;

/** Loads the addon once and picks its kernel; the reason says why not when it cannot. */
function load(): Loaded {
  if (loaded !== null) return loaded;
  const path = fileURLToPath(ADDON_URL);
  if (!existsSync(path)) {
    const log = fileURLToPath(BUILD_LOG_URL);
    const why = existsSync(log) ? readFileSync(log, 'utf8').split('\n')[0] : 'it was never built (npm install skipped scripts?)';
    loaded = { ok: false, reason: `native addon not built: ${why}; rebuild with \`node runtime/native/build.mjs\`` };
    return loaded;
  }
  let addon: Addon;
  try {
    addon = createRequire(import.meta.url)(path) as Addon;
  } catch (e) {
    loaded = { ok: false, reason: `native addon failed to load: ${e instanceof Error ? e.message : String(e)}` };
    return loaded;
  }
  if (addon.api !== ADDON_API) {
    loaded = { ok: false, reason: `native addon is older than its source (its functions' version ${addon.api ?? 1}, expected ${ADDON_API}); rebuild with \`node runtime/native/build.mjs\`` };
    return loaded;
  }
  const want = parseIsa();
  const isa = addon.setIsa(want);
  loaded = isa === 'none'
    ? { ok: false, reason: want === 'auto' ? 'this CPU lacks AVX2 and FMA' : `MDT_NATIVE_ISA=${want} but this CPU lacks it` }
    : { ok: true, addon, isa };
  return loaded;
}

function resolveThreads(threads: unknown): number {
  const check = (v: unknown, source: string, given: string) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > NATIVE_MAX_THREADS) {
      throw new Error(`${source} must be an integer from 1 to ${NATIVE_MAX_THREADS}, got ${given}`);
    }
    return v;
  };
  if (threads !== undefined) return check(threads, 'threads', JSON.stringify(threads));
  const env = process.env.MDT_NATIVE_THREADS?.trim();
  if (env !== undefined && env !== '') return check(Number(env), 'MDT_NATIVE_THREADS', JSON.stringify(env));
  return Math.min(availableParallelism(), NATIVE_MAX_THREADS);
}

export interface MatMulPlan {
  outShape: number[];
  m: number;
  n: number;
  k: number;
  /** Which stored matrix of each operand each output batch uses; null: the i-th, or the only one. */
  aIndex: Int32Array | null;
  bIndex: Int32Array | null;
}

function batchIndex(batch: readonly number[], out: readonly number[]): Int32Array | null {
  const size = batch.reduce((x, y) => x * y, 1);
  const outSize = out.reduce((x, y) => x * y, 1);
  if (size === 1 || size === outSize) return null;
  const padded = [...new Array<number>(out.length - batch.length).fill(1), ...batch];
  const idx = new Int32Array(outSize);
  for (let o = 0; o < outSize; o++) {
    let rest = o;
    let at = 0;
    let stride = 1;
    for (let d = out.length - 1; d >= 0; d--) {
      const coord = rest % out[d]!;
      rest = Math.floor(rest / out[d]!);
      if (padded[d] !== 1) at += coord * stride;
      stride *= padded[d]!;
    }
    idx[o] = at;
  }
  return idx;
}

/** BatchMatMul's shapes: broadcast batch dims (NumPy rules), op() by the transpose flags. */
export function planMatMul(aShape: readonly number[], bShape: readonly number[], transposeA: boolean, transposeB: boolean): MatMulPlan {
  if (aShape.length < 2 || bShape.length < 2) {
    throw new Error(`matMul: both operands need rank >= 2, got shapes [${aShape.join(',')}] and [${bShape.join(',')}]`);
  }
  const [ar, ac] = aShape.slice(-2) as [number, number];
  const [br, bc] = bShape.slice(-2) as [number, number];
  const [m, k] = transposeA ? [ac, ar] : [ar, ac];
  const [kb, n] = transposeB ? [bc, br] : [br, bc];
  if (k !== kb) {
    throw new Error(
      `matMul: inner dimensions differ: [${aShape.join(',')}]${transposeA ? 'ᵀ' : ''} × [${bShape.join(',')}]${transposeB ? 'ᵀ' : ''} contracts ${k} with ${kb}`,
    );
  }
  const aBatch = aShape.slice(0, -2);
  const bBatch = bShape.slice(0, -2);
  const outBatch = tf.broadcast_util.assertAndGetBroadcastShape(aBatch, bBatch);
  return { outShape: [...outBatch, m, n], m, n, k, aIndex: batchIndex(aBatch, outBatch), bIndex: batchIndex(bBatch, outBatch) };
}

function ready(): Addon {
  const l = load();
  if (!l.ok) throw new Error(`native kernels are unavailable: ${l.reason}`);
  return l.addon;
}

/**
 * op(a) · op(b) with BatchMatMul semantics on plain row-major arrays, into `out` when given
 * (it must hold the product's element count). Throws when the addon is unavailable.
 */
export function nativeMatMul(
  a: Float32Array, aShape: readonly number[], b: Float32Array, bShape: readonly number[],
  opts: { transposeA?: boolean; transposeB?: boolean; out?: Float32Array } = {},
): { values: Float32Array; shape: number[] } {
  const addon = ready();
  const ta = opts.transposeA ?? false;
  const tb = opts.transposeB ?? false;
  const plan = planMatMul(aShape, bShape, ta, tb);
  const count = (s: readonly number[]) => s.reduce((x, y) => x * y, 1);
  if (a.length !== count(aShape) || b.length !== count(bShape)) {
    throw new Error(`nativeMatMul: a has ${a.length} values for shape [${aShape.join(',')}], b has ${b.length} for [${bShape.join(',')}]`);
  }
  const size = count(plan.outShape);
  const values = opts.out ?? new Float32Array(size);
  if (values.length !== size) throw new Error(`nativeMatMul: out holds ${values.length} values, the product [${plan.outShape.join(',')}] needs ${size}`);
  addon.gemm(a, b, values, plan.m, plan.n, plan.k, ta, tb, plan.aIndex, plan.bIndex);
  return { values, shape: plan.outShape };
}

function batchMatMulKernel(addon: Addon): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const { a, b } = inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
    if (a.dtype !== 'float32' || b.dtype !== 'float32') {
      throw new Error(`BatchMatMul (native): only float32 is supported, got ${a.dtype} and ${b.dtype}`);
    }
    const plan = planMatMul(a.shape, b.shape, transposeA, transposeB);
    const wasm = backend as unknown as WasmBackendLike;
    // Views are taken after makeOutput, whose allocation may grow (and replace) the heap.
    const out = wasm.makeOutput(plan.outShape, 'float32');
    calls += 1;
    addon.gemm(
      wasm.typedArrayFromHeap(a) as Float32Array, wasm.typedArrayFromHeap(b) as Float32Array, wasm.typedArrayFromHeap(out) as Float32Array,
      plan.m, plan.n, plan.k, transposeA, transposeB, plan.aIndex, plan.bIndex,
    );
    return out;
  };
}

const f32 = (w: WasmBackendLike, t: tf.TensorInfo) => w.typedArrayFromHeap(t) as Float32Array;

function checkFloat(name: string, inputs: Record<string, tf.TensorInfo | undefined>): void {
  for (const [k, t] of Object.entries(inputs)) {
    if (t !== undefined && t.dtype !== 'float32') throw new Error(`${name} (native): ${k} must be float32, got ${t.dtype}`);
  }
}

/** The fused kernels of runtime/fused.ts, on the wasm heap (heap views are taken after every makeOutput, which may grow the heap). */
function fusedKernels(addon: Addon): tf.KernelConfig[] {
  const wasmOf = (b: unknown) => b as WasmBackendLike;
  /** A kernel with float32 inputs `names` and one output shaped like the first; `call` gets the heap views, output last. */
  const sameShape = (name: string, names: readonly string[], call: (views: Float32Array[], shape: number[]) => void): tf.KernelFunc =>
    ({ inputs, backend }) => {
      const ins = names.map((n) => (inputs as Record<string, tf.TensorInfo>)[n]!);
      checkFloat(name, Object.fromEntries(names.map((n, i) => [n, ins[i]])));
      const w = wasmOf(backend);
      const out = w.makeOutput(ins[0]!.shape, 'float32');
      call([...ins, out].map((t) => f32(w, t)), ins[0]!.shape);
      return out;
    };
  const gelu = sameShape(FUSED.gelu, ['x'], ([x, y]) => addon.gelu(x!, y!));
  const geluGrad = sameShape(FUSED.geluGrad, ['x', 'dy'], ([x, dy, dx]) => addon.geluGrad(dy!, x!, dx!));
  const softmaxGrad = sameShape(FUSED.softmaxGrad, ['p', 'dp'], ([p, dp, dx], shape) => addon.softmaxGrad(p!, dp!, dx!, shape.at(-1)!));
  const lnModulate: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const { x, shift, scale } = inputs as { x: tf.TensorInfo; shift: tf.TensorInfo; scale: tf.TensorInfo };
    checkFloat(FUSED.lnModulate, { x, shift, scale });
    const [g, l, d] = x.shape as [number, number, number];
    const w = wasmOf(backend);
    const z = w.makeOutput(x.shape, 'float32');
    const mean = w.makeOutput([g, l], 'float32');
    const rstd = w.makeOutput([g, l], 'float32');
    addon.lnModulate(f32(w, x), f32(w, shift), f32(w, scale), f32(w, z), f32(w, mean), f32(w, rstd), (attrs as unknown as { eps: number }).eps, l, d);
    return [z, mean, rstd];
  };
  const lnModulateGrad: tf.KernelFunc = ({ inputs, backend }) => {
    const { dz, x, mean, rstd, scale, residual } = inputs as Record<'dz' | 'x' | 'mean' | 'rstd' | 'scale', tf.TensorInfo> & { residual?: tf.TensorInfo };
    checkFloat(FUSED.lnModulateGrad, { dz, x, mean, rstd, scale, residual });
    const [g, l, d] = x.shape as [number, number, number];
    const w = wasmOf(backend);
    const dx = w.makeOutput(x.shape, 'float32');
    const dshift = w.makeOutput([g, d], 'float32');
    const dscale = w.makeOutput([g, d], 'float32');
    addon.lnModulateGrad(
      f32(w, dz), f32(w, x), f32(w, mean), f32(w, rstd), f32(w, scale), residual === undefined ? null : f32(w, residual),
      f32(w, dx), f32(w, dshift), f32(w, dscale), l, d,
    );
    return [dx, dshift, dscale];
  };
  // Adan's flat update; the clip factor is a scalar tensor on the heap, passed with the hyperparameters.
  const adan: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const names = ['p', 'g', 'm', 'n', 'diff', 'neg'];
    const ins = names.map((n) => (inputs as Record<string, tf.TensorInfo>)[n]!);
    checkFloat(FUSED.adan, Object.fromEntries(names.map((n, i) => [n, ins[i]])));
    const w = wasmOf(backend);
    const clip = f32(w, (inputs as Record<string, tf.TensorInfo>).clip!)[0]!;
    const outs = Array.from({ length: 5 }, () => w.makeOutput(ins[0]!.shape, 'float32'));
    const a = attrs as unknown as Record<string, number>;
    const h = Float64Array.from([...['lr', 'b1', 'b2', 'b3', 'eps', 'wd', 'bc1', 'bc2', 'bc3Sqrt'].map((k) => a[k]!), clip, a.first!]);
    addon.adan(...[...ins, ...outs].map((t) => f32(w, t)), h);
    return outs;
  };
  // The list forms: one native pass per parameter, writing its slice of the flat slots.
  const adamwList: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const ins = inputs as Record<string, tf.TensorInfo>;
    const a = attrs as unknown as Record<string, number>;
    const n = a.n!;
    const ps = Array.from({ length: n }, (_, i) => ins[`p${i}`]!);
    const gs = Array.from({ length: n }, (_, i) => ins[`g${i}`]!);
    checkFloat(FUSED.adamwList, { ...Object.fromEntries(ps.map((t, i) => [`p${i}`, t])), ...Object.fromEntries(gs.map((t, i) => [`g${i}`, t])), m: ins.m, v: ins.v });
    const w = wasmOf(backend);
    const outs = [...ps.map((p) => w.makeOutput(p.shape, 'float32')), w.makeOutput(ins.m!.shape, 'float32'), w.makeOutput(ins.v!.shape, 'float32')];
    const h = Float64Array.from(['lr', 'b1', 'b2', 'eps', 'wd', 'bc1', 'bc2Sqrt'], (k) => a[k]!);
    const [m, v, m1, v1] = [f32(w, ins.m!), f32(w, ins.v!), f32(w, outs[n]!), f32(w, outs[n + 1]!)];
    let at = 0;
    ps.forEach((p, i) => {
      const [pv, gv, p1] = [f32(w, p), f32(w, gs[i]!), f32(w, outs[i]!)];
      const end = at + pv.length;
      addon.adamw(pv, gv, m.subarray(at, end), v.subarray(at, end), p1, m1.subarray(at, end), v1.subarray(at, end), h);
      at = end;
    });
    if (at !== m.length) throw new Error(`${FUSED.adamwList} (native): the parameters hold ${at} values, the slots ${m.length}`);
    return outs;
  };
  const emaList: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const ins = inputs as Record<string, tf.TensorInfo>;
    const { n, decay } = attrs as unknown as { n: number; decay: number };
    const w = wasmOf(backend);
    const es = Array.from({ length: n }, (_, i) => ins[`e${i}`]!);
    checkFloat(FUSED.emaList, Object.fromEntries(es.map((t, i) => [`e${i}`, t])));
    const outs = es.map((e) => w.makeOutput(e.shape, 'float32'));
    const h = Float64Array.of(decay);
    es.forEach((e, i) => addon.ema(f32(w, e), f32(w, ins[`p${i}`]!), f32(w, outs[i]!), h));
    return outs;
  };
  const softmaxBias: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const { x, bias } = inputs as { x: tf.TensorInfo; bias?: tf.TensorInfo };
    checkFloat(FUSED.softmaxBias, { x, bias });
    const w = wasmOf(backend);
    const out = w.makeOutput(x.shape, 'float32');
    const heads = (attrs as unknown as { heads: number }).heads;
    addon.softmaxBias(f32(w, x), bias === undefined ? null : f32(w, bias), f32(w, out), x.shape[2]!, heads, bias?.shape[0] ?? 1);
    return out;
  };
  const attention: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const { qkv, bias } = inputs as { qkv: tf.TensorInfo; bias?: tf.TensorInfo };
    checkFloat(FUSED.attention, { qkv, bias });
    const { heads, scale } = attrs as unknown as { heads: number; scale: number };
    const [b, l, d3] = qkv.shape as [number, number, number];
    const w = wasmOf(backend);
    const out = w.makeOutput([b, l, d3 / 3], 'float32');
    addon.attention(f32(w, qkv), bias === undefined ? null : f32(w, bias), f32(w, out), b, l, heads, d3 / 3 / heads, bias?.shape[0] ?? 1, scale);
    return out;
  };
  return [
    { kernelName: FUSED.attention, backendName: 'wasm', kernelFunc: attention },
    { kernelName: FUSED.softmaxBias, backendName: 'wasm', kernelFunc: softmaxBias },
    { kernelName: FUSED.softmaxGrad, backendName: 'wasm', kernelFunc: softmaxGrad },
    { kernelName: FUSED.adamwList, backendName: 'wasm', kernelFunc: adamwList },
    { kernelName: FUSED.emaList, backendName: 'wasm', kernelFunc: emaList },
    { kernelName: FUSED.adan, backendName: 'wasm', kernelFunc: adan },
    { kernelName: FUSED.gelu, backendName: 'wasm', kernelFunc: gelu },
    { kernelName: FUSED.geluGrad, backendName: 'wasm', kernelFunc: geluGrad },
    { kernelName: FUSED.lnModulate, backendName: 'wasm', kernelFunc: lnModulate },
    { kernelName: FUSED.lnModulateGrad, backendName: 'wasm', kernelFunc: lnModulateGrad },
  ];
}

export interface RowKernels {
  /** out row i = table row index[i]. */
  gather(table: Float32Array, rowLength: number, index: Int32Array, out: Float32Array): void;
  /** out row s = Σ value rows i with index[i] = s; indices outside out are dropped. */
  segmentSum(values: Float32Array, rowLength: number, index: Int32Array, out: Float32Array): void;
  /** out (outer, inner) = x (outer, reduced, inner) summed over the middle axis (float32 accumulators). */
  sumMiddle(x: Float32Array, outer: number, reduced: number, inner: number, out: Float32Array): void;
}

/** The native row gather and segment sum while the native kernels are on, else null. */
export function rowKernels(): RowKernels | null {
  return status.enabled && loaded?.ok === true ? loaded.addon : null;
}

/**
 * tf.fused.matMul with a bias of one value per output column and no activation (the IR's
 * `linear`, compile/lowering.ts): the bias is added by the product itself while each block of
 * the output is in cache. Anything else goes to the kernel this one replaced.
 */
function fusedMatMulKernel(addon: Addon, previous: tf.KernelFunc): tf.KernelFunc {
  return (args) => {
    const { a, b, bias, preluActivationWeights } = args.inputs as Record<string, tf.TensorInfo | undefined>;
    const { transposeA, transposeB, activation } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean; activation: string };
    const plan = planMatMul(a!.shape, b!.shape, transposeA, transposeB);
    const plain = a!.dtype === 'float32' && b!.dtype === 'float32' && (activation ?? 'linear') === 'linear' && preluActivationWeights === undefined;
    if (!plain || (bias !== undefined && (bias.dtype !== 'float32' || bias.shape.reduce((x, y) => x * y, 1) !== plan.n))) return previous(args);
    const wasm = args.backend as unknown as WasmBackendLike;
    const out = wasm.makeOutput(plan.outShape, 'float32');
    calls += 1;
    addon.gemm(
      f32(wasm, a!), f32(wasm, b!), f32(wasm, out), plan.m, plan.n, plan.k, transposeA, transposeB, plan.aIndex, plan.bIndex,
      bias === undefined ? null : f32(wasm, bias),
    );
    return out;
  };
}

/** A view of an input as the native strided copy reads it: C-order `shape` over x[base + Σ i·stride]. */
interface StridedView {
  readonly shape: readonly number[];
  readonly stride: readonly number[];
  readonly base: number;
}

const cOrderStrides = (shape: readonly number[]) => shape.map((_, d) => shape.slice(d + 1).reduce((a, b) => a * b, 1));

/** Transpose's output as a view of its input: the input's strides, permuted. */
function transposeView(shape: readonly number[], attrs: tf.NamedAttrMap): StridedView {
  const perm = attrs['perm'] as number[];
  const stride = cOrderStrides(shape);
  return { shape: perm.map((p) => shape[p]!), stride: perm.map((p) => stride[p]!), base: 0 };
}

/** Slice's output as a view of its input (begin and size as tf.slice takes them). */
function sliceView(shape: readonly number[], attrs: tf.NamedAttrMap): StridedView {
  const [begin, size] = tf.slice_util.parseSliceParams({ shape: [...shape] } as tf.TensorInfo as tf.Tensor, attrs['begin'] as number[], attrs['size'] as number[]);
  const stride = cOrderStrides(shape);
  return { shape: size, stride, base: begin.reduce((a, b, d) => a + b * stride[d]!, 0) };
}

/**
 * `shape` with size-1 axes dropped and neighbours merged where every operand's outer stride
 * steps exactly over the inner axis (a transpose that keeps the last axes, a slice of whole rows
 * or a same-shape sum become a few long contiguous runs). At least one axis is kept.
 */
function mergeAxes(shape: readonly number[], strides: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const out = { shape: [] as number[], strides: strides.map(() => [] as number[]) };
  shape.forEach((n, d) => {
    if (n === 1) return;
    const last = out.shape.length - 1;
    if (last >= 0 && strides.every((s, k) => out.strides[k]![last] === s[d]! * n)) {
      out.shape[last] = out.shape[last]! * n;
      strides.forEach((s, k) => (out.strides[k]![last] = s[d]!));
    } else {
      out.shape.push(n);
      strides.forEach((s, k) => out.strides[k]!.push(s[d]!));
    }
  });
  return out.shape.length === 0 ? { shape: [1], strides: strides.map(() => [0]) } : out;
}

/**
 * A data-movement kernel (Transpose, Slice) as one native strided copy on the heap, for 4-byte
 * dtypes; the wasm kernel keeps the rest (bool, and views deeper than the addon takes).
 */
function copyKernel(addon: Addon, builtin: tf.KernelFunc, view: (shape: readonly number[], attrs: tf.NamedAttrMap) => StridedView): tf.KernelFunc {
  return (args) => {
    const x = (args.inputs as { x: tf.TensorInfo }).x;
    if (x.dtype !== 'float32' && x.dtype !== 'int32') return builtin(args);
    const v = view(x.shape, args.attrs ?? {});
    if (v.shape.includes(0)) return builtin(args);
    const m = mergeAxes(v.shape, [v.stride]);
    if (m.shape.length > 8) return builtin(args);
    const w = args.backend as unknown as WasmBackendLike;
    const out = w.makeOutput([...v.shape], x.dtype);
    const heap = (t: tf.TensorInfo) => w.typedArrayFromHeap(t) as Float32Array | Int32Array;
    addon.stridedCopy(heap(x), heap(out), Int32Array.from(m.shape), Int32Array.from(m.strides[0]!), v.base);
    return out;
  };
}

/** Strides of an operand of shape `s` over the broadcast `shape`: 0 along the axes it is broadcast on. */
function broadcastStrides(s: readonly number[], shape: readonly number[]): number[] {
  const padded = [...new Array<number>(shape.length - s.length).fill(1), ...s];
  const c = cOrderStrides(padded);
  return padded.map((n, d) => (n === 1 ? 0 : c[d]!));
}

/** Add, Sub or Multiply of two float32 tensors as one native pass (2 threads); the wasm kernel keeps other dtypes and empty or deep shapes. */
function binaryKernel(addon: Addon, builtin: tf.KernelFunc, op: 0 | 1 | 2): tf.KernelFunc {
  return (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.includes(0) || b.shape.includes(0)) return builtin(args);
    const shape = tf.broadcast_util.assertAndGetBroadcastShape(a.shape, b.shape);
    const m = mergeAxes(shape, [broadcastStrides(a.shape, shape), broadcastStrides(b.shape, shape)]);
    if (m.shape.length > 8) return builtin(args);
    const w = args.backend as unknown as WasmBackendLike;
    const out = w.makeOutput(shape, 'float32');
    addon.binary(op, f32(w, a), f32(w, b), f32(w, out), Int32Array.from(m.shape), Int32Array.from(m.strides[0]!), Int32Array.from(m.strides[1]!));
    return out;
  };
}

/** The wasm backend's own kernels that native ones replace, kept to put back. */
const replaced = new Map<string, tf.KernelConfig>();
let calls = 0;
let status: Omit<NativeStatus, 'calls'> = { enabled: false, reason: 'enableNativeKernels() was not called', threads: 0, isa: 'none' };

function off(reason: string, isa = 'none'): NativeStatus {
  status = { enabled: false, reason, threads: 0, isa };
  return nativeKernelsStatus();
}

/**
 * Routes the wasm backend's BatchMatMul to the native addon. Call after the wasm backend has
 * started; calling again only changes the thread count. MDT_NATIVE=0 turns it off, and so
 * does anything that keeps the addon from running here (the reason says which).
 */
export function enableNativeKernels(opts: NativeOptions = {}): NativeStatus {
  const env = process.env.MDT_NATIVE?.trim() ?? '';
  if (env !== '' && env !== '0' && env !== '1') throw new Error(`MDT_NATIVE must be 0 or 1, got ${JSON.stringify(env)}`);
  const threads = resolveThreads(opts.threads);
  if (env === '0') {
    disableNativeKernels();
    return off('disabled by MDT_NATIVE=0');
  }
  if (tf.engine().registry['wasm'] === undefined) return off('the wasm backend has not been started');
  const l = load();
  if (!l.ok) return off(l.reason);
  l.addon.setThreads(threads);
  if (replaced.size === 0) {
    if (tf.getKernel('BatchMatMul', 'wasm') === undefined) return off('the wasm backend registers no BatchMatMul kernel to replace', l.isa);
    const replacements: Record<string, (builtin: tf.KernelFunc) => tf.KernelFunc> = {
      BatchMatMul: () => batchMatMulKernel(l.addon),
      _FusedMatMul: (builtin) => fusedMatMulKernel(l.addon, builtin),
      Transpose: (builtin) => copyKernel(l.addon, builtin, transposeView),
      Slice: (builtin) => copyKernel(l.addon, builtin, sliceView),
      Add: (builtin) => binaryKernel(l.addon, builtin, 0),
      Sub: (builtin) => binaryKernel(l.addon, builtin, 1),
      Multiply: (builtin) => binaryKernel(l.addon, builtin, 2),
    };
    for (const [name, make] of Object.entries(replacements)) {
      const builtin = tf.getKernel(name, 'wasm');
      if (builtin === undefined) continue;
      replaced.set(name, builtin);
      tf.unregisterKernel(name, 'wasm');
      tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: make(builtin.kernelFunc) });
    }
    for (const k of fusedKernels(l.addon)) tf.registerKernel(k);
  }
  status = { enabled: true, reason: `products (with their bias), transposes and slices, fused GELU/LayerNorm/softmax/optimizer updates and row gathers run natively (${l.isa} kernel)`, threads, isa: l.isa };
  return nativeKernelsStatus();
}

/**
 * How many values are NaN or ±Inf, counted by the addon (a vector loop, ~7× the JS one: it
 * matters for a 3 GB checkpoint); null without it or with MDT_NATIVE=0. Any backend.
 */
export function nativeCountNonFinite(x: Float32Array): number | null {
  if (process.env.MDT_NATIVE?.trim() === '0') return null;
  const l = load();
  return l.ok ? l.addon.countNonFinite(x) : null;
}

/**
 * dsl/random.ts's normal(key, n, from), by the addon when it is built (with AVX2 four pairs at a
 * time, ~8× faster than normal on one thread: it was most of the onnx engine's per-step work
 * outside onnxruntime), else by normal itself, which also gives the errors for a bad key or count.
 * The two agree value for value but for a rare last-bit rounding of libm's log/sincos against
 * V8's. Any backend.
 */
export function fastNormal(key: Key, n: number, from = 0): Float32Array {
  const l = process.env.MDT_NATIVE?.trim() === '0' ? null : load();
  const count = (v: number) => Number.isInteger(v) && v >= 0 && v < 2 ** 31;
  const valid = key !== null && typeof key === 'object' && key.k0 >>> 0 === key.k0 && key.k1 >>> 0 === key.k1 && count(n) && count(from);
  if (l === null || !l.ok || !valid) return normal(key, n, from);
  const out = new Float32Array(n);
  l.addon.normal(key.k0, key.k1, out, from);
  return out;
}

/**
 * The wasm thread default when the native kernels will run: 1, since a second wasm thread only
 * contends with the addon's pool (runtime/backend.ts has the figures). Asked before wasm starts.
 */
export function wasmThreadDefault(): { defaultThreads?: number } {
  return process.env.MDT_NATIVE?.trim() !== '0' && load().ok ? { defaultThreads: 1 } : {};
}

/** Puts the wasm backend's own BatchMatMul back. */
export function disableNativeKernels(): void {
  if (replaced.size === 0) return;
  for (const [name, builtin] of replaced) {
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel(builtin);
  }
  replaced.clear();
  for (const name of Object.values(FUSED)) tf.unregisterKernel(name, 'wasm');
  off('disabled by disableNativeKernels()');
}

/** Whether the native kernels are on, and why (for doctor). */
export function nativeKernelsStatus(): NativeStatus {
  return { ...status, calls };
}
