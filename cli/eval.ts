/**
 * `mdt eval`: sample quality of a run (its EMA weights sampled here), a folder of images or an
 * .npz batch, against a reference (a built-in split, a folder, or a statistics .npz), on the
 * feature classifier of the built-in dataset. Prints the metrics and writes them as JSON.
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { Command } from 'commander';
import { foldIn, keyFromSeed } from '../dsl/random.ts';
import { writeFileAtomic } from '../formats/atomic-write.ts';
import { openNpz } from '../formats/npz.ts';
import { BUILTIN_DATASETS, type BuiltinDataset } from '../mdt/data/builtin.ts';
import { decodeImage, listImageFiles } from '../mdt/data/image-folder.ts';
import { CLASSIFIER_SIZE } from '../mdt/eval/classifier.ts';
import { evaluate, evaluateFeatures, formatReport, FULL_COUNT, generateSamples, referenceFeatures, type EvalReport, type Reference, type SampleSet } from '../mdt/eval/evaluate.ts';
import { features } from '../mdt/eval/features.ts';
import { INCEPTION_DIM } from '../mdt/eval/inception.ts';
import { inceptionFeatureSet, loadInceptionWeights, type ByteImages } from '../mdt/eval/inception-run.ts';
import { classifierView, classifierWeightsPath, splitReference, splitSubset } from '../mdt/eval/feature-nets.ts';
import { featureStats } from '../mdt/eval/fid.ts';
import { readStatsFile, writeStatsFile } from '../mdt/eval/stats-file.ts';
import { loadClassifier, type FeatureNet } from '../mdt/eval/train-classifier.ts';
import { loadCheckpointModel } from './checkpoint-model.ts';
import { say, type CliIO } from './io.ts';
import { backendOption, intArg, numberArg, option, respacingArg, startBackend, timestamp, UsageError, type BackendChoice } from './options.ts';

interface EvalFlags {
  readonly ref: string;
  readonly data?: BuiltinDataset;
  readonly count?: number;
  readonly seed: number;
  readonly sampleSteps?: string;
  readonly cfgScale?: number;
  readonly kidSubsets: number;
  readonly saveRefStats?: string;
  readonly classifier?: string;
  readonly inception?: string;
  readonly json?: string;
  readonly backend: BackendChoice;
}

/** The flags a run was trained with (cli.json), or {} for anything else. */
function runFlags(path: string): Record<string, unknown> {
  const file = join(path, 'cli.json');
  if (!existsSync(file)) return {};
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
}

const isRun = (path: string) => statSync(path).isDirectory() && (existsSync(join(path, 'run.json')) || existsSync(join(path, 'meta.json')));

/** Images as bytes, with the classes they were asked for when known. */
interface RawImages extends ByteImages {
  readonly labels?: Int32Array;
  readonly source: string;
}

/** The classifier's input: 28×28 images are padded onto a 32×32 background (-1), as the main job's input. */
function toClassifierInput(raw: RawImages): SampleSet {
  const { side, channels, count } = raw;
  if (side !== CLASSIFIER_SIZE && side !== 28) throw new UsageError(`${raw.source}: images are ${side}×${side}; the classifier takes 32×32 (or 28×28, padded); use --inception for other sizes`);
  const off = (CLASSIFIER_SIZE - side) / 2;
  const images = new Float32Array(count * CLASSIFIER_SIZE * CLASSIFIER_SIZE).fill(-1);
  for (let n = 0; n < count; n++) {
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        // The first channel: gray images saved as RGB repeat it.
        const v = raw.pixels[((n * side + y) * side + x) * channels]!;
        images[(n * CLASSIFIER_SIZE + y + off) * CLASSIFIER_SIZE + x + off] = v / 127.5 - 1;
      }
    }
  }
  return { images, count, ...(raw.labels ? { labels: raw.labels } : {}), source: raw.source };
}

/** Whether an .npz holds FID statistics (mu, sigma) rather than images. */
async function isStatsNpz(path: string): Promise<boolean> {
  const npz = await openNpz(path);
  try {
    return npz.names.includes('mu') && npz.names.includes('sigma');
  } finally {
    await npz.close();
  }
}

/** An .npz of uint8 images (N, H, W[, C]) in arr_0, as ADM's sample and reference batches; labels in arr_1 if present. */
async function npzImages(path: string, limit: number | undefined): Promise<RawImages> {
  const npz = await openNpz(path);
  try {
    const arr = await npz.read(npz.names.includes('arr_0') ? 'arr_0' : npz.names[0] ?? 'arr_0');
    if (!(arr.data instanceof Uint8Array) || arr.shape.length < 3 || arr.shape[1] !== arr.shape[2]) throw new UsageError(`${path}: expected uint8 images (N, H, W[, C]) in arr_0, got ${arr.dtype} (${arr.shape.join(', ')})`);
    const total = arr.shape[0]!, count = Math.min(limit ?? total, total);
    const side = arr.shape[1]!, channels = arr.shape[3] ?? 1;
    const labels = npz.names.includes('arr_1') ? await npz.read('arr_1') : null;
    return {
      pixels: arr.data.subarray(0, count * side * side * channels), count, side, channels, source: path,
      ...(labels === null ? {} : { labels: Int32Array.from(Array.from(labels.data as ArrayLike<number | bigint>, Number).slice(0, count)) }),
    };
  } finally {
    await npz.close();
  }
}

/** Image files of a folder (as RGB); a `class<k>` in every file name (as `mdt sample` writes them) gives the requested classes. */
function folderImages(dir: string, limit: number | undefined): RawImages {
  const files = listImageFiles(dir).slice(0, limit);
  if (files.length < 2) throw new UsageError(`${dir}: found ${files.length} image(s); FID needs at least 2`);
  const decoded = files.map((f) => decodeImage(readFileSync(f), f));
  const side = decoded[0]!.width;
  const bad = decoded.findIndex((im) => im.width !== side || im.height !== side);
  if (bad >= 0) throw new UsageError(`${files[bad]}: ${decoded[bad]!.width}×${decoded[bad]!.height}, where ${files[0]} is ${side}×${decoded[0]!.height}; the folder must hold samples of one square size only`);
  const pixels = new Uint8Array(files.length * side * side * 3);
  decoded.forEach((im, i) => pixels.set(im.data, i * side * side * 3));
  const classes = files.map((f) => /class(\d+)/.exec(basename(f))?.[1]);
  return { pixels, count: files.length, side, channels: 3, source: dir, ...(classes.every((c) => c !== undefined) ? { labels: Int32Array.from(classes, Number) } : {}) };
}

const readImages = async (path: string, limit: number | undefined): Promise<RawImages> => (path.endsWith('.npz') ? npzImages(path, limit) : folderImages(path, limit));

const INCEPTION_NAME = 'inception-v3-pytorch-fid';

/** FID (and KID, precision/recall against images) on InceptionV3 pool3 features: ADM's and the paper's numbers for latent runs. */
async function inceptionEval(samples: string, f: EvalFlags & { inception: string }, io: CliIO): Promise<EvalReport> {
  const params = await loadInceptionWeights(f.inception);
  try {
    const progress = (what: string, total: number) => (done: number) => io.tty && io.write(`\r  ${what} ${done}/${total}`);
    const raw = await readImages(samples, f.count);
    const fake = features(inceptionFeatureSet(params, raw, progress('samples', raw.count)), INCEPTION_DIM, samples);
    let ref: Reference;
    if (f.ref.endsWith('.npz') && (await isStatsNpz(f.ref))) ref = { kind: 'stats', stats: await readStatsFile(f.ref), source: f.ref };
    else {
      if (f.ref === 'test' || f.ref === 'train') throw new UsageError('--ref: with --inception, give the reference batch (.npz with mu/sigma, e.g. VIRTUAL_imagenet256_labeled.npz) or a folder / .npz of reference images');
      const r = await readImages(f.ref, undefined);
      ref = { kind: 'features', features: features(inceptionFeatureSet(params, r, progress('reference', r.count)), INCEPTION_DIM, f.ref), source: f.ref, network: INCEPTION_NAME };
    }
    if (io.tty) io.write('\n');
    return evaluateFeatures(INCEPTION_NAME, fake, {}, ref, { seed: f.seed, kidSubsets: f.kidSubsets, source: raw.source });
  } finally {
    tf.dispose([...params.values()]);
  }
}

async function loadReference(f: EvalFlags, net: FeatureNet, data: BuiltinDataset): Promise<Reference> {
  if (f.ref === 'test' || f.ref === 'train') return splitReference(net, data, f.ref);
  if (!existsSync(f.ref)) throw new UsageError(`--ref: expected test, train, a folder of images or a statistics .npz, got ${f.ref} (no such file)`);
  if (statSync(f.ref).isDirectory() || (f.ref.endsWith('.npz') && !(await isStatsNpz(f.ref)))) {
    const s = toClassifierInput(await readImages(f.ref, undefined));
    return referenceFeatures(net, s.images, s.count, f.ref);
  }
  return { kind: 'stats', stats: await readStatsFile(f.ref), source: f.ref };
}

/** Prints the report and writes it, with the seconds it took, as JSON. */
async function publish(io: CliIO, report: EvalReport, out: string, started: number): Promise<void> {
  const seconds = (Date.now() - started) / 1000;
  await writeFileAtomic(out, `${JSON.stringify({ ...report, seconds }, null, 1)}\n`);
  say(io, formatReport(report));
  say(io, `(${seconds.toFixed(0)} s; written to ${out})`);
}

export function evalCommand(program: Command, io: CliIO): Command {
  return program
    .command('eval')
    .description('FID, KID, precision/recall and class accuracy of a run, a folder of images or an .npz of samples')
    .argument('<samples>', 'a run (or checkpoint) directory, a folder of PNG/JPEG images, an .npz of uint8 images (arr_0), or train / test (the built-in split itself)')
    .addOption(option('--ref <what>', 'reference: test or train (the built-in split), a folder of images, or a statistics .npz (mu, sigma)', { default: 'test' }))
    .addOption(option('--data <name>', 'built-in dataset whose classifier gives the features', { defaultText: "the run's --data, else fashion-mnist", choices: [...BUILTIN_DATASETS] }))
    .addOption(option('--count <n>', 'samples to generate from a run (or to read from a folder / .npz)', { defaultText: `${FULL_COUNT} (all of a folder / .npz)`, parse: intArg(2) }))
    .addOption(option('--seed <n>', 'seed of the sampling noise and of the KID subsets', { default: 0, parse: intArg(0) }))
    .addOption(option('--sample-steps <respacing>', 'sampler steps for a run', { defaultText: "the run's --sample-steps", parse: respacingArg }))
    .addOption(option('--cfg-scale <w>', 'guidance scale for a run (1 = off)', { defaultText: "the run's --cfg-scale", parse: numberArg(0, Infinity) }))
    .addOption(option('--kid-subsets <n>', 'KID subsets (of up to 1000 samples each)', { default: 100, parse: intArg(1) }))
    .addOption(option('--inception <file>', "score on InceptionV3 pool3 features (pytorch-fid's pt_inception-2015-12-05-6726825d.pth, which you supply) instead of the classifier: ImageNet-comparable FID of image samples (.npz / folder) against ADM's reference batches", { defaultText: 'the classifier' }))
    .addOption(option('--classifier <file>', 'feature classifier weights (from `mdt classifier`)', { defaultText: 'mdt/eval/weights/<data>.safetensors' }))
    .addOption(option('--save-ref-stats <file>', "also write the reference's statistics (.npz: mu, sigma) for later --ref", { defaultText: 'not written' }))
    .addOption(option('--json <file>', 'where to write the metrics', { defaultText: 'RUN/eval-<count>.json for a run, else eval-<timestamp>.json' }))
    .addOption(backendOption())
    .action(async (samples: string, f: EvalFlags) => {
      const split = samples === 'train' || samples === 'test' ? samples : null;
      if (split === null && !existsSync(samples)) throw new UsageError(`<samples>: expected a run, a folder, an .npz, or train / test (a built-in split); no such file or directory: ${samples}`);
      await startBackend(f.backend);
      if (f.inception !== undefined) {
        if (isRun(samples)) throw new UsageError('--inception scores images: sample the run first (mdt sample --vae … for a latent run) and give the folder');
        const started = Date.now();
        return publish(io, await inceptionEval(samples, { ...f, inception: f.inception }, io), f.json ?? `eval-${timestamp()}.json`, started);
      }
      const run = split === null && isRun(samples);
      const recorded = run ? runFlags(samples) : {};
      const runData = (BUILTIN_DATASETS as readonly string[]).includes(String(recorded['data'])) ? (recorded['data'] as BuiltinDataset) : undefined;
      const data = f.data ?? runData ?? 'fashion-mnist';
      const weights = f.classifier ?? classifierWeightsPath(data);
      if (!existsSync(weights)) throw new UsageError(`no classifier weights for ${data} at ${weights}; train them with \`mdt classifier --data ${data}\``);
      const net = await loadClassifier(weights, `classifier:${data}`);
      const started = Date.now();
      try {
        let set: SampleSet;
        if (run) {
          const { model, values } = await loadCheckpointModel({ ckpt: samples, which: 'ema' }, io);
          const c = model.config;
          if (c.inChannels !== 1 || c.inputSize !== CLASSIFIER_SIZE) throw new UsageError(`${samples}: the model makes ${c.inChannels}×${c.inputSize}×${c.inputSize} samples; the ${data} classifier takes 1×32×32 (score latent runs with an InceptionV3 reference instead)`);
          const count = f.count ?? FULL_COUNT;
          const steps = f.sampleSteps ?? String(recorded['sampleSteps'] ?? 'ddim25');
          const cfgScale = f.cfgScale ?? Number(recorded['cfgScale'] ?? 1);
          say(io, `sampling ${count} images from ${samples} (EMA weights, ${steps}, cfg ${cfgScale}, seed ${f.seed})`);
          set = generateSamples(model, values, { count, steps, cfgScale, key: foldIn(keyFromSeed(f.seed), 0), onProgress: (done) => io.tty && io.write(`\r  ${done}/${count}`) });
          if (io.tty) io.write('\n');
          tf.dispose([...values.values()]);
        } else if (split !== null) {
          // A built-in split as the samples: FID train vs test is the floor a model can reach.
          set = splitSubset(data, split, f.count);
        } else set = toClassifierInput(await readImages(samples, f.count));
        const ref = await loadReference(f, net, data);
        if (f.saveRefStats !== undefined) {
          if (ref.kind !== 'features') throw new UsageError('--save-ref-stats: the reference is already a statistics file');
          await writeStatsFile(f.saveRefStats, featureStats(ref.features.data, ref.features.dim), { network: net.name, count: ref.features.count, source: ref.source });
        }
        const report = evaluate(net, set, ref, { seed: f.seed, kidSubsets: f.kidSubsets, classNames: classifierView(data, 'test').classNames });
        await publish(io, report, f.json ?? (run ? join(samples, `eval-${set.count}.json`) : `eval-${timestamp()}.json`), started);
      } finally {
        net.dispose();
      }
    });
}
