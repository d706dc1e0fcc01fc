/**
 * The summary table: parameters and forward multiply-accumulates per module. The figures are
 * computed from the traced graph by compile/summary.ts (`summary(model)`); this file holds the
 * row types and the formatting, so mdt/ does not depend on the compiler.
 */

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
