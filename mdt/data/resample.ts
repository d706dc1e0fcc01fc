// Separable resampling as Pillow's Resample.c does it, so the ADM center crop (PIL BOX, then
// BICUBIC) gives the official pixels: the kernel widens by the scale factor when shrinking
// (antialiasing), weights are normalised per output pixel, and on bytes each pass rounds to 8 bits
// in Pillow's 22-bit fixed point. On floats the same weights are applied without rounding.

export type ResampleFilter = 'box' | 'bilinear' | 'bicubic';

const KERNELS: Record<ResampleFilter, { support: number; at: (x: number) => number }> = {
  box: { support: 0.5, at: (x) => (x > -0.5 && x <= 0.5 ? 1 : 0) },
  bilinear: {
    support: 1,
    at: (x) => {
      const a = Math.abs(x);
      return a < 1 ? 1 - a : 0;
    },
  },
  // Pillow's bicubic uses a = -0.5.
  bicubic: {
    support: 2,
    at: (x) => {
      const a = -0.5;
      const t = Math.abs(x);
      if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
      if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
      return 0;
    },
  },
};

const PRECISION_BITS = 32 - 8 - 2;
const ONE = 2 ** PRECISION_BITS;

interface Taps {
  /** first input index for each output index */
  readonly start: Int32Array;
  readonly count: Int32Array;
  /** `ksize` weights per output index */
  readonly weights: Float64Array;
  readonly ksize: number;
}

function taps(inSize: number, outSize: number, filter: ResampleFilter, fixedPoint: boolean): Taps {
  const kernel = KERNELS[filter];
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = kernel.support * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const weights = new Float64Array(outSize * ksize);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const inv = 1 / filterScale;
    // Math.trunc mirrors the C `(int)` cast.
    const lo = Math.max(Math.trunc(center - support + 0.5), 0);
    const hi = Math.min(Math.trunc(center + support + 0.5), inSize);
    let total = 0;
    for (let i = lo; i < hi; i++) {
      const w = kernel.at((i - center + 0.5) * inv);
      weights[o * ksize + i - lo] = w;
      total += w;
    }
    for (let k = 0; k < hi - lo; k++) {
      const w = total !== 0 ? weights[o * ksize + k] / total : weights[o * ksize + k];
      weights[o * ksize + k] = fixedPoint ? Math.trunc(w < 0 ? -0.5 + w * ONE : 0.5 + w * ONE) : w;
    }
    start[o] = lo;
    count[o] = hi - lo;
  }
  return { start, count, weights, ksize };
}

/**
 * Resamples the middle axis of an [outer, len, inner] array to `outLen`. Bytes are rounded and
 * clipped like Pillow's 8-bit path; floats are not.
 */
function resampleAxis<T extends Uint8Array | Float32Array>(
  src: T,
  outer: number,
  len: number,
  inner: number,
  outLen: number,
  filter: ResampleFilter,
): T {
  const bytes = src instanceof Uint8Array;
  const t = taps(len, outLen, filter, bytes);
  const dst = (bytes ? new Uint8Array(outer * outLen * inner) : new Float32Array(outer * outLen * inner)) as T;
  for (let o = 0; o < outer; o++) {
    for (let x = 0; x < outLen; x++) {
      const w0 = x * t.ksize;
      const s0 = t.start[x];
      for (let i = 0; i < inner; i++) {
        let acc = bytes ? ONE / 2 : 0;
        const base = (o * len + s0) * inner + i;
        for (let k = 0; k < t.count[x]; k++) acc += src[base + k * inner] * t.weights[w0 + k];
        dst[(o * outLen + x) * inner + i] = bytes ? (acc <= 0 ? 0 : acc >= 256 * ONE ? 255 : Math.floor(acc / ONE)) : acc;
      }
    }
  }
  return dst;
}

/** Resizes an H×W×C (interleaved) image, horizontal pass first like Pillow. */
export function resizeHWC<T extends Uint8Array | Float32Array>(
  src: T,
  height: number,
  width: number,
  channels: number,
  outHeight: number,
  outWidth: number,
  filter: ResampleFilter,
): T {
  const wide = outWidth === width ? src : resampleAxis(src, height, width, channels, outWidth, filter);
  return outHeight === height ? wide : resampleAxis(wide, 1, height, outWidth * channels, outHeight, filter);
}

/** Resizes a C×H×W (planar) image, horizontal pass first. */
export function resizeCHW<T extends Uint8Array | Float32Array>(
  src: T,
  channels: number,
  height: number,
  width: number,
  outHeight: number,
  outWidth: number,
  filter: ResampleFilter,
): T {
  const wide = outWidth === width ? src : resampleAxis(src, channels * height, width, 1, outWidth, filter);
  return outHeight === height ? wide : resampleAxis(wide, channels, height, outWidth, outHeight, filter);
}
