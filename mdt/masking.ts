/**
 * Latent masking (MAE-style token dropping). A plan fixes which tokens each sample keeps;
 * everything downstream (the kept-token gather, the bias gather, the side-interpolater's
 * restore, the shortcut mask) is derived from it in JS, so the graph sees constant indices.
 */
import { permutation, foldIn, type Key } from '../dsl/random.ts';
import type { Dim, Sym } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { keptBiasIndex } from '../layers/relpos.ts';

export interface MaskPlan {
  readonly batch: number;
  readonly tokens: number;
  readonly lenKeep: number;
  /** (B, N): a permutation per sample; the first lenKeep are kept, in this order. */
  readonly idsShuffle: Int32Array;
  /** (B, L): kept original token ids in sequence order. */
  readonly idsKeep: Int32Array;
  /** (B, N): argsort(idsShuffle) — where each original token sits in [kept; removed]. */
  readonly idsRestore: Int32Array;
  /** (B, N): 1 = removed, 0 = kept, in original token order. */
  readonly mask: Float32Array;
}

/** v1: int(N·(1 − r)) with Python float arithmetic. */
export function lenKeepV1(tokens: number, ratio: number): number {
  return Math.trunc(tokens * (1 - ratio));
}

/** v2: ratio = U·0.2 + r and len_keep = int(N·(1 − ratio)), all in float32 as the official tensor code. */
export function ratioV2(u: number, base: number): number {
  return Math.fround(Math.fround(Math.fround(u) * Math.fround(0.2)) + Math.fround(base));
}
export function lenKeepV2(tokens: number, ratio: number): number {
  return Math.trunc(Math.fround(tokens * Math.fround(1 - Math.fround(ratio))));
}

export function planFromShuffle(idsShuffle: Int32Array, batch: number, tokens: number, lenKeep: number): MaskPlan {
  if (idsShuffle.length !== batch * tokens) throw new Error(`mask plan: ids_shuffle has ${idsShuffle.length} entries, expected B·N = ${batch}·${tokens}`);
  if (!(lenKeep >= 1 && lenKeep <= tokens && Number.isInteger(lenKeep))) throw new Error(`mask plan: len_keep must be an integer in [1, ${tokens}], got ${lenKeep}`);
  const idsKeep = new Int32Array(batch * lenKeep);
  const idsRestore = new Int32Array(batch * tokens);
  const mask = new Float32Array(batch * tokens);
  for (let b = 0; b < batch; b++) {
    const seen = new Uint8Array(tokens);
    for (let j = 0; j < tokens; j++) {
      const id = idsShuffle[b * tokens + j]!;
      if (!(id >= 0 && id < tokens) || seen[id]) throw new Error(`mask plan: ids_shuffle row ${b} is not a permutation of 0..${tokens - 1}`);
      seen[id] = 1;
      idsRestore[b * tokens + id] = j;
      if (j < lenKeep) idsKeep[b * lenKeep + j] = id;
      else mask[b * tokens + id] = 1;
    }
  }
  return { batch, tokens, lenKeep, idsShuffle, idsKeep, idsRestore, mask };
}

/** A fresh random plan: an independent uniform permutation per sample, from `key`. */
export function randomMasking(key: Key, batch: number, tokens: number, lenKeep: number): MaskPlan {
  const ids = new Int32Array(batch * tokens);
  for (let b = 0; b < batch; b++) ids.set(permutation(foldIn(key, b), tokens), b * tokens);
  return planFromShuffle(ids, batch, tokens, lenKeep);
}

/**
 * A deterministic plan that keeps exactly the `known` tokens (inpainting): shuffle =
 * [known ids…, unknown ids…], the same for every sample.
 */
export function planKeeping(known: ArrayLike<boolean>, batch: number): MaskPlan {
  const tokens = known.length;
  const order: number[] = [];
  for (let n = 0; n < tokens; n++) if (known[n]) order.push(n);
  const lenKeep = order.length;
  for (let n = 0; n < tokens; n++) if (!known[n]) order.push(n);
  const ids = new Int32Array(batch * tokens);
  for (let b = 0; b < batch; b++) ids.set(order, b * tokens);
  return planFromShuffle(ids, batch, tokens, lenKeep);
}

/** A plan as the masked graph reads it: index and mask arrays, with their shapes. */
export interface PlanArrays {
  /** Rows b·N + ids_keep[b, j] of the flattened (B·N, D) tokens, (B·L). */
  readonly keep: Int32Array;
  /** For each (sample, original token): its row among the B·L kept rows, or B·L (the mask token), (B·N). */
  readonly restore: Int32Array;
  /** 1 = removed, (B, N, 1). */
  readonly removed: Float32Array;
  /** The relative-position bias rows of the kept tokens, (B, L, L). */
  readonly biasIndex: Int32Array;
}

export function planArrays(plan: MaskPlan, grid: number): PlanArrays {
  const { batch, tokens, lenKeep, idsKeep, idsRestore } = plan;
  const keep = Int32Array.from(idsKeep, (id, i) => Math.floor(i / lenKeep) * tokens + id);
  const restore = new Int32Array(batch * tokens);
  for (let i = 0; i < restore.length; i++) {
    const j = idsRestore[i]!;
    restore[i] = j < lenKeep ? Math.floor(i / tokens) * lenKeep + j : batch * lenKeep;
  }
  return { keep, restore, removed: plan.mask, biasIndex: keptBiasIndex(grid, idsKeep, batch, lenKeep) };
}

export const planShapes = (plan: MaskPlan): Record<keyof PlanArrays, number[]> => ({
  keep: [plan.batch * plan.lenKeep],
  restore: [plan.batch * plan.tokens],
  removed: [plan.batch, plan.tokens, 1],
  biasIndex: [plan.batch, plan.lenKeep, plan.lenKeep],
});

/** The plan's arrays as tensors of the graph being traced. */
export interface MaskTensors {
  readonly keep: Tensor<readonly [Dim]>;
  readonly restore: Tensor<readonly [Dim]>;
  readonly removed: Tensor<readonly [Sym<'B'>, Dim, 1]>;
  readonly biasIndex: Tensor<readonly [Dim, Dim, Dim]>;
}
