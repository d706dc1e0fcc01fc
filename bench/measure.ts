/**
 * What one bench child measures on one config: the training step, each branch's forward +
 * backward on its own, and DDPM sampling with classifier-free guidance. Wall and CPU time
 * (all threads of the process) are both kept: under load from other processes the CPU time
 * of a single-threaded run still says what the code costs.
 */
import * as tf from '@tensorflow/tfjs';
import { compileSampler } from '../compile/sample.ts';
import { stepMaskPlan } from '../compile/train.ts';
import { jit } from '../compile/trace.ts';
import { trainingReport } from '../compile/pipeline.ts';
import { branchProgram, maskInputs } from '../compile/model-graph.ts';
import { foldIn, keyFromSeed, normal, randint, type Key } from '../dsl/random.ts';
import { exportOnnx } from '../compile/onnx-export.ts';
import { encodeOnnx } from '../formats/onnx.ts';
import { onnxSampler, openOnnxDenoiser, type OnnxDenoiser } from '../compile/onnx-engine.ts';
import { gridSize } from '../mdt/config.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { summary } from '../compile/summary.ts';
import type { BenchConfig, TrainFixture } from './configs.ts';
import { profileOnce } from './profile-step.ts';

export interface Timing {
  readonly wallMs: number;
  readonly cpuMs: number;
}

/** Awaits what `f` returns, so that an async step is timed to its end. */
export async function timed(f: () => unknown): Promise<Timing> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await f();
  const wallMs = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return { wallMs, cpuMs: (c.user + c.system) / 1000 };
}

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function medianTiming(ts: readonly Timing[]): Timing {
  return { wallMs: median(ts.map((t) => t.wallMs)), cpuMs: median(ts.map((t) => t.cpuMs)) };
}

export interface Counts {
  /** Timed training steps (after one profiled warm-up step and `warmup` more). */
  readonly steps: number;
  readonly warmup: number;
  /** Forward + backward repetitions of each branch alone. */
  readonly branchReps: number;
  /** Respaced DDPM steps actually run; sampling time is reported per step and scaled to 250. */
  readonly sampleSteps: number;
  readonly sampleImages: number;
  /** Also time whole sampling runs end to end (the side-by-side table's sampling item). */
  readonly e2e?: E2ECounts;
}

export interface E2ECounts {
  /** Images sampled; CFG runs twice as many rows (the null-label half). */
  readonly images: number;
  /** Respaced DDPM steps ("250": all of 1000 respaced to 250). */
  readonly steps: number;
  /** Timed runs after one untimed run (which compiles the step). */
  readonly runs: number;
  /** Constant guidance scale w. */
  readonly scale: number;
}

/** Whole sampling runs: x_T, every step with CFG, x_0 read back. */
export interface E2ESample extends E2ECounts {
  readonly rows: number;
  /** The first run, compiling the step included. */
  readonly firstMs: number;
  /** Median of the timed runs. */
  readonly ms: Timing;
  readonly samplesMs: readonly number[];
}

export interface ConfigResult {
  readonly config: string;
  readonly trainMs: Timing;
  readonly trainSamples: readonly Timing[];
  /** Training FLOP: 2·3·batch·(MACs of the full forward + MACs of the masked forward). */
  readonly trainGflop: number;
  readonly trainGflops: number;
  readonly kernelsPerStep: number;
  readonly liveTensors: number;
  /** Live tensors gained from the first to the last timed step (0: nothing leaks). */
  readonly tensorGrowth: number;
  readonly fullBranchMs: Timing;
  /** null for DiT, which has no masked branch. */
  readonly maskedBranchMs: Timing | null;
  readonly lenKeep: number;
  /** maskedMacs / macs: what the masked/full time ratio would be if time followed FLOPs. */
  readonly flopRatio: number;
  /** Per respaced step, 2·images rows (CFG). */
  readonly sampleStepMs: Timing;
  readonly sampleGflops: number;
  readonly sample250s: number;
  /** null unless Counts.e2e asked for it. */
  readonly sampleE2E: E2ESample | null;
  /** The same runs on `mdt sample --engine onnx`'s path; null unless asked for. */
  readonly sampleE2EOnnx: E2ESample | { readonly error: string } | null;
  readonly peakRssMb: number;
}

/** The guidance scale of the sampling items (DiT's sample.py default; a constant w costs the same as any). */
export const CFG_SCALE = 4;
const GUIDANCE = { kind: 'constant' as const, scale: CFG_SCALE };

export async function measureConfig(b: BenchConfig, fx: TrainFixture, n: Counts): Promise<ConfigResult> {
  const { trainer, model, x0, y } = fx;
  const c = b.config;
  const s = summary(model);
  const key = keyFromSeed(11);
  const profile = await profileOnce(async () => {
    await trainer.step(x0, y, foldIn(key, 0));
  });
  for (let i = 0; i < n.warmup; i++) await trainer.step(x0, y, foldIn(key, 1 + i));
  const before = tf.memory().numTensors;
  const trainSamples: Timing[] = [];
  for (let i = 0; i < n.steps; i++) trainSamples.push(await timed(() => trainer.step(x0, y, foldIn(key, 100 + i))));
  const tensorGrowth = tf.memory().numTensors - before;
  const trainMs = medianTiming(trainSamples);
  const trainGflop = (2 * 3 * b.batch * (s.macs + s.maskedMacs)) / 1e9;

  const [full, masked] = await branchTimes(b, fx, n.branchReps, foldIn(key, 200));

  const sampler = compileSampler(model, trainer.ema, {
    steps: String(n.sampleSteps), sampler: 'ddpm', guidance: GUIDANCE, guideChannels: c.inChannels >= 3 ? 'first3' : 'all',
  });
  const labels = Int32Array.from({ length: n.sampleImages }, (_, i) => i % c.numClasses);
  // Read back so that a GPU backend's queued work is inside the timing.
  const sampleOnce = async (l: Int32Array, k: ReturnType<typeof keyFromSeed>) => {
    const x = sampler.sample(l, k);
    await x.data();
    x.dispose();
  };
  let sampled: Timing;
  try {
    // The warm-up run has the timed run's shapes: the step is compiled per shape signature.
    await sampleOnce(labels, foldIn(key, 300));
    sampled = await timed(() => sampleOnce(labels, foldIn(key, 301)));
  } finally {
    sampler.dispose();
  }
  const sampleStepMs = { wallMs: sampled.wallMs / n.sampleSteps, cpuMs: sampled.cpuMs / n.sampleSteps };
  const sampleE2E = n.e2e === undefined ? null : await sampleEndToEnd(fx, n.e2e, foldIn(key, 400), 'tfjs');
  const sampleE2EOnnx = n.e2e === undefined ? null : await sampleEndToEndOnnx(fx, n.e2e, foldIn(key, 400));
  const sampleGflop = (2 * 2 * n.sampleImages * s.macs) / 1e9;

  return {
    config: b.name,
    trainMs,
    trainSamples,
    trainGflop,
    trainGflops: trainGflop / (trainMs.wallMs / 1000),
    kernelsPerStep: profile.calls,
    liveTensors: tf.memory().numTensors,
    tensorGrowth,
    fullBranchMs: full,
    maskedBranchMs: masked,
    lenKeep: s.lenKeep,
    flopRatio: s.maskedMacs / s.macs,
    sampleStepMs,
    sampleGflops: sampleGflop / (sampleStepMs.wallMs / 1000),
    sample250s: (250 * sampleStepMs.wallMs) / 1000,
    sampleE2E,
    sampleE2EOnnx,
    peakRssMb: process.resourceUsage().maxRSS / 1024,
  };
}

/** A sampler as `mdt sample` drives either engine (the onnx one is async). */
interface AnySampler {
  sample(labels: Int32Array, key: Key): tf.Tensor4D | Promise<tf.Tensor4D>;
  dispose(): unknown;
}

/**
 * Whole sampling runs as `mdt sample --engine ENGINE` does them: the sampler on the EMA weights
 * (tfjs: compileSampler; onnx: the exported guided denoiser on onnxruntime-node, the update on
 * tfjs), `images` labels plus as many null rows, every respaced DDPM step, the result read back.
 * One untimed run first (it compiles the step), then the median of `runs`.
 */
async function sampleEndToEnd(fx: TrainFixture, e: E2ECounts, key: Key, engine: 'tfjs' | 'onnx'): Promise<E2ESample> {
  const c = fx.model.config;
  const guidance = { kind: 'constant' as const, scale: e.scale };
  const guideChannels = c.inChannels >= 3 ? 'first3' as const : 'all' as const;
  const opts = { steps: String(e.steps), sampler: 'ddpm' as const, guidance, guideChannels };
  let den: OnnxDenoiser | null = null;
  let sampler: AnySampler;
  if (engine === 'tfjs') sampler = compileSampler(fx.model, fx.trainer.ema, opts);
  else {
    const model = exportOnnx(fx.model, fx.trainer.ema, { guidance: { schedule: guidance, channels: guideChannels, inChannels: c.inChannels }, which: 'ema', producerVersion: 'bench' });
    den = await openOnnxDenoiser(encodeOnnx(model), 'bench.onnx');
    sampler = await onnxSampler(den, opts);
  }
  const labels = Int32Array.from({ length: e.images }, (_, i) => i % c.numClasses);
  const once = async (i: number) => {
    const x = await sampler.sample(labels, foldIn(key, i));
    await x.data();
    x.dispose();
  };
  try {
    const first = await timed(() => once(0));
    const runs: Timing[] = [];
    for (let i = 0; i < e.runs; i++) runs.push(await timed(() => once(1 + i)));
    return { ...e, rows: 2 * e.images, firstMs: first.wallMs, ms: medianTiming(runs), samplesMs: runs.map((t) => Math.round(t.wallMs)) };
  } finally {
    await sampler.dispose();
    await den?.dispose();
  }
}

/** The onnx engine's end-to-end runs, or why there are none (onnxruntime-node is optional). */
async function sampleEndToEndOnnx(fx: TrainFixture, e: E2ECounts, key: Key): Promise<E2ESample | { readonly error: string }> {
  try {
    await import('onnxruntime-node');
  } catch (err) {
    return { error: `onnxruntime-node is not installed: ${(err as Error).message.split('\n')[0]}` };
  }
  return sampleEndToEnd(fx, e, key, 'onnx');
}

/**
 * Forward + backward of the full branch and of the masked branch alone, on the trainer's
 * weights and one fixed (t, noise, plan), without any update: each branch is compiled as the
 * trainer compiles it (branchProgram differentiated for the trainable parameters), once,
 * before the timed repetitions.
 */
async function branchTimes(b: BenchConfig, fx: TrainFixture, reps: number, key: ReturnType<typeof keyFromSeed>): Promise<[Timing, Timing | null]> {
  const { trainer, model, x0, y } = fx;
  const tables = respacedTables(1000, '');
  const plan = b.config.variant === 'dit' ? null : stepMaskPlan(b.config, b.batch, foldIn(key, 2));
  const wrt = Object.entries(model.params).filter(([, spec]) => spec.trainable).map(([path]) => path);
  const minSnrGamma = b.config.variant === 'mdt-v2' ? 5 : undefined;
  const data = new Map<string, tf.Tensor>([
    ...trainer.params,
    ['x0', x0],
    ['t', tf.tensor1d(randint(foldIn(key, 0), b.batch, 0, tables.T), 'int32')],
    ['y', tf.tensor1d(y, 'int32')],
    ['noise', tf.tensor4d(normal(foldIn(key, 1), x0.size), x0.shape)],
  ]);
  const planTensors = plan === null ? new Map<string, tf.Tensor>() : maskInputs(plan, gridSize(b.config));
  const branch = (masked: boolean) => {
    const exe = jit(branchProgram(model, tables, { masked, ...(minSnrGamma === undefined ? {} : { minSnrGamma }) }), (g) => trainingReport(g, 'loss', wrt).graph);
    const inputs = masked ? new Map([...data, ...planTensors]) : data;
    // The loss is read back so that a GPU backend's queued work is inside the timing.
    const run = async () => {
      const out = exe(inputs);
      await out.get('loss')!.data();
      tf.dispose([...out.values()]);
    };
    return { exe, run };
  };
  const full = branch(false);
  const masked = plan === null ? null : branch(true);
  try {
    await full.run();
    await masked?.run();
    const fullMs: Timing[] = [];
    const maskedMs: Timing[] = [];
    for (let i = 0; i < reps; i++) {
      fullMs.push(await timed(full.run));
      if (masked !== null) maskedMs.push(await timed(masked.run));
    }
    return [medianTiming(fullMs), masked === null ? null : medianTiming(maskedMs)];
  } finally {
    full.exe.dispose();
    masked?.exe.dispose();
    tf.dispose([data.get('t')!, data.get('y')!, data.get('noise')!, ...planTensors.values()]);
  }
}
