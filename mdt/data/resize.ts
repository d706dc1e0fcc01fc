import type { ImageDataset } from './dataset.ts';
import { resizeCHW } from './resample.ts';

export type ResizeMode = 'pad' | 'resize';

/**
 * `ds` seen at size×size: 'pad' centres each image on a canvas of -1 (black after scaling; any odd
 * leftover row/column goes to the bottom/right), 'resize' resamples it bilinearly with
 * Pillow-style antialiasing. Work is done per batch, on the images asked for.
 */
export function resizeTo(ds: ImageDataset, size: number, mode: ResizeMode): ImageDataset {
  if (!Number.isInteger(size) || size < 1) throw new Error(`resizeTo: expected a positive integer size, got ${size}`);
  if (mode === 'pad' && (size < ds.height || size < ds.width)) {
    throw new Error(`resizeTo ${ds.name}: 'pad' needs size ≥ ${ds.height}×${ds.width}, got ${size}; use 'resize' to shrink`);
  }
  if (mode !== 'pad' && mode !== 'resize') throw new Error(`resizeTo: expected mode 'pad' or 'resize', got ${String(mode)}`);
  const { channels: c, height: h, width: w } = ds;
  const top = Math.floor((size - h) / 2);
  const left = Math.floor((size - w) / 2);
  const inPer = c * h * w;
  const outPer = c * size * size;
  return {
    name: `${ds.name}@${size}${mode}`,
    size: ds.size,
    channels: c,
    height: size,
    width: size,
    numClasses: ds.numClasses,
    classNames: ds.classNames,
    get(indices) {
      const batch = ds.get(indices);
      const n = indices.length;
      const images = new Float32Array(n * outPer);
      for (let k = 0; k < n; k++) {
        const src = batch.images.subarray(k * inPer, (k + 1) * inPer);
        if (mode === 'resize') {
          images.set(resizeCHW(src, c, h, w, size, size, 'bilinear'), k * outPer);
          continue;
        }
        images.fill(-1, k * outPer, (k + 1) * outPer);
        for (let ch = 0; ch < c; ch++) {
          for (let y = 0; y < h; y++) {
            const from = (ch * h + y) * w;
            images.set(src.subarray(from, from + w), k * outPer + (ch * size + y + top) * size + left);
          }
        }
      }
      return { images, labels: batch.labels };
    },
  };
}
