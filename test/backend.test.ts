import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { currentBackend, initBackend, webgpuAvailable } from '../runtime/backend.ts';
import type { BackendInfo } from '../runtime/backend.ts';
import { cudaVerdict, doctor, parseLdconfig } from '../runtime/doctor.ts';
import { keyFromSeed, normal, split } from '../dsl/random.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DEFAULT_THREADS = Math.min(availableParallelism(), 8);
const WORKER_GLOBAL = Object.getOwnPropertyDescriptor(globalThis, 'Worker');

/** Runs fn with the given MDT_* variables (undefined = unset), restoring them afterwards. */
async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (v: Record<string, string | undefined>) => {
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) delete process.env[k];
      else process.env[k] = x;
    }
  };
  set(vars);
  try {
    return await fn();
  } finally {
    set(saved);
  }
}

const NO_ENV = { MDT_BACKEND: undefined, MDT_WASM_THREADS: undefined };

/** Runs a module snippet in a fresh node process (threads are fixed per process) and parses its last stdout line. */
function child(code: string, env: Record<string, string> = {}): { info: BackendInfo; value: number } {
  const base = { ...process.env };
  delete base.MDT_BACKEND;
  delete base.MDT_WASM_THREADS;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], {
    cwd: ROOT, env: { ...base, ...env }, encoding: 'utf8', timeout: 60_000,
  });
  assert.equal(r.signal, null, `child was killed (${String(r.signal)}): it did not exit by itself\n${r.stderr}`);
  assert.equal(r.status, 0, r.stderr);
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  return JSON.parse(last) as { info: BackendInfo; value: number };
}

const CHILD_MATMUL = `
import * as tf from '@tensorflow/tfjs';
import { initBackend } from './runtime/backend.ts';
const info = await initBackend();
const a = tf.ones([256, 256]);
const value = tf.sum(tf.matMul(a, a)).dataSync()[0];
console.log(JSON.stringify({ info, value }));
`;

test('automatic choice here is wasm, multithreaded when there are several cores', async () => {
  const info = await withEnv(NO_ENV, () => initBackend());
  assert.equal(info.name, 'wasm');
  assert.equal(tf.getBackend(), 'wasm');
  assert.equal(info.tfjsVersion, tf.version_core);
  assert.equal(info.detail.selectedBy, 'auto');
  assert.match(String(info.detail.skipped), /@tensorflow\/tfjs-node-gpu.*@tensorflow\/tfjs-node/);
  assert.equal(info.detail.threadsFallback, undefined, `threaded wasm fell back: ${String(info.detail.threadsFallback)}`);
  assert.equal(info.detail.threads, DEFAULT_THREADS);
  assert.equal(info.detail.binary, DEFAULT_THREADS > 1 ? 'tfjs-backend-wasm-threaded-simd.wasm' : 'tfjs-backend-wasm-simd.wasm');
  assert.equal(currentBackend(), info);
  assert.deepEqual(Object.getOwnPropertyDescriptor(globalThis, 'Worker'), WORKER_GLOBAL, 'the Worker shim is removed after startup');
});

test("prefer 'cpu' and MDT_BACKEND=cpu both give cpu; the argument beats the variable", async () => {
  const a = await withEnv(NO_ENV, () => initBackend({ prefer: 'cpu' }));
  assert.equal(a.name, 'cpu');
  assert.equal(a.detail.selectedBy, 'argument');
  const b = await withEnv({ MDT_BACKEND: 'cpu' }, () => initBackend());
  assert.equal(b.name, 'cpu');
  assert.equal(b.detail.selectedBy, 'MDT_BACKEND');
  assert.equal(tf.getBackend(), 'cpu');
  const c = await withEnv({ MDT_BACKEND: 'cpu' }, () => initBackend({ prefer: 'wasm' }));
  assert.equal(c.name, 'wasm');
  await tf.setBackend('cpu');
  assert.equal(currentBackend(), null, 'currentBackend tracks switches made behind its back');
});

test('requesting tensorflow here is an error naming the missing package and the alternatives', async () => {
  await assert.rejects(
    withEnv(NO_ENV, () => initBackend({ prefer: 'tensorflow' })),
    (e: Error) =>
      /backend 'tensorflow' was requested/.test(e.message) &&
      /Cannot find package '@tensorflow\/tfjs-node'/.test(e.message) &&
      /npm install --save-exact @tensorflow\/tfjs-node@4\.22\.0/.test(e.message) &&
      /Available here: wasm, cpu/.test(e.message),
  );
  await assert.rejects(
    withEnv({ MDT_BACKEND: 'tensorflow' }, () => initBackend()),
    /requested by MDT_BACKEND but is unavailable: .*@tensorflow\/tfjs-node-gpu/,
  );
});

test('webgpu, requested but not installed, explains how to install it', async (t) => {
  if ((await webgpuAvailable()).ok) return t.skip('webgpu is installed here (webgpu.test.ts covers it)');
  await assert.rejects(
    withEnv(NO_ENV, () => initBackend({ prefer: 'webgpu' })),
    /'webgpu' was requested.*npm install --save-exact webgpu @tensorflow\/tfjs-backend-webgpu@4\.22\.0/,
  );
});

test('the automatic choice passes over webgpu unless it has a hardware adapter, and says why', async (t) => {
  const gpu = await webgpuAvailable();
  if (gpu.ok && gpu.detail.software !== true) return t.skip(`a hardware adapter is present: ${String(gpu.detail.adapter)}`);
  const info = await withEnv(NO_ENV, () => initBackend());
  assert.notEqual(info.name, 'webgpu');
  assert.match(String(info.detail.skipped), gpu.ok ? /webgpu: only a software adapter/ : /webgpu: webgpu( and @tensorflow\/tfjs-backend-webgpu)? not installed/);
});

test('bad settings are errors that show what was given', async () => {
  await assert.rejects(withEnv({ MDT_BACKEND: 'gpu' }, () => initBackend()), /MDT_BACKEND must be one of .*got "gpu"/);
  await assert.rejects(
    withEnv(NO_ENV, () => initBackend({ prefer: 'tpu' as 'cpu' })),
    /prefer must be one of tensorflow, wasm, cpu, webgpu, auto; got "tpu"/,
  );
  await assert.rejects(withEnv({ MDT_WASM_THREADS: 'many' }, () => initBackend()), /MDT_WASM_THREADS must be an integer from 1 to 8.*got "many"/);
  await assert.rejects(withEnv(NO_ENV, () => initBackend({ threads: 0 })), /threads must be an integer from 1 to 8.*got 0/);
  const other = DEFAULT_THREADS === 1 ? 2 : 1;
  await assert.rejects(
    withEnv(NO_ENV, () => initBackend({ prefer: 'wasm', threads: other })),
    new RegExp(`already runs with ${DEFAULT_THREADS} thread\\(s\\).*threads=${other}`),
  );
});

test('the same small graph gives the same numbers on wasm and cpu', async () => {
  const [kx, kw, kf] = split(keyFromSeed(2024), 3);
  const run = () =>
    tf.tidy(() => {
      const x = tf.tensor2d(normal(kx, 64 * 48), [64, 48]);
      const w = tf.tensor2d(normal(kw, 48 * 32), [48, 32]);
      const h = tf.softmax(tf.matMul(x, w).relu());
      const img = tf.tensor4d(normal(kf, 2 * 8 * 8 * 3), [2, 8, 8, 3]);
      const conv = tf.conv2d(img, tf.ones([3, 3, 3, 4]), 1, 'same');
      return tf.concat([h.flatten(), conv.flatten(), tf.sum(x, 1)]).dataSync();
    });
  await withEnv(NO_ENV, () => initBackend({ prefer: 'wasm' }));
  const onWasm = run();
  await withEnv(NO_ENV, () => initBackend({ prefer: 'cpu' }));
  const onCpu = run();
  assert.equal(onWasm.length, onCpu.length);
  let worst = 0;
  for (let i = 0; i < onCpu.length; i++) worst = Math.max(worst, Math.abs(onWasm[i] - onCpu[i]) / (1 + Math.abs(onCpu[i])));
  assert.ok(worst < 1e-5, `largest relative difference ${worst}`);
});

test('doctor reports the live backend, importability and memory', async () => {
  await withEnv(NO_ENV, () => initBackend({ prefer: 'wasm' }));
  const report = await doctor();
  assert.match(report, /Node v\d+/);
  assert.match(report, /Live backend: wasm \(tfjs 4\.22\.0\)/);
  assert.match(report, /tensorflow via @tensorflow\/tfjs-node-gpu: not importable: Cannot find package/);
  assert.match(report, new RegExp(`WASM: SIMD on, ${DEFAULT_THREADS} thread\\(s\\)`));
  assert.match(report, /libtensorflow 2\.9\.1, CUDA 11\.2, cuDNN 8\.1/);
  assert.match(report, /tf\.memory\(\): \{"unreliable":false,"numTensors":\d+/);
});

test('the CUDA check tells a version mismatch from a missing or hidden library', () => {
  const ld = [
    '1234 libs found in cache `/etc/ld.so.cache\'',
    '\tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda-12/lib64/libcudart.so.12',
    '\tlibcudnn.so.8 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudnn.so.8',
    '\tlibcudnn_ops_infer.so.8 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcudnn_ops_infer.so.8',
    '\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6',
  ].join('\n');
  const found = parseLdconfig(ld);
  assert.deepEqual([...found.keys()], ['libcudart.so.12', 'libcudnn.so.8']);
  const report = cudaVerdict(found, new Map([['libcublas.so.11', '/usr/local/cuda/lib64/libcublas.so.11']])).join('\n');
  assert.match(report, /WRONG {4}libcudart\.so\.11\.0 missing; found libcudart\.so\.12/);
  assert.match(report, /ok {7}libcudnn\.so\.8 -> \/usr\/lib\/x86_64-linux-gnu\/libcudnn\.so\.8/);
  assert.match(report, /HIDDEN {3}libcublas\.so\.11 exists at \/usr\/local\/cuda\/lib64/);
  assert.match(report, /MISSING {2}libcufft\.so\.10/);
  assert.match(report, /verdict: .*run every op on the CPU/);
  const all = new Map(['libcudart.so.11.0', 'libcublas.so.11', 'libcublasLt.so.11', 'libcufft.so.10', 'libcurand.so.10',
    'libcusolver.so.11', 'libcusparse.so.11', 'libcudnn.so.8'].map((n) => [n, `/opt/cuda/${n}`]));
  assert.match(cudaVerdict(all).join('\n'), /verdict: every library .* loads is present/);
});

test('a process using threaded wasm exits by itself; MDT_WASM_THREADS=1 gives the single-thread build', () => {
  const threaded = child(CHILD_MATMUL);
  assert.equal(threaded.value, 256 ** 3);
  assert.equal(threaded.info.detail.threads, DEFAULT_THREADS);
  const single = child(CHILD_MATMUL, { MDT_WASM_THREADS: '1' });
  assert.equal(single.value, 256 ** 3);
  assert.equal(single.info.detail.threads, 1);
  assert.equal(single.info.detail.binary, 'tfjs-backend-wasm-simd.wasm');
  assert.equal(single.info.detail.threadsSource, 'MDT_WASM_THREADS');
});

test('a threaded start that fails falls back to single-thread SIMD and says why', { skip: DEFAULT_THREADS < 2 }, () => {
  // Another library owning a non-configurable global Worker is one way the workaround can fail.
  const r = child(`Object.defineProperty(globalThis, 'Worker', { value: class {}, configurable: false });\n${CHILD_MATMUL}`);
  assert.equal(r.value, 256 ** 3);
  assert.equal(r.info.detail.threads, 1);
  assert.equal(r.info.detail.binary, 'tfjs-backend-wasm-simd.wasm');
  assert.match(String(r.info.detail.threadsFallback), /Cannot redefine property: Worker/);
});
