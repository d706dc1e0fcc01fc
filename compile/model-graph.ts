/**
 * The programs compile/ traces from a model: one training branch's losses (full or masked),
 * and one sampling step with or without guidance. Data enters as named inputs — x0, t, y,
 * noise, the mask plan's arrays — so one executable serves every step of the same shapes.
 */
import * as tf from '@tensorflow/tfjs';
import type { Shape } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { mean } from '../dsl/ops.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { planArrays, planShapes, type MaskPlan, type MaskTensors, type PlanArrays } from '../mdt/masking.ts';
import type { DiffusionTables } from '../mdt/diffusion/schedule.ts';
import { ddimStep, pSampleStep, trainingLosses, type Denoiser } from '../mdt/diffusion/gaussian.ts';
import { withGuidance, type GuidanceOptions } from '../mdt/diffusion/cfg.ts';
import type { Program, TraceIO } from './trace.ts';

const MASK_KEYS = ['keep', 'restore', 'removed', 'biasIndex'] as const satisfies readonly (keyof PlanArrays)[];
const maskName = (k: keyof PlanArrays) => `mask.${k}`;

/** The plan's arrays as the tensors a masked graph takes (the caller disposes them). */
export function maskInputs(plan: MaskPlan, grid: number): Map<string, tf.Tensor> {
  const arrays = planArrays(plan, grid);
  const shapes = planShapes(plan);
  return new Map(MASK_KEYS.map((k) => [maskName(k), tf.tensor(arrays[k], shapes[k], k === 'removed' ? 'float32' : 'int32')]));
}

function maskTensors(io: TraceIO): MaskTensors {
  return Object.fromEntries(MASK_KEYS.map((k) => [k, io.data(maskName(k))])) as unknown as MaskTensors;
}

/** The network as the diffusion sees it, reading parameters from `io` (only inference weights unless masked). */
export function traceDenoiser(model: DiffusionModel, io: TraceIO, masked: boolean): Denoiser {
  const p = io.params(model.params, masked ? undefined : (path) => !model.params[path]!.trainOnly);
  const mask = masked ? maskTensors(io) : null;
  return (x, t, y) => model.forward(p, x, t, y, { mask });
}

export interface BranchOptions {
  readonly masked: boolean;
  readonly minSnrGamma?: number;
}

/** One branch's batch-mean losses `loss`, `mse`, `vb` from inputs x0, t (table index), y, noise (+ the plan's). */
export function branchProgram(model: DiffusionModel, tables: DiffusionTables, o: BranchOptions): Program {
  return (io) => {
    const l = trainingLosses(traceDenoiser(model, io, o.masked), tables, io.data('x0'), io.data('t'), io.data('y'), io.data('noise'), o.minSnrGamma === undefined ? {} : { minSnrGamma: o.minSnrGamma });
    const batchMean = (v: Tensor<Shape>) => mean(v, [0]);
    return { loss: batchMean(l.loss), mse: batchMean(l.mse), vb: batchMean(l.vb) };
  };
}

export interface StepOptions {
  readonly sampler: 'ddpm' | 'ddim';
  readonly eta?: number;
  readonly guidance: GuidanceOptions | null;
  /** Run the masked network (inpainting's first steps). */
  readonly masked?: boolean;
}

/** One sampling step x → `x` (x_{k−1}) from inputs x, k (respaced index), y and noise (DDPM, DDIM with η > 0). */
export function stepProgram(model: DiffusionModel, tables: DiffusionTables, o: StepOptions): Program {
  return (io) => {
    const plain = traceDenoiser(model, io, o.masked ?? false);
    return stepOf(o.guidance === null ? plain : withGuidance(plain, o.guidance), tables, o, io);
  };
}

/**
 * The update of a step alone, the (guided) network's output given as input `out`: for an
 * engine that runs the network elsewhere (runtime/onnx-engine.ts).
 */
export function updateProgram(tables: DiffusionTables, o: Omit<StepOptions, 'guidance' | 'masked'>): Program {
  return (io) => stepOf(() => io.data('out'), tables, o, io);
}

function stepOf(den: Denoiser, tables: DiffusionTables, o: Omit<StepOptions, 'guidance' | 'masked'>, io: TraceIO) {
  const [x, k, y] = [io.data('x'), io.data('k'), io.data('y')] as const;
  const eta = o.eta ?? 0;
  const r = o.sampler === 'ddpm' ? pSampleStep(den, tables, x as never, k as never, y as never, io.data('noise')) : ddimStep(den, tables, x as never, k as never, y as never, eta > 0 ? io.data('noise') : null, eta);
  return { x: r.xPrev };
}

export const needsStepNoise = (o: Omit<StepOptions, 'guidance' | 'masked'>) => o.sampler === 'ddpm' || (o.eta ?? 0) > 0;

