/**
 * Fixed sinusoidal tables, computed in float64 like the official numpy code, then cast.
 */

/** MAE/DiT 2-D sin-cos table (N = grid², D): first D/2 dims encode the column, last D/2 the row; sin first. */
export function sincos2d(dim: number, grid: number): Float64Array {
  if (dim % 4 !== 0) throw new Error(`sincos2d: embedding width must be a multiple of 4, got ${dim}`);
  const quarter = dim / 4;
  const out = new Float64Array(grid * grid * dim);
  const omega = Float64Array.from({ length: quarter }, (_, k) => 1 / 10000 ** (k / quarter));
  for (let r = 0; r < grid; r++) {
    for (let c = 0; c < grid; c++) {
      const base = (r * grid + c) * dim;
      for (let k = 0; k < quarter; k++) {
        out[base + k] = Math.sin(c * omega[k]);
        out[base + quarter + k] = Math.cos(c * omega[k]);
        out[base + 2 * quarter + k] = Math.sin(r * omega[k]);
        out[base + 3 * quarter + k] = Math.cos(r * omega[k]);
      }
    }
  }
  return out;
}

/**
 * DiT's timestep frequencies in float32: exp(−ln(10000)·k/half) rounded like PyTorch's
 * float32 arithmetic (the result can differ from torch's own float32 `exp` by one ulp).
 */
export function timestepFreqs(half: number): Float32Array {
  const c = Math.fround(-Math.log(10000));
  return Float32Array.from({ length: half }, (_, k) => Math.fround(Math.exp(Math.fround(Math.fround(c * k) / half))));
}

/** [cos(t·f), sin(t·f)] for each t (cos first), float32, shape (t.length, 2·half). */
export function timestepSinusoid(t: ArrayLike<number>, dim: number, freqs: Float32Array = timestepFreqs(dim / 2)): Float32Array {
  const half = dim / 2;
  const out = new Float32Array(t.length * dim);
  for (let i = 0; i < t.length; i++) {
    const ti = Math.fround(t[i]!);
    for (let k = 0; k < half; k++) {
      const a = Math.fround(ti * freqs[k]!);
      out[i * dim + k] = Math.cos(a);
      out[i * dim + half + k] = Math.sin(a);
    }
  }
  return out;
}
