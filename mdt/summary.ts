/**
 * `summary(model)`: parameters and forward multiply-accumulates per module (DiT's
 * convention: per block 12·T·D² + 2·T²·D + 6D², skip 2·T·D², plus embedders and head).
 */
import { countParams } from '../dsl/param.ts';
import { gridSize, halfDepth, outChannels, type ModelConfig } from './config.ts';
import type { DiffusionModel } from './trunk.ts';
import { TIMESTEP_FREQ_DIM } from '../layers/embedders.ts';

export interface SummaryRow {
  readonly module: string;
  readonly params: number;
  /** MACs per image in the inference (unmasked) forward; 0 where the module does not run there. */
  readonly macs: number;
  /** MACs per image in the masked training forward at the given kept-token count. */
  readonly maskedMacs: number;
  readonly inference: boolean;
}

export interface Summary {
  readonly name: string;
  readonly rows: readonly SummaryRow[];
  readonly totalParams: number;
  readonly inferenceParams: number;
  readonly macs: number;
  readonly maskedMacs: number;
  readonly lenKeep: number;
}

/** The module a parameter path belongs to (`blocks.3.attn.qkv.weight` → `blocks.3`). */
function moduleOf(path: string): string {
  const parts = path.split('.');
  return /^\d+$/.test(parts[1] ?? '') ? `${parts[0]}.${parts[1]}` : parts[0]!;
}

function blockMacs(tokens: number, d: number, skip: boolean): number {
  return 12 * tokens * d * d + 2 * tokens * tokens * d + 6 * d * d + (skip ? 2 * tokens * d * d : 0);
}

/** Which blocks see only the kept tokens in the masked forward. */
function encoderBlocks(c: ModelConfig): (module: string) => boolean {
  if (c.variant === 'mdt-v1') return (m) => m.startsWith('blocks.') && Number(m.split('.')[1]) < c.depth - c.decodeLayer;
  if (c.variant === 'mdt-v2') return (m) => m.startsWith('en_inblocks.') || m.startsWith('en_outblocks.');
  return () => false;
}

export function summary(model: DiffusionModel, opts: { name?: string; lenKeep?: number } = {}): Summary {
  const c = model.config;
  const n = gridSize(c) ** 2;
  const d = c.hiddenSize;
  const lenKeep = opts.lenKeep ?? Math.trunc(n * (1 - c.maskRatio));
  const isEncoder = encoderBlocks(c);
  const groups = new Map<string, string[]>();
  for (const path of Object.keys(model.params)) {
    const m = moduleOf(path);
    groups.set(m, [...(groups.get(m) ?? []), path]);
  }
  const rows: SummaryRow[] = [...groups].map(([module, paths]) => {
    const params = countParams(model.params, (p) => paths.includes(p));
    const inference = !paths.every((p) => model.params[p]!.trainOnly);
    const skip = paths.some((p) => p.includes('.skip_linear.'));
    let macs = 0;
    let maskedMacs = 0;
    if (module === 'x_embedder') macs = maskedMacs = n * c.inChannels * c.patchSize ** 2 * d;
    else if (module === 't_embedder') macs = maskedMacs = TIMESTEP_FREQ_DIM * d + d * d;
    else if (module === 'final_layer') macs = maskedMacs = n * d * c.patchSize ** 2 * outChannels(c) + 2 * d * d;
    else if (/^(blocks|en_inblocks|en_outblocks|de_blocks|sideblocks)\./.test(module)) {
      macs = inference ? blockMacs(n, d, skip) : 0;
      maskedMacs = blockMacs(isEncoder(module) ? lenKeep : n, d, skip);
    }
    return { module, params, macs, maskedMacs, inference };
  });
  const sum = (f: (r: SummaryRow) => number) => rows.reduce((a, r) => a + f(r), 0);
  return {
    name: opts.name ?? `${c.variant} depth ${c.depth} D ${d} p ${c.patchSize}`,
    rows,
    totalParams: sum((r) => r.params),
    inferenceParams: sum((r) => (r.inference ? r.params : 0)),
    macs: sum((r) => r.macs),
    maskedMacs: c.variant === 'dit' ? 0 : sum((r) => r.maskedMacs),
    lenKeep,
  };
}

const num = (v: number) => v.toLocaleString('en-US');
const gmac = (v: number) => (v / 1e9).toFixed(2);

export function formatSummary(s: Summary): string {
  const masked = s.maskedMacs > 0;
  const head = ['module', 'params', 'GMAC', ...(masked ? [`GMAC masked (keep ${s.lenKeep})`] : [])];
  const body = s.rows.map((r) => [r.module + (r.inference ? '' : ' (train only)'), num(r.params), gmac(r.macs), ...(masked ? [gmac(r.maskedMacs)] : [])]);
  const total = ['total', num(s.totalParams), gmac(s.macs), ...(masked ? [gmac(s.maskedMacs)] : [])];
  const widths = head.map((_, i) => Math.max(...[head, ...body, total].map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((v, i) => (i === 0 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join('  ');
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [s.name, line(head), rule, ...body.map(line), rule, line(total), `used at inference: ${num(s.inferenceParams)} params`].join('\n');
}
