/**
 * The sampling graph: no masking and no side-interpolater (the decoder position embedding
 * is added instead); train-only parameters are not inputs of it. One sampling step — the
 * (guided) network and the DDPM or DDIM update — is one executable, run K times.
 */
import * as tf from '@tensorflow/tfjs';
import type { Key } from '../dsl/random.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { fastNormal } from '../runtime/native.ts';
import { noiseFromKey, rowsOfNoise, type NoiseSource } from '../mdt/diffusion/sampler.ts';
import type { GuidanceSchedule } from '../mdt/diffusion/guidance-weight.ts';
import type { DiffusionTables } from '../mdt/diffusion/schedule.ts';
import { jit, type Jitted } from './trace.ts';
import { needsStepNoise, stepProgram, type StepOptions } from './model-graph.ts';
import { fitImages } from './step-memory.ts';
import { formatBytes } from '../runtime/bytes.ts';
import { HeapExhaustedError, heapStatus } from '../runtime/heap.ts';

export interface SamplerOptions {
  /** Respacing: "250" (DDPM default), "ddim25", "25,25", … */
  readonly steps: string;
  readonly sampler: 'ddpm' | 'ddim';
  readonly eta?: number;
  /** null: no classifier-free guidance. */
  readonly guidance: GuidanceSchedule | null;
  /** 'first3': the official (DiT-inherited) 3 of 4 latent channels; 'all' guides every channel. */
  readonly guideChannels?: 'first3' | 'all';
  readonly diffusionSteps?: number;
  /** Told when a batch is sampled in parts to fit the wasm heap (one line). */
  readonly onNote?: (text: string) => void;
}

export interface Sampler {
  /**
   * Samples one image per label; the result is the caller's, (B, C, H, W). On the wasm backend a
   * batch whose step does not fit in the heap is run in parts (compile/step-memory.ts), each with
   * its rows of the whole batch's noise: the images do not depend on the split.
   */
  sample(labels: Int32Array, key: Key, progress?: (done: number, total: number) => void): tf.Tensor4D;
  dispose(): void;
}

/** Only what inference reads: drops train-only parameters (side block, mask token). */
export function inferenceParams(model: DiffusionModel, values: ReadonlyMap<string, tf.Tensor>): Map<string, tf.Tensor> {
  return new Map([...values].filter(([k]) => model.params[k] !== undefined && !model.params[k]!.trainOnly));
}

/** One step's tensors: x_k → x_{k−1}; `extra` adds inputs of the step's graph (inpainting's plan). */
export type StepRunner = (x: tf.Tensor4D, k: number, extra?: ReadonlyMap<string, tf.Tensor>) => tf.Tensor4D;

/** A sampling step compiled per shape signature (stepProgram), on the weights it reads. */
export interface CompiledStep {
  readonly step: Jitted;
  readonly options: StepOptions;
  readonly weights: ReadonlyMap<string, tf.Tensor>;
}

export function compileStep(model: DiffusionModel, values: ReadonlyMap<string, tf.Tensor>, tables: DiffusionTables, options: StepOptions): CompiledStep {
  return { step: jit(stepProgram(model, tables, options)), options, weights: options.masked ? values : inferenceParams(model, values) };
}

/**
 * The step for one batch: labels `y` (B rows, CFG's null rows included), noise for step k from
 * `noise`. The runner never disposes x.
 */
export function stepRunner({ step, options: o, weights }: CompiledStep, y: Int32Array, noise: NoiseSource): { run: StepRunner; dispose(): void } {
  const labels = tf.tensor1d(y, 'int32');
  return {
    run(x, k, extra = new Map()) {
      const ks = tf.fill([y.length], k, 'int32');
      const n = x.size;
      const data = new Map<string, tf.Tensor>([...weights, ...extra, ['x', x], ['k', ks], ['y', labels]]);
      if (needsStepNoise(o)) data.set('noise', tf.tensor4d(noise.step(k, n), x.shape));
      try {
        return step(data).get('x') as tf.Tensor4D;
      } finally {
        ks.dispose();
        data.get('noise')?.dispose();
      }
    },
    dispose() {
      labels.dispose();
    },
  };
}

/** x_T of `shape` from `noise`, then every step K−1 … 0 of `tables`; x_0 is the caller's. */
export function sampleLoop(run: StepRunner, tables: DiffusionTables, shape: [number, number, number, number], noise: NoiseSource, progress?: (done: number, total: number) => void): tf.Tensor4D {
  let x = tf.tensor4d(noise.initial(shape.reduce((a, b) => a * b, 1)), shape);
  try {
    for (let k = tables.T - 1; k >= 0; k--) {
      const next = run(x, k);
      x.dispose();
      x = next;
      progress?.(tables.T - k, tables.T);
    }
  } catch (err) {
    x.dispose();
    throw err;
  }
  return x;
}

/**
 * The rows the network runs for `labels` after checking them: with guidance, CFG's 2B rows
 * [labels; null label] (the guided step keeps both halves' inputs identical).
 */
export function guidedLabels(labels: Int32Array, numClasses: number, guided: boolean): Int32Array {
  for (const y of labels) if (!(Number.isInteger(y) && y >= 0 && y < numClasses)) throw new Error(`sample: class ${y} is out of range [0, ${numClasses - 1}]`);
  return guided ? Int32Array.from([...labels, ...new Array<number>(labels.length).fill(numClasses)]) : labels;
}

/** The first `b` rows of the sampled x_0 (the conditional half under guidance); disposes `out`. */
export function takeImages(out: tf.Tensor4D, b: number): tf.Tensor4D {
  if (out.shape[0] === b) return out;
  const first = tf.slice(out, [0, 0, 0, 0], [b, -1, -1, -1]);
  out.dispose();
  return first;
}

export function compileSampler(model: DiffusionModel, values: ReadonlyMap<string, tf.Tensor>, opts: SamplerOptions): Sampler {
  const c = model.config;
  const T = opts.diffusionSteps ?? 1000;
  const tables = respacedTables(T, opts.steps);
  const guidance = opts.guidance === null ? null : { schedule: opts.guidance, channels: opts.guideChannels ?? 'first3', T, inChannels: c.inChannels };
  const compiled = compileStep(model, values, tables, { sampler: opts.sampler, eta: opts.eta ?? 0, guidance });
  const sample: [number, number, number] = [c.inChannels, c.inputSize, c.inputSize];
  const per = sample[0] * sample[1] * sample[2];
  // CFG runs 2B rows: [labels; null], the guided step keeps both halves' inputs identical.
  const rowsOf = (images: number) => (guidance === null ? images : 2 * images);
  /** Images [from, to) of a batch of b, from the whole batch's noise; the result is the caller's. */
  const run = (labels: Int32Array, from: number, to: number, noise: NoiseSource, progress: (done: number) => void): tf.Tensor4D => {
    const b = labels.length;
    const part = labels.subarray(from, to);
    const n = to - from;
    const y = guidedLabels(part, c.numClasses, guidance !== null);
    const ranges: [number, number][] = guidance === null ? [[from, to]] : [[from, to], [b + from, b + to]];
    const partNoise = rowsOfNoise(noise, per, ranges);
    const runner = stepRunner(compiled, y, partNoise);
    try {
      return takeImages(sampleLoop(runner.run, tables, [y.length, ...sample], partNoise, progress), n);
    } finally {
      runner.dispose();
    }
  };
  return {
    sample(labels, key, progress) {
      const b = labels.length;
      const noise = noiseFromKey(key, fastNormal);
      const heap = heapStatus();
      let size = b;
      if (heap !== null) {
        const fit = fitImages(compiled, b, rowsOf, sample, heap);
        size = fit.images;
        if (size < b) opts.onNote?.(`a step of ${b} images needs ${formatBytes(fit.whole)}, the wasm heap has ${formatBytes(fit.free)} free: sampling them ${size} at a time (the same noise, so the same images)`);
      }
      const parts: tf.Tensor4D[] = [];
      try {
        for (let from = 0; from < b;) {
          const to = Math.min(b, from + size);
          const before = from;
          try {
            parts.push(run(labels, from, to, noise, (done) => progress?.(before * tables.T + (to - before) * done, b * tables.T)));
            from = to;
          } catch (e) {
            // The estimate missed (kernel buffers, a fragmented heap): the heap is intact, so halve and redo this part.
            if (!(e instanceof HeapExhaustedError) || to - from === 1) throw heapError(e, to - from);
            size = Math.max(1, Math.floor((to - from) / 2));
            opts.onNote?.(`${e.message}; sampling ${size} images at a time from here`);
          }
        }
        return parts.length === 1 ? parts.pop()! : (tf.concat(parts, 0) as tf.Tensor4D);
      } finally {
        tf.dispose(parts);
      }
    },
    dispose: () => compiled.step.dispose(),
  };
}

/** A heap exhaustion on a single image names what to do; anything else as it is. */
function heapError(e: unknown, images: number): unknown {
  if (!(e instanceof HeapExhaustedError)) return e;
  return new Error(`sampling ${images} image${images === 1 ? '' : 's'} at a time: ${e.message}; use a backend without this limit (--backend cpu, or tensorflow when tfjs-node is installed)`);
}
