// `npm run bench -- --xl [--model MDTv2-XL/2] [--images 16] [--steps 2] [--batch-size 16] [--keep DIR]`
//
// Sampling an official-size checkpoint on the default runtime, as a researcher would: writes a
// torch.save checkpoint of the model's official layout (every key of the official state dict,
// train-only ones included; random weights, ~3 GB for XL/2) into a temp folder, then runs
// `mdt sample` on it in a child process — 16 images (2 classes × 8) × 2 respaced DDPM steps with
// CFG (w = 4, so 32 rows), --latents-out, no VAE — and records, from the child's own output
// lines: the load time (start → the "sampling …" line, with the CPU user/system seconds spent
// by then), each step's time (the first includes tracing and compiling), the peak RSS, the wasm
// heap's peak, whether the batch was split, and how long a plain read of the file takes into a
// reused buffer and into fresh memory (the disk-read floors of the load; fresh pages are zeroed
// by the kernel as they are first written, which a load cannot avoid). The checkpoint is deleted afterwards unless --keep DIR keeps it
// there. The record goes to bench/results/xl-<date>.json.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { open, stat, statfs } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { writeFileAtomic } from '../formats/atomic-write.ts';
import { runCli } from '../cli/main.ts';
import type { CliIO } from '../cli/io.ts';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { heapStatus } from '../runtime/heap.ts';
import { buildCheckpoint, bytesOfPlan, contents, modelPlan } from './pt-checkpoint.ts';

const GB = 1e9;
const MiB = 2 ** 20;

interface Line {
  readonly s: number;
  readonly rssMiB: number;
  readonly text: string;
}

interface ChildRecord {
  readonly code: number;
  readonly lines: readonly Line[];
  readonly loadCpu: { readonly userS: number; readonly systemS: number } | null;
  readonly maxRssMiB: number;
  readonly heapPeakMiB: number | null;
}

/** Runs `mdt sample` in this process, timing each line it prints; prints the record as JSON. */
async function child(argv: readonly string[]): Promise<void> {
  const t0 = performance.now();
  const lines: Line[] = [];
  let loadCpu: ChildRecord['loadCpu'] = null;
  const take = (chunk: string) => {
    for (const text of chunk.split('\n').filter((l) => l.trim() !== '')) {
      lines.push({ s: (performance.now() - t0) / 1000, rssMiB: process.memoryUsage().rss / MiB, text });
      if (loadCpu === null && /^sampling \d+ images/.test(text)) {
        const u = process.resourceUsage();
        loadCpu = { userS: u.userCPUTime / 1e6, systemS: u.systemCPUTime / 1e6 };
      }
    }
  };
  const io: CliIO = { write: take, writeErr: take, tty: false };
  const code = await runCli(['sample', ...argv], io);
  const heap = heapStatus();
  const record: ChildRecord = { code, lines, loadCpu, maxRssMiB: process.resourceUsage().maxRSS / 1024, heapPeakMiB: heap === null ? null : heap.peak / MiB };
  console.log(JSON.stringify(record));
}

/**
 * Seconds to read the file once with plain positioned reads, 64 MiB at a time: into one reused
 * buffer (`reuse`: the disk and page-cache floor), or into fresh memory the file's size, as
 * loading must (the kernel also zeroes every page it hands out: the floor of a load).
 */
async function readSeconds(path: string, into: 'reuse' | 'fresh'): Promise<number> {
  const t0 = performance.now();
  const h = await open(path, 'r');
  try {
    const size = (await h.stat()).size;
    const buf = new Uint8Array(into === 'reuse' ? 64 * MiB : size);
    for (let at = 0; at < size; at += 64 * MiB) {
      const len = Math.min(64 * MiB, size - at);
      await h.read(buf, into === 'reuse' ? 0 : at, len, at);
    }
  } finally {
    await h.close();
  }
  return (performance.now() - t0) / 1000;
}

export async function xlBench(args: readonly string[]): Promise<void> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      model: { type: 'string', default: 'MDTv2-XL/2' },
      images: { type: 'string', default: '16' },
      steps: { type: 'string', default: '2' },
      'batch-size': { type: 'string', default: '16' },
      keep: { type: 'string' },
    },
  });
  const images = Number(values.images);
  if (!Number.isInteger(images) || images < 2 || images % 2 !== 0) throw new Error(`bench --xl: --images must be an even integer ≥ 2 (two classes), got ${values.images}`);
  const model = buildModel(namedConfig(values.model));
  const plan = modelPlan(values.model);
  const bytes = plan.reduce((a, p) => a + bytesOfPlan(p), 0);
  const dir = values.keep ?? mkdtempSync(join(tmpdir(), 'mdt-xl-'));
  mkdirSync(dir, { recursive: true });
  const fs = await statfs(dir);
  if (fs.bavail * fs.bsize < bytes + 1 * GB) throw new Error(`bench --xl: ${(bytes / GB).toFixed(2)} GB checkpoint, only ${((fs.bavail * fs.bsize) / GB).toFixed(1)} GB free in ${dir}`);
  const ckpt = join(dir, `${values.model.replace('/', '_')}_synthetic.pt`);
  try {
    let t = performance.now();
    // Small weights (±0.02) keep 28 blocks of activations finite; index buffers are the model's own.
    const ints = new Map(Object.entries(model.params).filter(([, s]) => s.init.kind === 'values').map(([k, s]) => [k, (s.init as { values(): ArrayLike<number> }).values()]));
    await buildCheckpoint(ckpt, plan, (p, i) => contents(p, i, 0.04, ints.get(p.key)));
    const fileBytes = (await stat(ckpt)).size;
    const buildS = (performance.now() - t) / 1000;
    process.stderr.write(`bench --xl: wrote ${values.model} (${plan.length} tensors, ${(fileBytes / GB).toFixed(2)} GB) in ${buildS.toFixed(0)} s\n`);
    const readS = await readSeconds(ckpt, 'reuse');
    const argv = [
      '--ckpt', ckpt, '--class', '88,207', '--count', String(images / 2), '--batch-size', values['batch-size'], '--steps', values.steps, '--cfg-scale', '4',
      '--latents-out', join(dir, 'latents.npy'),
    ];
    process.stderr.write(`bench --xl: mdt sample ${argv.join(' ')} …\n`);
    t = performance.now();
    const load0 = loadavg();
    const out = execFileSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--xl-child', ...argv], { encoding: 'utf8', maxBuffer: 64 * MiB });
    const wallS = (performance.now() - t) / 1000;
    const freshReadS = await readSeconds(ckpt, 'fresh');
    const r = JSON.parse(out.trim().split('\n').at(-1)!) as ChildRecord;
    const at = (re: RegExp) => r.lines.find((l) => re.test(l.text));
    const start = at(/^sampling \d+ images/);
    const steps = r.lines.filter((l) => /^sampling \d+\/\d+ steps/.test(l.text));
    const stepS = steps.map((l, i) => l.s - (i === 0 ? start?.s ?? 0 : steps[i - 1]!.s));
    const record = {
      date: new Date().toISOString(),
      model: values.model,
      command: `mdt sample ${argv.join(' ')}`,
      exitCode: r.code,
      checkpointBytes: fileBytes,
      buildS,
      plainReadS: readS,
      freshReadS,
      loadS: start?.s ?? null,
      loadCpu: r.loadCpu,
      rssAfterLoadMiB: start?.rssMiB ?? null,
      stepS,
      maxRssMiB: r.maxRssMiB,
      heapPeakMiB: r.heapPeakMiB,
      split: at(/sampling them \d+ at a time/)?.text ?? null,
      wallS,
      loadavg: { start: load0, end: loadavg() },
      lines: r.lines,
    };
    console.log(
      `${values.model}: ${(fileBytes / GB).toFixed(2)} GB .pt; load ${record.loadS?.toFixed(1)} s from mdt sample's start to its first step (CPU user so far ${r.loadCpu?.userS.toFixed(1)} s, system ${r.loadCpu?.systemS.toFixed(1)} s); ` +
      `a plain read of the file takes ${readS.toFixed(1)} s into a reused buffer, ${freshReadS.toFixed(1)} s into fresh memory; RSS after load ${record.rssAfterLoadMiB?.toFixed(0)} MiB`,
    );
    console.log(`${images} images × ${values.steps} steps with CFG (${2 * images} rows): ${stepS.map((s) => `${s.toFixed(1)} s`).join(', ')} per step (the first traces and compiles); peak RSS ${r.maxRssMiB.toFixed(0)} MiB, wasm heap peak ${r.heapPeakMiB?.toFixed(0)} MiB; ${record.split ?? 'no split'}; exit ${r.code}`);
    console.log(`load average ${load0.map((l) => l.toFixed(2)).join(' ')} at start (other processes skew the times)`);
    if (r.code !== 0) console.log(r.lines.slice(-5).map((l) => l.text).join('\n'));
    const resultsDir = join(dirname(fileURLToPath(import.meta.url)), 'results');
    mkdirSync(resultsDir, { recursive: true });
    const path = join(resultsDir, `xl-${record.date.replace(/[:.]/g, '-')}.json`);
    await writeFileAtomic(path, `${JSON.stringify(record, null, 1)}\n`);
    console.log(`wrote ${path}`);
  } finally {
    if (values.keep === undefined) rmSync(dir, { recursive: true, force: true });
    else rmSync(join(dir, 'latents.npy'), { force: true });
  }
}

if (process.argv[2] === '--xl-child') await child(process.argv.slice(3));
