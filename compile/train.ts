/**
 * The training graph: masking and the side-interpolater are in it. One step = the MDT
 * objective (full branch + masked branch on the same x0 and t, each with its own noise and
 * label dropout), gradients, the optimizer update and the EMA update.
 */
import * as tf from '@tensorflow/tfjs';
import { bernoulli, foldIn, normal, randint, uniform, type Key } from '../dsl/random.ts';
import { gridSize, type ModelConfig } from '../mdt/config.ts';
import { lenKeepV1, lenKeepV2, randomMasking, ratioV2, type MaskPlan } from '../mdt/masking.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { dropLabels } from '../layers/embedders.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { createEma, createOptimizer, type Optimizer, type OptimizerConfig } from './optim.ts';
import { jit, type Jitted } from './trace.ts';
import { trainingReport } from './pipeline.ts';
import { accumulateGradients, trainingParams } from './fit.ts';
import { branchProgram, maskInputs } from './model-graph.ts';

export interface TrainOptions {
  readonly optimizer: OptimizerConfig;
  readonly emaDecay: number;
  readonly diffusionSteps?: number;
  /** Train the masked branch (MDT); ignored for DiT. Default true. */
  readonly maskedBranch?: boolean;
  /**
   * γ of the min-SNR weighting of the MSE term (Hang et al. 2023), null for none; absent: the
   * variant's official recipe (5 for MDTv2, none for DiT and MDT v1).
   */
  readonly minSnrGamma?: number | null;
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

/** The entries of `from` for exactly the keys of `like`, or an error naming what is missing. */
function pick(like: ReadonlyMap<string, tf.Tensor>, from: ReadonlyMap<string, tf.Tensor>, what: string): Map<string, tf.Tensor> {
  const missing = [...like.keys()].filter((k) => !from.has(k));
  if (missing.length > 0) throw new Error(`${what} state lacks ${missing.length} trainable parameter(s): ${missing.slice(0, 8).join(', ')}${missing.length > 8 ? ', …' : ''}`);
  return new Map([...like.keys()].map((k) => [k, from.get(k)!]));
}

/**
 * The training step as compiled graphs: each branch (full; masked with its plan) is traced at
 * the batch's shapes, differentiated on the IR and lowered once per shape signature (MDTv2's
 * kept-token count gets one executable per length). The branches run one after the other, so
 * only one branch's activations are alive at a time; their gradients are summed, then the
 * optimizer and the EMA update run on the parameter tensors.
 */
export function compileTraining(model: DiffusionModel, initial: ReadonlyMap<string, tf.Tensor>, opts: TrainOptions): Trainer {
  const c = model.config;
  const tables = respacedTables(opts.diffusionSteps ?? 1000, '');
  const masked = c.variant !== 'dit' && (opts.maskedBranch ?? true);
  const minSnrGamma = opts.minSnrGamma === undefined ? (c.variant === 'mdt-v2' ? 5 : undefined) : (opts.minSnrGamma ?? undefined);
  const { params, trainable } = trainingParams(model.params, initial, 'compileTraining');
  const wrt = [...trainable.keys()];
  const branch = (isMasked: boolean): Jitted =>
    jit(branchProgram(model, tables, { masked: isMasked, ...(minSnrGamma === undefined ? {} : { minSnrGamma }) }), (g) => trainingReport(g, 'loss', wrt).graph);
  const full = branch(false);
  const maskedBranch = masked ? branch(true) : null;
  const optimizer = createOptimizer(opts.optimizer);
  const ema = createEma(opts.resume ? pick(trainable, opts.resume.ema, 'EMA') : trainable, opts.emaDecay);
  if (opts.resume) optimizer.restore(opts.resume.optimizerStep, opts.resume.optimizerSlots);

  /** Runs one branch; its three losses go to `parts`, its gradients are added into `grads`. */
  const runBranch = (exe: Jitted, data: Map<string, tf.Tensor>, parts: tf.Tensor[], grads: Map<string, tf.Tensor>) => {
    const out = exe(new Map([...params, ...data]));
    tf.dispose([...data.values()]);
    parts.push(out.get('loss')!, out.get('mse')!, out.get('vb')!);
    accumulateGradients(out, wrt, grads);
  };

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
      const data = (labels: Int32Array, noiseKey: Key) => new Map<string, tf.Tensor>([
        ['x0', x0.clone()],
        ['t', tf.tensor1d(t, 'int32')],
        ['y', tf.tensor1d(labels, 'int32')],
        ['noise', tf.tensor4d(normal(noiseKey, n), x0.shape)],
      ]);
      const parts: tf.Tensor[] = [];
      const grads = new Map<string, tf.Tensor>();
      runBranch(full, data(yFull, foldIn(key, 4)), parts, grads);
      if (plan && maskedBranch) runBranch(maskedBranch, new Map([...data(yMasked, foldIn(key, 5)), ...maskInputs(plan, gridSize(c))]), parts, grads);
      // The optimizer consumes the gradients.
      tf.tidy(() => {
        optimizer.apply(trainable, grads);
        ema.update(trainable);
      });
      const packed = tf.stack(parts);
      tf.dispose(parts);
      const v = await packed.data();
      packed.dispose();
      const out: StepLosses = { loss: v[0]!, mse: v[1]!, vb: v[2]! };
      return masked ? { ...out, m_loss: v[3]!, m_mse: v[4]!, m_vb: v[5]!, lenKeep: plan!.lenKeep } : out;
    },
    dispose() {
      full.dispose();
      maskedBranch?.dispose();
      optimizer.dispose();
      ema.dispose();
      for (const v of params.values()) v.dispose();
    },
  };
}
