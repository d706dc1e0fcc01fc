/**
 * One evaluation: samples and a reference through a feature network, then FID, KID,
 * precision/recall and (for class-conditional samples) class accuracy with its per-class table.
 * The reference is either features (a dataset split or a folder: every metric) or stored
 * statistics (FID only: KID and precision/recall need the reference's samples).
 */
import * as tf from '@tensorflow/tfjs';
import { foldIn, keyFromSeed, type Key } from '../../dsl/random.ts';
import { compileSampler } from '../../compile/sample.ts';
import type { DiffusionModel } from '../trunk.ts';
import { features, type Features } from './features.ts';
import { featureStats, frechetDistance } from './fid.ts';
import { kernelInceptionDistance, type Kid } from './kid.ts';
import { precisionRecall } from './precision-recall.ts';
import { checkSameNetwork, type StoredStats } from './stats-file.ts';
import type { FeatureNet } from './train-classifier.ts';

/** Images to score: NCHW in [-1, 1]; `labels` are the classes they were asked for (class-conditional samples). */
export interface SampleSet {
  readonly images: Float32Array;
  readonly count: number;
  readonly labels?: Int32Array;
  readonly source: string;
}

export type Reference =
  | { readonly kind: 'features'; readonly features: Features; readonly source: string; readonly network: string }
  | { readonly kind: 'stats'; readonly stats: StoredStats; readonly source: string };

/** The sample count under which `mdt eval` prints a caveat. */
export const FULL_COUNT = 10_000;

export interface PerClass {
  readonly class: number;
  readonly name: string;
  readonly count: number;
  readonly accuracy: number;
}

export interface EvalReport {
  readonly network: string;
  readonly samples: { readonly count: number; readonly source: string; readonly seed: number };
  readonly reference: { readonly source: string; readonly count: number | null };
  readonly fid: number;
  readonly kid: Kid | null;
  readonly precision: number | null;
  readonly recall: number | null;
  readonly classAccuracy: number | null;
  readonly perClass: readonly PerClass[] | null;
  readonly caveats: readonly string[];
}

export interface EvalOptions {
  readonly seed: number;
  readonly classNames?: readonly string[];
  readonly kidSubsets?: number;
  /** Skip KID and precision/recall (FID and class accuracy only: the quick check during training). */
  readonly fidOnly?: boolean;
  /** What the samples are, for the report. */
  readonly source?: string;
}

/** Features of a reference image set under `net`. */
export function referenceFeatures(net: FeatureNet, images: Float32Array, count: number, source: string): Reference {
  return { kind: 'features', features: features(net.run(images, count).features, net.dim, source), source, network: net.name };
}

export function evaluate(net: FeatureNet, samples: SampleSet, ref: Reference, opts: EvalOptions): EvalReport {
  const run = net.run(samples.images, samples.count);
  return evaluateFeatures(net.name, features(run.features, net.dim, samples.source), { predicted: run.predicted, labels: samples.labels }, ref, { ...opts, source: samples.source });
}

/** The metrics of generated features `fake` (of network `network`); class accuracy where both predicted and requested classes are known. */
export function evaluateFeatures(network: string, fake: Features, classes: { readonly predicted?: Int32Array; readonly labels?: Int32Array | undefined }, ref: Reference, opts: EvalOptions): EvalReport {
  const count = fake.count;
  const caveats: string[] = [];
  if (count < FULL_COUNT) caveats.push(`${count} samples (< ${FULL_COUNT}): FID is biased upwards at small counts; compare only numbers computed from the same count`);
  const refStats = ref.kind === 'stats' ? ref.stats : { ...featureStats(ref.features.data, ref.features.dim), meta: { network: ref.network } };
  checkSameNetwork({ network }, refStats.meta, `reference ${ref.source}`);
  if (refStats.dim !== fake.dim) throw new Error(`reference ${ref.source}: its statistics have ${refStats.dim} features, ${network} gives ${fake.dim}: they come from another network`);
  const fid = frechetDistance(featureStats(fake.data, fake.dim), refStats);
  let kid: Kid | null = null, precision: number | null = null, recall: number | null = null;
  if (ref.kind === 'features' && !opts.fidOnly) {
    kid = kernelInceptionDistance(ref.features, fake, foldIn(keyFromSeed(opts.seed), 1), { subsets: opts.kidSubsets ?? 100 });
    ({ precision, recall } = precisionRecall(ref.features, fake));
  } else if (ref.kind === 'stats') caveats.push('the reference is statistics only: KID and precision/recall need its samples');
  let classAccuracy: number | null = null, perClass: PerClass[] | null = null;
  const { predicted, labels } = classes;
  if (predicted !== undefined && labels !== undefined) {
    const n = Math.max(...labels) + 1;
    const right = new Array<number>(n).fill(0), total = new Array<number>(n).fill(0);
    labels.forEach((y, i) => {
      total[y]!++;
      if (predicted[i] === y) right[y]!++;
    });
    classAccuracy = right.reduce((a, b) => a + b, 0) / count;
    perClass = total.map((m, k) => ({ class: k, name: opts.classNames?.[k] ?? String(k), count: m, accuracy: m === 0 ? NaN : right[k]! / m }));
  }
  return {
    network,
    samples: { count, source: opts.source ?? '', seed: opts.seed },
    reference: { source: ref.source, count: ref.kind === 'features' ? ref.features.count : ref.stats.meta.count ?? null },
    fid, kid, precision, recall, classAccuracy, perClass, caveats,
  };
}

export interface GenerateOptions {
  readonly count: number;
  readonly steps: string;
  readonly cfgScale: number;
  readonly key: Key;
  readonly batchSize?: number;
  readonly onProgress?: (done: number) => void;
}

/** `count` class-conditional samples of a pixel model, classes in turn (0, 1, …, 0, 1, …). */
export function generateSamples(model: DiffusionModel, weights: ReadonlyMap<string, tf.Tensor>, o: GenerateOptions): SampleSet {
  const c = model.config;
  const sampler = compileSampler(model, weights, {
    steps: o.steps, sampler: o.steps.startsWith('ddim') ? 'ddim' : 'ddpm',
    guidance: o.cfgScale > 1 ? { kind: 'constant', scale: o.cfgScale } : null,
    guideChannels: c.inChannels >= 3 ? 'first3' : 'all',
  });
  const labels = Int32Array.from({ length: o.count }, (_, i) => i % c.numClasses);
  const per = c.inChannels * c.inputSize * c.inputSize;
  const images = new Float32Array(o.count * per);
  const batch = o.batchSize ?? 500;
  try {
    for (let start = 0, b = 0; start < o.count; start += batch, b++) {
      const x = sampler.sample(labels.subarray(start, start + batch), foldIn(o.key, b));
      // Clipped to the data range, as images written to disk would be.
      const clipped = tf.clipByValue(x, -1, 1);
      images.set(clipped.dataSync(), start * per);
      tf.dispose([x, clipped]);
      o.onProgress?.(Math.min(o.count, start + batch));
    }
  } finally {
    sampler.dispose();
  }
  return { images, count: o.count, labels, source: `${o.count} samples (${o.steps}, cfg ${o.cfgScale})` };
}

export function formatReport(r: EvalReport): string {
  const f = (v: number | null, d = 3) => (v === null ? 'n/a' : v.toFixed(d));
  const lines = [
    `feature network  ${r.network}`,
    `samples          ${r.samples.count} (${r.samples.source}), seed ${r.samples.seed}`,
    `reference        ${r.reference.source}${r.reference.count === null ? '' : ` (${r.reference.count} images)`}`,
    `FID              ${f(r.fid)}`,
    `KID              ${r.kid === null ? 'n/a' : `${r.kid.mean.toFixed(5)} ± ${r.kid.std.toFixed(5)} (${r.kid.subsets} subsets of ${r.kid.subsetSize})`}`,
    `precision        ${f(r.precision)}`,
    `recall           ${f(r.recall)}`,
    `class accuracy   ${r.classAccuracy === null ? 'n/a (needs class-conditional samples and a classifier)' : `${(100 * r.classAccuracy).toFixed(1)}%`}`,
  ];
  if (r.perClass !== null) {
    const w = Math.max(5, ...r.perClass.map((p) => p.name.length));
    lines.push('', `  ${'class'.padEnd(w)}  samples  accuracy`);
    for (const p of r.perClass) lines.push(`  ${p.name.padEnd(w)}  ${String(p.count).padStart(7)}  ${Number.isNaN(p.accuracy) ? '   n/a' : `${(100 * p.accuracy).toFixed(1).padStart(7)}%`}`);
  }
  for (const c of r.caveats) lines.push(`note: ${c}`);
  return lines.join('\n');
}
