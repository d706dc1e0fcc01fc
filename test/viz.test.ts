import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { PNG } from 'pngjs';
import { encodePng, imageGrid, toUint8, writePng } from '../mdt/viz/png.ts';
import { PALETTE, axisTicks, movingAverage, renderPlot, writePlot } from '../mdt/viz/plot.ts';
import type { Raster } from '../mdt/viz/png.ts';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'mdt-viz-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Decoded pixels as RGB triples (pngjs always decodes to RGBA). */
function decodeRgb(bytes: Buffer): { width: number; height: number; rgb: Uint8Array } {
  const png = PNG.sync.read(bytes);
  const rgb = new Uint8Array(png.width * png.height * 3);
  for (let p = 0; p < png.width * png.height; p++) {
    rgb.set(png.data.subarray(4 * p, 4 * p + 3), 3 * p);
    assert.equal(png.data[4 * p + 3], 255);
  }
  return { width: png.width, height: png.height, rgb };
}

test('writePng round-trips gray and RGB images exactly, leaving no temp file', async (t) => {
  const dir = tempDir(t);
  const gray: Raster = { width: 7, height: 5, channels: 1, data: Uint8Array.from({ length: 35 }, (_, i) => i * 7) };
  const rgb: Raster = { width: 3, height: 4, channels: 3, data: Uint8Array.from({ length: 36 }, (_, i) => 255 - i * 5) };
  await writePng(join(dir, 'g.png'), gray);
  await writePng(join(dir, 'c.png'), rgb);
  assert.deepEqual(readdirSync(dir).sort(), ['c.png', 'g.png']);
  const g = decodeRgb(readFileSync(join(dir, 'g.png')));
  assert.deepEqual([g.width, g.height], [7, 5]);
  assert.deepEqual(Array.from(g.rgb.filter((_, i) => i % 3 === 0)), Array.from(gray.data));
  assert.deepEqual(Array.from(g.rgb.filter((_, i) => i % 3 === 2)), Array.from(gray.data));
  const c = decodeRgb(readFileSync(join(dir, 'c.png')));
  assert.deepEqual(Array.from(c.rgb), Array.from(rgb.data));
  assert.equal(PNG.sync.read(encodePng(gray)).colorType, 0);
  assert.throws(() => encodePng({ ...rgb, data: new Uint8Array(35) }), /expected 3×4×3 = 36 bytes, got 35/);
  await assert.rejects(writePng(join(dir, 'no-such-dir', 'x.png'), gray));
  assert.deepEqual(readdirSync(dir).sort(), ['c.png', 'g.png']);
});

test('toUint8 maps [-1, 1] to 0..255 with rounding and clamping', () => {
  const out = toUint8(Float32Array.of(-1, 1, 0, -2, 3, NaN, -1 + 1 / 127.5, 0.999));
  assert.deepEqual(Array.from(out), [0, 255, 128, 0, 255, 0, 1, 255]);
});

test('imageGrid puts image k at (pad + (k mod cols)(w + pad), pad + ⌊k/cols⌋(h + pad))', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 11 }),
      fc.integer({ min: 1, max: 5 }),
      fc.integer({ min: 0, max: 3 }),
      fc.constantFrom<1 | 3>(1, 3),
      fc.integer({ min: 1, max: 4 }),
      fc.integer({ min: 1, max: 4 }),
      (n, cols, pad, c, h, w) => {
        // Image k, channel ch, pixel (y, x) holds a value that encodes all four.
        const value = (k: number, ch: number, y: number, x: number) => ((k * 3 + ch) * 16 + y * 4 + x) % 251;
        const images = new Float32Array(n * c * h * w);
        for (let k = 0; k < n; k++)
          for (let ch = 0; ch < c; ch++)
            for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) images[((k * c + ch) * h + y) * w + x] = value(k, ch, y, x) / 127.5 - 1;
        const grid = imageGrid(images, n, c, h, w, cols, pad, 255);
        const shown = Math.min(cols, n);
        assert.equal(grid.width, pad + shown * (w + pad));
        assert.equal(grid.height, pad + Math.ceil(n / cols) * (h + pad));
        assert.equal(grid.channels, c);
        const covered = new Set<number>();
        for (let k = 0; k < n; k++) {
          const x0 = pad + (k % cols) * (w + pad);
          const y0 = pad + Math.floor(k / cols) * (h + pad);
          for (let ch = 0; ch < c; ch++)
            for (let y = 0; y < h; y++)
              for (let x = 0; x < w; x++) {
                const at = ((y0 + y) * grid.width + x0 + x) * c + ch;
                assert.equal(grid.data[at], value(k, ch, y, x));
                covered.add(at);
              }
        }
        grid.data.forEach((v, i) => covered.has(i) || assert.equal(v, 255));
      },
    ),
    { numRuns: 150 },
  );
  assert.throws(() => imageGrid(new Float32Array(10), 2, 1, 2, 3, 2), /2 images of 1×2×3 need 12 values, got 10/);
});

test('movingAverage: trailing mean over finite values, NaN where the point itself is not finite', () => {
  assert.deepEqual(Array.from(movingAverage([1, 2, 3, 4, 5], 2)), [1, 1.5, 2.5, 3.5, 4.5]);
  assert.deepEqual(Array.from(movingAverage([4, NaN, 2, 6], 3)), [4, NaN, 3, 4]);
  assert.deepEqual(Array.from(movingAverage([1, 2, 3], 1)), [1, 2, 3]);
  assert.throws(() => movingAverage([1], 0), /expected an integer window ≥ 1, got 0/);
});

function countColor(img: { width: number; rgb: Uint8Array }, color: readonly number[], rows: [number, number]): number {
  let n = 0;
  for (let y = rows[0]; y < rows[1]; y++) {
    for (let x = 0; x < img.width; x++) {
      const i = (y * img.width + x) * 3;
      if (img.rgb[i] === color[0] && img.rgb[i + 1] === color[1] && img.rgb[i + 2] === color[2]) n++;
    }
  }
  return n;
}

test('writePlot writes a PNG of the requested size that draws every series in its colour', async (t) => {
  const dir = tempDir(t);
  const steps = Array.from({ length: 200 }, (_, i) => i * 10);
  // Both curves sit in the lower half of the value range so they are drawn below the legend.
  const full = steps.map((s) => 0.1 + 0.4 * Math.exp(-s / 300));
  const masked = steps.map((s) => 0.05 + 0.3 * Math.exp(-s / 500));
  const path = join(dir, 'loss.png');
  await writePlot(
    path,
    [
      { name: 'full mse', x: steps, y: full },
      { name: 'masked mse', x: steps, y: masked },
      { name: 'ceiling', y: [1, 1], x: [0, 1990], color: [0, 0, 0] },
    ],
    { title: 'MDT loss', xLabel: 'step', yLabel: 'mse', width: 640, height: 400 },
  );
  const img = decodeRgb(readFileSync(path));
  assert.deepEqual([img.width, img.height], [640, 400]);
  const lower: [number, number] = [200, 400];
  assert.ok(countColor(img, PALETTE[0], lower) > 100, 'full mse drawn');
  assert.ok(countColor(img, PALETTE[1], lower) > 100, 'masked mse drawn');
  assert.ok(countColor(img, [0, 0, 0], [0, 100]) > 200, 'custom-coloured series drawn');
});

test('renderPlot: log scale, smoothing, constant and non-finite data, size and input errors', () => {
  const noisy = Array.from({ length: 500 }, (_, i) => Math.exp(-i / 100) * (1 + 0.5 * Math.sin(i * 1.7)) + 1e-3);
  const log = renderPlot([{ name: 'loss', y: noisy }, { name: 'with gaps', y: noisy.map((v, i) => (i % 50 === 0 ? NaN : v / 2)) }], {
    logY: true,
    smooth: 20,
    width: 300,
    height: 200,
  });
  assert.deepEqual([log.width, log.height, log.channels, log.data.length], [300, 200, 3, 300 * 200 * 3]);
  const flat = renderPlot([{ name: 'flat', y: [2, 2, 2] }, { name: 'nan', y: [NaN] }]);
  assert.deepEqual([flat.width, flat.height], [800, 500]);
  assert.throws(() => renderPlot([]), /expected at least one series, got none/);
  assert.throws(() => renderPlot([{ name: 'a', y: [1, 2], x: [1] }]), /series "a" has 2 y values but 1 x values/);
  assert.throws(() => renderPlot([{ name: 'a', y: [1] }], { width: 100 }), /at least 160×120, got 100×500/);
  assert.throws(() => renderPlot([{ name: 'a', y: [1] }], { smooth: 0.5 }), /smooth to be an integer window ≥ 1, got 0\.5/);
});

test('axis ticks never print two labels alike (log and linear, narrow and wide ranges)', () => {
  // A loss curve between 0.95 and 1.1 on a log axis once printed "1.0" twice.
  const narrow = axisTicks(Math.log10(0.95), Math.log10(1.1), true);
  assert.deepEqual(narrow.labels, ['0.95', '1.00', '1.05', '1.10']);
  fc.assert(fc.property(fc.double({ min: -6, max: 6, noNaN: true }), fc.double({ min: 1e-4, max: 8, noNaN: true }), fc.boolean(), (lo, width, log) => {
    const { values, labels } = axisTicks(lo, lo + width, log);
    assert.equal(labels.length, values.length);
    assert.equal(new Set(labels).size, labels.length, `labels ${labels.join(' ')}`);
  }));
});
