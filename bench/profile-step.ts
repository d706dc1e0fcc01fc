// Kernel profile of one training step (full + masked branch, AdamW, EMA): per kernel name the
// calls and the time, plus live tensors. Times come from tf.profile, which times each kernel
// on its own (for wasm: wall time around the call), so the sum is close to the step time.
// Ops with hand-written gradients appear in tf.profile as scopes around their kernels; they are
// counted apart, not as kernels.
//   npx tsx bench/profile-step.ts [main s2 tiny ...] [--backend wasm|cpu] [--threads N] [--native] [--top K] [--shapes KERNEL]
import * as tf from '@tensorflow/tfjs';
import { parseArgs } from 'node:util';
import { initBackend, type BackendName } from '../runtime/backend.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { enableNativeKernels } from '../runtime/native.ts';
import { keyFromSeed, foldIn } from '../dsl/random.ts';
import { BENCH_CONFIGS, isBenchConfigName, trainFixture, type BenchConfig } from './configs.ts';

export interface KernelStat {
  readonly name: string;
  readonly calls: number;
  readonly ms: number;
}

export interface StepProfile {
  readonly wallMs: number;
  readonly kernelMs: number;
  /** Backend kernel calls (op scopes excluded). */
  readonly calls: number;
  /** customGrad op scopes (not kernels). */
  readonly scopes: number;
  readonly kernels: readonly KernelStat[];
  /** Input → output shapes of every call of the kernel named by `shapesOf`: calls and time. */
  readonly shapes: ReadonlyMap<string, { calls: number; ms: number }>;
}

/** Profiles one call of `f`: per kernel name the calls and time. */
export async function profileOnce(f: () => void | Promise<void>, shapesOf?: string): Promise<StepProfile> {
  const t0 = performance.now();
  const info = await tf.profile(f);
  const wallMs = performance.now() - t0;
  // Ops built with customGrad (ours and tf.fused.*) appear as scopes around their kernels;
  // counting them would count those kernels twice.
  const backendName = tf.getBackend();
  const isKernel = (name: string) => tf.getKernel(name, backendName) !== undefined;
  const by = new Map<string, { calls: number; ms: number }>();
  const shapes = new Map<string, { calls: number; ms: number }>();
  let scopes = 0;
  for (const k of info.kernels) {
    if (!isKernel(k.name)) {
      scopes += 1;
      continue;
    }
    const ms = typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
    const s = by.get(k.name) ?? { calls: 0, ms: 0 };
    s.calls += 1;
    s.ms += ms;
    by.set(k.name, s);
    if (k.name === shapesOf) {
      const sig = `${k.inputShapes.map((sh) => `[${sh?.join(',')}]`).join(' ')} → ${k.outputShapes.map((sh) => `[${sh?.join(',')}]`).join(' ')}`;
      const e = shapes.get(sig) ?? { calls: 0, ms: 0 };
      e.calls += 1;
      e.ms += ms;
      shapes.set(sig, e);
    }
  }
  const kernels = [...by].map(([name, s]) => ({ name, ...s })).sort((a, b) => b.ms - a.ms);
  return { wallMs, kernelMs: kernels.reduce((a, k) => a + k.ms, 0), calls: info.kernels.length - scopes, scopes, kernels, shapes };
}

/** Profiles the training step after `warmup` unprofiled ones. */
export async function profileStep(b: BenchConfig, warmup = 2, shapesOf?: string): Promise<StepProfile> {
  const fx = trainFixture(b);
  const key = keyFromSeed(7);
  for (let i = 0; i < warmup; i++) await fx.trainer.step(fx.x0, fx.y, foldIn(key, i));
  const p = await profileOnce(async () => {
    await fx.trainer.step(fx.x0, fx.y, foldIn(key, warmup));
  }, shapesOf);
  fx.dispose();
  return p;
}

export function formatProfile(title: string, p: StepProfile, top: number): string {
  const lines = [`${title}: ${p.calls} kernel calls (+${p.scopes} op scopes), ${p.kernelMs.toFixed(0)} ms in kernels, ${p.wallMs.toFixed(0)} ms wall (profiled)`];
  lines.push(`  ${'kernel'.padEnd(24)} ${'calls'.padStart(6)} ${'ms'.padStart(9)} ${'%'.padStart(6)}`);
  for (const k of p.kernels.slice(0, top)) {
    lines.push(`  ${k.name.padEnd(24)} ${String(k.calls).padStart(6)} ${k.ms.toFixed(1).padStart(9)} ${((100 * k.ms) / p.kernelMs).toFixed(1).padStart(6)}`);
  }
  for (const [sig, e] of [...p.shapes].sort((a, b) => b[1].ms - a[1].ms).slice(0, top)) {
    lines.push(`    ${String(e.calls).padStart(4)}× ${e.ms.toFixed(1).padStart(8)} ms  ${sig}`);
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { backend: { type: 'string', default: 'wasm' }, threads: { type: 'string' }, native: { type: 'boolean', default: false }, top: { type: 'string', default: '25' }, shapes: { type: 'string' } },
  });
  const names = positionals.length > 0 ? positionals : ['main', 's2'];
  for (const n of names) if (!isBenchConfigName(n)) throw new Error(`unknown config "${n}"; expected one of ${Object.keys(BENCH_CONFIGS).join(', ')}`);
  const info = await initBackend({ prefer: values.backend as BackendName, ...(values.threads ? { threads: Number(values.threads) } : {}) });
  registerMissingKernels();
  const native = values.native ? `, ${enableNativeKernels().reason}` : '';
  console.log(`backend ${info.name}${info.name === 'wasm' ? `, ${String(info.detail.threads)} thread(s)` : ''}${native}`);
  for (const n of names) {
    const b = BENCH_CONFIGS[n as keyof typeof BENCH_CONFIGS];
    const p = await profileStep(b, 2, values.shapes);
    console.log(formatProfile(b.name, p, Number(values.top)));
    console.log(`  live tensors after: ${tf.memory().numTensors}`);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
