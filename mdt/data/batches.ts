// Batches as a pure function of (key, step): the sample stream is the concatenation of epoch
// permutations, and step s takes positions [s·B, (s+1)·B) of it. A run resumed at step s therefore
// draws exactly what an uninterrupted run draws, with no sampler state to save.
import { bernoulli, foldIn, permutation, split } from '../../dsl/random.ts';
import type { Key } from '../../dsl/random.ts';
import type { ImageDataset } from './dataset.ts';

export interface Batch {
  /** float32 in [-1, 1], NCHW */
  readonly images: Float32Array;
  readonly labels: Int32Array;
  /** dataset index of each image */
  readonly indices: Int32Array;
  /** 1 where the image was mirrored left–right (all 0 without `flip`) */
  readonly flipped: Uint8Array;
}

export interface BatchOptions {
  /** mirror each image with p = 0.5, as the official loader's random_flip */
  readonly flip?: boolean;
}

/** The order in which epoch `epoch` visits a dataset of `n` items. */
export function epochOrder(key: Key, epoch: number, n: number): Int32Array {
  return permutation(foldIn(key, epoch), n);
}

/** Dataset indices of global step `step`; a batch that straddles an epoch end continues into the next epoch. */
export function batchIndices(key: Key, step: number, batchSize: number, n: number): Int32Array {
  if (!Number.isSafeInteger(step) || step < 0) throw new RangeError(`batchIndices: expected an integer step ≥ 0, got ${step}`);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batchIndices: expected an integer batchSize ≥ 1, got ${batchSize}`);
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`batchIndices: expected a non-empty dataset, got ${n} items`);
  const out = new Int32Array(batchSize);
  let order: Int32Array | null = null;
  let orderEpoch = -1;
  for (let k = 0; k < batchSize; k++) {
    const position = step * batchSize + k;
    const epoch = Math.floor(position / n);
    if (epoch !== orderEpoch) {
      order = epochOrder(key, epoch, n);
      orderEpoch = epoch;
    }
    out[k] = order![position - epoch * n];
  }
  return out;
}

/** Mirrors, in place, each NCHW image whose `mask` entry is 1. */
export function flipHorizontal(images: Float32Array, c: number, h: number, w: number, mask: Uint8Array): void {
  for (let k = 0; k < mask.length; k++) {
    if (!mask[k]) continue;
    for (let row = (k * c) * h; row < (k + 1) * c * h; row++) images.subarray(row * w, (row + 1) * w).reverse();
  }
}

/**
 * The batch for global step `step`. Flips draw from their own stream (a split of `key`, folded
 * with the step), so turning them on or off never changes which images a step gets.
 */
export function batchAt(ds: ImageDataset, key: Key, step: number, batchSize: number, options: BatchOptions = {}): Batch {
  const indices = batchIndices(key, step, batchSize, ds.size);
  const { images, labels } = ds.get(indices);
  const flipped = options.flip ? bernoulli(foldIn(split(key, 2)[1], step), batchSize, 0.5) : new Uint8Array(batchSize);
  flipHorizontal(images, ds.channels, ds.height, ds.width, flipped);
  return { images, labels, indices, flipped };
}
