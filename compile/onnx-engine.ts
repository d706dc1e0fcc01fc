/**
 * The onnxruntime engine: runs a denoiser that `mdt export --format onnx` wrote with
 * onnxruntime-node (an optional dependency: its absence is a clear error here, nothing else),
 * and samples with it. The file is checked before onnxruntime sees it (compile/onnx-check.ts),
 * so each mistake gets a sentence rather than a runtime's stack. Sampling appends the sampler's
 * update (DDPM or DDIM, traced from the tfjs engine's own code) to the file's graph
 * (compile/onnx-plan.ts), so each step is one onnxruntime call. Environment:
 * MDT_ONNX_PROVIDERS (providers), MDT_ONNX_THREADS and MDT_ONNX_GROUPS (compile/onnx-pool.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { readFile } from 'node:fs/promises';
import type * as Ort from 'onnxruntime-node';
import type { Key } from '../dsl/random.ts';
import type { MdtOnnxMeta } from './onnx-export.ts';
import { checkMdtOnnx } from './onnx-check.ts';
import { samplingPlan, type OnnxSamplerOptions, type SamplingPlan } from './onnx-plan.ts';
import { groupCount, onnxPool, poolSettings, threadsPerGroup, type OnnxPool } from './onnx-pool.ts';
import { OnnxFileError, readOnnxInfo } from '../formats/onnx.ts';

async function loadOrt(): Promise<typeof Ort> {
  try {
    return await import('onnxruntime-node');
  } catch (e) {
    throw new Error(`--engine onnx needs the optional dependency onnxruntime-node, which is not installed (${(e as Error).message.split('\n')[0]}); run \`npm install\` without --omit=optional`);
  }
}

export interface OnnxDenoiser extends MdtOnnxMeta {
  /** Runs the network on rows (x, t, y); the output is the caller's. */
  run(x: tf.Tensor4D, t: Int32Array, y: Int32Array): Promise<tf.Tensor4D>;
  /** How `opts` samples this file (compile/onnx-plan.ts). */
  plan(opts: OnnxSamplerOptions): SamplingPlan;
  /**
   * A plan's step graph on a pool of sessions (compile/onnx-pool.ts), one opened already;
   * `groups(images)` is how many a call uses.
   */
  stepPool(plan: SamplingPlan, what: string): Promise<{ pool: OnnxPool; groups(images: number): number; threads(groups: number): number }>;
  dispose(): Promise<void>;
}

/** Execution providers from MDT_ONNX_PROVIDERS (a comma list such as "cuda,cpu"; default cpu). */
function providers(): string[] {
  const list = (process.env.MDT_ONNX_PROVIDERS ?? '').split(',').map((p) => p.trim()).filter((p) => p !== '');
  return list.length > 0 ? list : ['cpu'];
}

const sessionOptions = (threads: number): Ort.InferenceSession.SessionOptions => ({ executionProviders: providers(), graphOptimizationLevel: 'all', intraOpNumThreads: threads });

/** Reads, checks and opens the file `path`. */
export async function openOnnxFile(path: string): Promise<OnnxDenoiser> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new OnnxFileError(`${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); expected an .onnx file written by mdt export`);
  }
  return openOnnxDenoiser(bytes, path);
}

/** Checks and opens a model's bytes (`path` names it in errors). */
export async function openOnnxDenoiser(bytes: Uint8Array, path: string): Promise<OnnxDenoiser> {
  const meta = checkMdtOnnx(readOnnxInfo(bytes, path), path);
  const ort = await loadOrt();
  const settings = poolSettings(process.env, providers());
  const open = async (model: Uint8Array, what: string, threads = settings.threads) => {
    try {
      return await ort.InferenceSession.create(model, sessionOptions(threads));
    } catch (e) {
      throw new OnnxFileError(`${path}: onnxruntime ${ort.env.versions.node ?? ''} cannot load ${what}: ${(e as Error).message}`);
    }
  };
  const session = await open(bytes, 'it');
  const c = meta.config;
  return {
    ...meta,
    async run(x, t, y) {
      const [rows] = x.shape;
      const feeds = {
        x: new ort.Tensor('float32', (await x.data()) as Float32Array, x.shape),
        t: new ort.Tensor('int32', t, [rows]),
        y: new ort.Tensor('int32', y, [rows]),
      };
      const r = await session.run(feeds);
      const out = r['out']!;
      const data = out.data as Float32Array;
      out.dispose();
      return tf.tensor4d(data, [rows, 2 * c.inChannels, c.inputSize, c.inputSize]);
    },
    plan: (opts) => samplingPlan(bytes, meta, opts),
    async stepPool({ model }, what) {
      const pool = onnxPool(ort, model, (threads) => open(model, what, threads), sessionOptions);
      const groups = (images: number) => groupCount(settings, images, model.length);
      const threads = (g: number) => threadsPerGroup(settings, g);
      // This thread's session for the most groups a call can have.
      await pool.warm(threads(groups(Infinity)));
      return { pool, groups, threads };
    },
    dispose: () => session.release(),
  };
}

/**
 * The sampler of an ONNX denoiser: one onnxruntime call per step (the file's network and the
 * update, compile/onnx-step.ts), the images split into groups over the engine's threads
 * (compile/onnx-pool.ts), on the tfjs engine's noise (noiseFromKey), so that both engines and any
 * grouping sample the same images from the same key.
 */
export async function onnxSampler(den: OnnxDenoiser, opts: OnnxSamplerOptions) {
  const plan = den.plan(opts);
  const { pool, groups, threads } = await den.stepPool(plan, `its graph with the ${opts.sampler} update appended`);
  const [ch, h, w] = plan.image;
  return {
    async sample(labels: Int32Array, key: Key, progress?: (done: number, total: number) => void): Promise<tf.Tensor4D> {
      const jobs = plan.jobs(labels, key, groups(labels.length));
      const out = new Float32Array(labels.length * ch * h * w);
      if (jobs.length > 0) (await pool.run(jobs, threads(jobs.length), progress)).forEach((x, i) => out.set(x, jobs[i]!.first * ch * h * w));
      return tf.tensor4d(out, [labels.length, ch, h, w]);
    },
    dispose: () => pool.dispose(),
  };
}
