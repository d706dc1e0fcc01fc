/**
 * Sampling an exported denoiser, apart from the runtime that runs it: the step graph (the file's
 * network with the sampler's update appended, compile/onnx-step.ts) and each call's groups of
 * images (compile/onnx-group.ts). Node's engine (compile/onnx-engine.ts) runs the groups on its
 * pool of onnxruntime-node sessions, the page (web/worker.ts) one group on onnxruntime-web.
 */
import type { Key } from '../dsl/random.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { decodeOnnx, encodeOnnx } from '../formats/onnx.ts';
import type { MdtOnnxMeta } from './onnx-export.ts';
import { splitImages, type GroupJob } from './onnx-group.ts';
import { needsStepNoise } from './model-graph.ts';
import { stepModel } from './onnx-step.ts';
import { guidedLabels, type SamplerOptions } from './sample.ts';

export type OnnxSamplerOptions = Omit<SamplerOptions, 'guidance' | 'guideChannels'>;

export interface SamplingPlan {
  /** The step graph's bytes: inputs x, k, y (and noise where the sampler draws it), output x_prev. */
  readonly model: Uint8Array;
  /** One image's [channels, height, width]. */
  readonly image: readonly [number, number, number];
  /** A call's jobs: `labels`' images split into `groups` runs of consecutive images. */
  jobs(labels: Int32Array, key: Key, groups: number): GroupJob[];
}

/** The plan for sampling the file `bytes` (checked: `meta`) with `opts`. */
export function samplingPlan(bytes: Uint8Array, meta: MdtOnnxMeta, opts: OnnxSamplerOptions): SamplingPlan {
  const c = meta.config;
  const tables = respacedTables(opts.diffusionSteps ?? 1000, opts.steps);
  const o = { sampler: opts.sampler, eta: opts.eta ?? 0 };
  const image = [c.inChannels, c.inputSize, c.inputSize] as const;
  return {
    model: encodeOnnx(stepModel(decodeOnnx(bytes), c, meta.guidance, tables, o)),
    image,
    jobs: (labels, key, groups) =>
      splitImages(labels.length, groups).map((p) => ({
        ...p, key, image, steps: tables.T, noisy: needsStepNoise(o),
        labels: guidedLabels(labels.subarray(p.first, p.first + p.images), c.numClasses, meta.guidance !== null),
      })),
  };
}
