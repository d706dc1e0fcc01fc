/**
 * Progress of a long command: a cli-progress bar on a terminal, otherwise a plain line every
 * `every` units (logs and pipes get no cursor tricks).
 */
import cliProgress from 'cli-progress';
import { say, type CliIO } from './io.ts';

export interface ProgressOptions {
  readonly label: string;
  readonly total: number;
  /** Value the run starts from (a resumed run); rates count only what this process did. */
  readonly start?: number;
  readonly unit: string;
  /** Without a terminal: print a line each time the value passes a multiple of this. */
  readonly every: number;
}

export interface Progress {
  /** `fields`: extra text such as the current loss. */
  update(value: number, fields?: string): void;
  stop(): void;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

const fmtNum = (v: number) => (Number.isInteger(v) ? String(v) : v.toFixed(1));

export function startProgress(io: CliIO, o: ProgressOptions): Progress {
  const start = o.start ?? 0;
  const t0 = performance.now();
  const rateEta = (value: number) => {
    const elapsed = (performance.now() - t0) / 1000;
    const rate = elapsed > 0 ? (value - start) / elapsed : 0;
    return { rate: rate.toFixed(2), eta: formatDuration(rate > 0 ? (o.total - value) / rate : NaN) };
  };
  if (io.tty) {
    const bar = new cliProgress.SingleBar({
      // {eta} is cli-progress's own token (seconds from its recent-rate buffer), hence etaText.
      format: `${o.label} [{bar}] {value}/{total} ${o.unit} | {rate} ${o.unit}/s | ETA {etaText}{fields}`,
      stream: process.stdout,
      hideCursor: true,
      etaBuffer: 50,
    });
    bar.start(o.total, start, { rate: '0.00', etaText: '?', fields: '' });
    return {
      update: (value, fields) => {
        const { rate, eta } = rateEta(value);
        bar.update(value, { rate, etaText: eta, fields: fields ? ` | ${fields}` : '' });
      },
      stop: () => bar.stop(),
    };
  }
  let last = start;
  return {
    update(value, fields) {
      const crossed = Math.floor(value / o.every) > Math.floor(last / o.every);
      const finished = value >= o.total && last < o.total;
      if (!crossed && !finished) return;
      last = value;
      const { rate, eta } = rateEta(value);
      say(io, `${o.label} ${fmtNum(value)}/${fmtNum(o.total)} ${o.unit}${fields ? ` | ${fields}` : ''} | ${rate} ${o.unit}/s | ETA ${eta}`);
    },
    stop() {},
  };
}
