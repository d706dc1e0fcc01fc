/**
 * Run directories and checkpoints. A checkpoint is written under a temporary name and
 * renamed when complete; `latest` is switched atomically after that, and only then is the
 * previous checkpoint removed — a kill at any moment loses at most the steps since the last save.
 *
 *   RUN/run.json                    what was asked (config, options, seed)
 *   RUN/latest                      name of the newest complete checkpoint
 *   RUN/checkpoints/NNNNNN/         model.safetensors  ema.safetensors  opt.safetensors  meta.json
 */
import * as tf from '@tensorflow/tfjs';
import { existsSync, statSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { writeFileAtomic } from '../dsl/atomic-write.ts';
import { openSafetensors, readSafetensors, writeSafetensors, type StTensor } from '../dsl/safetensors.ts';
import { openTorchCheckpoint } from '../dsl/torch-pt.ts';
import type { ModelConfig } from '../mdt/config.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { paramsFromStateDict, stateDictFromParams } from './weights.ts';
import type { Trainer } from './train.ts';

export interface CheckpointMeta {
  readonly step: number;
  readonly config: ModelConfig;
  /** Everything else a resumed run needs to continue identically (options, seed, data). */
  readonly run: Record<string, unknown>;
  readonly versions: Record<string, string>;
  readonly savedAt: string;
}

const stepName = (step: number) => String(step).padStart(6, '0');

export function versions(): Record<string, string> {
  return { 'mdt-ts': '0.1.0', tfjs: tf.version_core, node: process.version, backend: tf.getBackend() };
}

async function toStateDict(m: ReadonlyMap<string, tf.Tensor>): Promise<Map<string, StTensor>> {
  const out = new Map<string, StTensor>();
  for (const [k, v] of m) out.set(k, { dtype: 'F32', shape: v.shape, data: Float32Array.from(await v.data() as Float32Array) });
  return out;
}

/** Writes a complete checkpoint of `trainer` at `step` into RUN, then retires older ones (keeping `keep`). */
export async function saveCheckpoint(runDir: string, trainer: Trainer, step: number, run: Record<string, unknown>, keep = 1): Promise<string> {
  const root = join(runDir, 'checkpoints');
  await mkdir(root, { recursive: true });
  const name = stepName(step);
  const final = join(root, name);
  const tmp = join(root, `${name}.tmp-${process.pid}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp);
  const decls = trainer.model.params;
  const meta: CheckpointMeta = { step, config: trainer.model.config, run, versions: versions(), savedAt: new Date().toISOString() };
  await writeSafetensors(join(tmp, 'model.safetensors'), await stateDictFromParams(decls, trainer.params), { format: 'pt', step: String(step) });
  await writeSafetensors(join(tmp, 'ema.safetensors'), await stateDictFromParams(decls, trainer.ema), { format: 'pt', step: String(step) });
  await writeSafetensors(join(tmp, 'opt.safetensors'), await toStateDict(trainer.optimizer.slots()), { step: String(trainer.optimizer.step), optimizer: JSON.stringify(trainer.optimizer.config) });
  await writeFileAtomic(join(tmp, 'meta.json'), JSON.stringify(meta, null, 1));
  await rm(final, { recursive: true, force: true });
  await rename(tmp, final);
  await writeFileAtomic(join(runDir, 'latest'), `${name}\n`);
  const done = (await readdir(root)).filter((d) => /^\d{6}$/.test(d)).sort();
  for (const old of done.slice(0, Math.max(0, done.length - keep))) if (old !== name) await rm(join(root, old), { recursive: true, force: true });
  return final;
}

/** RUN dir → its latest checkpoint dir; a checkpoint dir → itself. */
export async function resolveCheckpointDir(path: string): Promise<string> {
  if (existsSync(join(path, 'meta.json'))) return path;
  const latest = join(path, 'latest');
  if (!existsSync(latest)) throw new Error(`${path}: not a run directory (no "latest") nor a checkpoint directory (no meta.json)`);
  const name = (await readFile(latest, 'utf8')).trim();
  const dir = join(path, 'checkpoints', name);
  if (!existsSync(join(dir, 'meta.json'))) throw new Error(`${path}: "latest" names checkpoint ${name}, which is missing or incomplete`);
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

export async function loadCheckpoint(path: string, model: DiffusionModel): Promise<LoadedCheckpoint> {
  const dir = await resolveCheckpointDir(path);
  const meta = JSON.parse(await readFile(join(dir, 'meta.json'), 'utf8')) as CheckpointMeta;
  const weights = paramsFromStateDict(model.params, await readSafetensors(join(dir, 'model.safetensors')));
  const ema = paramsFromStateDict(model.params, await readSafetensors(join(dir, 'ema.safetensors')));
  const f = await openSafetensors(join(dir, 'opt.safetensors'));
  const slots = new Map<string, tf.Tensor>();
  try {
    for (const k of f.entries.keys()) {
      const t = await f.read(k);
      slots.set(k, tf.tensor(t.data as Float32Array, t.shape as number[], 'float32'));
    }
  } finally {
    await f.close();
  }
  const optimizerStep = Number(f.metadata.step ?? meta.step);
  return { dir, meta, model: weights, ema, optimizerStep, optimizerSlots: slots };
}

/**
 * Weights for inference from any of: a run directory (its latest checkpoint), a checkpoint
 * directory, a `.safetensors` state dict, or an official PyTorch `.pt` file. Returns the EMA
 * weights where there are some (what the official sampling uses), unless `which` says otherwise.
 */
export async function loadWeights(path: string, model: DiffusionModel, which: 'ema' | 'model' = 'ema'): Promise<Map<string, tf.Tensor>> {
  if (!existsSync(path)) throw new Error(`no checkpoint at ${path}`);
  const opts = { strict: false } as const;
  if (statSync(path).isDirectory()) {
    const dir = await resolveCheckpointDir(path);
    return paramsFromStateDict(model.params, await readSafetensors(join(dir, `${which}.safetensors`)), opts);
  }
  if (path.endsWith('.safetensors')) return paramsFromStateDict(model.params, await readSafetensors(path), opts);
  if (path.endsWith('.pt') || path.endsWith('.pth')) {
    const ckpt = await openTorchCheckpoint(path, { prefer: which });
    try {
      const sd = new Map<string, StTensor>();
      for (const ref of ckpt.tensors) sd.set(ref.key, await ref.read());
      return paramsFromStateDict(model.params, sd, opts);
    } finally {
      await ckpt.close();
    }
  }
  throw new Error(`${basename(path)}: expected a run or checkpoint directory, a .safetensors or a .pt file (in ${dirname(path)})`);
}
