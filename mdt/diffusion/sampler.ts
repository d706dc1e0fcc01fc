// The noise a sampling loop draws: x_T, then each respaced step's noise, from a key. The steps
// themselves are in gaussian.ts (traced with the network); compile/sample.ts runs the loop.

import { foldIn, normal, split } from '../../dsl/random.ts';
import type { Key } from '../../dsl/random.ts';

/**
 * Gaussian noise for a sampling loop: x_T, then the noise of each respaced step k; `from` asks
 * for the n values from that index of the whole draw (a part of a batch: rowsOfNoise). A source
 * must honour it: rowsOfNoise draws each part with it.
 */
export interface NoiseSource {
  initial(n: number, from?: number): Float32Array;
  step(k: number, n: number, from?: number): Float32Array;
}

/**
 * The key-driven source: x_T from split(key)[0], step k's noise from foldIn(split(key)[1], k).
 * x_T does not depend on the respacing, so one key starts every sampler from the same x_T.
 * `draw` is normal or a faster function of the same numbers (runtime/native.ts's fastNormal).
 */
export function noiseFromKey(key: Key, draw: (key: Key, n: number, from?: number) => Float32Array = normal): NoiseSource {
  const [initialKey, stepKey] = split(key);
  return {
    initial: (n, from) => draw(initialKey, n, from),
    step: (k, n, from) => draw(foldIn(stepKey, k), n, from),
  };
}

/**
 * Rows `ranges` [from, to) of the batch `noise` draws for, `per` values a row, each drawn alone:
 * a part of a split batch gets exactly the noise its rows have in the whole, for its own draws.
 */
export function rowsOfNoise(noise: NoiseSource, per: number, ranges: readonly (readonly [number, number])[]): NoiseSource {
  const size = ranges.reduce((a, [from, to]) => a + (to - from) * per, 0);
  const pick = (n: number, draw: (count: number, from: number) => Float32Array): Float32Array => {
    if (n !== size) throw new Error(`rowsOfNoise: asked for ${n} values, the rows hold ${size}`);
    const out = new Float32Array(size);
    let at = 0;
    for (const [from, to] of ranges) {
      out.set(draw((to - from) * per, from * per), at);
      at += (to - from) * per;
    }
    return out;
  };
  return {
    initial: (n) => pick(n, (count, from) => noise.initial(count, from)),
    step: (k, n) => pick(n, (count, from) => noise.step(k, count, from)),
  };
}
