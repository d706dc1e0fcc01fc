// Starting tfjs-backend-wasm, multithreaded under Node.
//
// tfjs 4.22 never picks the threaded build under Node: WASM_HAS_MULTITHREAD_SUPPORT is
// hard-wired to false there (tfjs issue #3830), and even when forced on, the Emscripten
// pthread glue cannot start under Node as shipped:
//  1. it creates each pthread worker from a blob: URL, which node:worker_threads rejects;
//  2. it hands each worker its main script as a Blob, which the worker's importScripts
//     (fs.readFileSync) cannot read;
//  3. XNNPACK's pool is capped at emscripten_num_logical_cores() / 2, which is os.cpus()
//     / 2 under Node, so a 2-core machine still gets a single thread;
//  4. a worker running a pthread is ref()'d and keeps the process alive forever.
// The fix, applied only while the threaded build starts: a global `Worker` that evals the
// worker glue shipped in wasm-out/ and points its `load` command at the wasm-out main
// script on disk, that never holds the event loop open, plus os.cpus() reporting twice
// the requested thread count. If the threaded build still fails, we fall back to the
// single-thread SIMD build and say why in the returned detail.

import * as tf from '@tensorflow/tfjs';
import { createRequire } from 'node:module';
import type { CpuInfo } from 'node:os';
import { Worker as NodeWorker } from 'node:worker_threads';
import type { TransferListItem } from 'node:worker_threads';

export type WasmPackage = typeof import('@tensorflow/tfjs-backend-wasm');
export type Detail = Record<string, string | number | boolean>;

/** PTHREAD_POOL_SIZE of the threaded build in tfjs-backend-wasm 4.22; XNNPACK never uses more. */
export const WASM_MAX_THREADS = 8;

const THREADED_START_TIMEOUT_MS = 30_000;
const THREADED_BINARY = 'tfjs-backend-wasm-threaded-simd.wasm';

const require = createRequire(import.meta.url);
const os = require('node:os') as { cpus: () => CpuInfo[] };

let started: Detail | null = null;
const pthreadWorkers = new Set<NodeWorker>();
let workerSource: string | undefined;

function pthreadWorkerSource(): string {
  if (workerSource === undefined) {
    const { wasmWorkerContents } = require(
      '@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.worker.js',
    ) as { wasmWorkerContents: string };
    // The file stores the glue in a template literal, which turned its "\n" escapes into
    // raw newlines inside string literals; tfjs re-escapes them the same way.
    workerSource = wasmWorkerContents.replace(/\n/g, '\\n');
  }
  return workerSource;
}

function isLoadCommand(v: unknown): v is { cmd: 'load'; urlOrBlob: unknown } {
  return typeof v === 'object' && v !== null && (v as { cmd?: unknown }).cmd === 'load';
}

/** What the glue gets for `new Worker(blobUrl)`; the blob only ever holds the worker glue loaded here. */
class PThreadWorker extends NodeWorker {
  constructor() {
    // execArgv: [] keeps the parent's loaders and --input-type=module out of the worker,
    // whose glue is a CommonJS script that needs `require`.
    super(pthreadWorkerSource(), { eval: true, execArgv: [] });
    pthreadWorkers.add(this);
    this.once('exit', () => pthreadWorkers.delete(this));
  }

  override postMessage(value: unknown, transferList?: readonly TransferListItem[]): void {
    const v = isLoadCommand(value)
      ? { ...value, urlOrBlob: require.resolve('@tensorflow/tfjs-backend-wasm/wasm-out/tfjs-backend-wasm-threaded-simd.js') }
      : value;
    super.postMessage(v, transferList);
  }

  // XNNPACK's threads block forever between jobs; only the main thread's work should
  // decide when the process exits.
  override ref(): void {
    this.unref();
  }
}

/** Returns a function that restores the previous global. */
function installWorkerGlobal(): () => void {
  const previous = Object.getOwnPropertyDescriptor(globalThis, 'Worker');
  // The glue assigns globalThis.Worker = worker_threads.Worker when its factory runs; the
  // no-op setter keeps ours in place.
  Object.defineProperty(globalThis, 'Worker', {
    configurable: true,
    enumerable: false,
    get: () => PThreadWorker,
    set: () => {},
  });
  return () => {
    if (previous === undefined) Reflect.deleteProperty(globalThis, 'Worker');
    else Object.defineProperty(globalThis, 'Worker', previous);
  };
}

function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === 'object' && e !== null && 'message' in e) return String((e as { message: unknown }).message);
  return String(e);
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    p.then(
      (v) => { clearTimeout(timer); resolve(v); },
      (e: unknown) => { clearTimeout(timer); reject(e instanceof Error ? e : new Error(errorText(e))); },
    );
  });
}

type Factory = () => tf.KernelBackend | Promise<tf.KernelBackend>;

async function startThreaded(pkg: WasmPackage, factory: Factory, threads: number): Promise<tf.KernelBackend> {
  const restoreWorker = installWorkerGlobal();
  tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
  pkg.setThreadsCount(threads);
  const realCpus = os.cpus;
  const one = realCpus()[0] ?? { model: 'unknown', speed: 0, times: { user: 0, nice: 0, sys: 0, idle: 0, irq: 0 } };
  os.cpus = () => new Array<CpuInfo>(2 * threads).fill(one);
  try {
    const backend = await withTimeout(Promise.resolve(factory()), THREADED_START_TIMEOUT_MS, 'starting the threaded wasm build');
    // All pthreads exist now (XNNPACK creates its pool up front, within the preallocated
    // workers). After a failure the shim stays, as a timed-out start may still create workers.
    restoreWorker();
    return backend;
  } finally {
    os.cpus = realCpus;
  }
}

/**
 * Makes wasm the live tfjs backend. The thread count is fixed by the first start in a
 * process: the wasm module cannot be re-instantiated with another pool.
 */
export async function startWasm(pkg: WasmPackage, threads: number): Promise<Detail> {
  if (started === null) started = await withoutEmscriptenHandlers(() => instantiate(pkg, threads));
  if (!(await tf.setBackend('wasm'))) throw new Error("tf.setBackend('wasm') returned false after the module was loaded");
  return started;
}

const PROCESS_EVENTS = ['uncaughtException', 'unhandledRejection'] as const;

/**
 * Emscripten's Node glue registers `uncaughtException` and `unhandledRejection` listeners that
 * rethrow: node then reports every later uncaught error at that rethrow, whose "source line" is
 * the whole minified module (~38 KB printed before the message). The listeners it adds while
 * `start` runs are removed, so errors are reported where they were thrown (or by the program's
 * own handler, as the CLI and the notebooks install).
 */
export async function withoutEmscriptenHandlers<T>(start: () => Promise<T>): Promise<T> {
  const events: NodeJS.EventEmitter = process;
  const before = new Map(PROCESS_EVENTS.map((e) => [e, new Set(events.listeners(e))]));
  try {
    return await start();
  } finally {
    for (const e of PROCESS_EVENTS) {
      for (const l of events.listeners(e)) if (!before.get(e)!.has(l)) events.removeListener(e, l as (...args: unknown[]) => void);
    }
  }
}

/** What the first startWasm() call produced, or null before it. */
export function wasmStatus(): Detail | null {
  return started;
}

async function instantiate(pkg: WasmPackage, threads: number): Promise<Detail> {
  const engine = tf.engine();
  const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) === true;
  if (engine.registry['wasm'] !== undefined) {
    return {
      simd,
      threads: pkg.getThreadsCount(),
      threadsRequested: threads,
      note: 'the wasm backend was started outside initBackend; its thread settings were kept',
    };
  }
  const entry = engine.registryFactory['wasm'];
  if (entry === undefined) throw new Error('@tensorflow/tfjs-backend-wasm was imported but registered no wasm backend');
  const detail: Detail = { simd, threadsRequested: threads };
  let backend: tf.KernelBackend | undefined;
  if (threads > 1 && !simd) {
    detail.threadsFallback = 'WebAssembly SIMD is unsupported here and the threaded build requires it';
  } else if (threads > 1) {
    try {
      backend = await startThreaded(pkg, entry.factory, threads);
      detail.binary = THREADED_BINARY;
    } catch (e) {
      for (const w of pthreadWorkers) void w.terminate();
      detail.threadsFallback = errorText(e);
    }
  }
  if (backend === undefined) {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
    pkg.setThreadsCount(1);
    backend = await entry.factory();
    detail.binary = simd ? 'tfjs-backend-wasm-simd.wasm' : 'tfjs-backend-wasm.wasm';
  }
  const instance = backend;
  // Installing the instance we built (rather than letting setBackend call the factory)
  // is what lets a failed threaded start be retried single-threaded above.
  tf.removeBackend('wasm');
  tf.registerBackend('wasm', () => instance, entry.priority);
  detail.threads = pkg.getThreadsCount();
  return detail;
}
