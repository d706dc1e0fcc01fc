/**
 * The onnx engine's threads. A small model's step is too short for onnxruntime to spread over
 * cores (on 2 threads the main job's 256-row Gemms run 1.0–1.5× as fast as on one), while
 * images are independent from the first step to the last: so a call's images are split into
 * groups, each sampled start to finish on a session of its own — the first on this thread, the
 * others in worker threads (compile/onnx-worker.ts) — with the threads shared out among them.
 * No step waits for another thread. Groups ≤ threads, ≤ images, and each group's session holds
 * its own copy of the weights, so a model over POOL_BYTES / 2 runs as one group.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type * as Ort from 'onnxruntime-node';
import { runGroup, type GroupJob } from './onnx-group.ts';

/** What the copies of the step graph's weights, one per group, may take together. */
export const POOL_BYTES = 2 ** 30;

export interface PoolSettings {
  /** Threads for the whole engine. */
  readonly threads: number;
  /** A group count set by the user (MDT_ONNX_GROUPS), else null: as many as pay. */
  readonly groups: number | null;
  /** Whether every execution provider is the CPU (a GPU session is not split). */
  readonly cpuOnly: boolean;
}

/** Reads MDT_ONNX_THREADS, MDT_ONNX_GROUPS and MDT_ONNX_PROVIDERS; a bad value is an error that names it. */
export function poolSettings(env: NodeJS.ProcessEnv, providers: readonly string[]): PoolSettings {
  const count = (name: string): number | null => {
    const raw = env[name]?.trim() ?? '';
    if (raw === '') return null;
    const v = Number(raw);
    if (!Number.isInteger(v) || v < 1) throw new Error(`${name}: expected a whole number of at least 1, got "${env[name]}"`);
    return v;
  };
  return { threads: count('MDT_ONNX_THREADS') ?? availableParallelism(), groups: count('MDT_ONNX_GROUPS'), cpuOnly: providers.every((p) => p === 'cpu') };
}

/** The groups a call of `images` images is split into, on a step graph of `bytes` bytes. */
export function groupCount(s: PoolSettings, images: number, bytes: number): number {
  if (!s.cpuOnly) return 1;
  const most = s.groups ?? Math.min(s.threads, Math.max(1, Math.floor(POOL_BYTES / bytes)));
  return Math.max(1, Math.min(most, images));
}

/** Each group's session threads when `groups` share the engine's. */
export const threadsPerGroup = (s: PoolSettings, groups: number) => Math.max(1, Math.floor(s.threads / groups));

interface PoolWorker {
  readonly worker: Worker;
  readonly threads: number;
  readonly ready: Promise<void>;
  /** Steps done of its current job, which it stores after each step (read without a message). */
  readonly done: Int32Array;
}

export interface OnnxPool {
  /** Opens this thread's session for `threads` now (so that a graph onnxruntime refuses fails early). */
  warm(threads: number): Promise<void>;
  /** Samples each job on its own session (the first on this thread); each job's images in order. */
  run(jobs: readonly GroupJob[], threads: number, progress?: (done: number, total: number) => void): Promise<Float32Array[]>;
  dispose(): Promise<void>;
}

/**
 * A pool on the step graph `model`. `open(threads)` opens it on this thread (sessions are kept
 * per thread count); `options(threads)` are the workers' session options.
 */
export function onnxPool(ort: typeof Ort, model: Uint8Array, open: (threads: number) => Promise<Ort.InferenceSession>, options: (threads: number) => Ort.InferenceSession.SessionOptions): OnnxPool {
  const sessions = new Map<number, Promise<Ort.InferenceSession>>();
  const workers: PoolWorker[] = [];
  const session = (threads: number) => {
    let s = sessions.get(threads);
    if (s === undefined) sessions.set(threads, (s = open(threads)));
    return s;
  };
  const worker = (i: number, threads: number): PoolWorker => {
    const have = workers[i];
    if (have?.threads === threads) return have;
    void have?.worker.terminate();
    const done = new Int32Array(new SharedArrayBuffer(4));
    // No inherited node flags: a relative `--import tsx` would resolve against the user's working
    // directory; onnx-worker.mjs registers the loader from its own place.
    const w = new Worker(new URL('./onnx-worker.mjs', import.meta.url), { execArgv: [], workerData: { model, options: options(threads), done } });
    // An idle worker must not keep the process alive; runOn refs it while it has a job.
    w.unref();
    const ready = new Promise<void>((resolve, reject) => {
      w.once('message', (m: { error?: string }) => (m.error === undefined ? resolve() : reject(new Error(`onnx engine worker: onnxruntime cannot load the step graph: ${m.error}`))));
      w.once('error', reject);
    });
    ready.catch(() => {});
    return (workers[i] = { worker: w, threads, ready, done });
  };
  return {
    async warm(threads) {
      await session(threads);
    },
    async run(jobs, threads, progress) {
      const total = jobs[0]?.steps ?? 0;
      const away = jobs.slice(1).map((job, i) => ({ job, w: worker(i, threads) }));
      let told = 0;
      const tell = (here: number) => {
        const least = Math.min(here, ...away.map(({ w }) => Atomics.load(w.done, 0)));
        if (least > told) progress?.((told = least), total);
      };
      // The workers' jobs go out first: this thread's group runs in onnxruntime's synchronous calls.
      const running = away.map(({ job, w }) => runOn(w, job));
      running.forEach((p) => p.catch(() => {}));
      const here = runGroup(ort, await session(threads), jobs[0]!, tell);
      const images = await Promise.all([here, ...running]);
      tell(total);
      return images;
    },
    async dispose() {
      await Promise.all(workers.map((w) => w.worker.terminate()));
      await Promise.all([...sessions.values()].map((s) => s.then((x) => x.release(), () => {})));
    },
  };
}

async function runOn(w: PoolWorker, job: GroupJob): Promise<Float32Array> {
  Atomics.store(w.done, 0, 0);
  await w.ready;
  return new Promise((resolve, reject) => {
    const settle = () => {
      w.worker.off('message', onMessage);
      w.worker.off('error', onError);
      w.worker.off('exit', onExit);
      w.worker.unref();
    };
    const onMessage = (m: { images?: Float32Array; error?: string }) => {
      settle();
      if (m.images !== undefined) resolve(m.images);
      else reject(new Error(`onnx engine worker: ${m.error}`));
    };
    const onError = (e: Error) => {
      settle();
      reject(e);
    };
    const onExit = (code: number) => onError(new Error(`onnx engine worker: stopped (exit code ${code}) before its images were done`));
    w.worker.ref();
    w.worker.on('message', onMessage);
    w.worker.on('error', onError);
    w.worker.on('exit', onExit);
    w.worker.postMessage(job);
  });
}
