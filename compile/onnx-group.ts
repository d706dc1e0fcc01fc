/**
 * One group of images sampled start to finish on one onnxruntime session: the loop the onnx
 * engine runs on this thread and in each worker (compile/onnx-pool.ts). Images are independent
 * through the whole chain, so groups need no exchange between steps.
 *
 * The noise is noiseFromKey's stream of the whole call, each group drawing only its own images'
 * values (rowsOfNoise), so any grouping samples the images one session would. Under guidance the
 * null rows are fed zeros: the exported graph guides with the conditional half's x only (the
 * official forward_with_cfg), so what the null half holds never reaches an image.
 */
import type * as Ort from 'onnxruntime-node';
import type { Key } from '../dsl/random.ts';
import { noiseFromKey, rowsOfNoise } from '../mdt/diffusion/sampler.ts';
import { fastNormal } from '../runtime/native.ts';

export interface GroupJob {
  readonly key: Key;
  /** The group's rows' labels: its images', then (under guidance) as many null labels. */
  readonly labels: Int32Array;
  /** Its first image's index in the call, and how many it has. */
  readonly first: number;
  readonly images: number;
  /** One image's [channels, height, width]. */
  readonly image: readonly [number, number, number];
  /** Respaced steps, and whether the step graph reads noise. */
  readonly steps: number;
  readonly noisy: boolean;
}

/** Splits `images` into `groups` runs of consecutive images (fewer if images are fewer), sizes differing by at most one. */
export function splitImages(images: number, groups: number): { first: number; images: number }[] {
  const g = Math.min(Math.max(1, groups), images);
  return Array.from({ length: g }, (_, i) => {
    const first = Math.floor((i * images) / g);
    return { first, images: Math.floor(((i + 1) * images) / g) - first };
  });
}

/**
 * Runs `job` to x_0 on `session` (the step graph of compile/onnx-step.ts); returns its images.
 * `ort` is onnxruntime-node or, on the page, onnxruntime-web (the same API).
 */
export async function runGroup(ort: Pick<typeof Ort, 'Tensor'>, session: Pick<Ort.InferenceSession, 'run'>, job: GroupJob, onStep?: (done: number) => void): Promise<Float32Array> {
  const [c, h, w] = job.image;
  const per = c * h * w;
  const rows = job.labels.length;
  const shape = [rows, c, h, w];
  const noise = rowsOfNoise(noiseFromKey(job.key, fastNormal), per, [[job.first, job.first + job.images]]);
  // The group's rows: its images' values, then zeros for the null rows.
  const rowsOf = (images: Float32Array) => {
    const out = new Float32Array(rows * per);
    out.set(images);
    return out;
  };
  const y = new ort.Tensor('int32', job.labels, [rows]);
  const k = new Int32Array(rows);
  let x: Float32Array = rowsOf(noise.initial(job.images * per));
  for (let step = job.steps - 1; step >= 0; step--) {
    const feeds: Record<string, Ort.Tensor> = { x: new ort.Tensor('float32', x, shape), k: new ort.Tensor('int32', k.fill(step), [rows]), y };
    if (job.noisy) feeds['noise'] = new ort.Tensor('float32', rowsOf(noise.step(step, job.images * per)), shape);
    // A CPU output's data is a buffer of its own (both bindings copy it out of onnxruntime's).
    x = (await session.run(feeds))['x_prev']!.data as Float32Array;
    onStep?.(job.steps - step);
  }
  return x.slice(0, job.images * per);
}
