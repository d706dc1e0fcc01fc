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

/** Checks keys, shapes and dtypes against the declarations; returns the tensors to use. */
export function paramsFromStateDict(decls: ParamDecls, sd: ReadonlyMap<string, StTensor>, opts: LoadOptions = {}): Map<string, tf.Tensor> {
  const strict = opts.strict ?? true;
  const problems: string[] = [];
  for (const [key, spec] of Object.entries(decls)) {
    if (!spec.persistent) continue;
    const t = sd.get(key);
    if (t === undefined) {
      if (strict || !spec.trainOnly) problems.push(`missing ${key} (expected ${fmt(spec.shape)})`);
    } else if (t.shape.length !== spec.shape.length || t.shape.some((d, i) => d !== spec.shape[i])) {
      problems.push(`shape mismatch ${key}: expected ${fmt(spec.shape)}, given ${fmt(t.shape)}`);
    }
  }
  if (strict) {
    for (const [key, t] of sd) if (!(key in decls)) problems.push(`unexpected ${key} (given ${fmt(t.shape)})`);
  }
  if (problems.length > 0) {
    throw new StateDictError(`state dict does not fit this model (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n  ${problems.join('\n  ')}`);
  }
  const out = new Map<string, tf.Tensor>();
  for (const [key, spec] of Object.entries(decls)) {
    const t = sd.get(key);
    if (t === undefined) continue;
    const data = toTensorData(t, key, spec.dtype);
    if (spec.init.kind === 'values' && spec.dtype === 'int32') {
      // Index buffers are derived from the grid; a file that disagrees was made for another layout.
      const expected = spec.init.values();
      const bad = expected.findIndex((v, i) => v !== data[i]);
      if (bad >= 0) throw new StateDictError(`${key}: buffer differs from this model's at element ${bad} (${data[bad]} vs ${expected[bad]})`);
    }
    out.set(key, tf.tensor(data, spec.shape as number[], spec.dtype));
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
