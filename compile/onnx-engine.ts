/**
 * The onnxruntime engine: runs a denoiser that `mdt export --format onnx` wrote with
 * onnxruntime-node (an optional dependency: its absence is a clear error here, nothing else),
 * and samples with it. The file is checked before onnxruntime sees it — a file that is not
 * ONNX, one of another model, an operator set this engine was not written for — so each
 * mistake gets a sentence rather than a runtime's stack. Sampling appends the sampler's update
 * (DDPM or DDIM, traced from the tfjs engine's own code) to the file's graph, so each step is one
 * onnxruntime call. Environment: MDT_ONNX_PROVIDERS (providers), MDT_ONNX_THREADS and
 * MDT_ONNX_GROUPS (compile/onnx-pool.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { readFile } from 'node:fs/promises';
import type * as Ort from 'onnxruntime-node';
import type { Key } from '../dsl/random.ts';
import { validateConfig, type ModelConfig } from '../mdt/config.ts';
import type { GuidanceOptions } from '../mdt/diffusion/cfg.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { MDT_ONNX_FORMAT, type MdtOnnxMeta } from './onnx-export.ts';
import { ONNX_OPSET, ONNX_OPSETS } from './onnx.ts';
import { needsStepNoise } from './model-graph.ts';
import { stepModel, type UpdateOptions } from './onnx-step.ts';
import { splitImages } from './onnx-group.ts';
import { groupCount, onnxPool, poolSettings, threadsPerGroup, type OnnxPool } from './onnx-pool.ts';
import { guidedLabels, type SamplerOptions } from './sample.ts';
import type { DiffusionTables } from '../mdt/diffusion/schedule.ts';
import { decodeOnnx, encodeOnnx, OnnxFileError, readOnnxInfo, type OnnxFileInfo, type OnnxTensorInfo } from '../formats/onnx.ts';

const ELEM = { 1: 'float32', 6: 'int32', 7: 'int64' } as Record<number, string>;
const describe = (t: OnnxTensorInfo) => `${t.name} [${t.dims.join(', ')}] ${ELEM[t.elemType] ?? `type ${t.elemType}`}`;

/** Checks that `info` is a denoiser `mdt export` wrote, for one model; returns what its metadata says. */
export function checkMdtOnnx(info: OnnxFileInfo, what: string): MdtOnnxMeta {
  if (info.opset === null || info.opset > ONNX_OPSET) {
    throw new OnnxFileError(`${what}: uses ${info.opset === null ? 'no default-domain operator set' : `operator set ${info.opset}`}; this engine runs the graphs mdt export writes, opset ${ONNX_OPSETS.join(' or ')} (re-export the checkpoint with this version)`);
  }
  const format = info.metadata.get('mdt.format');
  if (format !== MDT_ONNX_FORMAT) {
    const io = `inputs ${info.inputs.map(describe).join(', ') || 'none'}`;
    throw new OnnxFileError(`${what}: an ONNX model (${info.producer || 'unknown producer'}, ${io}) but not an MDT/DiT denoiser written by mdt export (metadata mdt.format is ${format === undefined ? 'missing' : `"${format}"`}, expected "${MDT_ONNX_FORMAT}")`);
  }
  let config: ModelConfig;
  let guidance: GuidanceOptions | null;
  try {
    config = validateConfig(JSON.parse(info.metadata.get('mdt.config') ?? '') as ModelConfig);
    guidance = JSON.parse(info.metadata.get('mdt.guidance') ?? '') as GuidanceOptions | null;
  } catch (e) {
    throw new OnnxFileError(`${what}: its mdt.config / mdt.guidance metadata do not parse (${(e as Error).message})`);
  }
  const c = config;
  const expected: Record<string, readonly (number | string)[]> = { x: ['rows', c.inChannels, c.inputSize, c.inputSize], t: ['rows'], y: ['rows'] };
  for (const [name, dims] of Object.entries(expected)) {
    const got = info.inputs.find((i) => i.name === name);
    const fits = got !== undefined && got.dims.length === dims.length && dims.every((d, i) => typeof d === 'string' || got.dims[i] === d);
    if (!fits) {
      throw new OnnxFileError(`${what}: its graph does not fit the model its metadata names (${c.variant} ${c.inputSize}×${c.inputSize}×${c.inChannels}): expected input ${name} [${dims.join(', ')}], the graph has ${got === undefined ? 'none' : describe(got)}`);
    }
  }
  return { config, guidance, which: info.metadata.get('mdt.weights') ?? '' };
}

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
  /**
   * The file's graph with the sampler's update appended (compile/onnx-step.ts), on a pool of
   * sessions (compile/onnx-pool.ts), one opened already; `groups(images)` is how many a call uses.
   */
  stepPool(tables: DiffusionTables, o: UpdateOptions): Promise<{ pool: OnnxPool; groups(images: number): number; threads(groups: number): number }>;
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
    async stepPool(tables, o) {
      const model = encodeOnnx(stepModel(decodeOnnx(bytes), c, meta.guidance, tables, o));
      const pool = onnxPool(ort, model, (threads) => open(model, `its graph with the ${o.sampler} update appended`, threads), sessionOptions);
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
export async function onnxSampler(den: OnnxDenoiser, opts: Omit<SamplerOptions, 'guidance' | 'guideChannels'>) {
  const c = den.config;
  const tables = respacedTables(opts.diffusionSteps ?? 1000, opts.steps);
  const o = { sampler: opts.sampler, eta: opts.eta ?? 0 };
  const { pool, groups, threads } = await den.stepPool(tables, o);
  const image = [c.inChannels, c.inputSize, c.inputSize] as const;
  const per = image[0] * image[1] * image[2];
  return {
    async sample(labels: Int32Array, key: Key, progress?: (done: number, total: number) => void): Promise<tf.Tensor4D> {
      const parts = splitImages(labels.length, groups(labels.length));
      const jobs = parts.map((p) => ({ ...p, key, image, labels: guidedLabels(labels.subarray(p.first, p.first + p.images), c.numClasses, den.guidance !== null), steps: tables.T, noisy: needsStepNoise(o) }));
      const out = new Float32Array(labels.length * per);
      if (jobs.length > 0) (await pool.run(jobs, threads(jobs.length), progress)).forEach((x, i) => out.set(x, parts[i]!.first * per));
      return tf.tensor4d(out, [labels.length, ...image]);
    },
    dispose: () => pool.dispose(),
  };
}
