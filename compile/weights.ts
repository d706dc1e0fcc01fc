/**
 * State dicts with the official PyTorch keys: strict loading into a model's declarations
 * (every problem reported at once), and saving back in the same layout.
 */
import * as tf from '@tensorflow/tfjs';
import type { ParamDecls } from '../dsl/param.ts';
import type { StTensor } from '../formats/safetensors.ts';
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
  /** With `scratch`, the data may be a view on it, valid until the next read into it. */
  read(scratch?: ArrayBuffer): Promise<StTensor>;
}

export interface StreamOptions extends LoadOptions {
  /** Which declared parameters to load (default: all); the others are not read even when present. */
  readonly include?: (key: string) => boolean;
  /** Sees each tensor as read, before it becomes a tf.Tensor (a finiteness check); may throw. */
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

/** The tensor for one checked entry. */
function paramTensor(key: string, spec: ParamDecls[string], t: StTensor): tf.Tensor {
  const data = toTensorData(t, key, spec.dtype);
  if (spec.init.kind === 'values' && spec.dtype === 'int32') {
    // Index buffers are derived from the grid; a file that disagrees was made for another layout.
    const expected = spec.init.values();
    const bad = expected.findIndex((v, i) => v !== data[i]);
    if (bad >= 0) throw new StateDictError(`${key}: buffer differs from this model's at element ${bad} (${data[bad]} vs ${expected[bad]})`);
  }
  return tf.tensor(data, spec.shape as number[], spec.dtype);
}

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
 * As paramsFromStateDict, reading one tensor at a time straight into its tf.Tensor: the peak is
 * the loaded weights plus the largest tensor, not twice the file.
 */
export async function streamParams(decls: ParamDecls, sources: ReadonlyMap<string, TensorSource>, opts: StreamOptions = {}): Promise<Map<string, tf.Tensor>> {
  checkFit(decls, new Map([...sources].map(([k, s]) => [k, s.shape])), opts);
  const keys = loadKeys(decls, (k) => sources.has(k), opts);
  // The wasm backend copies a tensor's values into its heap as the tensor is made, so one buffer
  // (8 bytes an element: the widest stored dtype) can take every tensor in turn; no per-tensor
  // array is allocated, faulted in and collected. Other backends may keep the array they are given.
  const scratch = tf.getBackend() === 'wasm' ? new ArrayBuffer(8 * Math.max(0, ...keys.map((k) => numel(sources.get(k)!.shape)))) : undefined;
  const out = new Map<string, tf.Tensor>();
  try {
    for (const key of keys) {
      const t = await sources.get(key)!.read(scratch);
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
