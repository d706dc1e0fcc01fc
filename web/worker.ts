/**
 * The page's model worker: picks the best tfjs backend (WebGPU, then WebGL, then wasm), loads
 * a checkpoint and samples or inpaints with the CLI's own compiled code (compile/sample.ts,
 * compile/inpaint.ts); or, given an exported `.onnx`, samples it on onnxruntime-web
 * (web/onnx-model.ts). It runs in a worker so that the page stays live and its progress bar
 * moves while the (synchronous) sampling loop runs.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { compileSampler } from '../compile/sample.ts';
import { inpaint } from '../compile/inpaint.ts';
import { foldIn, keyFromSeed } from '../dsl/random.ts';
import type { GuidanceSchedule } from '../mdt/diffusion/guidance-weight.ts';
import type { ModelConfig } from '../mdt/config.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { modelFromSafetensors, type PageModel } from './checkpoint.ts';
import { onnxFromBytes, sampleOnnx, type PageOnnx } from './onnx-model.ts';
import type { FromWorker, Images, MaskShape, SampleRequest, ToWorker } from './protocol.ts';

const BACKENDS = ['webgpu', 'webgl', 'wasm'] as const;
/** Where the page's files are: web/build.ts copies both runtimes' wasm binaries beside it. */
const HERE = new URL('./', self.location.href).href;

const post = (m: FromWorker, transfer: Transferable[] = []) => (self as unknown as Worker).postMessage(m, transfer);

/** The first backend of `order` that starts here, and why each one before it did not. */
async function pickBackend(order: readonly string[]): Promise<{ name: string; tried: string[] }> {
  setWasmPaths(HERE);
  const tried: string[] = [];
  for (const name of order) {
    try {
      if (await tf.setBackend(name)) {
        await tf.ready();
        registerMissingKernels();
        return { name, tried };
      }
      tried.push(`${name}: did not start`);
    } catch (e) {
      tried.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new Error(`no tfjs backend starts in this browser (${tried.join('; ')})`);
}

/** `mdt sample`'s guidance defaults: MDT's power-cosine schedule (s = 4), DiT's constant one; w = 1 is none. */
function guidanceOf(c: ModelConfig, scale: number): { schedule: GuidanceSchedule | null; channels: 'first3' | 'all' } {
  const schedule: GuidanceSchedule | null = scale === 1 ? null : c.variant === 'dit' ? { kind: 'constant', scale } : { kind: 'power-cosine', scale, power: 4 };
  return { schedule, channels: c.inChannels === 4 ? 'first3' : 'all' };
}

/** Which pixels the inpainting keeps (true) for a mask shape. */
function knownPixels(mask: MaskShape, size: number): boolean[] {
  return Array.from({ length: size * size }, (_, i) => {
    const [y, x] = [Math.floor(i / size), i % size];
    const lo = size / 4, hi = (3 * size) / 4;
    return mask === 'right' ? x < size / 2 : mask === 'bottom' ? y < size / 2 : !(x >= lo && x < hi && y >= lo && y < hi);
  });
}

let loaded: { kind: 'tfjs'; m: PageModel } | { kind: 'onnx'; m: PageOnnx } | null = null;
let last: Images | null = null;

async function imagesOf(x: tf.Tensor4D, labels: readonly number[]): Promise<Images> {
  const data = (await x.data()) as Float32Array;
  x.dispose();
  return { data, n: x.shape[0], channels: x.shape[1], size: x.shape[2], labels };
}

function check(r: SampleRequest, c: ModelConfig): void {
  const bad = r.labels.filter((y) => !(Number.isInteger(y) && y >= 0 && y < c.numClasses));
  if (bad.length > 0) throw new Error(`classes ${bad.join(', ')} are out of range: the model has classes 0..${c.numClasses - 1}`);
  if (r.labels.length === 0) throw new Error('no classes to sample');
}

async function handle(m: ToWorker): Promise<void> {
  if (m.type === 'load') {
    if (loaded?.kind === 'tfjs') tf.dispose([...loaded.m.values.values()]);
    loaded = null;
    last = null;
    if (m.name.toLowerCase().endsWith('.onnx')) {
      const o = onnxFromBytes(m.bytes, m.name);
      loaded = { kind: 'onnx', m: o };
      post({ type: 'loaded', config: o.meta.config, engine: 'onnxruntime-web', backend: 'wasm', tried: [], notes: [`${o.guidance}, as exported (the w field is not used)`], canInpaint: false, fixedCfg: o.scale });
      return;
    }
    const backend = await pickBackend(m.backend ? [m.backend] : BACKENDS);
    const p = modelFromSafetensors(m.bytes, m.name, m.hints);
    loaded = { kind: 'tfjs', m: p };
    post({ type: 'loaded', config: p.model.config, engine: 'tfjs', backend: backend.name, tried: backend.tried, notes: p.notes, canInpaint: p.canInpaint, fixedCfg: null });
    return;
  }
  if (loaded === null) throw new Error('load a checkpoint first');
  const c = loaded.kind === 'tfjs' ? loaded.m.model.config : loaded.m.meta.config;
  check(m, c);
  const progress = (done: number, total: number) => post({ type: 'progress', done, total });
  const t0 = performance.now();
  const sampler = m.steps.startsWith('ddim') ? 'ddim' : 'ddpm';
  // The key of `mdt sample --seed S` for its first batch.
  const key = foldIn(keyFromSeed(m.seed), 0);
  if (m.type === 'sample' && loaded.kind === 'onnx') {
    const data = await sampleOnnx(loaded.m, Int32Array.from(m.labels), { steps: m.steps, sampler }, key, HERE, progress);
    last = { data, n: m.labels.length, channels: c.inChannels, size: c.inputSize, labels: m.labels };
    post({ type: 'images', kind: 'samples', images: last, ms: performance.now() - t0 });
    return;
  }
  if (loaded.kind === 'onnx') throw new Error(`${loaded.m.name}: an exported .onnx holds the sampling graph only, without the side-interpolater; inpainting needs the MDT checkpoint (.safetensors)`);
  const { model, values } = loaded.m;
  const { schedule, channels } = guidanceOf(c, m.cfgScale);
  if (m.type === 'sample') {
    const s = compileSampler(model, values, { steps: m.steps, sampler, guidance: schedule, guideChannels: channels });
    try {
      last = await imagesOf(s.sample(Int32Array.from(m.labels), key, progress), m.labels);
    } finally {
      s.dispose();
    }
    post({ type: 'images', kind: 'samples', images: last, ms: performance.now() - t0 });
    return;
  }
  if (!loaded.m.canInpaint) throw new Error(`inpainting needs an MDT checkpoint with its side-interpolater (sideblocks.*); this one is ${c.variant === 'dit' ? 'a DiT, which has none' : 'an inference-only state dict without it'}`);
  if (last === null) throw new Error('sample first: the inpainting completes the samples shown');
  const image = tf.tensor4d(last.data, [last.n, last.channels, last.size, last.size]);
  try {
    const x = inpaint(model, values, {
      image, knownPixels: knownPixels(m.mask, last.size), labels: Int32Array.from(last.labels), steps: m.steps,
      switchFraction: m.switchFraction, guidance: schedule, guideChannels: channels, key: keyFromSeed(m.seed), progress,
    });
    post({ type: 'images', kind: 'inpainted', images: await imagesOf(x, last.labels), ms: performance.now() - t0 });
  } finally {
    image.dispose();
  }
}

self.onmessage = (e: MessageEvent<ToWorker>) => {
  handle(e.data).catch((err: unknown) => post({ type: 'error', message: err instanceof Error ? err.message : String(err) }));
};
