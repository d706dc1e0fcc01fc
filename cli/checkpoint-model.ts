/**
 * A model and its weights from whatever `--ckpt` names: a run or checkpoint directory (the
 * config is in meta.json), a checkpoint's own .safetensors (meta.json beside it), or a bare
 * .safetensors / official .pt state dict (the config is read off its keys, see
 * config-from-keys.ts, with --model and the size flags for what the keys cannot say).
 */
import type * as tf from '@tensorflow/tfjs';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { loadWeights, openStateDict, readCheckpointMeta, resolveCheckpointDir } from '../compile/checkpoint.ts';
import { namedConfig, validateConfig, type ModelConfig, type Variant } from '../mdt/config.ts';
import { AmbiguousConfigError, ConflictingHintError, configFromKeys, detectVariant, HINT_FLAGS } from '../mdt/config-from-keys.ts';
import { buildModel } from '../mdt/model.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { say, type CliIO } from './io.ts';
import { addSizeOptions, modelNameArg, option, SIZE_FIELDS, sizeOverrides, UsageError, type SizeOverrides } from './options.ts';
import type { Command } from 'commander';

export type Which = 'ema' | 'model';

/** Each model family with its article, as a sentence names it. */
const A_VARIANT: Readonly<Record<Variant, string>> = { dit: 'a DiT', 'mdt-v1': 'an MDT (v1)', 'mdt-v2': 'an MDTv2' };

export interface CheckpointFlags extends SizeOverrides {
  readonly ckpt: string;
  readonly model?: string;
  readonly which: Which;
  readonly key?: string;
}

export interface LoadedModel {
  readonly model: DiffusionModel;
  readonly values: Map<string, tf.Tensor>;
}

/** --ckpt, --which, --model and the size flags (which matter only for a bare state dict). */
export function addCheckpointOptions(cmd: Command): Command {
  cmd
    .addOption(option('--ckpt <path>', 'run dir, checkpoint dir, .safetensors state dict or official .pt', { required: true }))
    .addOption(option('--which <weights>', 'which weights of a checkpoint', { default: 'ema', choices: ['ema', 'model'] }))
    .addOption(option('--key <name>', 'for a .pt holding several state dicts (a train.py checkpoint: model, ema, opt, args): the top-level key to load', { defaultText: 'ema when present, else model, state_dict, model_state_dict (as --which orders them)' }))
    .addOption(option('--model <name>', 'for a bare state dict: the model family and size, for what its keys do not record', { defaultText: 'meta.json, else inferred from the keys', parse: modelNameArg }));
  return addSizeOptions(cmd, () => 'meta.json, else inferred from the keys');
}

async function keyShapes(f: CheckpointFlags): Promise<Map<string, readonly number[]>> {
  if (!(f.ckpt.endsWith('.safetensors') || f.ckpt.endsWith('.pt') || f.ckpt.endsWith('.pth'))) {
    throw new UsageError(`--ckpt: expected a run or checkpoint directory, a .safetensors or a .pt file, got ${f.ckpt}`);
  }
  const sd = await openStateDict(f.ckpt, f.which, keyOption(f));
  try {
    return new Map([...sd.tensors].map(([k, t]) => [k, t.shape]));
  } finally {
    await sd.close();
  }
}

const keyOption = (f: CheckpointFlags) => (f.key === undefined ? {} : { key: f.key });

async function metaConfig(path: string): Promise<ModelConfig | null> {
  const dir = statSync(path).isDirectory() ? await resolveCheckpointDir(path) : dirname(path);
  if (!existsSync(join(dir, 'meta.json'))) return null;
  const config = (await readCheckpointMeta(dir)).config;
  try {
    return validateConfig(config);
  } catch (e) {
    throw new Error(`${join(dir, 'meta.json')}: ${(e as Error).message}`);
  }
}

/** The config from the keys, with --model filling what they do not hold. */
async function inferredConfig(f: CheckpointFlags, io: CliIO): Promise<ModelConfig> {
  const named = f.model === undefined ? undefined : namedConfig(f.model);
  const given = sizeOverrides(f);
  const defaults = named === undefined ? {} : { numHeads: named.numHeads, decodeLayer: named.decodeLayer, maskRatio: named.maskRatio };
  const shapes = await keyShapes(f);
  // Checked first: --model's defaults of another variant (a DiT's decode layer 0 for an MDT) would
  // otherwise surface as an invalid config instead of the actual mistake.
  const variant = detectVariant(shapes);
  if (named !== undefined && named.variant !== variant) {
    throw new UsageError(`--model ${f.model} names ${A_VARIANT[named.variant]} model, but the keys of ${f.ckpt} are ${A_VARIANT[variant]} state dict; drop --model or name ${A_VARIANT[variant]} model`);
  }
  let inferred;
  try {
    inferred = configFromKeys(shapes, given, defaults);
  } catch (e) {
    if (e instanceof AmbiguousConfigError || e instanceof ConflictingHintError) throw new UsageError(`${f.ckpt}: ${e.message}`);
    throw e;
  }
  const c = inferred.config;
  if (named !== undefined) {
    const differ = (['depth', 'hiddenSize', 'patchSize'] as const).filter((k) => named[k] !== c[k]);
    if (differ.length > 0) say(io, `note: the checkpoint's ${differ.map((k) => `${HINT_FLAGS[k].slice(2)} ${c[k]}`).join(', ')} differ from ${f.model}'s; using the checkpoint's`);
  }
  for (const n of inferred.notes) say(io, `note: ${n}`);
  return c;
}

/** The model config `--ckpt` records (meta.json), else the one its keys give with --model and the size flags. */
export async function checkpointConfig(f: CheckpointFlags, io: CliIO): Promise<ModelConfig> {
  if (!existsSync(f.ckpt)) throw new UsageError(`--ckpt: no such file or directory: ${f.ckpt}`);
  const config = await metaConfig(f.ckpt);
  if (config === null) return inferredConfig(f, io);
  if (f.model !== undefined || SIZE_FIELDS.some((k) => f[k] !== undefined)) say(io, 'note: --model and size flags are ignored: the checkpoint\'s meta.json records its config');
  return config;
}

export interface LoadModelOptions {
  /** Only the weights sampling reads (no side block, no mask token). */
  readonly inference?: boolean;
  /** The config checkpointConfig gave (else it is worked out again). */
  readonly config?: ModelConfig;
}

export async function loadCheckpointModel(f: CheckpointFlags, io: CliIO, opts: LoadModelOptions = {}): Promise<LoadedModel> {
  const model = buildModel(opts.config ?? (await checkpointConfig(f, io)));
  const values = await loadWeights(f.ckpt, model, f.which, { ...keyOption(f), inference: opts.inference ?? false, onNote: (n) => say(io, `note: ${n}`) });
  return { model, values };
}
