/**
 * How many images a sampling step can take at once on a heap of fixed size (the wasm backend's
 * 4 GiB). The bytes a run needs beyond its weights are read off the step's graph before it
 * runs: the executor's memory plan (compile/graph-report.ts memoryPlan: intermediates freed
 * after their last reader) plus its folded constants and its data inputs. Kernel-internal
 * buffers are not in the graph, hence a margin.
 */
import { bytesOf, memoryPlan } from './graph-report.ts';
import type { DType } from './ir.ts';
import type { InputSpec } from './trace.ts';
import type { CompiledStep } from './sample.ts';
import { needsStepNoise } from './model-graph.ts';
import { formatBytes } from '../runtime/bytes.ts';
import type { HeapStatus } from '../runtime/heap.ts';

/** Headroom over the planned bytes: kernel temporaries and allocator slack. */
const MARGIN = 0.15;

/** The inputs of a step for `rows` rows of `sample` (C, H, W): its weights and x, k, y, noise. */
export function stepSpecs(step: CompiledStep, rows: number, sample: readonly [number, number, number]): Record<string, InputSpec> {
  const specs: Record<string, InputSpec> = {};
  for (const [k, t] of step.weights) specs[k] = { shape: t.shape, dtype: t.dtype as DType };
  const maps = { shape: [rows, ...sample], dtype: 'float32' } as const;
  specs['x'] = maps;
  specs['k'] = { shape: [rows], dtype: 'int32' };
  specs['y'] = { shape: [rows], dtype: 'int32' };
  if (needsStepNoise(step.options)) specs['noise'] = maps;
  return specs;
}

/** Bytes one run of the step on `rows` rows takes beyond its weights (margin included). */
export function stepBytes(step: CompiledStep, rows: number, sample: readonly [number, number, number]): number {
  const specs = stepSpecs(step, rows, sample);
  const plan = memoryPlan(step.step.graph(specs));
  const data = Object.entries(specs).filter(([k]) => !step.weights.has(k)).reduce((a, [, s]) => a + bytesOf(s.shape, s.dtype), 0);
  return Math.ceil((plan.peak + plan.foldedBytes + data) * (1 + MARGIN));
}

export interface Fit {
  /** Images per run (≤ the images asked for). */
  readonly images: number;
  /** Bytes a run of that many takes, one of all the images asked for, and what the heap had free. */
  readonly needs: number;
  readonly whole: number;
  readonly free: number;
}

/** Rows of a step for `images` images (CFG runs a null row per image). */
export type RowsOf = (images: number) => number;

/**
 * The most images (≤ `images`) whose step fits in what `heap` has free; an error when not even
 * one does, saying how much it needs and how much is free.
 */
export function fitImages(step: CompiledStep, images: number, rowsOf: RowsOf, sample: readonly [number, number, number], heap: HeapStatus): Fit {
  const free = heap.limit - heap.used;
  const need = (n: number) => stepBytes(step, rowsOf(n), sample);
  const all = need(images);
  if (all <= free) return { images, needs: all, whole: all, free };
  const one = need(1);
  if (one > free) {
    throw new Error(
      `the wasm heap cannot hold a sampling step of even 1 image: it needs ${formatBytes(one)}, and ${formatBytes(free)} of the heap's ${formatBytes(heap.limit)} ` +
      `are free beside the ${formatBytes(heap.used)} in use (weights); use a backend without this limit (--backend cpu, or tensorflow when tfjs-node is installed)`,
    );
  }
  // The plan grows linearly in the rows: interpolate between 1 and all, then step down to exact.
  const perImage = (all - one) / (images - 1);
  let n = Math.max(1, Math.min(images - 1, 1 + Math.floor((free - one) / perImage)));
  let bytes = need(n);
  while (n > 1 && bytes > free) bytes = need(--n);
  return { images: n, needs: bytes, whole: all, free };
}
