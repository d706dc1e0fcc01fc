/**
 * Run directories and checkpoints. A checkpoint is written into a temporary folder and renamed
 * when complete; `latest` is switched atomically after that, and only then are older ones
 * retired — a kill at any moment loses at most the steps since the last save.
 *
 *   RUN/run.json                    what was asked (config, options, seed)
 *   RUN/latest                      name of the newest complete checkpoint
 *   RUN/checkpoints/NNNNNN/         model.safetensors  ema.safetensors  opt.safetensors  meta.json
 *
 * meta.json is written last and records each file's size and SHA-256, so a checkpoint is valid
 * when its meta.json reads, every file matches it, and every value is finite. Nothing with a NaN
 * or an infinity is ever written, and nothing with one is loaded.
 */
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ioError, tempPath, writeFileAtomic } from '../formats/atomic-write.ts';
import { openSafetensors, writeSafetensors, type StTensor } from '../formats/safetensors.ts';
import { openTorchCheckpoint } from '../formats/torch-pt.ts';
import type { ModelConfig } from '../mdt/config.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { paramsFromStateDict, stateDictFromParams, streamParams, type TensorSource } from './weights.ts';
import type { Trainer } from './train.ts';
import { numel } from '../dsl/shape.ts';
import { formatBytes } from '../runtime/bytes.ts';
import { nativeCountNonFinite } from '../runtime/native.ts';
import { heapStatus } from '../runtime/heap.ts';

export interface CheckpointFile {
  readonly bytes: number;
  readonly sha256: string;
}

export interface CheckpointMeta {
  readonly step: number;
  readonly config: ModelConfig;
  /** Everything else a resumed run needs to continue identically (options, seed, data). */
  readonly run: Record<string, unknown>;
  readonly versions: Record<string, string>;
  readonly savedAt: string;
  /** Size and hash of each file (absent in checkpoints written before they were recorded). */
  readonly files?: Readonly<Record<string, CheckpointFile>>;
}

/** Which checkpoints a run keeps. */
export interface CheckpointHistory {
  /** The newest this many (≥ 1). */
  readonly keep: number;
  /** And, for good, every one whose step is a multiple of this (0: none). */
  readonly milestoneEvery: number;
}

/** A checkpoint that is incomplete, corrupt or holds non-finite values; the message says which file and why. */
export class InvalidCheckpointError extends Error {
  override readonly name = 'InvalidCheckpointError';
}

/** Weights or optimizer state with NaN or infinite values. */
export class NonFiniteError extends Error {
  override readonly name = 'NonFiniteError';
}

const FILES = ['model.safetensors', 'ema.safetensors', 'opt.safetensors'] as const;
const STEP_NAME = /^\d{6}$/;
const stepName = (step: number) => String(step).padStart(6, '0');

export function versions(): Record<string, string> {
  return { 'mdt-ts': '0.1.0', tfjs: tf.version_core, node: process.version, backend: tf.getBackend() };
}

/** A JSON file, or an error that names it and says what it should hold. */
export async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw ioError(`reading ${what}`, path, e);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (e) {
    throw new Error(`${path}: not valid JSON (${(e as Error).message}); expected ${what}${text.length === 0 ? ' (the file is empty)' : ''}`);
  }
}

/**
 * Whether every value is finite: x·0 is 0 for finite x and NaN for NaN and ±Inf, so one sum
 * answers (four partial sums keep the additions independent; ~1 ns a value, which matters for
 * a 3 GB checkpoint).
 */
function allFinite(d: Float32Array | Float64Array): boolean {
  const counted = d instanceof Float32Array ? nativeCountNonFinite(d) : null;
  if (counted !== null) return counted === 0;
  let a = 0;
  let b = 0;
  let c = 0;
  let e = 0;
  const whole = d.length - (d.length % 4);
  for (let i = 0; i < whole; i += 4) {
    a += d[i]! * 0;
    b += d[i + 1]! * 0;
    c += d[i + 2]! * 0;
    e += d[i + 3]! * 0;
  }
  for (let i = whole; i < d.length; i++) a += d[i]! * 0;
  return a + b + c + e === 0;
}

/** Counts NaN and ±Inf per tensor as tensors come, for one report over all of them. */
export class NonFiniteTally {
  private readonly bad: string[] = [];
  private floats = 0;

  add(key: string, t: StTensor): void {
    const d = t.data;
    if (!(d instanceof Float32Array || d instanceof Float64Array)) return;
    this.floats++;
    if (allFinite(d)) return;
    let nan = 0;
    let inf = 0;
    for (const v of d) {
      if (Number.isNaN(v)) nan++;
      else if (!Number.isFinite(v)) inf++;
    }
    this.bad.push(`${key} (${[nan > 0 ? `${nan} NaN` : '', inf > 0 ? `${inf} ±Inf` : ''].filter((s) => s !== '').join(', ')} of ${d.length})`);
  }

  /** null when every tensor was finite, else a sentence naming the tensors (the first few) and how many of their values. */
  report(): string | null {
    if (this.bad.length === 0) return null;
    const shown = 6;
    const { bad } = this;
    return `non-finite values in ${bad.length} of ${this.floats} tensors: ${bad.slice(0, shown).join(', ')}${bad.length > shown ? `, … (${bad.length - shown} more)` : ''}`;
  }
}

/**
 * Where a state dict holds NaN or ±Inf: null when nowhere, else a sentence naming the tensors
 * (the first few) and how many of their values.
 */
export function nonFiniteReport(sd: ReadonlyMap<string, StTensor>): string | null {
  const tally = new NonFiniteTally();
  for (const [key, t] of sd) tally.add(key, t);
  return tally.report();
}

function assertFinite(sd: ReadonlyMap<string, StTensor>, where: string): void {
  const report = nonFiniteReport(sd);
  if (report !== null) throw new NonFiniteError(`${where}: ${report}`);
}

async function toStateDict(m: ReadonlyMap<string, tf.Tensor>): Promise<Map<string, StTensor>> {
  const out = new Map<string, StTensor>();
  for (const [k, v] of m) out.set(k, { dtype: 'F32', shape: v.shape, data: Float32Array.from(await v.data() as Float32Array) });
  return out;
}

async function hashFile(path: string): Promise<CheckpointFile> {
  const hash = createHash('sha256');
  let bytes = 0;
  try {
    for await (const chunk of createReadStream(path)) {
      hash.update(chunk as Buffer);
      bytes += (chunk as Buffer).byteLength;
    }
  } catch (e) {
    throw ioError('reading', path, e);
  }
  return { bytes, sha256: hash.digest('hex') };
}

/** The checkpoint folder names of RUN (NNNNNN), oldest first. */
export async function listCheckpoints(runDir: string): Promise<string[]> {
  const root = join(runDir, 'checkpoints');
  try {
    return (await readdir(root)).filter((d) => STEP_NAME.test(d)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw ioError('listing', root, e);
  }
}

type Contents = readonly (readonly [(typeof FILES)[number], () => Promise<readonly [Map<string, StTensor>, Record<string, string>]>])[];

/** The files of a checkpoint of `trainer` at `step`, each made when asked (one in memory at a time). */
function checkpointContents(trainer: Trainer, step: number): Contents {
  const decls = trainer.model.params;
  const pt = { format: 'pt', step: String(step) };
  return [
    ['model.safetensors', async () => [await stateDictFromParams(decls, trainer.params), pt]],
    ['ema.safetensors', async () => [await stateDictFromParams(decls, trainer.ema), pt]],
    ['opt.safetensors', async () => [await toStateDict(trainer.optimizer.slots()), { step: String(trainer.optimizer.step), optimizer: JSON.stringify(trainer.optimizer.config) }]],
  ];
}

/** Where the trainer's weights, EMA or optimizer state hold NaN or ±Inf (what saveCheckpoint refuses); null when nowhere. */
export async function nonFiniteState(trainer: Trainer): Promise<string | null> {
  for (const [file, make] of checkpointContents(trainer, trainer.optimizer.step)) {
    const report = nonFiniteReport((await make())[0]);
    if (report !== null) return `${file}: ${report}`;
  }
  return null;
}

/**
 * Writes a complete checkpoint of `trainer` at `step` into RUN, points `latest` at it, then
 * retires the ones `history` does not keep. Each file's values are checked before it is
 * written: non-finite weights (a diverged run) are a NonFiniteError naming the tensors, and no
 * checkpoint is made. Any failure removes the partial folder and names the path.
 */
export async function saveCheckpoint(runDir: string, trainer: Trainer, step: number, run: Record<string, unknown>, history: CheckpointHistory): Promise<string> {
  if (!Number.isInteger(history.keep) || history.keep < 1) throw new Error(`saveCheckpoint: keep must be an integer ≥ 1, got ${history.keep}`);
  const root = join(runDir, 'checkpoints');
  const name = stepName(step);
  const final = join(root, name);
  let tmp: string | null = null;
  try {
    await mkdir(root, { recursive: true });
    tmp = tempPath(final);
    await mkdir(tmp);
    const files: Record<string, CheckpointFile> = {};
    for (const [file, make] of checkpointContents(trainer, step)) {
      const [sd, metadata] = await make();
      assertFinite(sd, `${file} of step ${step}`);
      const path = join(tmp, file);
      await writeSafetensors(path, sd, metadata);
      files[file] = await hashFile(path);
    }
    const meta: CheckpointMeta = { step, config: trainer.model.config, run, versions: versions(), savedAt: new Date().toISOString(), files };
    await writeFileAtomic(join(tmp, 'meta.json'), JSON.stringify(meta, null, 1));
    await rm(final, { recursive: true, force: true });
    await rename(tmp, final);
    tmp = null;
  } catch (e) {
    if (tmp !== null) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    if (e instanceof NonFiniteError) throw new NonFiniteError(`not saving checkpoint ${final}: ${e.message}`);
    throw ioError('saving checkpoint', final, e);
  }
  await writeFileAtomic(join(runDir, 'latest'), `${name}\n`);
  await retire(runDir, name, history);
  return final;
}

async function retire(runDir: string, newest: string, history: CheckpointHistory): Promise<void> {
  const all = await listCheckpoints(runDir);
  const recent = new Set(all.slice(-history.keep));
  for (const old of all) {
    if (old === newest || recent.has(old) || (history.milestoneEvery > 0 && Number(old) % history.milestoneEvery === 0)) continue;
    // Renamed first: a kill during the removal leaves a temp folder that the next run clears,
    // never a half-removed checkpoint that looks like a corrupt one.
    const path = join(runDir, 'checkpoints', old);
    const doomed = tempPath(path);
    try {
      await rename(path, doomed);
      await rm(doomed, { recursive: true, force: true });
    } catch (e) {
      throw ioError('retiring the old checkpoint', path, e);
    }
  }
}

/** meta.json of a checkpoint folder, checked enough to be used. */
export async function readCheckpointMeta(dir: string): Promise<CheckpointMeta> {
  const path = join(dir, 'meta.json');
  if (!existsSync(path)) throw new InvalidCheckpointError(`${dir}: no meta.json (an incomplete checkpoint, or not a checkpoint folder)`);
  const meta = await readJsonFile(path, "a checkpoint's meta.json (step, config, run)") as Partial<CheckpointMeta> | null;
  if (meta === null || typeof meta !== 'object' || !Number.isInteger(meta.step) || typeof meta.config !== 'object' || meta.config === null || typeof meta.run !== 'object') {
    throw new InvalidCheckpointError(`${path}: expected an object with an integer "step", a "config" and a "run", got ${JSON.stringify(meta).slice(0, 120)}`);
  }
  return meta as CheckpointMeta;
}

interface StateDictFile {
  readonly tensors: Map<string, StTensor>;
  readonly metadata: Record<string, string>;
}

/** The path of a checkpoint's file, after checking it against meta.json (size, hash). */
async function checkedFile(dir: string, file: string, meta: CheckpointMeta): Promise<string> {
  const path = join(dir, file);
  if (!existsSync(path)) throw new InvalidCheckpointError(`${path} is missing`);
  const want = meta.files?.[file];
  if (want !== undefined) {
    const got = await hashFile(path);
    if (got.bytes !== want.bytes) throw new InvalidCheckpointError(`${path} is ${got.bytes} bytes, meta.json records ${want.bytes} (truncated or overwritten)`);
    if (got.sha256 !== want.sha256) throw new InvalidCheckpointError(`${path} does not match the SHA-256 in meta.json (the file is corrupt)`);
  }
  return path;
}

/** A checkpoint's file after checking it against meta.json (size, hash) and for non-finite values. */
async function verifiedStateDict(dir: string, file: string, meta: CheckpointMeta): Promise<StateDictFile> {
  const path = await checkedFile(dir, file, meta);
  const tensors = new Map<string, StTensor>();
  let metadata: Record<string, string>;
  try {
    const f = await openSafetensors(path);
    try {
      for (const k of f.entries.keys()) tensors.set(k, await f.read(k));
    } finally {
      await f.close();
    }
    metadata = f.metadata;
  } catch (e) {
    // The reader's own errors name the file; the system's may not.
    throw new InvalidCheckpointError((e as Error).message.includes(path) ? (e as Error).message : ioError('reading', path, e).message);
  }
  assertFinite(tensors, path);
  return { tensors, metadata };
}

/** Checks a checkpoint folder without loading it into a model: meta.json, every file, every value. */
export async function verifyCheckpoint(dir: string): Promise<CheckpointMeta> {
  const meta = await readCheckpointMeta(dir);
  for (const file of FILES) await verifiedStateDict(dir, file, meta);
  return meta;
}

/** RUN dir → the checkpoint `latest` names; a checkpoint dir → itself. */
export async function resolveCheckpointDir(path: string): Promise<string> {
  if (existsSync(join(path, 'meta.json'))) return path;
  const latest = join(path, 'latest');
  if (!existsSync(latest)) throw new Error(`${path}: not a run directory (no "latest") nor a checkpoint directory (no meta.json)`);
  let name: string;
  try {
    name = (await readFile(latest, 'utf8')).trim();
  } catch (e) {
    throw ioError('reading', latest, e);
  }
  if (!STEP_NAME.test(name)) throw new InvalidCheckpointError(`${latest}: expected a checkpoint name like 000800, got ${JSON.stringify(name.slice(0, 40))}`);
  const dir = join(path, 'checkpoints', name);
  if (!existsSync(join(dir, 'meta.json'))) throw new InvalidCheckpointError(`${path}: "latest" names checkpoint ${name}, which is missing or incomplete`);
  return dir;
}

export interface LoadedCheckpoint {
  readonly dir: string;
  readonly meta: CheckpointMeta;
  readonly model: Map<string, tf.Tensor>;
  readonly ema: Map<string, tf.Tensor>;
  readonly optimizerStep: number;
  readonly optimizerSlots: Map<string, tf.Tensor>;
}

/** Loads and verifies a checkpoint (RUN dir: the one `latest` names); InvalidCheckpointError or NonFiniteError says what is wrong. */
export async function loadCheckpoint(path: string, model: DiffusionModel): Promise<LoadedCheckpoint> {
  const dir = await resolveCheckpointDir(path);
  const meta = await readCheckpointMeta(dir);
  const made: tf.Tensor[] = [];
  const keep = <T extends Map<string, tf.Tensor>>(m: T): T => (made.push(...m.values()), m);
  try {
    const weights = keep(paramsFromStateDict(model.params, (await verifiedStateDict(dir, 'model.safetensors', meta)).tensors));
    const ema = keep(paramsFromStateDict(model.params, (await verifiedStateDict(dir, 'ema.safetensors', meta)).tensors));
    const opt = await verifiedStateDict(dir, 'opt.safetensors', meta);
    const slots = keep(new Map([...opt.tensors].map(([k, t]) => [k, tf.tensor(t.data as Float32Array, t.shape as number[], 'float32')])));
    return { dir, meta, model: weights, ema, optimizerStep: Number(opt.metadata.step ?? meta.step), optimizerSlots: slots };
  } catch (e) {
    tf.dispose(made);
    throw e;
  }
}

/**
 * The newest checkpoint of RUN that is valid (the folders, not `latest`, decide: a kill between
 * a folder's rename and the switch of `latest` leaves a newer complete one). Each invalid one is
 * moved aside to NNNNNN.invalid (kept for inspection, never loaded or retired) and reported
 * through `onSkip`; `latest` then names the one loaded. null when there is none.
 */
export async function loadNewestValidCheckpoint(runDir: string, model: DiffusionModel, onSkip: (text: string) => void): Promise<LoadedCheckpoint | null> {
  let skipped = false;
  for (const name of (await listCheckpoints(runDir)).reverse()) {
    const dir = join(runDir, 'checkpoints', name);
    try {
      const ck = await loadCheckpoint(dir, model);
      if (ck.meta.step !== Number(name)) throw new InvalidCheckpointError(`${join(dir, 'meta.json')} records step ${ck.meta.step}, but the folder is ${name}`);
      if (skipped) await writeFileAtomic(join(runDir, 'latest'), `${name}\n`);
      return ck;
    } catch (e) {
      const aside = await freeName(`${dir}.invalid`);
      try {
        await rename(dir, aside);
      } catch (r) {
        throw ioError('moving the invalid checkpoint aside to', aside, r);
      }
      onSkip(`skipped checkpoint ${name}: ${(e as Error).message}; moved it to ${aside}`);
      skipped = true;
    }
  }
  return null;
}

async function freeName(path: string): Promise<string> {
  for (let i = 1; ; i++) {
    const candidate = i === 1 ? path : `${path}-${i}`;
    if (!existsSync(candidate)) return candidate;
  }
}

/** How to pick the weights of a file that holds several sets. */
export interface WeightSourceOptions {
  /** A .pt's top-level key that holds the state dict (default: 'ema' when present, as the official sample scripts). */
  readonly key?: string;
}

/** A state dict file's tensors, each read when asked, with what a user should know about the choice. */
export interface StateDictSource {
  readonly tensors: ReadonlyMap<string, TensorSource>;
  /** Sentences: which wrapped state dict was taken, a stripped `module.` prefix. */
  readonly notes: readonly string[];
  close(): Promise<void>;
}

const DDP_PREFIX = 'module.';

/** A DDP-wrapped model's state dict (every key under `module.`) under the model's own keys. */
function unwrapDdp(tensors: Map<string, TensorSource>, notes: string[]): Map<string, TensorSource> {
  if (tensors.size === 0 || ![...tensors.keys()].every((k) => k.startsWith(DDP_PREFIX))) return tensors;
  notes.push(`every key starts with '${DDP_PREFIX}' (a state dict saved from a DistributedDataParallel-wrapped model); stripped it`);
  return new Map([...tensors].map(([k, t]) => [k.slice(DDP_PREFIX.length), t]));
}

/**
 * Opens the state dict `path` names — a run directory (its latest checkpoint), a checkpoint
 * directory, a `.safetensors` file or an official PyTorch `.pt` file — without reading any
 * tensor. A checkpoint's file is first checked against its meta.json (size, SHA-256).
 */
export async function openStateDict(path: string, which: 'ema' | 'model' = 'ema', opts: WeightSourceOptions = {}): Promise<StateDictSource> {
  if (!existsSync(path)) throw new Error(`no checkpoint at ${path}`);
  const notes: string[] = [];
  const fromSafetensors = async (file: string): Promise<StateDictSource> => {
    const f = await openSafetensors(file);
    const tensors = new Map([...f.entries].map(([k, e]): [string, TensorSource] => [k, { shape: e.shape, dtype: e.dtype, read: (scratch) => f.read(k, scratch) }]));
    return { tensors: unwrapDdp(tensors, notes), notes, close: () => f.close() };
  };
  if (statSync(path).isDirectory()) {
    const dir = await resolveCheckpointDir(path);
    return fromSafetensors(await checkedFile(dir, `${which}.safetensors`, await readCheckpointMeta(dir)));
  }
  if (path.endsWith('.safetensors')) return fromSafetensors(path);
  if (path.endsWith('.pt') || path.endsWith('.pth')) {
    const ckpt = await openTorchCheckpoint(path, { prefer: which, ...(opts.key === undefined ? {} : { key: opts.key }) });
    if (ckpt.wrapperKey !== null) {
      const others = Object.keys(ckpt.extra);
      notes.push(`using the state dict under '${ckpt.wrapperKey}'${others.length > 0 ? ` (the file also holds ${others.map((k) => `'${k}'`).join(', ')}; --key chooses)` : ''}`);
    }
    // A broadcast view is read at the model's own shape, which bounds it.
    const tensors = new Map(ckpt.tensors.map((ref): [string, TensorSource] => [ref.key, { shape: ref.shape, dtype: ref.dtype, read: (scratch) => ref.read({ expandViews: true, ...(scratch === undefined ? {} : { scratch }) }) }]));
    return { tensors: unwrapDdp(tensors, notes), notes, close: () => ckpt.close() };
  }
  throw new Error(`${basename(path)}: expected a run or checkpoint directory, a .safetensors or a .pt file (in ${dirname(path)})`);
}

/** Refuses, before reading anything, weights that the wasm heap (runtime/heap.ts) cannot hold. */
function checkHeapRoom(path: string, bytes: number): void {
  const heap = heapStatus();
  if (heap === null || heap.used + bytes <= heap.limit) return;
  throw new Error(
    `${path}: the weights take ${formatBytes(bytes)}, more than the ${formatBytes(heap.limit - heap.used)} free of the wasm heap's ${formatBytes(heap.limit)}; ` +
    'use a backend without this limit (--backend cpu, or tensorflow when tfjs-node is installed)',
  );
}

export interface LoadWeightsOptions extends WeightSourceOptions {
  /** Only what sampling reads: the train-only parameters (side block, mask token) are not loaded. */
  readonly inference?: boolean;
  /** Receives the notes of openStateDict. */
  readonly onNote?: (text: string) => void;
}

/**
 * Weights for `model` from whatever openStateDict opens: the EMA weights where there are some
 * (what the official sampling uses), unless `which` (a checkpoint's, or the .pt wrapper key tried
 * first) or `key` say otherwise. Tensors are read one
 * at a time straight into their tf.Tensors (the peak is the weights plus the largest tensor).
 * Non-finite values are an error naming the tensors (they would sample a black or noise grid
 * without a word).
 */
export async function loadWeights(path: string, model: DiffusionModel, which: 'ema' | 'model' = 'ema', opts: LoadWeightsOptions = {}): Promise<Map<string, tf.Tensor>> {
  const sd = await openStateDict(path, which, opts);
  try {
    for (const n of sd.notes) opts.onNote?.(`${basename(path)}: ${n}`);
    const include = opts.inference ? (k: string) => !model.params[k]!.trainOnly : () => true;
    checkHeapRoom(path, [...sd.tensors].filter(([k]) => k in model.params && include(k)).reduce((a, [, t]) => a + 4 * numel(t.shape), 0));
    const finite = new NonFiniteTally();
    const values = await streamParams(model.params, sd.tensors, {
      strict: false,
      include,
      onRead: (k, t) => finite.add(k, t),
    });
    const report = finite.report();
    if (report !== null) {
      tf.dispose([...values.values()]);
      throw new NonFiniteError(`${path}: ${report}`);
    }
    return values;
  } finally {
    await sd.close();
  }
}
