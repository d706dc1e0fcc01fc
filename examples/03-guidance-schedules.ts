/**
 * Notebook 03 — classifier-free guidance weights over the diffusion steps: the official
 * power-cosine form (1 → w), the paper's form, and constant guidance.
 *   npx tsx examples/03-guidance-schedules.ts [OUT_DIR=runs/notebooks]
 */
import { noMoreArgs, pathArg } from './notebook.ts';
import { join } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { guidanceWeight, type GuidanceSchedule } from '../mdt/diffusion/guidance-weight.ts';
import { writePlot } from '../mdt/viz/plot.ts';

const out = pathArg(0, 'OUT_DIR', 'runs/notebooks');
noMoreArgs(1, '[OUT_DIR=runs/notebooks]');
await mkdir(out, { recursive: true });
const T = 1000;
const t = Array.from({ length: T }, (_, i) => i);
const curve = (s: GuidanceSchedule) => t.map((v) => guidanceWeight(s, v, T));

for (const w of [1.5, 3.8]) {
  const series = [0.01, 1, 2, 4, 8].map((power) => ({ name: `power-cosine s=${power}`, x: t, y: curve({ kind: 'power-cosine', scale: w, power }) }));
  series.push({ name: `paper form s=4`, x: t, y: curve({ kind: 'paper', scale: w, power: 4 }) });
  series.push({ name: 'constant', x: t, y: curve({ kind: 'constant', scale: w }) });
  const path = join(out, `guidance-w${w}.png`);
  await writePlot(path, series, { title: `CFG weight w_t for w = ${w} (sampling runs t = 999 -> 0)`, xLabel: 'diffusion step t', yLabel: 'w_t' });
  console.log(`wrote ${path}`);
}
for (const [t0, s] of [[999, 4], [500, 4], [250, 4], [100, 4], [0, 4], [500, 0.01]] as const) {
  console.log(`w=3.8 s=${s} t=${t0}: w_t = ${guidanceWeight({ kind: 'power-cosine', scale: 3.8, power: s }, t0, T).toFixed(4)}`);
}
