// `npm run bench [-- --full] [--configs tiny,main,s2,dit-s2] [--variants wasm-threads,wasm-1,wasm-native,wasm-1-native,cpu,webgpu] [--no-write]`
//
// Training step (full + masked branch, AdamW, EMA) and DDPM sampling with CFG for the tiny
// MDT, the main job's pixel MDT, MDT-S/2 and DiT-S/2 at batch 8, on every backend present:
// the threaded wasm build, single-thread wasm, each with the native product kernels when they
// are built (runtime/native.ts; wasm-1-native is the runtime's default), the cpu backend (tiny config only, it runs
// ~0.6 GFLOP/s), and webgpu when its packages and an adapter are there (not the S/2 configs
// on a software adapter). A measurement, not a test: it prints a table, the MDT/DiT step-cost
// ratio and each S/2 step's ratio to the official PyTorch time the perf issue measured, and
// writes a JSON record to bench/results/. Each (variant, config) runs in its own child
// process, since the wasm thread count is fixed per process and peak RSS is per process.
//
// --quick (the default, ~6 minutes on 2 cores) runs few steps (for the S/2 configs one, after
// one warm-up, on two variants: single steps vary by ±20%) and samples 10 respaced steps (1 for
// S/2); --full runs more (5 S/2 steps) and samples 250 (20 for S/2).
// Sampling is reported per step and scaled to 250 steps. Medians throughout; the load average
// is recorded because other processes on the machine skew wall times.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { availableBackends, initBackend, webgpuAvailable, type BackendName } from '../runtime/backend.ts';
import { writeFileAtomic } from '../formats/atomic-write.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { nativeKernelsStatus, enableNativeKernels } from '../runtime/native.ts';
import { WASM_MAX_THREADS } from '../runtime/backend-wasm.ts';
import { BENCH_CONFIGS, isBenchConfigName, trainFixture, type BenchConfigName } from './configs.ts';
import { measureConfig, type ConfigResult, type Counts } from './measure.ts';

const THREADS = Math.min(availableParallelism(), WASM_MAX_THREADS);
// `native`: products and fused kernels on the native addon (runtime/native.ts); runtime/start.ts
// starts wasm-1-native when the addon is built, wasm-threads when it is not.
const VARIANTS = {
  'wasm-threads': { backend: 'wasm', threads: THREADS, native: false },
  'wasm-1': { backend: 'wasm', threads: 1, native: false },
  'wasm-native': { backend: 'wasm', threads: THREADS, native: true },
  'wasm-1-native': { backend: 'wasm', threads: 1, native: true },
  cpu: { backend: 'cpu', threads: 1, native: false },
  // Only when `webgpu` and `@tensorflow/tfjs-backend-webgpu` are installed and an adapter exists.
  webgpu: { backend: 'webgpu', threads: 1, native: false },
} as const satisfies Record<string, { backend: BackendName; threads: number; native: boolean }>;
type Variant = keyof typeof VARIANTS;

const COUNTS: Record<'quick' | 'full', Record<BenchConfigName, Counts>> = {
  quick: {
    tiny: { warmup: 2, steps: 10, branchReps: 5, sampleSteps: 10, sampleImages: 8 },
    main: { warmup: 1, steps: 3, branchReps: 2, sampleSteps: 10, sampleImages: 8 },
    // One unprofiled step first: the step right after the profiled one pays for its garbage.
    s2: { warmup: 1, steps: 1, branchReps: 1, sampleSteps: 1, sampleImages: 8 },
    'dit-s2': { warmup: 1, steps: 1, branchReps: 1, sampleSteps: 1, sampleImages: 8 },
  },
  full: {
    tiny: { warmup: 3, steps: 50, branchReps: 10, sampleSteps: 250, sampleImages: 8 },
    main: { warmup: 2, steps: 10, branchReps: 5, sampleSteps: 250, sampleImages: 8 },
    s2: { warmup: 1, steps: 5, branchReps: 2, sampleSteps: 20, sampleImages: 8 },
    'dit-s2': { warmup: 1, steps: 5, branchReps: 2, sampleSteps: 20, sampleImages: 8 },
  },
};

interface ChildResult extends ConfigResult {
  readonly variant: Variant;
  readonly key: BenchConfigName;
  readonly backend: Record<string, string | number | boolean>;
}

async function child(variant: Variant, name: BenchConfigName, mode: 'quick' | 'full'): Promise<void> {
  const v = VARIANTS[variant];
  const info = await initBackend({ prefer: v.backend, threads: v.threads });
  registerMissingKernels();
  if (v.native) {
    const native = enableNativeKernels();
    if (!native.enabled) throw new Error(`bench: variant ${variant} needs the native kernels: ${native.reason}`);
    info.detail.native = native.reason;
  }
  const b = BENCH_CONFIGS[name];
  const fx = trainFixture(b);
  const r = await measureConfig(b, fx, COUNTS[mode][name]);
  fx.dispose();
  const out: ChildResult = { ...r, variant, key: name, backend: { name: info.name, ...info.detail } };
  console.log(JSON.stringify(out));
}

function runChild(variant: Variant, name: BenchConfigName, mode: string): ChildResult {
  const stdout = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', variant, name, mode], {
    encoding: 'utf8',
    env: { ...process.env, MDT_BACKEND: '', MDT_WASM_THREADS: '', MDT_NATIVE: '', MDT_NATIVE_THREADS: '' },
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 24,
  });
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as ChildResult;
}

const f1 = (v: number) => v.toFixed(1);
const f0 = (v: number) => v.toFixed(0);

const fx = (v: number) => `${v.toFixed(2)}×`;

/** The newest bench/pytorch record in bench/results (pytorch-*.json), if any. */
interface TorchRecord {
  readonly file: string;
  readonly date: string;
  readonly results: Record<string, { median_ms: number }>;
}

function latestTorchRecord(dir: string): TorchRecord | null {
  if (!existsSync(dir)) return null;
  const records = readdirSync(dir)
    .filter((f) => /^pytorch-.*\.json$/.test(f))
    .map((file) => ({ file, ...(JSON.parse(readFileSync(join(dir, file), 'utf8')) as Omit<TorchRecord, 'file'>) }))
    .sort((a, b) => a.date.localeCompare(b.date));
  return records.at(-1) ?? null;
}

function torchHereMs(torch: TorchRecord | null, key: BenchConfigName): number | undefined {
  const item = BENCH_CONFIGS[key].pytorchItem;
  return item === undefined ? undefined : torch?.results[item]?.median_ms;
}

function table(rows: readonly ChildResult[], torch: TorchRecord | null): string {
  const head = ['config', 'backend', 'train ms/step', '÷ PyTorch (issue)', '÷ PyTorch (here)', 'cpu ms', 'GFLOP/s', 'kernels', 'tensors', 'RSS MB', 'masked/full (FLOPs)', 'sample ms/step', 'GFLOP/s', '250 steps s'];
  const body = rows.map((r) => {
    const issue = BENCH_CONFIGS[r.key].pytorchIssueMs;
    const here = torchHereMs(torch, r.key);
    return [
      r.key, backendLabel(r),
      f0(r.trainMs.wallMs), issue === undefined ? '–' : fx(r.trainMs.wallMs / issue), here === undefined ? '–' : fx(r.trainMs.wallMs / here), f0(r.trainMs.cpuMs), f1(r.trainGflops), String(r.kernelsPerStep), `${r.liveTensors}${r.tensorGrowth ? ` (+${r.tensorGrowth})` : ''}`,
      f0(r.peakRssMb), r.maskedBranchMs === null ? '–' : `${(r.maskedBranchMs.wallMs / r.fullBranchMs.wallMs).toFixed(2)} (${r.flopRatio.toFixed(2)})`, f1(r.sampleStepMs.wallMs), f1(r.sampleGflops), f0(r.sample250s),
    ];
  });
  const widths = head.map((_, i) => Math.max(...[head, ...body].map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((v, i) => (i < 2 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...body.map(line)].join('\n');
}

function backendLabel(r: ChildResult): string {
  if (r.backend.name === 'wasm') return `${r.variant} (${String(r.backend.threads)}t)`;
  if (r.backend.name === 'webgpu') return `webgpu (${r.backend.software === true ? 'software' : String(r.backend.adapter)})`;
  return r.variant;
}

/**
 * The issue's target: an MDT step (both branches) should cost at most 1.8× a DiT step of the
 * same size; the official code's costs 13.5 s / 6.65 s = 2.03×.
 */
function mdtOverDit(rows: readonly ChildResult[], torch: TorchRecord | null): string[] {
  const issue = BENCH_CONFIGS.s2.pytorchIssueMs! / BENCH_CONFIGS['dit-s2'].pytorchIssueMs!;
  const [mdtHere, ditHere] = [torchHereMs(torch, 's2'), torchHereMs(torch, 'dit-s2')];
  const here = mdtHere !== undefined && ditHere !== undefined ? `, PyTorch here ${fx(mdtHere / ditHere)}` : '';
  return [...new Set(rows.map((r) => r.variant))].flatMap((v) => {
    const mdt = rows.find((r) => r.variant === v && r.key === 's2');
    const dit = rows.find((r) => r.variant === v && r.key === 'dit-s2');
    if (mdt === undefined || dit === undefined) return [];
    return [`MDT-S/2 ÷ DiT-S/2 train step on ${v}: ${fx(mdt.trainMs.wallMs / dit.trainMs.wallMs)} (official PyTorch in the issue ${fx(issue)}${here}; target ≤ 1.80×)`];
  });
}

/** Whether the native kernels can run here (checked in a child, as enabling them is per process). */
function nativeAvailable(): boolean {
  if (process.env.MDT_NATIVE?.trim() === '0') return false;
  const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--native-check'], { encoding: 'utf8', env: { ...process.env, MDT_NATIVE: '' } });
  return out.trim().split('\n').at(-1) === 'true';
}

function resultPath(dir: string): string {
  const date = new Date().toISOString().slice(0, 10);
  let path = join(dir, `${date}.json`);
  for (let i = 2; existsSync(path); i++) path = join(dir, `${date}-${i}.json`);
  return path;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      full: { type: 'boolean', default: false },
      configs: { type: 'string', default: 'tiny,main,s2,dit-s2' },
      variants: { type: 'string' },
      'no-write': { type: 'boolean', default: false },
    },
  });
  if (values.quick && values.full) throw new Error('bench: pass --quick or --full, not both');
  const mode = values.full ? 'full' : 'quick';
  const configs = values.configs.split(',').map((s) => s.trim());
  for (const c of configs) if (!isBenchConfigName(c)) throw new Error(`bench: unknown config "${c}"; expected any of ${Object.keys(BENCH_CONFIGS).join(', ')}`);
  // Variants named on the command line all run; the default list is trimmed for the S/2 configs in quick mode.
  const chosen = values.variants !== undefined;
  const variants = (values.variants ?? Object.keys(VARIANTS).join(',')).split(',').map((s) => s.trim());
  for (const v of variants) if (!(v in VARIANTS)) throw new Error(`bench: unknown variant "${v}"; expected any of ${Object.keys(VARIANTS).join(', ')}`);
  const available = await availableBackends();
  const nativeBuilt = nativeAvailable();
  const gpu = variants.includes('webgpu') ? await webgpuAvailable() : null;
  if (gpu !== null && !gpu.ok) process.stderr.write(`bench: webgpu skipped: ${gpu.error}\n`);
  const plan = (variants as Variant[]).filter(
    (v) => available.includes(VARIANTS[v].backend) && (VARIANTS[v].threads > 1 || !(v === 'wasm-threads' || v === 'wasm-native')) && (!VARIANTS[v].native || nativeBuilt) && (v !== 'webgpu' || gpu?.ok === true),
  );

  const load0 = loadavg();
  const started = performance.now();
  const rows: ChildResult[] = [];
  for (const name of configs as BenchConfigName[]) {
    for (const v of plan) {
      if (v === 'cpu' && name !== 'tiny') continue;
      const large = name === 's2' || name === 'dit-s2';
      // S/2 steps take ~10-40 s on wasm: quick mode runs them on single-thread wasm and the default runtime only.
      if (mode === 'quick' && !chosen && large && v !== 'wasm-1' && v !== 'webgpu' && v !== (nativeBuilt ? 'wasm-1-native' : 'wasm-threads')) continue;
      // A software adapter (lavapipe) runs ~1.5 GFLOP/s: an S/2 step would take minutes.
      if (v === 'webgpu' && large && gpu?.ok === true && gpu.detail.software === true) continue;
      process.stderr.write(`bench (${mode}): ${name} on ${v} …\n`);
      rows.push(runChild(v, name, mode));
    }
  }
  console.log(`\n${mode} mode: medians of ${configs.map((c) => `${c} ${COUNTS[mode][c as BenchConfigName].steps}`).join(', ')} train steps; sampling ${configs.map((c) => `${c} ${COUNTS[mode][c as BenchConfigName].sampleSteps}`).join(', ')} respaced DDPM steps with CFG on 8 images (16 rows), scaled to 250`);
  const resultsDir = join(dirname(fileURLToPath(import.meta.url)), 'results');
  const torch = latestTorchRecord(resultsDir);
  console.log(table(rows, torch));
  for (const l of mdtOverDit(rows, torch)) console.log(l);
  console.log(torch === null
    ? 'PyTorch here: no bench/results/pytorch-*.json (run bench/pytorch/bench_step.py, see its README)'
    : `PyTorch here: ${torch.file} (${torch.date}), the spec-faithful port in bench/pytorch checked against the official fixtures`);
  console.log(`load average ${load0.map((l) => l.toFixed(2)).join(' ')} at start, ${loadavg().map((l) => l.toFixed(2)).join(' ')} at end; ${((performance.now() - started) / 1000).toFixed(0)} s`);
  if (!values['no-write']) {
    mkdirSync(resultsDir, { recursive: true });
    const path = resultPath(resultsDir);
    const record = {
      date: new Date().toISOString(),
      mode,
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version, tfjs: tf.version_core, loadavgStart: load0, loadavgEnd: loadavg() },
      results: rows.map(({ trainSamples, ...r }) => ({ ...r, trainWallMs: trainSamples.map((t) => Math.round(t.wallMs)) })),
      pytorchHere: torch === null ? null : { file: torch.file, date: torch.date },
    };
    await writeFileAtomic(path, `${JSON.stringify(record, null, 1)}\n`);
    console.log(`wrote ${path}`);
  }
}

if (process.argv[2] === '--child') {
  await child(process.argv[3] as Variant, process.argv[4] as BenchConfigName, process.argv[5] as 'quick' | 'full');
} else if (process.argv[2] === '--native-check') {
  await initBackend({ prefer: 'wasm', threads: 1 });
  console.log(String(enableNativeKernels().enabled && nativeKernelsStatus().enabled));
} else {
  await main();
}
