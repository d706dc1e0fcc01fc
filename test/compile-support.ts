/**
 * Shared by the compiler's tests (ir-vjp, fusion, execute): which backends they run on, a
 * seeded generator for input values, and helpers to feed and read graphs.
 */
import * as tf from '@tensorflow/tfjs';
import { startRuntime } from '../runtime/start.ts';
import { disableNativeKernels, nativeKernelsStatus } from '../runtime/native.ts';
import { numel, type DType } from '../compile/ir.ts';

/** cpu; wasm with the native kernels where they are built; wasm on its own kernels. */
export type Variant = 'cpu' | 'wasm' | 'wasm-plain';

/** Starts a variant's backend; returns a line saying what runs (for t.diagnostic). */
export async function useBackend(variant: Variant): Promise<string> {
  await startRuntime(variant === 'cpu' ? 'cpu' : 'wasm');
  if (variant === 'wasm-plain') disableNativeKernels();
  const native = nativeKernelsStatus();
  return variant === 'cpu' ? 'cpu backend' : `wasm backend; native kernels: ${native.enabled ? native.reason : `off (${native.reason})`}`;
}

/** mulberry32: a small seeded uniform generator in [0, 1). */
export function uniform(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Standard normal draws from a uniform generator (Box–Muller). */
export function gaussian(u: () => number): () => number {
  return () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
}

export function randomTensor(seed: number, shape: readonly number[], scale = 1, dtype: DType = 'float32'): tf.Tensor {
  const g = gaussian(uniform(seed));
  const v = Float32Array.from({ length: numel(shape) }, () => g() * scale);
  return dtype === 'float32' ? tf.tensor(v, [...shape]) : tf.cast(tf.tensor(v, [...shape]), dtype);
}

/** Largest |a − b| over two tensors' values, and the largest |b|. */
export function maxDiff(a: tf.Tensor, b: tf.Tensor): { diff: number; scale: number } {
  const x = a.dataSync(), y = b.dataSync();
  if (x.length !== y.length) throw new Error(`maxDiff: ${x.length} vs ${y.length} values`);
  let diff = 0, scale = 0;
  for (let i = 0; i < x.length; i++) {
    diff = Math.max(diff, Math.abs(Number(x[i]) - Number(y[i])));
    scale = Math.max(scale, Math.abs(Number(y[i])));
  }
  return { diff, scale };
}

export function disposeAll(m: ReadonlyMap<string, tf.Tensor>): void {
  for (const t of m.values()) t.dispose();
}
