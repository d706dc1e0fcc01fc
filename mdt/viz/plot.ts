// Line plots (loss curves) rasterised in plain JS and written as PNG: no browser, no canvas.
import { ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH, glyphColumns, textWidth } from './font5x7.ts';
import { writePng } from './png.ts';
import type { Raster } from './png.ts';

export type Rgb = readonly [number, number, number];

export interface Series {
  readonly name: string;
  readonly y: ArrayLike<number>;
  /** x of each point (e.g. the training step); 0, 1, 2, … when left out */
  readonly x?: ArrayLike<number>;
  /** defaults to PALETTE[i mod 10] */
  readonly color?: Rgb;
}

export interface PlotOptions {
  readonly title?: string;
  readonly xLabel?: string;
  readonly yLabel?: string;
  /** pixels; defaults 800 × 500 */
  readonly width?: number;
  readonly height?: number;
  /** log10 y axis; points with y ≤ 0 cannot be placed and leave a gap */
  readonly logY?: boolean;
  /** trailing moving-average window in points; > 1 draws the smoothed curve over a faded raw one */
  readonly smooth?: number;
}

/** Ten well-separated colours (matplotlib's tab10). */
export const PALETTE: readonly Rgb[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [127, 127, 127],
  [188, 189, 34],
  [23, 190, 207],
];

const WHITE: Rgb = [255, 255, 255];
const INK: Rgb = [34, 34, 34];
const GRID: Rgb = [232, 232, 232];
const FRAME: Rgb = [120, 120, 120];

/**
 * Mean of the finite values among the last `window` points (this one included); NaN where this
 * point is not finite, so a diverged run still shows a gap rather than a hidden spike.
 */
export function movingAverage(y: ArrayLike<number>, window: number): Float64Array {
  if (!Number.isInteger(window) || window < 1) throw new Error(`movingAverage: expected an integer window ≥ 1, got ${window}`);
  const out = new Float64Array(y.length);
  let sum = 0;
  let count = 0;
  for (let i = 0; i < y.length; i++) {
    if (Number.isFinite(y[i])) {
      sum += y[i];
      count++;
    }
    const leaving = i - window;
    if (leaving >= 0 && Number.isFinite(y[leaving])) {
      sum -= y[leaving];
      count--;
    }
    out[i] = Number.isFinite(y[i]) && count > 0 ? sum / count : NaN;
  }
  return out;
}

class Canvas implements Raster {
  readonly channels = 3;
  readonly data: Uint8Array;
  constructor(
    readonly width: number,
    readonly height: number,
  ) {
    this.data = new Uint8Array(width * height * 3).fill(255);
  }

  set(x: number, y: number, c: Rgb): void {
    if (x < 0 || y < 0 || x >= this.width || y >= this.height) return;
    const i = (y * this.width + x) * 3;
    this.data[i] = c[0];
    this.data[i + 1] = c[1];
    this.data[i + 2] = c[2];
  }

  fill(x0: number, y0: number, w: number, h: number, c: Rgb): void {
    for (let y = y0; y < y0 + h; y++) for (let x = x0; x < x0 + w; x++) this.set(x, y, c);
  }

  /** Bresenham with a square brush of side `thick`, kept inside `clip` = [x0, y0, x1, y1]. */
  line(ax: number, ay: number, bx: number, by: number, thick: number, c: Rgb, clip: readonly number[]): void {
    let x = Math.round(ax);
    let y = Math.round(ay);
    const x1 = Math.round(bx);
    const y1 = Math.round(by);
    const dx = Math.abs(x1 - x);
    const dy = -Math.abs(y1 - y);
    const sx = x < x1 ? 1 : -1;
    const sy = y < y1 ? 1 : -1;
    const lo = -Math.floor((thick - 1) / 2);
    let err = dx + dy;
    for (;;) {
      for (let oy = lo; oy < lo + thick; oy++) {
        for (let ox = lo; ox < lo + thick; ox++) {
          const px = x + ox;
          const py = y + oy;
          if (px >= clip[0] && px <= clip[2] && py >= clip[1] && py <= clip[3]) this.set(px, py, c);
        }
      }
      if (x === x1 && y === y1) return;
      const e2 = 2 * err;
      if (e2 >= dy) {
        err += dy;
        x += sx;
      }
      if (e2 <= dx) {
        err += dx;
        y += sy;
      }
    }
  }

  text(s: string, x: number, y: number, c: Rgb, scale = 1): void {
    for (let k = 0; k < s.length; k++) {
      const cols = glyphColumns(s[k]);
      for (let gx = 0; gx < GLYPH_WIDTH; gx++) {
        for (let gy = 0; gy < GLYPH_HEIGHT; gy++) {
          if ((cols[gx] >> gy) & 1) this.fill(x + (k * ADVANCE + gx) * scale, y + gy * scale, scale, scale, c);
        }
      }
    }
  }
}

/** Round steps (1, 2, 5 × 10^k) that cut [lo, hi] into about `target` parts. */
function linearTicks(lo: number, hi: number, target: number): { ticks: number[]; step: number } {
  const raw = (hi - lo) / target;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const ticks: number[] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) ticks.push(k * step);
  return { ticks, step };
}

/** Ticks for a log axis over [10^lo, 10^hi]: whole decades over a wide range, else 1-2-5 steps. */
function logTicks(lo: number, hi: number): { ticks: number[]; step?: number } {
  const decades: number[] = [];
  const every = Math.max(1, Math.ceil((Math.floor(hi) - Math.ceil(lo) + 1) / 8));
  for (let k = Math.ceil(lo); k <= Math.floor(hi); k += every) decades.push(10 ** k);
  if (decades.length >= 4) return { ticks: decades };
  const within: number[] = [];
  for (let k = Math.floor(lo); k <= Math.ceil(hi); k++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** k;
      if (Math.log10(v) >= lo - 1e-9 && Math.log10(v) <= hi + 1e-9) within.push(v);
    }
  }
  if (within.length >= 2) return { ticks: within };
  // A narrow range: evenly spaced values, labelled to the precision of their spacing.
  const linear = linearTicks(10 ** lo, 10 ** hi, 4);
  return { ticks: linear.ticks.filter((v) => v > 0), step: linear.step };
}

/**
 * Tick values over [lo, hi] (in axis space: log10 of the values on a log axis) and their
 * labels, which are always distinct: a precision that would print two ticks alike is raised.
 */
export function axisTicks(lo: number, hi: number, log: boolean, target = 6): { values: number[]; labels: string[] } {
  const { ticks, step } = log ? logTicks(lo, hi) : linearTicks(lo, hi, target);
  let ref = step;
  let labels = ticks.map((v) => formatTick(v, ref));
  for (let extra = 0; new Set(labels).size < labels.length && extra < 10; extra++) {
    ref = (ref ?? Math.min(...ticks.map(Math.abs).filter((a) => a > 0))) / 10;
    labels = ticks.map((v) => formatTick(v, ref));
  }
  return { values: ticks, labels };
}

function formatTick(v: number, step?: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  const ref = step ?? a;
  if (a >= 1e5 || a < 1e-3) {
    const digits = Math.max(0, Math.floor(Math.log10(a)) - Math.floor(Math.log10(ref) + 1e-9));
    const [mant, exp] = v.toExponential(Math.min(digits, 6)).split('e');
    return `${mant.includes('.') ? mant.replace(/\.?0+$/, '') : mant}e${Number(exp)}`;
  }
  const decimals = Math.max(0, -Math.floor(Math.log10(ref) + 1e-9));
  return v.toFixed(Math.min(decimals, 10));
}

/** `c` at opacity `t` over white. */
function mix(c: Rgb, t: number): Rgb {
  const over = (v: number) => Math.round(v * t + 255 * (1 - t));
  return [over(c[0]), over(c[1]), over(c[2])];
}

/** Renders the series as an RGB line plot with axes, ticks, grid, legend and title. */
export function renderPlot(series: readonly Series[], options: PlotOptions = {}): Raster {
  const width = options.width ?? 800;
  const height = options.height ?? 500;
  const smooth = options.smooth ?? 1;
  const logY = options.logY ?? false;
  if (series.length === 0) throw new Error('renderPlot: expected at least one series, got none');
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 160 || height < 120) {
    throw new Error(`renderPlot: expected an integer size of at least 160×120, got ${width}×${height}`);
  }
  if (!Number.isInteger(smooth) || smooth < 1) throw new Error(`renderPlot: expected smooth to be an integer window ≥ 1, got ${smooth}`);
  series.forEach((s) => {
    if (s.x !== undefined && s.x.length !== s.y.length) {
      throw new Error(`renderPlot: series "${s.name}" has ${s.y.length} y values but ${s.x.length} x values`);
    }
  });

  // Everything is placed in axis space (log10 y on a log axis); non-placeable points become NaN.
  const toAxisY = (v: number): number => (logY ? (v > 0 ? Math.log10(v) : NaN) : v);
  const lines = series.map((s, i) => {
    const xs = Array.from({ length: s.y.length }, (_, k) => (s.x ? s.x[k] : k));
    const color = s.color ?? PALETTE[i % PALETTE.length];
    const raw = Array.from(s.y, toAxisY);
    return { name: s.name, xs, color, raw, smoothed: smooth > 1 ? Array.from(movingAverage(s.y, smooth), toAxisY) : null };
  });

  // Loops, not Math.min(...values): a long run's loss history would overflow the argument list.
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const l of lines) {
    l.raw.forEach((y, k) => {
      if (!Number.isFinite(y) || !Number.isFinite(l.xs[k])) return;
      [x0, x1, y0, y1] = [Math.min(x0, l.xs[k]), Math.max(x1, l.xs[k]), Math.min(y0, y), Math.max(y1, y)];
    });
  }
  if (x0 > x1) [x0, x1, y0, y1] = [0, 1, 0, 1];
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 === y0) [y0, y1] = logY ? [y0 - 0.5, y1 + 0.5] : [y0 - Math.max(Math.abs(y0) * 0.1, 1e-6), y1 + Math.max(Math.abs(y1) * 0.1, 1e-6)];
  const yPad = (y1 - y0) * 0.05;
  y0 -= yPad;
  y1 += yPad;

  const xt = axisTicks(x0, x1, false);
  const yt = axisTicks(y0, y1, logY);

  const titleH = options.title ? 2 * GLYPH_HEIGHT + 12 : 0;
  const top = 10 + titleH + (options.yLabel ? GLYPH_HEIGHT + 8 : 0);
  const left = 14 + Math.max(...yt.labels.map((s) => textWidth(s)), 0) + 6;
  const bottom = height - (10 + GLYPH_HEIGHT + 8 + (options.xLabel ? GLYPH_HEIGHT + 8 : 0));
  const right = width - 20;
  if (right - left < 40 || bottom - top < 40) throw new Error(`renderPlot: ${width}×${height} leaves no room for the plot area`);
  const px = (x: number) => left + ((x - x0) / (x1 - x0)) * (right - left);
  const py = (y: number) => bottom - ((y - y0) / (y1 - y0)) * (bottom - top);

  const img = new Canvas(width, height);
  const clip = [left, top, right, bottom];
  xt.values.forEach((v, k) => {
    const x = Math.round(px(v));
    img.fill(x, top, 1, bottom - top, GRID);
    img.fill(x, bottom, 1, 5, FRAME);
    const label = xt.labels[k]!;
    img.text(label, Math.round(x - textWidth(label) / 2), bottom + 8, INK);
  });
  yt.values.forEach((v, k) => {
    const y = Math.round(py(logY ? Math.log10(v) : v));
    img.fill(left, y, right - left, 1, GRID);
    img.fill(left - 5, y, 5, 1, FRAME);
    img.text(yt.labels[k]!, left - 8 - textWidth(yt.labels[k]!), y - 3, INK);
  });
  img.fill(left, top, right - left + 1, 1, FRAME);
  img.fill(left, bottom, right - left + 1, 1, FRAME);
  img.fill(left, top, 1, bottom - top + 1, FRAME);
  img.fill(right, top, 1, bottom - top + 1, FRAME);

  const drawPath = (xs: number[], ys: number[], thick: number, color: Rgb) => {
    let prev: [number, number] | null = null;
    for (let k = 0; k < ys.length; k++) {
      if (!Number.isFinite(ys[k]) || !Number.isFinite(xs[k])) {
        prev = null;
        continue;
      }
      const p: [number, number] = [px(xs[k]), py(ys[k])];
      img.line(...(prev ?? p), ...p, thick, color, clip);
      prev = p;
    }
  };
  lines.forEach((l) => {
    if (l.smoothed) {
      drawPath(l.xs, l.raw, 1, mix(l.color, 0.3));
      drawPath(l.xs, l.smoothed, 2, l.color);
    } else drawPath(l.xs, l.raw, 2, l.color);
  });

  const rowH = GLYPH_HEIGHT + 5;
  const legendW = 8 + 16 + 6 + Math.max(...lines.map((l) => textWidth(l.name))) + 8;
  const legendX = right - legendW - 6;
  const legendY = top + 6;
  img.fill(legendX, legendY, legendW, lines.length * rowH + 7, WHITE);
  img.fill(legendX, legendY, legendW, 1, FRAME);
  img.fill(legendX, legendY + lines.length * rowH + 6, legendW, 1, FRAME);
  img.fill(legendX, legendY, 1, lines.length * rowH + 7, FRAME);
  img.fill(legendX + legendW - 1, legendY, 1, lines.length * rowH + 7, FRAME);
  lines.forEach((l, k) => {
    const y = legendY + 6 + k * rowH;
    img.fill(legendX + 8, y + 2, 16, 3, l.color);
    img.text(l.name, legendX + 8 + 16 + 6, y, INK);
  });

  if (options.title) img.text(options.title, Math.round((width - textWidth(options.title, 2)) / 2), 10, INK, 2);
  if (options.yLabel) img.text(options.yLabel + (logY ? ' (log)' : ''), left - Math.min(left - 4, 10), 10 + titleH, INK);
  if (options.xLabel) img.text(options.xLabel, Math.round((left + right - textWidth(options.xLabel)) / 2), bottom + 8 + GLYPH_HEIGHT + 8, INK);
  return img;
}

/** Renders the plot and writes it atomically as a PNG at `path`. */
export async function writePlot(path: string, series: readonly Series[], options: PlotOptions = {}): Promise<void> {
  await writePng(path, renderPlot(series, options));
}

/** Plots of one width stacked top to bottom in one PNG (e.g. losses above evaluation metrics). */
export async function writePanels(path: string, panels: readonly { readonly series: readonly Series[]; readonly options?: PlotOptions }[]): Promise<void> {
  const rasters = panels.map((p) => renderPlot(p.series, p.options));
  const width = rasters[0]!.width;
  if (rasters.some((r) => r.width !== width)) throw new Error(`writePanels: panels must share one width, got ${rasters.map((r) => r.width).join(', ')}`);
  const height = rasters.reduce((a, r) => a + r.height, 0);
  const data = new Uint8Array(width * height * 3);
  let at = 0;
  for (const r of rasters) {
    data.set(r.data, at);
    at += r.data.length;
  }
  await writePng(path, { width, height, channels: 3, data });
}
