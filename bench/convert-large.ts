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
import { ZipBuilder, checkpointPickle } from '../test/torch-pt-builder.ts';
import type { TensorSpec } from '../test/torch-pt-builder.ts';

const D = 1152;
const FULL_DEPTH = 28;
const GB = 1e9;

interface Planned {
  key: string;
  shape: number[];
  dtype: 'F32' | 'I64';
}

/** MDT-XL/2 (v1) state_dict shapes: `depth` blocks plus one side block, embedders and final layer. */
function xl2Shapes(depth: number): Planned[] {
  const f = (key: string, ...shape: number[]): Planned => ({ key, shape, dtype: 'F32' });
  const block = (p: string): Planned[] => [
    f(`${p}.attn.qkv.weight`, 3 * D, D), f(`${p}.attn.qkv.bias`, 3 * D),
    f(`${p}.attn.proj.weight`, D, D), f(`${p}.attn.proj.bias`, D),
    f(`${p}.attn.rel_pos_bias.relative_position_bias_table`, 31 * 31 + 3, 16),
    { key: `${p}.attn.rel_pos_bias.relative_position_index`, shape: [256, 256], dtype: 'I64' },
    f(`${p}.mlp.fc1.weight`, 4 * D, D), f(`${p}.mlp.fc1.bias`, 4 * D),
    f(`${p}.mlp.fc2.weight`, D, 4 * D), f(`${p}.mlp.fc2.bias`, D),
    f(`${p}.adaLN_modulation.1.weight`, 6 * D, D), f(`${p}.adaLN_modulation.1.bias`, 6 * D),
  ];
  return [
    f('pos_embed', 1, 256, D), f('decoder_pos_embed', 1, 256, D), f('mask_token', 1, 1, D),
    f('x_embedder.proj.weight', D, 4, 2, 2), f('x_embedder.proj.bias', D),
    f('t_embedder.mlp.0.weight', D, 256), f('t_embedder.mlp.0.bias', D),
    f('t_embedder.mlp.2.weight', D, D), f('t_embedder.mlp.2.bias', D),
    f('y_embedder.embedding_table.weight', 1001, D),
    ...Array.from({ length: depth }, (_, i) => block(`blocks.${i}`)).flat(),
    ...block('sideblocks.0'),
    f('final_layer.linear.weight', 32, D), f('final_layer.linear.bias', 32),
    f('final_layer.adaLN_modulation.1.weight', 2 * D, D), f('final_layer.adaLN_modulation.1.bias', 2 * D),
  ];
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
const bytesOfPlan = (p: Planned): number => numel(p.shape) * (p.dtype === 'I64' ? 8 : 4);

/** Deterministic, tensor-specific contents so the output can be spot-checked. */
function contents(p: Planned, index: number): Float32Array | BigInt64Array {
  const n = numel(p.shape);
  if (p.dtype === 'I64') return BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 961));
  const out = new Float32Array(n);
  let h = (index * 0x9e3779b1) >>> 0;
  for (let i = 0; i < n; i++) {
    h = (Math.imul(h, 1664525) + 1013904223) >>> 0;
    out[i] = h / 4294967296 - 0.5;
  }
  return out;
}

async function buildCheckpoint(path: string, plan: readonly Planned[]): Promise<void> {
  const specs: TensorSpec[] = plan.map((p, i) => ({
    key: p.key,
    storage: p.dtype === 'I64' ? 'LongStorage' : 'FloatStorage',
    storageKey: String(i),
    numel: numel(p.shape),
    offset: 0,
    size: p.shape,
    stride: p.shape.map((_, d) => numel(p.shape.slice(d + 1))),
  }));
  const zip = await ZipBuilder.create(path, true);
  await zip.add('mdt_xl2/data.pkl', checkpointPickle(specs));
  for (const [i, p] of plan.entries()) {
    const data = contents(p, i);
    await zip.add(`mdt_xl2/data/${i}`, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  await zip.finish();
}

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
    const fullPlan = xl2Shapes(FULL_DEPTH);
    const fullBytes = fullPlan.reduce((a, p) => a + bytesOfPlan(p), 0);
    // Input and output together need about twice the checkpoint size, plus headroom.
    let depth = FULL_DEPTH;
    if (free < 7 * GB) {
      depth = Math.max(1, Math.floor(FULL_DEPTH * (free - 1 * GB) / (2.5 * fullBytes)));
      console.log(`only ${(free / GB).toFixed(1)} GB free in ${dir}: scaling down to ${depth} of ${FULL_DEPTH} blocks`);
    }
    const plan = depth === FULL_DEPTH ? fullPlan : xl2Shapes(depth);
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
