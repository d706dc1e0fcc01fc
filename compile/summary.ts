/**
 * `summary(model)`: parameters (from the declarations) and forward multiply-accumulates per
 * module, counted on the traced graph — the denoiser forward at batch 1, plain and masked at
 * the kept-token count — from the primitives' `macs` rules, so any block written with the
 * DSL's ops is counted as it runs. No parameter is allocated. For the paper's blocks this is
 * DiT's convention: per block 12·T·D² + 2·T²·D + 6D², skip 2·T·D², plus embedders and head.
 * The table is formatted by mdt/summary.ts.
 */
import { countParams } from '../dsl/param.ts';
import { gridSize } from '../mdt/config.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import type { Summary, SummaryRow } from '../mdt/summary.ts';
import { macsByModule, moduleOf, traceForward } from './graph-report.ts';

export { formatSummary, type Summary, type SummaryRow } from '../mdt/summary.ts';

/** Forward MACs per module of one traced denoiser forward at batch 1. */
function forwardMacs(model: DiffusionModel, lenKeep: number | null): Map<string, number> {
  return new Map(macsByModule(traceForward(model, 1, lenKeep)).map((m) => [m.module, m.forward]));
}

export function summary(model: DiffusionModel, opts: { name?: string; lenKeep?: number } = {}): Summary {
  const c = model.config;
  const n = gridSize(c) ** 2;
  const lenKeep = opts.lenKeep ?? Math.trunc(n * (1 - c.maskRatio));
  const plain = forwardMacs(model, null);
  // DiT has no masked forward: its column repeats the plain one (and its total is 0).
  const masked = c.variant === 'dit' ? plain : forwardMacs(model, lenKeep);
  const groups = new Map<string, string[]>();
  for (const path of Object.keys(model.params)) {
    const m = moduleOf(path);
    groups.set(m, [...(groups.get(m) ?? []), path]);
  }
  const rows: SummaryRow[] = [...groups].map(([module, paths]) => {
    const inPaths = new Set(paths);
    return {
      module,
      params: countParams(model.params, (p) => inPaths.has(p)),
      macs: plain.get(module) ?? 0,
      maskedMacs: masked.get(module) ?? 0,
      inference: !paths.every((p) => model.params[p]!.trainOnly),
    };
  });
  // Work in modules without parameters of their own (top-level arithmetic, a parameter-free layer).
  for (const module of new Set([...plain.keys(), ...masked.keys()])) {
    if (!groups.has(module)) rows.push({ module, params: 0, macs: plain.get(module) ?? 0, maskedMacs: masked.get(module) ?? 0, inference: plain.has(module) });
  }
  const sum = (f: (r: SummaryRow) => number) => rows.reduce((a, r) => a + f(r), 0);
  return {
    name: opts.name ?? `${c.variant} depth ${c.depth} D ${c.hiddenSize} p ${c.patchSize}`,
    rows,
    totalParams: sum((r) => r.params),
    inferenceParams: sum((r) => (r.inference ? r.params : 0)),
    macs: sum((r) => r.macs),
    maskedMacs: c.variant === 'dit' ? 0 : sum((r) => r.maskedMacs),
    lenKeep,
  };
}
