// 8-bit rasters from [-1, 1] images: no file access, so the web page draws with them too.

/** An 8-bit image, rows of interleaved channels (gray, or R, G, B). */
export interface Raster {
  readonly width: number;
  readonly height: number;
  readonly channels: 1 | 3;
  readonly data: Uint8Array;
}

/** [-1, 1] floats → bytes: clamp(round((x + 1) · 127.5), 0, 255); NaN becomes 0. */
export function toUint8(images: Float32Array): Uint8Array {
  const out = new Uint8Array(images.length);
  for (let i = 0; i < images.length; i++) {
    const v = Math.round((images[i] + 1) * 127.5);
    out[i] = v > 255 ? 255 : v > 0 ? v : 0;
  }
  return out;
}

/**
 * Tiles the first `n` of NCHW images (floats in [-1, 1]) row-major into `cols` columns, with
 * `pad` pixels of `padValue` between tiles and around the border. Image k lands at
 * (x, y) = (pad + (k mod cols)·(w + pad), pad + ⌊k / cols⌋·(h + pad)).
 */
export function imageGrid(
  images: Float32Array,
  n: number,
  c: 1 | 3,
  h: number,
  w: number,
  cols: number,
  pad = 2,
  padValue = 255,
): Raster {
  for (const [name, v] of [['n', n], ['h', h], ['w', w], ['cols', cols]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`imageGrid: expected ${name} to be a positive integer, got ${v}`);
  }
  if (!Number.isInteger(pad) || pad < 0) throw new Error(`imageGrid: expected pad ≥ 0, got ${pad}`);
  if (c !== 1 && c !== 3) throw new Error(`imageGrid: expected 1 or 3 channels, got ${c}`);
  if (images.length < n * c * h * w) {
    throw new Error(`imageGrid: ${n} images of ${c}×${h}×${w} need ${n * c * h * w} values, got ${images.length}`);
  }
  const shownCols = Math.min(cols, n);
  const rows = Math.ceil(n / cols);
  const width = pad + shownCols * (w + pad);
  const height = pad + rows * (h + pad);
  const data = new Uint8Array(width * height * c).fill(padValue);
  const bytes = toUint8(images.subarray(0, n * c * h * w));
  for (let k = 0; k < n; k++) {
    const x0 = pad + (k % cols) * (w + pad);
    const y0 = pad + Math.floor(k / cols) * (h + pad);
    for (let ch = 0; ch < c; ch++) {
      for (let y = 0; y < h; y++) {
        const src = ((k * c + ch) * h + y) * w;
        const dst = ((y0 + y) * width + x0) * c + ch;
        for (let x = 0; x < w; x++) data[dst + x * c] = bytes[src + x];
      }
    }
  }
  return { width, height, channels: c, data };
}
