/**
 * State dicts with the official PyTorch keys: strict loading into a model's declarations
 * (every problem reported at once), and saving back in the same layout.
 */
import * as tf from '@tensorflow/tfjs';
import type { ParamDecls } from '../dsl/param.ts';
import type { StDtype, StTensor } from '../formats/safetensors.ts';
import { allocateInHeap } from '../runtime/heap.ts';
import { numel } from '../dsl/shape.ts';

export interface LoadOptions {
  /** false: allow missing train-only parameters (side block, mask token) for inference, and ignore extra keys. */
  readonly strict?: boolean;
}

export class StateDictError extends Error {
  override readonly name = 'StateDictError';
}

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

function toTensorData(t: StTensor, key: string, dtype: 'float32' | 'int32'): Float32Array | Int32Array {
  if (dtype === 'float32') {
    if (t.data instanceof Float32Array) return t.data;
    if (t.data instanceof Float64Array) return Float32Array.from(t.data);
    throw new StateDictError(`${key}: expected a float tensor, got ${t.dtype}`);
  }
  if (t.data instanceof Int32Array) return t.data;
  if (t.data instanceof BigInt64Array) {
    const out = new Int32Array(t.data.length);
    for (let i = 0; i < out.length; i++) {
      const v = t.data[i]!;
      if (v > 2147483647n || v < -2147483648n) throw new StateDictError(`${key}: int64 value ${v} does not fit int32`);
      out[i] = Number(v);
    }
    return out;
  }
  throw new StateDictError(`${key}: expected an integer tensor, got ${t.dtype}`);
}

/** A tensor of a state dict file, read when asked (one at a time keeps memory near the largest). */
export interface TensorSource {
  readonly shape: readonly number[];
  /** How the file stores it. */
  readonly dtype: StDtype;
  /** With `scratch`, the data may be a view on it, valid until the next read into it. */
  read(scratch?: Uint8Array): Promise<StTensor>;
}

export interface StreamOptions extends LoadOptions {
  /** Which declared parameters to load (default: all); the others are not read even when present. */
  readonly include?: (key: string) => boolean;
  /** Sees each tensor's values as loaded (a finiteness check); may throw. */
  readonly onRead?: (key: string, t: StTensor) => void;
}

/** Keys and shapes against the declarations: every problem at once, as a StateDictError. */
function checkFit(decls: ParamDecls, shapes: ReadonlyMap<string, readonly number[]>, opts: StreamOptions): void {
  const strict = opts.strict ?? true;
  const include = opts.include ?? (() => true);
  const problems: string[] = [];
  for (const [key, spec] of Object.entries(decls)) {
    if (!spec.persistent || !include(key)) continue;
    const shape = shapes.get(key);
    if (shape === undefined) {
      if (strict || !spec.trainOnly) problems.push(`missing ${key} (expected ${fmt(spec.shape)})`);
    } else if (shape.length !== spec.shape.length || shape.some((d, i) => d !== spec.shape[i])) {
      problems.push(`shape mismatch ${key}: expected ${fmt(spec.shape)}, given ${fmt(shape)}`);
    }
  }
  if (strict) {
    for (const [key, shape] of shapes) if (!(key in decls)) problems.push(`unexpected ${key} (given ${fmt(shape)})`);
  }
  if (problems.length > 0) {
    throw new StateDictError(`state dict does not fit this model (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n  ${problems.join('\n  ')}`);
  }
}

/** The values of one checked entry, as the parameter's dtype. */
function paramData(key: string, spec: ParamDecls[string], t: StTensor): Float32Array | Int32Array {
  const data = toTensorData(t, key, spec.dtype);
  if (spec.init.kind === 'values' && spec.dtype === 'int32') {
    // Index buffers are derived from the grid; a file that disagrees was made for another layout.
    const expected = spec.init.values();
    const bad = expected.findIndex((v, i) => v !== data[i]);
    if (bad >= 0) throw new StateDictError(`${key}: buffer differs from this model's at element ${bad} (${data[bad]} vs ${expected[bad]})`);
  }
  return data;
}

/** The tensor for one checked entry. */
function paramTensor(key: string, spec: ParamDecls[string], t: StTensor): tf.Tensor {
  return tf.tensor(paramData(key, spec, t), spec.shape as number[], spec.dtype);
}

/** The stored dtype a parameter's values can be read from into its own buffer unconverted. */
const SAME_BYTES = { float32: 'F32', int32: 'I32' } as const satisfies Record<ParamDecls[string]['dtype'], StDtype>;

/** The declared keys to load, in declaration order. */
function loadKeys(decls: ParamDecls, has: (key: string) => boolean, opts: StreamOptions): string[] {
  const include = opts.include ?? (() => true);
  return Object.keys(decls).filter((k) => has(k) && include(k));
}

/** Checks keys, shapes and dtypes against the declarations; returns the tensors to use. */
export function paramsFromStateDict(decls: ParamDecls, sd: ReadonlyMap<string, StTensor>, opts: StreamOptions = {}): Map<string, tf.Tensor> {
  checkFit(decls, new Map([...sd].map(([k, t]) => [k, t.shape])), opts);
  const out = new Map<string, tf.Tensor>();
  try {
    for (const key of loadKeys(decls, (k) => sd.has(k), opts)) {
      opts.onRead?.(key, sd.get(key)!);
      out.set(key, paramTensor(key, decls[key]!, sd.get(key)!));
    }
  } catch (e) {
    tf.dispose([...out.values()]);
    throw e;
  }
  return out;
}

/**
 * As paramsFromStateDict, reading one tensor at a time: the peak is the loaded weights plus the
 * largest tensor, not twice the file. On the wasm backend every tensor is first made, empty, in
 * the heap, and the file's bytes are read straight into it (one copy, kernel to heap, and no
 * per-tensor array to allocate, fault in and collect); the next tensor's read runs while this
 * one is checked (CRC, finiteness), so the checks overlap the disk.
 */
export async function streamParams(decls: ParamDecls, sources: ReadonlyMap<string, TensorSource>, opts: StreamOptions = {}): Promise<Map<string, tf.Tensor>> {
  checkFit(decls, new Map([...sources].map(([k, s]) => [k, s.shape])), opts);
  const keys = loadKeys(decls, (k) => sources.has(k), opts);
  const heap = allocateInHeap(keys.map((k) => decls[k]!));
  if (heap === null) return readEach(decls, sources, keys, opts);
  const out = new Map(keys.map((k, i) => [k, heap.tensors[i]!]));
  const read = (i: number): Promise<StTensor> => {
    const source = sources.get(keys[i]!)!;
    const p = source.read(source.dtype === SAME_BYTES[decls[keys[i]!]!.dtype] ? heap.bytes[i] : undefined);
    p.catch(() => undefined); // awaited below, or settled before the heap is freed
    return p;
  };
  const pending = keys.slice(0, 2).map((_, i) => read(i));
  try {
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const spec = decls[key]!;
      const t = await pending[i]!;
      if (i + 2 < keys.length) pending.push(read(i + 2));
      const bytes = heap.bytes[i]!;
      // A heap that grew meanwhile (another task making tensors) has left these views detached.
      if (bytes.byteLength !== 4 * numel(spec.shape)) throw new Error(`${key}: the wasm heap grew while weights were being read into it; load weights with nothing else making tensors`);
      const n = bytes.byteLength / 4;
      const view = spec.dtype === 'float32' ? new Float32Array(bytes.buffer, bytes.byteOffset, n) : new Int32Array(bytes.buffer, bytes.byteOffset, n);
      // Read elsewhere (another dtype, a strided view): converted into the heap here.
      if (t.data.buffer !== bytes.buffer || t.data.byteOffset !== bytes.byteOffset) view.set(paramData(key, spec, t));
      else paramData(key, spec, { ...t, data: view });
      opts.onRead?.(key, { dtype: SAME_BYTES[spec.dtype], shape: t.shape, data: view });
    }
  } catch (e) {
    await Promise.allSettled(pending);
    tf.dispose([...out.values()]);
    throw e;
  }
  return out;
}

/** streamParams off the wasm heap: each tensor read into its own array, which the backend takes. */
async function readEach(decls: ParamDecls, sources: ReadonlyMap<string, TensorSource>, keys: readonly string[], opts: StreamOptions): Promise<Map<string, tf.Tensor>> {
  const out = new Map<string, tf.Tensor>();
  try {
    for (const key of keys) {
      const t = await sources.get(key)!.read();
      opts.onRead?.(key, t);
      out.set(key, paramTensor(key, decls[key]!, t));
    }
  } catch (e) {
    tf.dispose([...out.values()]);
    throw e;
  }
  return out;
}

/** The values as a state dict (official keys; int buffers as I64, like torch.save). */
export async function stateDictFromParams(decls: ParamDecls, values: ReadonlyMap<string, tf.Tensor>): Promise<Map<string, StTensor>> {
  const out = new Map<string, StTensor>();
  for (const [key, spec] of Object.entries(decls)) {
    if (!spec.persistent) continue;
    const v = values.get(key);
    if (v === undefined) continue;
    if (numel(v.shape) !== numel(spec.shape)) throw new StateDictError(`${key}: value has shape ${fmt(v.shape)}, declared ${fmt(spec.shape)}`);
    const data = await v.data();
    out.set(key, spec.dtype === 'int32'
      ? { dtype: 'I64', shape: spec.shape, data: BigInt64Array.from(data as Int32Array, (x) => BigInt(x)) }
      : { dtype: 'F32', shape: spec.shape, data: Float32Array.from(data as Float32Array) });
  }
  return out;
}
