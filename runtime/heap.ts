/**
 * The wasm backend's heap: one WebAssembly memory of at most 4 GiB (tfjs-backend-wasm 4.22 is
 * built with a 4 GB maximum) that holds every tensor. When it is full, malloc returns 0 and
 * tfjs writes through that null pointer ("memory access out of bounds", or Emscripten's bare
 * `Aborted()`), after which the module is dead. The guard installed here wraps the module's
 * malloc and free: it keeps the bytes in use, and an allocation past the limit (or one malloc
 * refuses) throws a HeapExhaustedError instead, leaving the heap intact, so a caller can free
 * what it made and try something smaller. The limit can be lowered (MDT_WASM_HEAP_LIMIT, in
 * bytes or with a K/M/G suffix; setHeapLimit in tests) to rehearse a large model on a small one.
 */
import * as tf from '@tensorflow/tfjs';
import { formatBytes, parseBytes } from './bytes.ts';

/** The wasm memory's maximum in tfjs-backend-wasm 4.22 (65536 pages of 64 KiB). */
export const WASM_HEAP_MAX = 2 ** 32;

export class HeapExhaustedError extends Error {
  override readonly name = 'HeapExhaustedError';
  constructor(readonly requested: number, readonly used: number, readonly limit: number, why: string) {
    super(`the wasm heap cannot hold ${formatBytes(requested)} more: ${formatBytes(used)} of its ${formatBytes(limit)} are in use${why}`);
  }
}

export interface HeapStatus {
  /** Bytes the guard lets tensors take in all. */
  readonly limit: number;
  /** Bytes allocated now (tensors and kernel buffers malloc'd through the module). */
  readonly used: number;
  /** The most bytes allocated at once since the guard was installed. */
  readonly peak: number;
}

interface WasmModule {
  _malloc(n: number): number;
  _free(p: number): void;
}

interface Guard {
  readonly module: WasmModule;
  used: number;
  peak: number;
}

let guard: Guard | null = null;
let limitOverride: number | null = null;

function configuredLimit(): number {
  if (limitOverride !== null) return limitOverride;
  const env = process.env.MDT_WASM_HEAP_LIMIT?.trim();
  return env === undefined || env === '' ? WASM_HEAP_MAX : Math.min(WASM_HEAP_MAX, parseBytes(env, 'MDT_WASM_HEAP_LIMIT'));
}

/** Lowers (or, with null, restores) the limit the guard enforces; for tests. */
export function setHeapLimit(bytes: number | null): void {
  limitOverride = bytes === null ? null : Math.min(WASM_HEAP_MAX, bytes);
}

function wasmModule(): WasmModule | null {
  if (tf.getBackend() !== 'wasm') return null;
  return (tf.backend() as unknown as { wasm?: WasmModule }).wasm ?? null;
}

/**
 * Installs the guard on the live wasm backend (once per module); a no-op on other backends.
 * Bytes allocated before it counts as tfjs does (tf.memory().numBytes).
 */
export function guardWasmHeap(): void {
  const module = wasmModule();
  if (module === null || guard?.module === module) return;
  // Emscripten's export stubs replace themselves on their first call; call them once so what
  // is wrapped below is the export, and stays wrapped.
  module._free(module._malloc(8));
  const malloc = module._malloc.bind(module);
  const free = module._free.bind(module);
  const sizes = new Map<number, number>();
  const g: Guard = { module, used: tf.memory().numBytes, peak: tf.memory().numBytes };
  module._malloc = (n: number): number => {
    const limit = configuredLimit();
    if (n > 0 && g.used + n > limit) throw new HeapExhaustedError(n, g.used, limit, '');
    const p = malloc(n) >>> 0;
    if (p === 0 && n > 0) throw new HeapExhaustedError(n, g.used, limit, ' (malloc found no free block that large: the heap is fragmented)');
    sizes.set(p, n);
    g.used += n;
    if (g.used > g.peak) g.peak = g.used;
    return p;
  };
  module._free = (p: number): void => {
    const n = sizes.get(p >>> 0);
    if (n !== undefined) {
      sizes.delete(p >>> 0);
      g.used -= n;
    }
    free(p);
  };
  guard = g;
}

/** Starts the peak over from the bytes in use now. */
export function resetHeapPeak(): void {
  if (guard !== null) guard.peak = guard.used;
}

/** The heap's limit and use on the wasm backend (installing the guard); null on backends without a fixed heap. */
export function heapStatus(): HeapStatus | null {
  guardWasmHeap();
  if (guard === null || guard.module !== wasmModule()) return null;
  return { limit: configuredLimit(), used: guard.used, peak: guard.peak };
}

interface HeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

export interface HeapTensors {
  readonly tensors: readonly tf.Tensor[];
  /**
   * Each tensor's bytes in the heap, to write its values into in place. Taken after the last
   * allocation, and valid until the next one (a heap that grows replaces its buffer).
   */
  readonly bytes: readonly Uint8Array[];
}

/**
 * Makes tensors of these shapes in the wasm heap without values, for a caller to read them in
 * place (a file's bytes straight into their final buffers: no copy, no second allocation).
 * null off the wasm backend; a heap that cannot hold them all throws with nothing left allocated.
 */
export function allocateInHeap(specs: readonly { readonly shape: readonly number[]; readonly dtype: 'float32' | 'int32' }[]): HeapTensors | null {
  if (wasmModule() === null) return null;
  const backend = tf.backend() as unknown as HeapBackend;
  const tensors: tf.Tensor[] = [];
  try {
    for (const s of specs) tensors.push(tf.engine().makeTensorFromTensorInfo(backend.makeOutput([...s.shape], s.dtype)));
  } catch (e) {
    tf.dispose(tensors);
    throw e;
  }
  const bytes = tensors.map((t) => {
    const view = backend.typedArrayFromHeap({ dataId: t.dataId, shape: t.shape, dtype: t.dtype });
    return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  });
  return { tensors, bytes };
}
