// Matrix products and an MDT-S/2 training step on the wasm backend, with and without the
// native kernels (runtime/native.ts). The wasm pool size is fixed once per process, so every
// setting runs in its own child process; settings are interleaved over several rounds and
// the median round is reported, to damp the load other processes put on the machine.
//   npx tsx bench/native-matmul.ts [--rounds 3] [--steps 3] [--batch 8] [--no-step] [--no-matmul]
// GFLOP/s counts 2·m·n·k per product; the step is MDT-S/2 on a batch of 32×32×4 latents,
// full and masked branch, AdamW with EMA. MDT_NATIVE_ISA=avx2 measures the AVX2 kernel on a
// CPU that also has AVX-512.

import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { initParams } from '../compile/init.ts';
import { compileTraining } from '../compile/train.ts';
import { initBackend } from '../runtime/backend.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { enableNativeKernels } from '../runtime/native.ts';
import { foldIn, keyFromSeed, normal } from '../dsl/random.ts';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';

interface Product {
  readonly name: string;
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly ta: boolean;
  readonly tb: boolean;
}

// MDT-S/2 at batch 8: 2048 tokens of width 384; qkv 384→1152, MLP 384→1536→384. Each
// forward product y = x·W (x m×k) has the gradient forms dx = dy·Wᵀ and dW = xᵀ·dy.
const PRODUCTS: readonly Product[] = [
  { name: '1024² nn', m: 1024, n: 1024, k: 1024, ta: false, tb: false },
  { name: 'qkv x·W (2048,384)→1152', m: 2048, n: 1152, k: 384, ta: false, tb: false },
  { name: 'qkv dx = dy·Wᵀ', m: 2048, n: 384, k: 1152, ta: false, tb: true },
  { name: 'qkv dW = xᵀ·dy', m: 384, n: 1152, k: 2048, ta: true, tb: false },
  { name: 'fc1 x·W (2048,384)→1536', m: 2048, n: 1536, k: 384, ta: false, tb: false },
  { name: 'fc1 dx = dy·Wᵀ', m: 2048, n: 384, k: 1536, ta: false, tb: true },
  { name: 'fc1 dW = xᵀ·dy', m: 384, n: 1536, k: 2048, ta: true, tb: false },
  { name: 'fc2 x·W (2048,1536)→384', m: 2048, n: 384, k: 1536, ta: false, tb: false },
];

interface Setting {
  readonly label: string;
  readonly wasmThreads: number;
  /** 0: the wasm backend's own kernels. */
  readonly nativeThreads: number;
}

const MATMUL_SETTINGS: readonly Setting[] = [
  { label: 'wasm 1 thread', wasmThreads: 1, nativeThreads: 0 },
  { label: 'wasm 2 threads', wasmThreads: 2, nativeThreads: 0 },
  { label: 'native 1 thread', wasmThreads: 2, nativeThreads: 1 },
  { label: 'native 2 threads', wasmThreads: 2, nativeThreads: 2 },
];
const STEP_SETTINGS: readonly Setting[] = [
  { label: 'wasm 2 threads', wasmThreads: 2, nativeThreads: 0 },
  { label: 'wasm 2 threads + native 2 threads', wasmThreads: 2, nativeThreads: 2 },
];

async function start(s: Setting): Promise<string> {
  const info = await initBackend({ prefer: 'wasm', threads: s.wasmThreads });
  if (info.detail.threads !== s.wasmThreads) throw new Error(`asked for ${s.wasmThreads} wasm threads, got ${String(info.detail.threads)}`);
  registerMissingKernels();
  if (s.nativeThreads === 0) return 'wasm';
  const n = enableNativeKernels({ threads: s.nativeThreads });
  if (!n.enabled) throw new Error(`native kernels unavailable: ${n.reason}`);
  return n.isa;
}

/** GFLOP/s of each product: repeated until 0.5 s have passed, after two warm-up runs. */
async function measureProducts(s: Setting): Promise<{ kernel: string; gflops: Record<string, number> }> {
  const kernel = await start(s);
  const out: Record<string, number> = {};
  PRODUCTS.forEach((p, i) => {
    const key = foldIn(keyFromSeed(0), i);
    const a = tf.tensor2d(normal(foldIn(key, 0), p.m * p.k), p.ta ? [p.k, p.m] : [p.m, p.k]);
    const b = tf.tensor2d(normal(foldIn(key, 1), p.k * p.n), p.tb ? [p.n, p.k] : [p.k, p.n]);
    // wasm kernels run synchronously inside the op: no read-back is needed to time them.
    const run = () => tf.tidy(() => {
      tf.matMul(a, b, p.ta, p.tb);
    });
    run();
    run();
    let reps = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < 500) {
      run();
      reps += 1;
    }
    const seconds = (performance.now() - t0) / 1000 / reps;
    out[p.name] = (2 * p.m * p.n * p.k) / seconds / 1e9;
    tf.dispose([a, b]);
  });
  return { kernel, gflops: out };
}

/** Milliseconds of each of `steps` MDT-S/2 training steps, after one warm-up step. */
async function measureStep(s: Setting, steps: number, batch: number): Promise<number[]> {
  await start(s);
  const config = namedConfig('MDT-S/2');
  const model = buildModel(config);
  const init = initParams(model.params, keyFromSeed(0));
  const trainer = compileTraining(model, init, { optimizer: { kind: 'adamw', lr: 3e-4 }, emaDecay: 0.9999 });
  tf.dispose([...init.values()]);
  const x0 = tf.tensor4d(normal(keyFromSeed(1), batch * config.inChannels * config.inputSize ** 2), [batch, config.inChannels, config.inputSize, config.inputSize]);
  const y = Int32Array.from({ length: batch }, (_, i) => i % config.numClasses);
  const key = keyFromSeed(2);
  await trainer.step(x0, y, foldIn(key, 0));
  const times: number[] = [];
  for (let i = 1; i <= steps; i++) {
    const t0 = performance.now();
    await trainer.step(x0, y, foldIn(key, i));
    times.push(performance.now() - t0);
  }
  trainer.dispose();
  x0.dispose();
  return times;
}

/** The child's JSON result, or the last line it printed when it failed. */
function child(kind: 'matmul' | 'step', s: Setting, steps: number, batch: number): { ok: true; value: unknown } | { ok: false; error: string } {
  const args = ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', kind, String(s.wasmThreads), String(s.nativeThreads), String(steps), String(batch)];
  const env = { ...process.env, MDT_BACKEND: '', MDT_WASM_THREADS: '', MDT_NATIVE_THREADS: '', MDT_NATIVE: '' };
  try {
    const out = execFileSync(process.execPath, args, { encoding: 'utf8', env, stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 << 20 });
    return { ok: true, value: JSON.parse(out.trim().split('\n').at(-1) ?? '') as unknown };
  } catch (e) {
    const err = e as { stderr?: string; message?: string };
    const lines = (err.stderr ?? err.message ?? '').split('\n').map((l) => l.trim()).filter((l) => /error/i.test(l) && l.length < 300);
    return { ok: false, error: lines.at(-1) ?? 'the child process failed' };
  }
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

if (process.argv[2] === '--child') {
  const [kind, wasmThreads, nativeThreads, steps, batch] = process.argv.slice(3) as [string, string, string, string, string];
  const s: Setting = { label: '', wasmThreads: Number(wasmThreads), nativeThreads: Number(nativeThreads) };
  const result = kind === 'step' ? await measureStep(s, Number(steps), Number(batch)) : await measureProducts(s);
  console.log(JSON.stringify(result));
} else {
  const { values } = parseArgs({
    options: {
      rounds: { type: 'string', default: '3' },
      steps: { type: 'string', default: '3' },
      batch: { type: 'string', default: '8' },
      'no-step': { type: 'boolean', default: false },
      'no-matmul': { type: 'boolean', default: false },
    },
  });
  const rounds = Number(values.rounds);
  const steps = Number(values.steps);
  const batch = Number(values.batch);
  for (const [name, v] of [['rounds', rounds], ['steps', steps], ['batch', batch]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} must be a positive integer, got ${String(values[name])}`);
  }
  if (!values['no-matmul']) {
    const samples = new Map<string, Map<string, number[]>>();
    const kernels = new Set<string>();
    for (let r = 0; r < rounds; r++) {
      for (const s of MATMUL_SETTINGS) {
        const out = child('matmul', s, 0, 0);
        if (!out.ok) throw new Error(`${s.label}: ${out.error}`);
        const res = out.value as { kernel: string; gflops: Record<string, number> };
        if (s.nativeThreads > 0) kernels.add(res.kernel);
        const per = samples.get(s.label) ?? new Map<string, number[]>();
        for (const [name, g] of Object.entries(res.gflops)) per.set(name, [...(per.get(name) ?? []), g]);
        samples.set(s.label, per);
      }
    }
    console.log(`GFLOP/s, median of ${rounds} round(s) (tf.matMul on the wasm backend, float32; native kernel: ${[...kernels].join(', ')})`);
    console.log(`${'product (m,k)→n'.padEnd(28)}${MATMUL_SETTINGS.map((s) => s.label.padStart(18)).join('')}`);
    for (const p of PRODUCTS) {
      const cells = MATMUL_SETTINGS.map((s) => median(samples.get(s.label)!.get(p.name)!).toFixed(1).padStart(18));
      console.log(`${p.name.padEnd(28)}${cells.join('')}`);
    }
  }
  if (!values['no-step']) {
    const times = new Map<string, number[]>();
    const failed = new Map<string, string>();
    for (let r = 0; r < rounds; r++) {
      for (const s of STEP_SETTINGS) {
        if (failed.has(s.label)) continue;
        const res = child('step', s, steps, batch);
        if (res.ok) times.set(s.label, [...(times.get(s.label) ?? []), ...(res.value as number[])]);
        else failed.set(s.label, res.error);
      }
    }
    console.log(`MDT-S/2 training step (batch ${batch}, 32×32×4, full + masked, AdamW + EMA): median of ${rounds}×${steps} steps`);
    for (const s of STEP_SETTINGS) {
      const t = times.get(s.label) ?? [];
      const f = failed.get(s.label);
      const line = t.length > 0 ? `${median(t).toFixed(0).padStart(7)} ms/step  (min ${Math.min(...t).toFixed(0)}, max ${Math.max(...t).toFixed(0)})` : '';
      console.log(`  ${s.label.padEnd(36)} ${line}${f === undefined ? '' : `  failed: ${f}`}`);
    }
  }
}
