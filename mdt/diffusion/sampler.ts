// The noise a sampling loop draws: x_T, then each respaced step's noise, from a key. The steps
// themselves are in gaussian.ts (traced with the network); compile/sample.ts runs the loop.

import { foldIn, normal, split } from '../../dsl/random.ts';
import type { Key } from '../../dsl/random.ts';

/** Gaussian noise for a sampling loop: x_T, then the noise of each respaced step k. */
export interface NoiseSource {
  initial(n: number): Float32Array;
  step(k: number, n: number): Float32Array;
}

/**
 * The key-driven source: x_T from split(key)[0], step k's noise from foldIn(split(key)[1], k).
 * x_T does not depend on the respacing, so one key starts every sampler from the same x_T.
 * `draw` is normal or a faster function of the same numbers (runtime/native.ts's fastNormal).
 */
export function noiseFromKey(key: Key, draw: (key: Key, n: number) => Float32Array = normal): NoiseSource {
  const [initialKey, stepKey] = split(key);
  return {
    initial: (n) => draw(initialKey, n),
    step: (k, n) => draw(foldIn(stepKey, k), n),
  };
}
