/**
 * The built-in datasets' feature classifiers: where the committed weights live, the splits as
 * the classifier sees them, and the evaluator `mdt train --eval-every` and the examples use.
 */
import { fileURLToPath } from 'node:url';
import type * as tf from '@tensorflow/tfjs';
import { foldIn, keyFromSeed } from '../../dsl/random.ts';
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

/** The first min(size, 10k) images of a split as a reference. */
export function splitReference(net: FeatureNet, data: BuiltinDataset, split: 'train' | 'test'): Reference {
  const ds = classifierView(data, split);
  const n = Math.min(ds.size, FULL_COUNT);
  return referenceFeatures(net, ds.get(Int32Array.from({ length: n }, (_, i) => i)).images, n, `${data} ${split} split (first ${n})`);
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
