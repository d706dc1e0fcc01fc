// `npm run bench [-- --full] [--configs tiny,main,s2,dit-s2] [--variants wasm-threads,wasm-1,wasm-native,wasm-1-native,cpu,webgpu]
//                   [--no-torch | --torch-json FILE] [--no-compile] [--flat [--flat-steps 200]] [--no-write]`
// `npm run bench -- --xl [...]`: sampling an official-size checkpoint instead (bench/sample-xl.ts).
//
// The project side by side with the official code's PyTorch port (bench/pytorch), in one run:
//
//   * main-job training step: `npm start`'s model (a DiT d4 D96, 4 heads, patch 4, 32×32×1, 10
//     classes; records before 2026-12-03's second half time the MDT v1 of that size, the main job
//     before), batch 32, AdamW + EMA;
//   * main-job sampling: 250 respaced DDPM steps of 2 images with CFG (constant w = 4; 4 rows with
//     the null half), timed end to end; and the same on `mdt sample --engine onnx`'s path (the
//     guided denoiser exported to ONNX with the sampler's update appended, run by
//     onnxruntime-node);
//   * MDT-S/2 and DiT-S/2 training steps at batch 8;
//
// ours on the runtime's default backend (runtime/start.ts: wasm-1-native when the native addon is
// built, else wasm-threads; webgpu on a hardware adapter), PyTorch eager and PyTorch with the
// model's forward under torch.compile (a failed compile shows its error instead of a number), the
// ratios, and the perf issue's targets marked met or missed:
//   main-job train ≤ 0.7× eager, sampling ≤ 0.5× eager (onnx engine ≤ 0.3×), MDT-S/2 ≤ 0.9× compile,
//   DiT-S/2 ≤ 1.0× compile, and an MDT-S/2 step ≤ 1.8× a DiT-S/2 step (ours).
// PyTorch runs first (bench/pytorch/bench_step.py with `python3`, or /usr/bin/python3, or
// $MDT_BENCH_PYTHON; its fixture check first); where no python can import torch the run says so
// and measures our side only. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from its
// environment (they force an older kernel).
//
// Our side also gets the per-backend detail table: training step (full + masked branch, AdamW,
// EMA) and DDPM sampling with CFG for the tiny MDT, the main job, MDT-S/2 and DiT-S/2, on every
// backend present: the threaded wasm build, single-thread wasm, each with the native product
// kernels when they are built (runtime/native.ts), the cpu backend (tiny config only, it runs
// ~0.6 GFLOP/s), and webgpu when its packages and an adapter are there (not the S/2 configs on a
// software adapter). Each (variant, config) runs in its own child process, since the wasm thread
// count is fixed per process and peak RSS is per process.
//
// --quick (the default, ≲ 10 minutes on 2 quiet cores, most of the PyTorch part is torch.compile
// compiling) runs few steps: the S/2 configs one step after one warm-up, on the default runtime
// only (single steps vary by ±20%), the main job 3, PyTorch's S/2 items one; the main job's
// 250-step sampling once. --full runs more (5 S/2 steps, 3 sampling runs, every variant).
// Per-step sampling in the detail table runs 10 (quick) or 250 (full) respaced steps on 8 images
// (1 and 20 for S/2) and is scaled to 250. Medians throughout; the load average is recorded,
// because other processes skew wall times (and, on a loaded machine, multi-threaded PyTorch badly).
// --flat adds the leak check: 200 training steps of the tiny config on the default runtime; live
// tensors, tfjs bytes, JS heap and RSS (after a full GC) at steps 10, 100 and 200.
// Everything goes to a JSON record in bench/results/ (and PyTorch's own record next to it).

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { availableBackends, initBackend, webgpuAvailable, type BackendName } from '../runtime/backend.ts';
import { writeFileAtomic } from '../formats/atomic-write.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { nativeKernelsStatus, enableNativeKernels } from '../runtime/native.ts';
import { WASM_MAX_THREADS } from '../runtime/backend-wasm.ts';
import { foldIn, keyFromSeed } from '../dsl/random.ts';
import { BENCH_CONFIGS, isBenchConfigName, trainFixture, type BenchConfigName } from './configs.ts';
import { CFG_SCALE, measureConfig, type ConfigResult, type Counts } from './measure.ts';
import { xlBench } from './sample-xl.ts';

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
type Mode = 'quick' | 'full';

/** The main job's end-to-end sampling item: 250 DDPM steps, 2 images (4 rows with CFG). */
const E2E = { images: 2, steps: 250, scale: CFG_SCALE };

const COUNTS: Record<Mode, Record<BenchConfigName, Counts>> = {
  quick: {
    tiny: { warmup: 2, steps: 10, branchReps: 5, sampleSteps: 10, sampleImages: 8 },
    main: { warmup: 1, steps: 3, branchReps: 2, sampleSteps: 10, sampleImages: 8, e2e: { ...E2E, runs: 1 } },
    // One unprofiled step first: the step right after the profiled one pays for its garbage.
    s2: { warmup: 1, steps: 1, branchReps: 1, sampleSteps: 1, sampleImages: 8 },
    'dit-s2': { warmup: 1, steps: 1, branchReps: 1, sampleSteps: 1, sampleImages: 8 },
  },
  full: {
    tiny: { warmup: 3, steps: 50, branchReps: 10, sampleSteps: 250, sampleImages: 8 },
    main: { warmup: 2, steps: 10, branchReps: 5, sampleSteps: 250, sampleImages: 8, e2e: { ...E2E, runs: 3 } },
    s2: { warmup: 1, steps: 5, branchReps: 2, sampleSteps: 20, sampleImages: 8 },
    'dit-s2': { warmup: 1, steps: 5, branchReps: 2, sampleSteps: 20, sampleImages: 8 },
  },
};

/** bench_step.py's counts: --steps (main job), --s2-steps, --sample-runs. */
const TORCH_COUNTS: Record<Mode, { steps: number; s2Steps: number; sampleRuns: number; warmup: number }> = {
  quick: { steps: 3, s2Steps: 1, sampleRuns: 1, warmup: 1 },
  full: { steps: 10, s2Steps: 5, sampleRuns: 3, warmup: 1 },
};

/** bench_step.py's items (--only letters) for each config. */
const TORCH_ITEMS: Record<BenchConfigName, readonly string[]> = { tiny: [], main: ['e', 'f'], s2: ['a'], 'dit-s2': ['b'] };
const EXIT_NO_TORCH = 3;
const OPENBLAS_FORCING_ENV = ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'];

interface ChildResult extends ConfigResult {
  readonly variant: Variant;
  readonly key: BenchConfigName;
  readonly backend: Record<string, string | number | boolean>;
}

async function startVariant(variant: Variant): Promise<Record<string, string | number | boolean>> {
  const v = VARIANTS[variant];
  const info = await initBackend({ prefer: v.backend, threads: v.threads });
  registerMissingKernels();
  if (v.native) {
    const native = enableNativeKernels();
    if (!native.enabled) throw new Error(`bench: variant ${variant} needs the native kernels: ${native.reason}`);
    info.detail.native = native.reason;
  }
  return { name: info.name, ...info.detail };
}

async function child(variant: Variant, name: BenchConfigName, mode: Mode, e2e: boolean): Promise<void> {
  const backend = await startVariant(variant);
  const b = BENCH_CONFIGS[name];
  const fx = trainFixture(b);
  const { e2e: e, ...counts } = COUNTS[mode][name];
  const r = await measureConfig(b, fx, e2e && e !== undefined ? { ...counts, e2e: e } : counts);
  fx.dispose();
  const out: ChildResult = { ...r, variant, key: name, backend };
  console.log(JSON.stringify(out));
}

const CHILD_ENV = { MDT_BACKEND: '', MDT_WASM_THREADS: '', MDT_NATIVE: '', MDT_NATIVE_THREADS: '' };

function runChild(args: readonly string[], nodeFlags: readonly string[] = []): string {
  const stdout = execFileSync(process.execPath, [...nodeFlags, '--import', 'tsx', fileURLToPath(import.meta.url), ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...CHILD_ENV },
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 24,
  });
  return stdout.trim().split('\n').at(-1)!;
}

const runConfig = (variant: Variant, name: BenchConfigName, mode: Mode, e2e: boolean): ChildResult =>
  JSON.parse(runChild(['--child', variant, name, mode, e2e ? 'e2e' : '-'])) as ChildResult;

// ---------------------------------------------------------------------------------------------
// the leak check: live tensors and memory over many steps of the tiny config
// ---------------------------------------------------------------------------------------------

interface FlatMark {
  readonly step: number;
  readonly tensors: number;
  readonly tfMb: number;
  /** After a full GC (the child runs with --expose-gc). */
  readonly rssMb: number;
  readonly heapMb: number;
  /** ArrayBuffers outside the V8 heap (the wasm memory among them). */
  readonly externalMb: number;
}

interface FlatResult {
  readonly variant: Variant;
  readonly config: string;
  readonly marks: readonly FlatMark[];
  readonly flat: boolean;
}

async function flatChild(variant: Variant, steps: number): Promise<void> {
  await startVariant(variant);
  const fx = trainFixture(BENCH_CONFIGS.tiny);
  const key = keyFromSeed(5);
  const at = new Set([Math.min(10, steps), Math.round(steps / 2), steps]);
  const marks: FlatMark[] = [];
  for (let i = 1; i <= steps; i++) {
    await fx.trainer.step(fx.x0, fx.y, foldIn(key, i));
    if (!at.has(i)) continue;
    (globalThis as { gc?: () => void }).gc?.();
    const m = tf.memory();
    const u = process.memoryUsage();
    marks.push({ step: i, tensors: m.numTensors, tfMb: m.numBytes / 2 ** 20, rssMb: u.rss / 2 ** 20, heapMb: u.heapUsed / 2 ** 20, externalMb: u.external / 2 ** 20 });
  }
  fx.dispose();
  const first = marks[0]!;
  const last = marks.at(-1)!;
  // Flat: no tensor kept per step, tfjs bytes and the JS heap unchanged (after GC), RSS within allocator noise.
  const flat = last.tensors === first.tensors && last.tfMb <= first.tfMb + 0.01 && last.heapMb - first.heapMb < 8 && last.externalMb - first.externalMb < 8
    && last.rssMb - first.rssMb < Math.max(32, 0.1 * first.rssMb);
  const out: FlatResult = { variant, config: BENCH_CONFIGS.tiny.name, marks, flat };
  console.log(JSON.stringify(out));
}

function flatLine(r: FlatResult): string {
  const m = r.marks.map((k) => `step ${k.step}: ${k.tensors} tensors, tfjs ${k.tfMb.toFixed(1)} MB, heap ${k.heapMb.toFixed(0)} MB, RSS ${k.rssMb.toFixed(0)} MB`).join('; ');
  return `flat check (${r.config}, ${r.variant}, ${r.marks.at(-1)!.step} steps): ${m} → ${r.flat ? 'flat' : 'GROWS'}`;
}

// ---------------------------------------------------------------------------------------------
// the PyTorch side: bench/pytorch/bench_step.py, run now, or a stored record
// ---------------------------------------------------------------------------------------------

interface TorchItem {
  readonly median_ms?: number;
  readonly samples_ms?: readonly number[];
  readonly warmup_ms?: readonly number[];
  readonly error?: string;
}

interface TorchRecord {
  readonly file: string;
  readonly date: string;
  readonly torch?: string;
  readonly threads?: number;
  readonly blas_build?: string | null;
  readonly fixture_check?: { readonly cases: number; readonly failed: number; readonly worst_ratio: number };
  /** Eager timings. */
  readonly results: Record<string, TorchItem>;
  /** The same items with the model's forward under torch.compile (absent in older records). */
  readonly results_compile?: Record<string, TorchItem>;
}

type TorchRun =
  | { readonly ran: true; readonly python: string; readonly record: TorchRecord; readonly exitCode: number }
  | { readonly ran: false; readonly reason: string; readonly record: TorchRecord | null };

function readTorchRecord(path: string): TorchRecord {
  return { file: path, ...(JSON.parse(readFileSync(path, 'utf8')) as Omit<TorchRecord, 'file'>) };
}

/** The newest bench/pytorch record in bench/results (pytorch-*.json), if any. */
function latestTorchRecord(dir: string): TorchRecord | null {
  if (!existsSync(dir)) return null;
  const records = readdirSync(dir)
    .filter((f) => /^pytorch-.*\.json$/.test(f))
    .map((file) => ({ ...readTorchRecord(join(dir, file)), file }))
    .sort((a, b) => a.date.localeCompare(b.date));
  return records.at(-1) ?? null;
}

const torchEnv = (): NodeJS.ProcessEnv => Object.fromEntries(Object.entries(process.env).filter(([k]) => !OPENBLAS_FORCING_ENV.includes(k)));

/** The first python that imports torch: $MDT_BENCH_PYTHON, else python3, else Debian's /usr/bin/python3. */
function findTorchPython(): { python: string; version: string } | { error: string } {
  const env = process.env.MDT_BENCH_PYTHON?.trim();
  const candidates = env ? [env] : ['python3', '/usr/bin/python3'];
  const why: string[] = [];
  for (const python of candidates) {
    const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8', env: torchEnv(), timeout: 300_000 });
    if (r.status === 0) return { python, version: r.stdout.trim() };
    why.push(`${python}: ${r.error?.message ?? (r.stderr.trim().split('\n').at(-1) || `exit ${r.status}`)}`);
  }
  return { error: why.join('; ') };
}

function runTorch(mode: Mode, configs: readonly BenchConfigName[], compile: boolean, out: string): TorchRun {
  const items = configs.flatMap((c) => TORCH_ITEMS[c]);
  if (items.length === 0) return { ran: false, reason: 'no PyTorch item among the configs', record: null };
  const found = findTorchPython();
  if ('error' in found) return { ran: false, reason: `no python here imports torch (${found.error})`, record: null };
  const n = TORCH_COUNTS[mode];
  const script = join(dirname(fileURLToPath(import.meta.url)), 'pytorch', 'bench_step.py');
  const args = [
    script, '--only', items.join(','), '--modes', compile ? 'eager,compile' : 'eager', '--threads', String(availableParallelism()),
    '--steps', String(n.steps), '--s2-steps', String(n.s2Steps), '--sample-runs', String(n.sampleRuns), '--warmup', String(n.warmup),
    '--sample-steps', String(E2E.steps), '--sample-images', String(E2E.images), '--cfg-scale', String(E2E.scale), '--out', out,
  ];
  process.stderr.write(`bench (${mode}): PyTorch ${found.version} (${found.python}) items ${items.join(',')}${compile ? ', eager and torch.compile' : ', eager'} …\n`);
  // Its stdout goes to our stderr: our stdout keeps the tables.
  const r = spawnSync(found.python, args, { env: torchEnv(), stdio: ['ignore', 2, 2] });
  if (r.status === EXIT_NO_TORCH) return { ran: false, reason: `${found.python} cannot import torch`, record: null };
  if (!existsSync(out)) return { ran: false, reason: `bench_step.py failed (${r.error?.message ?? `exit ${r.status ?? r.signal}`}) and wrote no record`, record: null };
  return { ran: true, python: found.python, record: readTorchRecord(out), exitCode: r.status ?? -1 };
}

// ---------------------------------------------------------------------------------------------
// tables
// ---------------------------------------------------------------------------------------------

const f1 = (v: number) => v.toFixed(1);
const f0 = (v: number) => v.toFixed(0);
const fx = (v: number) => `${v.toFixed(2)}×`;
const ms = (v: number) => (v >= 100 ? f0(v) : v >= 10 ? f1(v) : v.toFixed(2));

function torchHereMs(torch: TorchRecord | null, key: BenchConfigName): number | undefined {
  const item = BENCH_CONFIGS[key].pytorchItem;
  return item === undefined ? undefined : torch?.results[item]?.median_ms;
}

function table(rows: readonly ChildResult[], torch: TorchRecord | null): string {
  const head = ['config', 'backend', 'train ms/step', '÷ PyTorch (issue)', '÷ PyTorch eager', 'cpu ms', 'GFLOP/s', 'kernels', 'tensors', 'RSS MB', 'masked/full (FLOPs)', 'sample ms/step', 'GFLOP/s', '250 steps s', '250 steps e2e s'];
  const body = rows.map((r) => {
    const issue = BENCH_CONFIGS[r.key].pytorchIssueMs;
    const here = torchHereMs(torch, r.key);
    return [
      r.key, backendLabel(r),
      f0(r.trainMs.wallMs), issue === undefined ? '–' : fx(r.trainMs.wallMs / issue), here === undefined ? '–' : fx(r.trainMs.wallMs / here), f0(r.trainMs.cpuMs), f1(r.trainGflops), String(r.kernelsPerStep), `${r.liveTensors}${r.tensorGrowth ? ` (+${r.tensorGrowth})` : ''}`,
      f0(r.peakRssMb), r.maskedBranchMs === null ? '–' : `${(r.maskedBranchMs.wallMs / r.fullBranchMs.wallMs).toFixed(2)} (${r.flopRatio.toFixed(2)})`, f1(r.sampleStepMs.wallMs), f1(r.sampleGflops), f1(r.sample250s),
      r.sampleE2E === null ? '–' : f1(r.sampleE2E.ms.wallMs / 1000),
    ];
  });
  return render(head, body, 2);
}

function render(head: readonly string[], body: readonly (readonly string[])[], leftColumns: number): string {
  const widths = head.map((_, i) => Math.max(...[head, ...body].map((r) => r[i]!.length)));
  const line = (r: readonly string[]) => r.map((v, i) => (i < leftColumns ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join('  ').trimEnd();
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
  const here = mdtHere !== undefined && ditHere !== undefined ? `, PyTorch eager here ${fx(mdtHere / ditHere)}` : '';
  return [...new Set(rows.map((r) => r.variant))].flatMap((v) => {
    const mdt = rows.find((r) => r.variant === v && r.key === 's2');
    const dit = rows.find((r) => r.variant === v && r.key === 'dit-s2');
    if (mdt === undefined || dit === undefined) return [];
    return [`MDT-S/2 ÷ DiT-S/2 train step on ${v}: ${fx(mdt.trainMs.wallMs / dit.trainMs.wallMs)} (official PyTorch in the issue ${fx(issue)}${here}; target ≤ 1.80×)`];
  });
}

/** One line of the side-by-side table; ms, or a ratio for the MDT ÷ DiT line. */
interface SideRow {
  readonly item: string;
  readonly what: string;
  readonly unit: 'ms' | 'ratio';
  readonly ours: number | null;
  readonly oursOn: string | null;
  readonly eager: number | null;
  readonly compile: number | null;
  readonly compileError: string | null;
  readonly ratioEager: number | null;
  readonly ratioCompile: number | null;
  readonly target: { readonly against: 'eager' | 'compile' | 'ours'; readonly max: number; readonly text: string };
  readonly status: 'met' | 'missed' | 'n/a';
}

type SideItem = 'main-train' | 'main-sample' | 'main-sample-onnx' | 's2-train' | 'dit-s2-train';

const SIDE: readonly { readonly item: SideItem; readonly config: BenchConfigName; readonly torchKey: string; readonly what: string; readonly target: SideRow['target'] }[] = [
  { item: 'main-train', config: 'main', torchKey: 'main_train_step', what: 'main-job train step (DiT d4 D96 p4, b32, AdamW+EMA)', target: { against: 'eager', max: 0.7, text: '≤ 0.70× eager' } },
  { item: 'main-sample', config: 'main', torchKey: 'main_sample_250', what: `main-job sampling, ${E2E.steps} DDPM steps, CFG w=${E2E.scale}, ${E2E.images} images (${2 * E2E.images} rows), end to end`, target: { against: 'eager', max: 0.5, text: '≤ 0.50× eager' } },
  { item: 'main-sample-onnx', config: 'main', torchKey: 'main_sample_250', what: `the same on \`mdt sample --engine onnx\` (exported graph on onnxruntime-node)`, target: { against: 'eager', max: 0.3, text: '≤ 0.30× eager' } },
  { item: 's2-train', config: 's2', torchKey: 'mdt_s2_train_step', what: 'MDT-S/2 train step (b8, full+masked, AdamW+EMA)', target: { against: 'compile', max: 0.9, text: '≤ 0.90× compile' } },
  { item: 'dit-s2-train', config: 'dit-s2', torchKey: 'dit_s2_train_step', what: 'DiT-S/2 train step (b8, AdamW+EMA)', target: { against: 'compile', max: 1.0, text: '≤ 1.00× compile' } },
];

/** Our number for an item: on the default runtime's variant, else the fastest variant measured. */
function oursFor(rows: readonly ChildResult[], s: (typeof SIDE)[number], defaultVariant: Variant): { ms: number; on: string } | null {
  const value = (r: ChildResult) => {
    if (s.item === 'main-sample') return r.sampleE2E?.ms.wallMs ?? null;
    if (s.item === 'main-sample-onnx') return r.sampleE2EOnnx !== null && 'ms' in r.sampleE2EOnnx ? r.sampleE2EOnnx.ms.wallMs : null;
    return r.trainMs.wallMs;
  };
  const candidates = rows.filter((r) => r.key === s.config && value(r) !== null);
  const pick = candidates.find((r) => r.variant === defaultVariant) ?? [...candidates].sort((a, b) => value(a)! - value(b)!)[0];
  return pick === undefined ? null : { ms: value(pick)!, on: pick.variant === defaultVariant ? pick.variant : `${pick.variant} (not the default runtime)` };
}

function sideBySide(rows: readonly ChildResult[], torch: TorchRecord | null, defaultVariant: Variant): SideRow[] {
  const status = (ratio: number | null, max: number): SideRow['status'] => (ratio === null ? 'n/a' : ratio <= max ? 'met' : 'missed');
  const out: SideRow[] = SIDE.flatMap((s) => {
    const ours = oursFor(rows, s, defaultVariant);
    const e = torch?.results[s.torchKey];
    const c = torch?.results_compile?.[s.torchKey];
    if (ours === null && e === undefined && c === undefined) return [];
    const eager = e?.median_ms ?? null;
    const compile = c?.median_ms ?? null;
    const ratioEager = ours !== null && eager !== null ? ours.ms / eager : null;
    const ratioCompile = ours !== null && compile !== null ? ours.ms / compile : null;
    return [{
      item: s.item, what: s.what, unit: 'ms' as const, ours: ours?.ms ?? null, oursOn: ours?.on ?? null, eager, compile, compileError: c?.error ?? null,
      ratioEager, ratioCompile, target: s.target, status: status(s.target.against === 'eager' ? ratioEager : ratioCompile, s.target.max),
    }];
  });
  const mdt = out.find((r) => r.item === 's2-train');
  const dit = out.find((r) => r.item === 'dit-s2-train');
  if (mdt !== undefined && dit !== undefined) {
    const div = (a: number | null, b: number | null) => (a !== null && b !== null ? a / b : null);
    const ours = div(mdt.ours, dit.ours);
    out.push({
      item: 'mdt÷dit', what: 'MDT-S/2 step ÷ DiT-S/2 step', unit: 'ratio', ours, oursOn: mdt.oursOn, eager: div(mdt.eager, dit.eager), compile: div(mdt.compile, dit.compile),
      compileError: mdt.compileError ?? dit.compileError, ratioEager: null, ratioCompile: null, target: { against: 'ours', max: 1.8, text: '≤ 1.80 (ours)' }, status: status(ours, 1.8),
    });
  }
  return out;
}

function sideTable(side: readonly SideRow[]): string {
  const v = (x: number | null, unit: SideRow['unit']) => (x === null ? '–' : unit === 'ms' ? ms(x) : fx(x));
  const head = ['item', 'ours ms', 'PyTorch eager ms', 'PyTorch compile ms', 'ours/eager', 'ours/compile', 'target', 'status'];
  const body = side.map((r) => [
    r.what, v(r.ours, r.unit), v(r.eager, r.unit), r.compile === null && r.compileError !== null ? 'failed*' : v(r.compile, r.unit),
    r.ratioEager === null ? '–' : fx(r.ratioEager), r.ratioCompile === null ? '–' : fx(r.ratioCompile), r.target.text, r.status,
  ]);
  return render(head, body, 1);
}

// ---------------------------------------------------------------------------------------------

/** Whether the native kernels can run here (checked in a child, as enabling them is per process). */
function nativeAvailable(): boolean {
  if (process.env.MDT_NATIVE?.trim() === '0') return false;
  const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--native-check'], { encoding: 'utf8', env: { ...process.env, MDT_NATIVE: '' } });
  return out.trim().split('\n').at(-1) === 'true';
}

function resultPath(dir: string): string {
  const date = new Date().toISOString().slice(0, 10);
  let path = join(dir, `${date}.json`);
  for (let i = 2; existsSync(path) || existsSync(join(dir, `pytorch-${basename(path)}`)); i++) path = join(dir, `${date}-${i}.json`);
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
      'no-torch': { type: 'boolean', default: false },
      'no-compile': { type: 'boolean', default: false },
      'torch-json': { type: 'string' },
      flat: { type: 'boolean', default: false },
      'flat-steps': { type: 'string', default: '200' },
    },
  });
  if (values.quick && values.full) throw new Error('bench: pass --quick or --full, not both');
  if (values['no-torch'] && values['torch-json'] !== undefined) throw new Error('bench: pass --no-torch or --torch-json, not both');
  const mode: Mode = values.full ? 'full' : 'quick';
  const configs = values.configs.split(',').map((s) => s.trim()).filter((s) => s !== '' && s !== 'none');
  for (const c of configs) if (!isBenchConfigName(c)) throw new Error(`bench: unknown config "${c}"; expected any of ${Object.keys(BENCH_CONFIGS).join(', ')} (or none)`);
  const flatSteps = Number(values['flat-steps']);
  if (!Number.isInteger(flatSteps) || flatSteps < 10) throw new Error(`bench: --flat-steps must be an integer ≥ 10, got ${values['flat-steps']}`);
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
  // What runtime/start.ts picks: webgpu on a hardware adapter, else wasm (with the addon when built).
  const defaultVariant: Variant = gpu?.ok === true && gpu.detail.software !== true ? 'webgpu' : nativeBuilt ? 'wasm-1-native' : 'wasm-threads';

  const resultsDir = join(dirname(fileURLToPath(import.meta.url)), 'results');
  const path = values['no-write'] ? null : (mkdirSync(resultsDir, { recursive: true }), resultPath(resultsDir));
  const load0 = loadavg();
  const started = performance.now();
  if (load0[0]! > 0.5 * availableParallelism()) {
    process.stderr.write(`bench: load average ${load0[0]!.toFixed(2)} on ${availableParallelism()} cores: other processes will skew the times (multi-threaded PyTorch most)\n`);
  }

  // PyTorch first (its fixture check first of all), then our side.
  let torchRun: TorchRun;
  if (values['torch-json'] !== undefined) torchRun = { ran: false, reason: `stored record ${values['torch-json']}`, record: readTorchRecord(values['torch-json']) };
  else if (values['no-torch']) torchRun = { ran: false, reason: '--no-torch', record: null };
  else {
    const out = path === null ? join(mkdtempSync(join(tmpdir(), 'mdt-bench-')), 'pytorch.json') : join(resultsDir, `pytorch-${basename(path)}`);
    torchRun = runTorch(mode, configs as BenchConfigName[], !values['no-compile'], out);
  }
  if (!torchRun.ran && torchRun.record === null) process.stderr.write(`bench: PyTorch not measured: ${torchRun.reason}; measuring the TypeScript side only\n`);
  const torchS = (performance.now() - started) / 1000;
  const torchReason = torchRun.ran ? null : torchRun.reason;

  const rows: ChildResult[] = [];
  for (const name of configs as BenchConfigName[]) {
    for (const v of plan) {
      if (v === 'cpu' && name !== 'tiny') continue;
      const large = name === 's2' || name === 'dit-s2';
      // S/2 steps take ~5-40 s on wasm: quick mode runs them on the default runtime only.
      if (mode === 'quick' && !chosen && large && v !== defaultVariant) continue;
      // A software adapter (lavapipe) runs ~1.5 GFLOP/s: an S/2 step would take minutes.
      if (v === 'webgpu' && large && gpu?.ok === true && gpu.detail.software === true) continue;
      // The 250-step end-to-end sampling: on the default runtime (quick), on every variant (full).
      const e2e = COUNTS[mode][name].e2e !== undefined && (mode === 'full' || chosen || v === defaultVariant);
      process.stderr.write(`bench (${mode}): ${name} on ${v}${e2e ? ' (+ 250-step sampling)' : ''} …\n`);
      rows.push(runConfig(v, name, mode, e2e));
    }
  }
  const flatVariant: Variant = plan.includes(defaultVariant) ? defaultVariant : plan[0]!;
  let flat: FlatResult | null = null;
  if (values.flat) {
    process.stderr.write(`bench: flat check, ${flatSteps} steps of tiny on ${flatVariant} …\n`);
    flat = JSON.parse(runChild(['--flat-child', flatVariant, String(flatSteps)], ['--expose-gc'])) as FlatResult;
  }

  const torch = torchRun.record ?? (torchRun.ran ? null : latestTorchRecord(resultsDir));
  const side = sideBySide(rows, torchRun.record, defaultVariant);
  if (rows.length > 0) console.log(`\n${mode} mode: medians of ${configs.map((c) => `${c} ${COUNTS[mode][c as BenchConfigName].steps}`).join(', ')} train steps; sampling ${configs.map((c) => `${c} ${COUNTS[mode][c as BenchConfigName].sampleSteps}`).join(', ')} respaced DDPM steps with CFG on 8 images (16 rows), scaled to 250`);
  if (rows.length > 0) {
    console.log(table(rows, torch));
    for (const l of mdtOverDit(rows, torch)) console.log(l);
  }
  if (flat !== null) console.log(flatLine(flat));

  if (side.length > 0) console.log(`\nside by side with PyTorch (ours: ${defaultVariant}, the runtime's default here${torchRun.record === null ? '' : `; PyTorch ${torchRun.record.torch ?? '?'}, ${torchRun.record.threads ?? '?'} threads, BLAS ${torchRun.record.blas_build ?? '?'}`}):`);
  if (side.length > 0) console.log(sideTable(side));
  else console.log('\nno side-by-side items among the configs (main, s2, dit-s2 have them)');
  for (const r of rows) if (r.sampleE2EOnnx !== null && 'error' in r.sampleE2EOnnx) console.log(`* main-sample-onnx on ${r.variant}: not measured: ${r.sampleE2EOnnx.error}`);
  for (const r of side) if (r.compileError !== null && r.item !== 'mdt÷dit') console.log(`* ${r.item}: torch.compile failed: ${r.compileError.replace(/\s+/g, ' ').slice(0, 300)}`);
  const compiled = SIDE.flatMap((s) => {
    const first = torchRun.record?.results_compile?.[s.torchKey]?.warmup_ms?.[0];
    return first === undefined ? [] : [`${s.item} ${(first / 1000).toFixed(0)} s`];
  });
  if (compiled.length > 0) console.log(`torch.compile: timed after warm-up; the first (compiling) call took ${compiled.join(', ')}`);
  for (const r of side) if (r.oursOn !== null && r.oursOn !== defaultVariant && r.item !== 'mdt÷dit') console.log(`  ${r.item}: ours measured on ${r.oursOn}`);
  const met = side.filter((r) => r.status === 'met').length;
  if (side.length > 0) console.log(`targets met: ${met} of ${side.length}${side.some((r) => r.status === 'n/a') ? ' (n/a: a side not measured)' : ''}`);
  if (torchRun.record === null) {
    console.log(`PyTorch: not measured (${torchReason})${torch === null ? '' : `; the detail table's ÷ PyTorch column uses ${basename(torch.file)} (${torch.date})`}`);
  } else {
    const fc = torchRun.record.fixture_check;
    console.log(`PyTorch: ${torchRun.ran ? `measured now with ${torchRun.python}, record ${torchRun.record.file}` : `from the ${torchReason}`}; the port in bench/pytorch, `
      + (fc === undefined ? 'fixture check skipped' : fc.failed === 0 ? `fixture check ${fc.cases}/${fc.cases} cases pass` : `FIXTURE CHECK FAILED (${fc.failed} of ${fc.cases}): its timings are untrusted`));
  }
  const wallS = (performance.now() - started) / 1000;
  console.log(`load average ${load0.map((l) => l.toFixed(2)).join(' ')} at start, ${loadavg().map((l) => l.toFixed(2)).join(' ')} at end; ${wallS.toFixed(0)} s (PyTorch ${torchS.toFixed(0)} s)`);
  if (path !== null) {
    const record = {
      date: new Date().toISOString(),
      mode,
      machine: { cpus: cpus().length, cpu: cpus()[0]?.model ?? 'unknown', node: process.version, tfjs: tf.version_core, loadavgStart: load0, loadavgEnd: loadavg() },
      wallS: Math.round(wallS),
      defaultVariant,
      sideBySide: side,
      results: rows.map(({ trainSamples, ...r }) => ({ ...r, trainWallMs: trainSamples.map((t) => Math.round(t.wallMs)) })),
      flat,
      pytorch: torchRun.record === null
        ? { measured: false, reason: torchReason }
        : { measured: torchRun.ran, ...(torchRun.ran ? { python: torchRun.python, exitCode: torchRun.exitCode } : { source: torchRun.reason }), file: basename(torchRun.record.file), record: torchRun.record },
      pytorchDetail: torch === null || torch === torchRun.record ? null : { file: basename(torch.file), date: torch.date },
    };
    await writeFileAtomic(path, `${JSON.stringify(record, null, 1)}\n`);
    console.log(`wrote ${path}`);
  }
}

if (process.argv[2] === '--child') {
  await child(process.argv[3] as Variant, process.argv[4] as BenchConfigName, process.argv[5] as Mode, process.argv[6] === 'e2e');
} else if (process.argv[2] === '--flat-child') {
  await flatChild(process.argv[3] as Variant, Number(process.argv[4]));
} else if (process.argv.slice(2).includes('--xl')) {
  await xlBench(process.argv.slice(2).filter((a) => a !== '--xl'));
} else if (process.argv[2] === '--native-check') {
  await initBackend({ prefer: 'wasm', threads: 1 });
  console.log(String(enableNativeKernels().enabled && nativeKernelsStatus().enabled));
} else {
  await main();
}
