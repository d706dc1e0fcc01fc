/**
 * The training graph: masking and the side-interpolater are in it. One step = the MDT
 * objective (full branch + masked branch on the same x0 and t, each with its own noise and
 * label dropout), gradients, the optimizer update and the EMA update, in one tidy scope.
 */
import * as tf from '@tensorflow/tfjs';
import { bernoulli, foldIn, normal, randint, uniform, type Key } from '../dsl/random.ts';
import { paramView } from '../dsl/param.ts';
import { gridSize, type ModelConfig } from '../mdt/config.ts';
import { lenKeepV1, lenKeepV2, randomMasking, ratioV2, type MaskPlan } from '../mdt/masking.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { dropLabels } from '../layers/embedders.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { trainingLosses, type Denoiser } from '../mdt/diffusion/gaussian.ts';
import { createEma, createOptimizer, type Optimizer, type OptimizerConfig } from './optim.ts';

export interface TrainOptions {
  readonly optimizer: OptimizerConfig;
  readonly emaDecay: number;
  readonly diffusionSteps?: number;
  /** Train the masked branch (MDT); ignored for DiT. Default true. */
  readonly maskedBranch?: boolean;
  /** Resume: EMA values and optimizer state saved by a checkpoint (default: EMA = weights, fresh optimizer). */
  readonly resume?: { readonly ema: ReadonlyMap<string, tf.Tensor>; readonly optimizerStep: number; readonly optimizerSlots: ReadonlyMap<string, tf.Tensor> };
}

/** Batch means of one step's losses (the official log's names). */
export interface StepLosses {
  readonly loss: number;
  readonly mse: number;
  readonly vb: number;
  readonly m_loss?: number;
  readonly m_mse?: number;
  readonly m_vb?: number;
  /** Tokens the masked encoder kept this step. */
  readonly lenKeep?: number;
}

export interface Trainer {
  readonly model: DiffusionModel;
  readonly optimizer: Optimizer;
  /** Current weights (variables for trainable ones, constants otherwise). */
  readonly params: ReadonlyMap<string, tf.Tensor>;
  readonly ema: ReadonlyMap<string, tf.Tensor>;
  /**
   * One update on batch (x0, y); all randomness of the step comes from `key`. x0 stays the
   * caller's. Async because the losses are read back asynchronously: a WebGPU backend in Node
   * cannot read synchronously, and on the others the cost is one microtask.
   */
  step(x0: tf.Tensor4D, y: Int32Array, key: Key): Promise<StepLosses>;
  dispose(): void;
}

/** The masked plan of one step: v1 fixed ratio; v2 ratio = r + 0.2·U with one U per call. */
export function stepMaskPlan(c: ModelConfig, batch: number, key: Key): MaskPlan {
  const n = gridSize(c) ** 2;
  const lenKeep = c.variant === 'mdt-v2' ? lenKeepV2(n, ratioV2(uniform(foldIn(key, 0), 1)[0]!, c.maskRatio)) : lenKeepV1(n, c.maskRatio);
  return randomMasking(foldIn(key, 1), batch, n, lenKeep);
}

/** The network with the given parameter values, as the diffusion sees it. */
export function denoiserOf(model: DiffusionModel, values: ReadonlyMap<string, tf.Tensor>, mask: MaskPlan | null = null): Denoiser {
  const p = paramView(values);
  return (x, t, y) => model.forward(p, x, t, y, { mask });
}

let trainerCount = 0;

/** The entries of `from` for exactly the keys of `like`, or an error naming what is missing. */
function pick(like: ReadonlyMap<string, tf.Tensor>, from: ReadonlyMap<string, tf.Tensor>, what: string): Map<string, tf.Tensor> {
  const missing = [...like.keys()].filter((k) => !from.has(k));
  if (missing.length > 0) throw new Error(`${what} state lacks ${missing.length} trainable parameter(s): ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', …' : ''}`);
  return new Map([...like.keys()].map((k) => [k, from.get(k)!]));
}

export function compileTraining(model: DiffusionModel, initial: ReadonlyMap<string, tf.Tensor>, opts: TrainOptions): Trainer {
  const c = model.config;
  const tables = respacedTables(opts.diffusionSteps ?? 1000, '');
  const masked = c.variant !== 'dit' && (opts.maskedBranch ?? true);
  const minSnrGamma = c.variant === 'mdt-v2' ? 5 : undefined;
  const params = new Map<string, tf.Tensor>();
  const trainable = new Map<string, tf.Variable>();
  // tfjs variable names are global: prefix them per trainer, and map gradients back to paths.
  const scope = `trainer${++trainerCount}/`;
  for (const [path, spec] of Object.entries(model.params)) {
    const v = initial.get(path);
    if (v === undefined) throw new Error(`compileTraining: no value for parameter ${path}`);
    if (spec.trainable) {
      const variable = tf.variable(v.clone(), true, scope + path);
      trainable.set(path, variable);
      params.set(path, variable);
    } else params.set(path, v.clone());
  }
  const optimizer = createOptimizer(opts.optimizer);
  const ema = createEma(opts.resume ? pick(trainable, opts.resume.ema, 'EMA') : trainable, opts.emaDecay);
  if (opts.resume) optimizer.restore(opts.resume.optimizerStep, opts.resume.optimizerSlots);

  return {
    model,
    optimizer,
    params,
    ema: new Map([...params].map(([k, v]) => [k, ema.values.get(k) ?? v])),
    async step(x0, y, key) {
      const batch = x0.shape[0];
      if (y.length !== batch) throw new Error(`train step: x0 has ${batch} rows but y has ${y.length} labels`);
      const n = x0.size;
      const t = randint(foldIn(key, 0), batch, 0, tables.T);
      const yFull = dropLabels(y, bernoulli(foldIn(key, 1), batch, c.classDropoutProb), c.numClasses);
      const yMasked = dropLabels(y, bernoulli(foldIn(key, 2), batch, c.classDropoutProb), c.numClasses);
      const plan = masked ? stepMaskPlan(c, batch, foldIn(key, 3)) : null;
      const stats = tf.tidy(() => {
        const vars = [...trainable.values()];
        // Each branch's gradients are taken on their own: the tape keeps every activation and
        // every intermediate gradient of a backward pass alive until it ends, so one pass over
        // both branches needs about twice the memory (MDT-S/2 at batch 8 then exceeds wasm's
        // 4 GB heap). The sum of the two is the gradient of loss + m_loss.
        const branch = (mask: MaskPlan | null, labels: Int32Array, noise: tf.Tensor4D) => {
          let parts: tf.Tensor[] = [];
          const { value, grads } = tf.variableGrads(() => {
            tf.dispose(parts);
            const l = trainingLosses(denoiserOf(model, params, mask), tables, x0, t, labels, noise, { minSnrGamma });
            parts = [tf.mean(l.loss), tf.mean(l.mse), tf.mean(l.vb)].map((p) => tf.keep(p));
            return tf.mean(l.loss) as tf.Scalar;
          }, vars);
          value.dispose();
          return { parts, grads };
        };
        const full = branch(null, yFull, tf.tensor4d(normal(foldIn(key, 4), n), x0.shape));
        const grads = new Map(Object.entries(full.grads).map(([name, g]) => [name.slice(scope.length), g]));
        const parts = [...full.parts];
        if (plan) {
          const m = branch(plan, yMasked, tf.tensor4d(normal(foldIn(key, 5), n), x0.shape));
          for (const [name, g] of Object.entries(m.grads)) {
            const path = name.slice(scope.length);
            const prev = grads.get(path);
            grads.set(path, prev === undefined ? g : tf.add(prev, g));
          }
          parts.push(...m.parts);
        }
        optimizer.apply(trainable, grads);
        ema.update(trainable);
        const packed = tf.stack(parts);
        tf.dispose(parts);
        return packed;
      });
      const v = await stats.data();
      stats.dispose();
      const out: StepLosses = { loss: v[0]!, mse: v[1]!, vb: v[2]! };
      return masked ? { ...out, m_loss: v[3]!, m_mse: v[4]!, m_vb: v[5]!, lenKeep: plan!.lenKeep } : out;
    },
    dispose() {
      optimizer.dispose();
      ema.dispose();
      for (const v of params.values()) v.dispose();
    },
  };
}
