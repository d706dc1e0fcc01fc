// Backend selection: tensorflow (tfjs-node-gpu, then tfjs-node) > webgpu (only on a hardware
// adapter) > wasm > cpu. An explicit request (argument, or MDT_BACKEND) that cannot be met is
// an error naming the cause and what is available; only the automatic choice falls through.

import * as tf from '@tensorflow/tfjs';
import { availableParallelism } from 'node:os';
import { match } from 'ts-pattern';
import { startWasm, WASM_MAX_THREADS, wasmStatus } from './backend-wasm.ts';
import type { Detail, WasmPackage } from './backend-wasm.ts';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu' | 'webgpu';
export const BACKEND_NAMES: readonly BackendName[] = ['tensorflow', 'wasm', 'cpu', 'webgpu'];

export interface BackendInfo {
  name: BackendName;
  tfjsVersion: string;
  detail: Record<string, string | number | boolean>;
}

export interface InitOptions {
  /** 'auto' (the default) defers to MDT_BACKEND, then to the automatic order. */
  prefer?: BackendName | 'auto';
  /** wasm threads; defaults to MDT_WASM_THREADS, then to the available cores (at most 8; see resolveThreads). */
  threads?: number;
  /**
   * The thread count when neither `threads` nor MDT_WASM_THREADS sets one (default: the
   * available cores, at most 8); runtime/start.ts passes 1 when the native kernels will run.
   */
  defaultThreads?: number;
}

const AUTO_ORDER: readonly BackendName[] = ['tensorflow', 'webgpu', 'wasm', 'cpu'];
export const TFJS_NODE_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'] as const;
export const WASM_PACKAGE = '@tensorflow/tfjs-backend-wasm';
export const WEBGPU_PACKAGES = ['webgpu', '@tensorflow/tfjs-backend-webgpu'] as const;

const TFJS_NODE_INSTALL =
  'install one with `npm install --save-exact @tensorflow/tfjs-node@4.22.0` (CPU) or ' +
  '`npm install --save-exact @tensorflow/tfjs-node-gpu@4.22.0` (needs CUDA 11.2 and cuDNN 8.1)';
const WEBGPU_INSTALL = '`npm install --save-exact webgpu @tensorflow/tfjs-backend-webgpu@4.22.0`';

/** A backend that cannot run in this process; the automatic choice moves on past it. */
class BackendUnavailable extends Error {}

export type ImportResult = { ok: true; module: Record<string, unknown> } | { ok: false; error: string };

const imports = new Map<string, Promise<ImportResult>>();

/** Imports an optional package once; the specifier is a plain string so tsc needs no types for it. */
export function tryImport(specifier: string): Promise<ImportResult> {
  let r = imports.get(specifier);
  if (r === undefined) {
    r = import(specifier).then(
      (module: Record<string, unknown>): ImportResult => ({ ok: true, module }),
      (e: unknown): ImportResult => ({ ok: false, error: e instanceof Error ? e.message : String(e) }),
    );
    imports.set(specifier, r);
  }
  return r;
}

/** Whether a package can be resolved, without running it (importing tfjs-backend-webgpu has side effects). */
export function resolvable(specifier: string): { ok: true; path: string } | { ok: false; error: string } {
  try {
    return { ok: true, path: import.meta.resolve(specifier) };
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : String(e) };
  }
}

function isBackendName(v: unknown): v is BackendName {
  return typeof v === 'string' && (BACKEND_NAMES as readonly string[]).includes(v);
}

function resolvePreference(prefer: unknown): { want: BackendName | 'auto'; source: string } {
  if (prefer !== undefined && prefer !== 'auto') {
    if (!isBackendName(prefer)) {
      throw new Error(`initBackend: prefer must be one of ${BACKEND_NAMES.join(', ')}, auto; got ${JSON.stringify(prefer)}`);
    }
    return { want: prefer, source: 'argument' };
  }
  const env = process.env.MDT_BACKEND?.trim();
  if (env === undefined || env === '' || env === 'auto') return { want: 'auto', source: 'auto' };
  if (!isBackendName(env)) {
    throw new Error(`MDT_BACKEND must be one of ${BACKEND_NAMES.join(', ')}, auto; got ${JSON.stringify(env)}`);
  }
  return { want: env, source: 'MDT_BACKEND' };
}

/**
 * Without the native kernels the default is every available core (at most 8): the products
 * of the models this project trains gain from threads when wasm computes them. Measured on its
 * 2-core machine (npm run bench; training step with both branches, AdamW and EMA; results are
 * bitwise the same for any thread count): with both cores free, 2 threads take the main job
 * (pixel MDT, 64 tokens, D 128, batch 32) from 2.6 s to 1.9 s and MDT-S/2 at batch 8 from
 * ~33 s to ~18 s.
 *
 * 1 thread is better:
 * - when the native kernels run (runtime/native.ts): they do the products and the heavy pointwise
 *   work on their own pool, and a wasm pool only contends with it — main job 535 ms on 1 wasm
 *   thread vs 608 ms on 2, tiny 55 vs 78 ms, MDT-S/2 the same; runtime/start.ts therefore
 *   asks for 1 (defaultThreads) when the addon is there;
 * - a model whose ops are tiny (the 16-token test configs, ~0.3 GFLOP per step), where
 *   XNNPACK's per-op dispatch to the pool costs more than it saves (~90 → ~160 ms per step);
 * - a machine where other processes keep a core busy: the caller waits at every op for a
 *   worker that is descheduled (the main job then takes ~20% longer on 2 threads than on 1).
 * The pool size is fixed when the backend starts, before any model exists, so the default
 * cannot follow the model's size.
 */
function resolveThreads(threads: unknown, defaultThreads?: number): { threads: number; source: string } {
  const check = (v: unknown, source: string, given: string) => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > WASM_MAX_THREADS) {
      throw new Error(
        `${source} must be an integer from 1 to ${WASM_MAX_THREADS} (the threaded wasm build's worker pool), got ${given}`,
      );
    }
    return { threads: v, source };
  };
  if (threads !== undefined) return check(threads, 'threads', JSON.stringify(threads));
  const env = process.env.MDT_WASM_THREADS?.trim();
  if (env !== undefined && env !== '') return check(Number(env), 'MDT_WASM_THREADS', JSON.stringify(env));
  if (defaultThreads !== undefined) return { ...check(defaultThreads, 'defaultThreads', JSON.stringify(defaultThreads)), source: 'default' };
  return { threads: Math.min(availableParallelism(), WASM_MAX_THREADS), source: 'default' };
}

function failureText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

async function startTensorflow(): Promise<Detail> {
  const failures: string[] = [];
  for (const pkg of TFJS_NODE_PACKAGES) {
    const r = await tryImport(pkg);
    if (!r.ok) {
      failures.push(`${pkg}: ${r.error}`);
      continue;
    }
    if (tf.engine().registryFactory['tensorflow'] === undefined) {
      failures.push(`${pkg} was imported but registered no 'tensorflow' backend with this copy of tfjs`);
      continue;
    }
    if (!(await tf.setBackend('tensorflow'))) {
      failures.push(`${pkg}: tf.setBackend('tensorflow') failed (its warning is printed above)`);
      continue;
    }
    // Fields of tfjs-node's NodeJSKernelBackend; a GPU package can still run on the CPU
    // when CUDA/cuDNN are missing or mismatched, which usingGpu exposes.
    const b = tf.backend() as unknown as { isGPUPackage?: unknown; isUsingGpuDevice?: unknown };
    const version = (r.module.version as Record<string, unknown> | undefined)?.['tfjs-node'];
    const gpuPackage = b.isGPUPackage === true;
    const usingGpu = b.isUsingGpuDevice === true;
    return {
      package: pkg,
      ...(typeof version === 'string' ? { packageVersion: version } : {}),
      gpuPackage,
      usingGpu,
      ...(gpuPackage && !usingGpu
        ? { warning: 'tfjs-node-gpu found no usable GPU and runs on the CPU; the doctor report shows which CUDA/cuDNN library is missing' }
        : {}),
    };
  }
  throw new BackendUnavailable(`${failures.join('; ')}; ${TFJS_NODE_INSTALL}`);
}

async function startWasmBackend(threads: { threads: number; source: string }): Promise<Detail> {
  const r = await tryImport(WASM_PACKAGE);
  if (!r.ok) throw new BackendUnavailable(`${WASM_PACKAGE}: ${r.error}`);
  const live = wasmStatus();
  if (live !== null && threads.source !== 'default' && live.threadsRequested !== threads.threads) {
    throw new Error(
      `the wasm backend already runs with ${String(live.threads)} thread(s) in this process; ` +
        `${threads.source}=${threads.threads} can only take effect before its first start`,
    );
  }
  try {
    return { ...(await startWasm(r.module as unknown as WasmPackage, threads.threads)), threadsSource: threads.source };
  } catch (e) {
    throw new BackendUnavailable(`${WASM_PACKAGE} failed to start: ${failureText(e)}`);
  }
}

async function startCpu(): Promise<Detail> {
  if (!(await tf.setBackend('cpu'))) throw new BackendUnavailable("tf.setBackend('cpu') returned false");
  return {};
}

function installNavigatorGpu(gpu: unknown): void {
  const g = globalThis as { navigator?: object };
  if (g.navigator === undefined) {
    Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  } else if (!('gpu' in g.navigator)) {
    Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
  }
}

async function startWebgpu(): Promise<Detail> {
  const dawn = await tryImport(WEBGPU_PACKAGES[0]);
  if (!dawn.ok) throw new BackendUnavailable(`package 'webgpu' (Dawn for Node) cannot be imported: ${dawn.error}; install ${WEBGPU_INSTALL}`);
  const { create, globals } = dawn.module;
  if (typeof create !== 'function' || typeof globals !== 'object' || globals === null) {
    throw new BackendUnavailable("package 'webgpu' does not export create() and globals as expected");
  }
  // tfjs-backend-webgpu registers itself only if navigator.gpu exists when it is first imported.
  Object.assign(globalThis, globals);
  installNavigatorGpu((create as (flags: string[]) => unknown)([]));
  const tfWebgpu = await tryImport(WEBGPU_PACKAGES[1]);
  if (!tfWebgpu.ok) throw new BackendUnavailable(`${WEBGPU_PACKAGES[1]} cannot be imported: ${tfWebgpu.error}; install ${WEBGPU_INSTALL}`);
  if (tf.engine().registryFactory['webgpu'] === undefined) {
    throw new BackendUnavailable(`${WEBGPU_PACKAGES[1]} registered no backend (navigator.gpu was not usable)`);
  }
  if (!(await tf.setBackend('webgpu'))) {
    throw new BackendUnavailable("tf.setBackend('webgpu') failed, most likely no WebGPU adapter was found (its warning is printed above)");
  }
  return adapterDetail();
}

interface GpuAdapterInfo {
  vendor?: string;
  architecture?: string;
  description?: string;
  isFallbackAdapter?: boolean;
}

type Gpu = { requestAdapter(): Promise<{ info?: GpuAdapterInfo; isFallbackAdapter?: boolean } | null> };

/**
 * Which device the backend computes on: a software adapter (Mesa's lavapipe, SwiftShader)
 * passes every test but runs at a few GFLOP/s, so a user must be able to see it.
 */
async function describeAdapter(gpu: Gpu | undefined): Promise<Detail> {
  const adapter = await gpu?.requestAdapter();
  const info = adapter?.info;
  if (info === undefined) return {};
  const software = info.isFallbackAdapter === true || adapter?.isFallbackAdapter === true || info.architecture === 'software';
  return {
    adapter: info.description || [info.vendor, info.architecture].filter(Boolean).join(' ') || 'unnamed',
    software,
    ...(software ? { warning: 'the WebGPU adapter is a software renderer on the CPU: correct, but slower than wasm' } : {}),
  };
}

function adapterDetail(): Promise<Detail> {
  return describeAdapter((globalThis as { navigator?: { gpu?: Gpu } }).navigator?.gpu);
}

/** Whether the webgpu backend could start, and on which adapter, without starting it (doctor, tests, bench). */
export async function webgpuAvailable(): Promise<{ ok: true; detail: Detail } | { ok: false; error: string }> {
  const missing = WEBGPU_PACKAGES.filter((p) => !resolvable(p).ok);
  if (missing.length > 0) return { ok: false, error: `${missing.join(' and ')} not installed; install ${WEBGPU_INSTALL}` };
  const dawn = await tryImport(WEBGPU_PACKAGES[0]);
  if (!dawn.ok) return { ok: false, error: dawn.error };
  const create = dawn.module.create;
  if (typeof create !== 'function') return { ok: false, error: "package 'webgpu' exports no create()" };
  const detail = await describeAdapter((create as (flags: string[]) => Gpu)([]));
  return detail.adapter === undefined ? { ok: false, error: 'Dawn found no WebGPU adapter (no Vulkan driver with a usable device)' } : { ok: true, detail };
}

let live: BackendInfo | null = null;
let queue: Promise<unknown> = Promise.resolve();

async function start(name: BackendName, threads: { threads: number; source: string }, selectedBy: string): Promise<BackendInfo> {
  const detail = await match(name)
    .with('tensorflow', () => startTensorflow())
    .with('wasm', () => startWasmBackend(threads))
    .with('cpu', () => startCpu())
    .with('webgpu', () => startWebgpu())
    .exhaustive();
  live = { name, tfjsVersion: tf.version_core, detail: { ...detail, selectedBy } };
  return live;
}

/** Backends that can start here (tensorflow and wasm are tried by import; webgpu only resolved). */
export async function availableBackends(): Promise<BackendName[]> {
  const out: BackendName[] = [];
  for (const pkg of TFJS_NODE_PACKAGES) {
    if ((await tryImport(pkg)).ok) {
      out.push('tensorflow');
      break;
    }
  }
  if ((await tryImport(WASM_PACKAGE)).ok) out.push('wasm');
  out.push('cpu');
  if (WEBGPU_PACKAGES.every((p) => resolvable(p).ok)) out.push('webgpu');
  return out;
}

async function select(opts: InitOptions): Promise<BackendInfo> {
  const { want, source } = resolvePreference(opts.prefer);
  const threads = resolveThreads(opts.threads, opts.defaultThreads);
  if (want !== 'auto') {
    try {
      return await start(want, threads, source);
    } catch (e) {
      if (!(e instanceof BackendUnavailable)) throw e;
      const via = source === 'argument' ? 'was requested' : 'was requested by MDT_BACKEND';
      throw new Error(`backend '${want}' ${via} but is unavailable: ${e.message}. Available here: ${(await availableBackends()).join(', ')}`);
    }
  }
  const skipped: string[] = [];
  for (const name of AUTO_ORDER) {
    try {
      if (name === 'webgpu') await hardwareWebgpu();
      const info = await start(name, threads, 'auto');
      if (skipped.length > 0) info.detail.skipped = skipped.join(' | ');
      return info;
    } catch (e) {
      if (!(e instanceof BackendUnavailable)) throw e;
      skipped.push(`${name}: ${e.message}`);
    }
  }
  throw new Error(`no tfjs backend could start: ${skipped.join(' | ')}`);
}

/**
 * The automatic choice takes webgpu only where its packages are installed and the adapter is a
 * real GPU: a software one (lavapipe) is several times slower than wasm on the same CPU.
 */
async function hardwareWebgpu(): Promise<void> {
  const gpu = await webgpuAvailable();
  if (!gpu.ok) throw new BackendUnavailable(gpu.error);
  if (gpu.detail.software === true) {
    throw new BackendUnavailable(`only a software adapter (${String(gpu.detail.adapter)}), slower than wasm; --backend webgpu uses it anyway`);
  }
}

/** Chooses, starts and activates a tfjs backend; concurrent calls run one after another. */
export function initBackend(opts: InitOptions = {}): Promise<BackendInfo> {
  const run = queue.then(() => select(opts));
  queue = run.catch(() => undefined);
  return run;
}

/** The backend chosen by the last initBackend(), or null if none, or if tfjs was switched elsewhere since. */
export function currentBackend(): BackendInfo | null {
  return live !== null && tf.engine().backendName === live.name ? live : null;
}
