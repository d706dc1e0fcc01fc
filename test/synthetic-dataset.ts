/** A small 1×8×8, 3-class image set of fixed noise: fast to train on, the same on every run. */
import { foldIn, keyFromSeed, normal, randint } from '../dsl/random.ts';
import type { ImageDataset } from '../mdt/data/dataset.ts';

export function syntheticDataset(n: number): ImageDataset {
  const key = keyFromSeed(42);
  const pixels = normal(key, n * 64).map((v) => Math.tanh(v));
  const labels = randint(foldIn(key, 1), n, 0, 3);
  return {
    name: 'synthetic', size: n, channels: 1, height: 8, width: 8, numClasses: 3, classNames: ['a', 'b', 'c'],
    get(idx) {
      const images = new Float32Array(idx.length * 64);
      const out = new Int32Array(idx.length);
      for (let i = 0; i < idx.length; i++) { images.set(pixels.subarray(idx[i]! * 64, idx[i]! * 64 + 64), i * 64); out[i] = labels[idx[i]!]!; }
      return { images, labels: out };
    },
  };
}
