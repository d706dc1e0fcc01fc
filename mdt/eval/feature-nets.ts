/**
 * The built-in datasets' feature classifiers: where the committed weights live, the splits as
 * the classifier sees them, and the evaluator `mdt train --eval-every` and the examples use.
 */
import { fileURLToPath } from 'node:url';
import type * as tf from '@tensorflow/tfjs';
import { foldIn, keyFromSeed, permutation } from '../../dsl/random.ts';
import { loadBuiltinDataset, type BuiltinDataset } from '../data/builtin.ts';
import type { ImageDataset } from '../data/dataset.ts';
import { resizeTo } from '../data/resize.ts';
import type { DiffusionModel } from '../trunk.ts';
import type { EvalMetrics } from '../../compile/run-log.ts';
import { CLASSIFIER_SIZE } from './classifier.ts';
import { evaluate, FULL_COUNT, generateSamples, referenceFeatures, type Reference } from './evaluate.ts';
import { loadClassifier, type FeatureNet } from './train-classifier.ts';

export function classifierWeightsPath(data: BuiltinDataset): string {
  return fileURLToPath(new URL(`./weights/${data}.safetensors`, import.meta.url));
}

/** A built-in dataset split as the classifier sees it: padded to 32×32 like the main job's input. */
export function classifierView(name: BuiltinDataset, split: 'train' | 'test'): ImageDataset {
  return resizeTo(loadBuiltinDataset(name, split), CLASSIFIER_SIZE, 'pad');
}

/**
 * Up to `count` images of a split with their labels: all of a split that small, else a random
 * subset drawn with seed 0 (the built-in splits are stored sorted by class, so a prefix would be).
 */
export function splitSubset(data: BuiltinDataset, split: 'train' | 'test', count = FULL_COUNT): { images: Float32Array; labels: Int32Array; count: number; source: string } {
  const ds = classifierView(data, split);
  const n = Math.min(ds.size, count);
  const rows = n === ds.size ? Int32Array.from({ length: n }, (_, i) => i) : permutation(keyFromSeed(0), ds.size).subarray(0, n).sort();
  return { ...ds.get(rows), count: n, source: n === ds.size ? `${data} ${split} split` : `${data} ${split} split (${n} of ${ds.size}, seed 0)` };
}

/** A split (up to 10k images) as a reference. */
export function splitReference(net: FeatureNet, data: BuiltinDataset, split: 'train' | 'test'): Reference {
  const s = splitSubset(data, split);
  return referenceFeatures(net, s.images, s.count, s.source);
}

export interface TrainingEvaluator {
  evaluate(step: number, model: DiffusionModel, ema: ReadonlyMap<string, tf.Tensor>): Promise<EvalMetrics>;
  dispose(): void;
}

/**
 * FID against the test split and class accuracy of `samples` class-conditional samples of the
 * EMA weights; the sampling noise of step s is the same whatever else the run does.
 */
export async function trainingEvaluator(data: BuiltinDataset, o: { readonly samples: number; readonly steps: string; readonly cfgScale: number; readonly seed: number }): Promise<TrainingEvaluator> {
  const net = await loadClassifier(classifierWeightsPath(data), `classifier:${data}`);
  const ref = splitReference(net, data, 'test');
  return {
    async evaluate(step, model, ema) {
      const set = generateSamples(model, ema, { count: o.samples, steps: o.steps, cfgScale: o.cfgScale, key: foldIn(keyFromSeed(o.seed), step) });
      const r = evaluate(net, set, ref, { seed: o.seed, fidOnly: true });
      return { fid: r.fid, class_accuracy: r.classAccuracy!, eval_samples: o.samples };
    },
    dispose: () => net.dispose(),
  };
}
