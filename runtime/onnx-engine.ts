/**
 * The onnxruntime engine: runs a denoiser that `mdt export --format onnx` wrote with
 * onnxruntime-node (an optional dependency: its absence is a clear error here, nothing else),
 * and samples with it. The file is checked before onnxruntime sees it — a file that is not
 * ONNX, one of another model, an operator set this engine was not written for — so each
 * mistake gets a sentence rather than a runtime's stack. The sampler's update (DDPM or DDIM)
 * runs on tfjs from the same compiled code as the tfjs engine (compile/model-graph.ts
 * updateProgram), so the two engines differ only in who runs the network.
 */
import * as tf from '@tensorflow/tfjs';
import { readFile } from 'node:fs/promises';
import type * as Ort from 'onnxruntime-node';
import type { Key } from '../dsl/random.ts';
import { validateConfig, type ModelConfig } from '../mdt/config.ts';
import type { GuidanceOptions } from '../mdt/diffusion/cfg.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { noiseFromKey } from '../mdt/diffusion/sampler.ts';
import { MDT_ONNX_FORMAT, type MdtOnnxMeta } from '../compile/onnx-export.ts';
import { ONNX_OPSET } from '../compile/onnx.ts';
import { updateProgram } from '../compile/model-graph.ts';
import { jit } from '../compile/trace.ts';
import { guidedLabels, stepRunner, takeImages, type SamplerOptions } from '../compile/sample.ts';
import { OnnxFileError, readOnnxInfo, type OnnxFileInfo, type OnnxTensorInfo } from '../formats/onnx.ts';

const ELEM = { 1: 'float32', 6: 'int32', 7: 'int64' } as Record<number, string>;
const describe = (t: OnnxTensorInfo) => `${t.name} [${t.dims.join(', ')}] ${ELEM[t.elemType] ?? `type ${t.elemType}`}`;

/** Checks that `info` is a denoiser `mdt export` wrote, for one model; returns what its metadata says. */
export function checkMdtOnnx(info: OnnxFileInfo, what: string): MdtOnnxMeta {
  if (info.opset === null || info.opset > ONNX_OPSET) {
    throw new OnnxFileError(`${what}: uses ${info.opset === null ? 'no default-domain operator set' : `operator set ${info.opset}`}; this engine runs the graphs mdt export writes, opset ${ONNX_OPSET} (re-export the checkpoint with this version)`);
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
  dispose(): Promise<void>;
}

/** Reads, checks and opens the file `path`; `providers`: onnxruntime execution providers, CPU by default. */
export async function openOnnxFile(path: string, providers?: readonly string[]): Promise<OnnxDenoiser> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new OnnxFileError(`${path}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); expected an .onnx file written by mdt export`);
  }
  return openOnnxDenoiser(bytes, path, providers);
}

/** Checks and opens a model's bytes (`path` names it in errors). */
export async function openOnnxDenoiser(bytes: Uint8Array, path: string, providers: readonly string[] = ['cpu']): Promise<OnnxDenoiser> {
  const meta = checkMdtOnnx(readOnnxInfo(bytes, path), path);
  const ort = await loadOrt();
  let session: Ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, { executionProviders: [...providers], graphOptimizationLevel: 'all' });
  } catch (e) {
    throw new OnnxFileError(`${path}: onnxruntime ${ort.env.versions.node ?? ''} cannot load it: ${(e as Error).message}`);
  }
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
    dispose: () => session.release(),
  };
}

/** The sampler of an ONNX denoiser: the tfjs engine's loop and update, the network on onnxruntime. */
export function onnxSampler(den: OnnxDenoiser, opts: Omit<SamplerOptions, 'guidance' | 'guideChannels'>) {
  const c = den.config;
  const tables = respacedTables(opts.diffusionSteps ?? 1000, opts.steps);
  const options = { sampler: opts.sampler, eta: opts.eta ?? 0, guidance: null };
  const update = { step: jit(updateProgram(tables, options)), options, weights: new Map<string, tf.Tensor>() };
  return {
    async sample(labels: Int32Array, key: Key, progress?: (done: number, total: number) => void): Promise<tf.Tensor4D> {
      const y = guidedLabels(labels, c.numClasses, den.guidance !== null);
      const noise = noiseFromKey(key);
      const runner = stepRunner(update, y, noise);
      const t = new Int32Array(y.length);
      // sampleLoop's steps, awaiting the network: x_T, then x_{k−1} from x_k for k = K−1 … 0.
      let x = tf.tensor4d(noise.initial(y.length * c.inChannels * c.inputSize ** 2), [y.length, c.inChannels, c.inputSize, c.inputSize]);
      try {
        for (let k = tables.T - 1; k >= 0; k--) {
          const out = await den.run(x, t.fill(tables.timestepMap[k]!), y);
          const next = runner.run(x, k, new Map([['out', out]]));
          out.dispose();
          x.dispose();
          x = next;
          progress?.(tables.T - k, tables.T);
        }
      } catch (err) {
        x.dispose();
        throw err;
      } finally {
        runner.dispose();
      }
      return takeImages(x, labels.length);
    },
    dispose: () => update.step.dispose(),
  };
}
