/**
 * A checkpoint from bytes, as the page gets one (dropped, or fetched from beside the page):
 * the model and its weights through the CLI's own code — the safetensors header's checks, the
 * config read off the keys (with the same hints as the CLI's flags), the strict state-dict
 * check. No file access, so it runs in a browser and, for tests, in Node.
 */
import type * as tf from '@tensorflow/tfjs';
import { parseSafetensors } from '../formats/safetensors-header.ts';
import { configFromKeys, type ConfigHints } from '../mdt/config-from-keys.ts';
import { buildModel } from '../mdt/model.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { paramsFromStateDict } from '../compile/weights.ts';

export interface PageModel {
  readonly model: DiffusionModel;
  readonly values: Map<string, tf.Tensor>;
  /** What the keys did not say and where it came from. */
  readonly notes: readonly string[];
  /** Whether the side-interpolater's weights are there (MDT checkpoints with train-only parameters). */
  readonly canInpaint: boolean;
}

export function modelFromSafetensors(bytes: Uint8Array, name: string, hints: ConfigHints): PageModel {
  const { tensors } = parseSafetensors(bytes, name);
  try {
    const inferred = configFromKeys(new Map([...tensors].map(([k, t]) => [k, t.shape])), hints);
    const model = buildModel(inferred.config);
    const sideBlock = [...tensors.keys()].some((k) => k.startsWith('sideblocks.'));
    const values = paramsFromStateDict(model.params, tensors, { strict: sideBlock });
    return { model, values, notes: inferred.notes, canInpaint: model.config.variant !== 'dit' && sideBlock };
  } catch (e) {
    throw new Error(`${name}: ${(e as Error).message}`);
  }
}
