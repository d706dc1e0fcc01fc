// Builds a synthetic MDT-XL/2-sized torch.save checkpoint (~2.8 GB, ZIP64) in a temp dir, converts
// it to safetensors in a child process, and reports time and the converter's peak RSS.
//   node --import tsx bench/convert-large.ts
import { execFileSync } from 'node:child_process';
import { mkdtemp, rm, stat, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { convertTorchToSafetensors } from '../formats/torch-pt.ts';
import { openSafetensors } from '../formats/safetensors.ts';
import { buildCheckpoint, bytesOfPlan, contents, modelPlan } from './pt-checkpoint.ts';

const FULL_DEPTH = 28;
const GB = 1e9;

async function convertChild(inPath: string, outPath: string): Promise<void> {
  const start = performance.now();
  const { count, bytes } = await convertTorchToSafetensors(inPath, outPath);
  const seconds = (performance.now() - start) / 1000;
  console.log(JSON.stringify({ count, bytes, seconds, maxRssMiB: process.resourceUsage().maxRSS / 1024 }));
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'convert-large-'));
  try {
    const fs = await statfs(dir);
    const free = fs.bavail * fs.bsize;
    const fullPlan = modelPlan('MDT-XL/2');
    const fullBytes = fullPlan.reduce((a, p) => a + bytesOfPlan(p), 0);
    // Input and output together need about twice the checkpoint size, plus headroom.
    let depth = FULL_DEPTH;
    if (free < 7 * GB) {
      depth = Math.max(3, Math.floor(FULL_DEPTH * (free - 1 * GB) / (2.5 * fullBytes)));
      console.log(`only ${(free / GB).toFixed(1)} GB free in ${dir}: scaling down to ${depth} of ${FULL_DEPTH} blocks`);
    }
    const plan = depth === FULL_DEPTH ? fullPlan : modelPlan('MDT-XL/2', { depth });
    const ptPath = join(dir, 'mdt_xl2_synthetic.pt');
    const outPath = join(dir, 'mdt_xl2_synthetic.safetensors');

    let t0 = performance.now();
    await buildCheckpoint(ptPath, plan);
    const ptBytes = (await stat(ptPath)).size;
    console.log(`built ${plan.length} tensors, ${(ptBytes / GB).toFixed(3)} GB ZIP64 .pt in ${((performance.now() - t0) / 1000).toFixed(1)} s (free space was ${(free / GB).toFixed(0)} GB)`);

    const child = execFileSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--convert', ptPath, outPath], { encoding: 'utf8' });
    const r = JSON.parse(child.trim().split('\n').at(-1)!) as { count: number; bytes: number; seconds: number; maxRssMiB: number };
    console.log(`converted ${r.count} tensors to ${(r.bytes / GB).toFixed(3)} GB safetensors in ${r.seconds.toFixed(1)} s ` +
      `(${(ptBytes / 1e6 / r.seconds).toFixed(0)} MB/s); converter peak RSS ${r.maxRssMiB.toFixed(0)} MiB`);

    t0 = performance.now();
    const st = await openSafetensors(outPath);
    try {
      if (st.entries.size !== plan.length) throw new Error(`expected ${plan.length} tensors, found ${st.entries.size}`);
      for (const i of [0, Math.floor(plan.length / 2), plan.length - 1]) {
        const got = await st.read(plan[i].key);
        const want = contents(plan[i], i);
        if (!Buffer.from(got.data.buffer).equals(Buffer.from(want.buffer))) throw new Error(`tensor '${plan[i].key}' differs after conversion`);
      }
    } finally {
      await st.close();
    }
    console.log(`spot check of 3 tensors passed in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === '--convert') await convertChild(process.argv[3], process.argv[4]);
else await main();
