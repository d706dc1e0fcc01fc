// 1024x1024 float32 matMul throughput on the wasm backend per thread count.
// The pool size is fixed once per process, so every count runs in its own child process;
// counts are interleaved over several rounds and the best round is kept, to damp noise
// from other load on the machine.
//   npx tsx bench/wasm-threads.ts [maxThreads=2] [rounds=3]

import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend.ts';
import { keyFromSeed, normal, split } from '../dsl/random.ts';

const N = 1024;
const REPS = 10;

async function measure(threads: number): Promise<void> {
  const info = await initBackend({ prefer: 'wasm', threads });
  const [ka, kb] = split(keyFromSeed(0));
  const a = tf.tensor2d(normal(ka, N * N), [N, N]);
  const b = tf.tensor2d(normal(kb, N * N), [N, N]);
  // The tidy callbacks return nothing: tidy walks every key of a returned TypedArray, which
  // for a 1M-element result costs far more than the matMul itself.
  const step = () => tf.tidy(() => {
    tf.matMul(a, b).dataSync();
  });
  step();
  step();
  const t0 = performance.now();
  for (let i = 0; i < REPS; i++) step();
  const seconds = (performance.now() - t0) / 1000 / REPS;
  console.log(JSON.stringify({ threads: info.detail.threads, gflops: (2 * N ** 3) / seconds / 1e9 }));
}

function run(threads: number): { threads: number; gflops: number } {
  const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', String(threads)], {
    encoding: 'utf8',
    env: { ...process.env, MDT_BACKEND: '', MDT_WASM_THREADS: '' },
  });
  return JSON.parse(out.trim().split('\n').at(-1) ?? '') as { threads: number; gflops: number };
}

if (process.argv[2] === '--child') {
  await measure(Number(process.argv[3]));
} else {
  const maxThreads = Number(process.argv[2] ?? 2);
  const rounds = Number(process.argv[3] ?? 3);
  const best = new Map<number, number>();
  for (let r = 0; r < rounds; r++) {
    for (let t = 1; t <= maxThreads; t++) {
      const { threads, gflops } = run(t);
      if (threads !== t) throw new Error(`asked for ${t} wasm threads, got ${threads}`);
      best.set(t, Math.max(best.get(t) ?? 0, gflops));
    }
  }
  for (const [t, g] of best) console.log(`wasm ${t} thread(s): ${g.toFixed(1)} GFLOP/s (best of ${rounds}, ${N}x${N} matMul)`);
}
