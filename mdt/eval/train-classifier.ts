/**
 * Training and running the feature classifier (mdt/eval/classifier.ts). Training is
 * deterministic from the seed: initial weights, the data order (the main job's epoch
 * permutations), flips and shifts all come from keys derived from it. The EMA of the weights
 * is what is kept. The committed weights in mdt/eval/weights/ come from `mdt classifier`.
 */
import * as tf from '@tensorflow/tfjs';
import { foldIn, keyFromSeed, randint, split, type Key } from '../../dsl/random.ts';
import type { ImageDataset } from '../data/dataset.ts';
import { batchAt } from '../data/batches.ts';
import { initParams } from '../../compile/init.ts';
import { compileFit } from '../../compile/fit.ts';
import { jit } from '../../compile/trace.ts';
import { paramsFromStateDict, stateDictFromParams } from '../../compile/weights.ts';
import { readSafetensors, writeSafetensors } from '../../formats/safetensors.ts';
import { CLASSIFIER_PARAMS, CLASSIFIER_SIZE, classifierLossProgram, classifierProgram, FEATURE_DIM, NUM_CLASSES } from './classifier.ts';

export interface ClassifierTraining {
  readonly seed: number;
  readonly steps: number;
  readonly batchSize: number;
  readonly lr: number;
  readonly emaDecay: number;
  /** Mirror images with p = ½ (garments; not digits). */
  readonly flip: boolean;
  /** Largest random shift in pixels, each axis. */
  readonly shift: number;
}

export const CLASSIFIER_TRAINING: Readonly<Record<'mnist' | 'fashion-mnist', ClassifierTraining>> = {
  'mnist': { seed: 0, steps: 4000, batchSize: 64, lr: 1e-3, emaDecay: 0.999, flip: false, shift: 2 },
  'fashion-mnist': { seed: 0, steps: 8000, batchSize: 64, lr: 1e-3, emaDecay: 0.999, flip: true, shift: 2 },
};

function checkInput(ds: ImageDataset): void {
  if (ds.channels !== 1 || ds.height !== CLASSIFIER_SIZE || ds.width !== CLASSIFIER_SIZE || ds.numClasses !== NUM_CLASSES) {
    throw new Error(`classifier: expects ${NUM_CLASSES}-class 1×${CLASSIFIER_SIZE}×${CLASSIFIER_SIZE} images, got ${ds.numClasses} classes of ${ds.channels}×${ds.height}×${ds.width} (${ds.name})`);
  }
}

/** Moves each image by (dy, dx) in place, filling with the background (-1). */
function shiftImages(images: Float32Array, n: number, size: number, dy: Int32Array, dx: Int32Array): void {
  const tmp = new Float32Array(size * size);
  for (let k = 0; k < n; k++) {
    const img = images.subarray(k * size * size, (k + 1) * size * size);
    tmp.fill(-1);
    for (let y = 0; y < size; y++) {
      const sy = y - dy[k]!;
      if (sy < 0 || sy >= size) continue;
      for (let x = 0; x < size; x++) {
        const sx = x - dx[k]!;
        if (sx >= 0 && sx < size) tmp[y * size + x] = img[sy * size + sx]!;
      }
    }
    img.set(tmp);
  }
}

/** Trains from the seed; resolves to the EMA weights. `onStep` sees every loss. */
export async function trainClassifier(train: ImageDataset, cfg: ClassifierTraining, onStep: (step: number, loss: number) => void = () => {}): Promise<Map<string, tf.Tensor>> {
  checkInput(train);
  const [initKey, dataKey, augKey] = split(keyFromSeed(cfg.seed), 3) as [Key, Key, Key];
  const initial = initParams(CLASSIFIER_PARAMS, initKey);
  const fit = compileFit(CLASSIFIER_PARAMS, classifierLossProgram, initial, { optimizer: { kind: 'adamw', lr: cfg.lr }, emaDecay: cfg.emaDecay });
  tf.dispose([...initial.values()]);
  try {
    for (let step = 0; step < cfg.steps; step++) {
      const batch = batchAt(train, dataKey, step, cfg.batchSize, { flip: cfg.flip });
      const k = foldIn(augKey, step);
      shiftImages(batch.images, cfg.batchSize, CLASSIFIER_SIZE, randint(foldIn(k, 0), cfg.batchSize, -cfg.shift, cfg.shift + 1), randint(foldIn(k, 1), cfg.batchSize, -cfg.shift, cfg.shift + 1));
      const onehot = new Float32Array(cfg.batchSize * NUM_CLASSES);
      batch.labels.forEach((y, i) => (onehot[i * NUM_CLASSES + y] = 1));
      const loss = await fit.step(new Map<string, tf.Tensor>([
        ['images', tf.tensor4d(batch.images, [cfg.batchSize, 1, CLASSIFIER_SIZE, CLASSIFIER_SIZE])],
        ['targets', tf.tensor2d(onehot, [cfg.batchSize, NUM_CLASSES])],
      ]));
      if (!Number.isFinite(loss)) throw new Error(`classifier training: the loss is ${loss} at step ${step}`);
      onStep(step, loss);
    }
    return new Map([...fit.ema].map(([k, v]) => [k, v.clone()]));
  } finally {
    fit.dispose();
  }
}

export interface Classified {
  readonly count: number;
  /** count × 256, row-major. */
  readonly features: Float32Array;
  /** Arg-max class of each image. */
  readonly predicted: Int32Array;
}

/** A classifier ready to run: weights on the backend and the compiled program. */
export interface FeatureNet {
  readonly name: string;
  readonly dim: number;
  /** Features and predicted classes of `count` NCHW images (count × 1 × 32 × 32 in [-1, 1]). */
  run(images: Float32Array, count: number): Classified;
  dispose(): void;
}

const RUN_BATCH = 250;

export function featureNet(name: string, params: ReadonlyMap<string, tf.Tensor>): FeatureNet {
  const exe = jit(classifierProgram);
  return {
    name,
    dim: FEATURE_DIM,
    run(images, count) {
      const per = CLASSIFIER_SIZE * CLASSIFIER_SIZE;
      if (images.length !== count * per) throw new Error(`${name}: expected ${count} images of 1×${CLASSIFIER_SIZE}×${CLASSIFIER_SIZE} (${count * per} values), got ${images.length} values`);
      const features = new Float32Array(count * FEATURE_DIM);
      const predicted = new Int32Array(count);
      for (let start = 0; start < count; start += RUN_BATCH) {
        const n = Math.min(RUN_BATCH, count - start);
        const x = tf.tensor4d(images.subarray(start * per, (start + n) * per), [n, 1, CLASSIFIER_SIZE, CLASSIFIER_SIZE]);
        const out = exe(new Map([...params, ['images', x]]));
        x.dispose();
        features.set(out.get('features')!.dataSync(), start * FEATURE_DIM);
        const arg = tf.argMax(out.get('logits')!, 1);
        predicted.set(arg.dataSync(), start);
        arg.dispose();
        for (const t of out.values()) t.dispose();
      }
      return { count, features, predicted };
    },
    dispose() {
      exe.dispose();
      for (const t of params.values()) t.dispose();
    },
  };
}

/** Runs the whole dataset through the network, in order. */
export function classifyDataset(net: FeatureNet, ds: ImageDataset, limit = ds.size): Classified & { labels: Int32Array } {
  checkInput(ds);
  const n = Math.min(limit, ds.size);
  const { images, labels } = ds.get(Int32Array.from({ length: n }, (_, i) => i));
  return { ...net.run(images, n), labels };
}

export function accuracy(predicted: Int32Array, labels: Int32Array): number {
  let right = 0;
  for (let i = 0; i < labels.length; i++) if (predicted[i] === labels[i]) right++;
  return right / labels.length;
}

export async function saveClassifier(path: string, params: ReadonlyMap<string, tf.Tensor>, metadata: Record<string, string>): Promise<void> {
  await writeSafetensors(path, await stateDictFromParams(CLASSIFIER_PARAMS, params), metadata);
}

export async function loadClassifier(path: string, name: string): Promise<FeatureNet> {
  return featureNet(name, paramsFromStateDict(CLASSIFIER_PARAMS, await readSafetensors(path)));
}
