/**
 * Inpainting with the side-interpolater (mdt/inpaint.ts; paper appendix C, MDT-SPEC §9) on
 * compiled sampling steps: each DDPM step first re-noises the known region of the image to the
 * current step (q_sample) and pastes it over x, then runs the masked network (a plan keeping
 * exactly the known tokens) during the first fraction of the steps and the plain one after;
 * the known region is pasted back at the end.
 */
import * as tf from '@tensorflow/tfjs';
import { foldIn, normal, split, type Key } from '../dsl/random.ts';
import { add, mul, neg, shift, slice } from '../dsl/ops.ts';
import type { Shape } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { gridSize } from '../mdt/config.ts';
import { checkInpaint, knownTokens, tokenMaskPixels } from '../mdt/inpaint.ts';
import { planKeeping } from '../mdt/masking.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { qSample, type Maps } from '../mdt/diffusion/gaussian.ts';
import type { NoiseSource } from '../mdt/diffusion/sampler.ts';
import type { GuidanceSchedule } from '../mdt/diffusion/guidance-weight.ts';
import type { DiffusionTables } from '../mdt/diffusion/schedule.ts';
import { jit } from './trace.ts';
import { maskInputs } from './model-graph.ts';
import { compileStep, sampleLoop, stepRunner, type StepRunner } from './sample.ts';

export interface InpaintOptions {
  /** The image (pixels or latents) to complete, (B, C, H, W); only its known region is used. */
  readonly image: tf.Tensor4D;
  /** Per pixel (H·W, row-major): true where the image is known, false where it must be generated. */
  readonly knownPixels: ArrayLike<boolean>;
  readonly labels: Int32Array;
  /** Respacing of the DDPM sampler, e.g. "250" or "100". */
  readonly steps: string;
  /** Fraction ρ of the (first, noisiest) steps that run the masked forward. */
  readonly switchFraction: number;
  readonly guidance: GuidanceSchedule | null;
  readonly guideChannels?: 'first3' | 'all';
  readonly key: Key;
  /** Called after each step with the number of steps done and the total. */
  readonly progress?: (done: number, total: number) => void;
}

type Any = Tensor<Shape>;

/** known·a + (1 − known)·b, known (1, 1, H, W) of 0/1. */
const paste = (known: Any, a: Any, b: Any): Any => add(mul(known, a), mul(shift(neg(known), 1), b));

/** x with its known region replaced by z0 noised to original step t (inputs z0, x, t, noise, known). */
function renoiseProgram(base: DiffusionTables) {
  return jit((io) => {
    const renoised = qSample(base, io.data('z0'), io.data('t'), io.data('noise'));
    return { x: paste(io.data('known'), renoised, io.data<Maps['shape']>('x')) };
  });
}

/** The first `rows` rows of x with the known region of z0 pasted back (inputs z0, x, known). */
function compositeProgram(rows: number) {
  return jit((io) => {
    const out = paste(io.data('known'), io.data('z0'), io.data<Maps['shape']>('x'));
    const [, c, h, w] = out.shape;
    return { out: slice(out, [0, 0, 0, 0], [rows, c!, h!, w!]) };
  });
}

/**
 * Completes `o.image` outside its known region; the result (B, C, H, W) is the caller's. The
 * noise is drawn from `o.key` as [x_T, step, re-noise] = split(key, 3): x_T from the first, step
 * k's DDPM noise from foldIn(second, k), step k's re-noising noise from foldIn(third, k).
 */
export function inpaint(model: DiffusionModel, values: ReadonlyMap<string, tf.Tensor>, o: InpaintOptions): tf.Tensor4D {
  const c = model.config;
  checkInpaint(c, (k) => values.has(k), o.image.shape, o.labels.length, o.switchFraction);
  const [b, ch, h, w] = o.image.shape;
  const grid = gridSize(c);
  const tokens = knownTokens(o.knownPixels, grid, c.patchSize);
  if (!tokens.some((k) => k)) throw new Error('inpaint: no token is fully known; the mask leaves nothing to condition on');
  const tables = respacedTables(1000, o.steps);
  const base = respacedTables(1000, '');
  const rows = o.guidance === null ? b : 2 * b;
  const y = o.guidance === null ? o.labels : Int32Array.from([...o.labels, ...new Array<number>(b).fill(c.numClasses)]);
  const guidance = o.guidance === null ? null : { schedule: o.guidance, channels: o.guideChannels ?? 'first3', inChannels: c.inChannels };
  const K = tables.T;
  const switchAt = K - Math.round(o.switchFraction * K);
  const [initKey, stepKey, renoiseKey] = split(o.key, 3) as [Key, Key, Key];
  const noise: NoiseSource = { initial: (n, from) => normal(initKey, n, from), step: (k, n, from) => normal(foldIn(stepKey, k), n, from) };
  const shape: [number, number, number, number] = [rows, ch, h, w];
  const n = rows * ch * h * w;

  const maskedStep = compileStep(model, values, tables, { sampler: 'ddpm', guidance, masked: true });
  const plainStep = compileStep(model, values, tables, { sampler: 'ddpm', guidance });
  const renoise = renoiseProgram(base);
  const composite = compositeProgram(b);
  const masked = stepRunner(maskedStep, y, noise);
  const plain = stepRunner(plainStep, y, noise);
  const plan = maskInputs(planKeeping(tokens, rows), grid);
  const known = tf.tensor4d(tokenMaskPixels(tokens, grid, c.patchSize), [1, 1, h, w]);
  const z0 = o.guidance === null ? o.image : tf.concat([o.image, o.image]);
  try {
    const run: StepRunner = (x, k) => {
      const step = new Map<string, tf.Tensor>([
        ['z0', z0], ['x', x], ['known', known],
        ['t', tf.fill([rows], tables.timestepMap[k]!, 'int32')],
        ['noise', tf.tensor4d(normal(foldIn(renoiseKey, k), n), shape)],
      ]);
      let xIn: tf.Tensor4D;
      try {
        xIn = renoise(step).get('x') as tf.Tensor4D;
      } finally {
        tf.dispose([step.get('t')!, step.get('noise')!]);
      }
      try {
        return k >= switchAt ? masked.run(xIn, k, plan) : plain.run(xIn, k);
      } finally {
        xIn.dispose();
      }
    };
    const x = sampleLoop(run, tables, shape, noise, o.progress);
    try {
      return composite(new Map<string, tf.Tensor>([['z0', z0], ['x', x], ['known', known]])).get('out') as tf.Tensor4D;
    } finally {
      x.dispose();
    }
  } finally {
    masked.dispose();
    plain.dispose();
    for (const j of [maskedStep.step, plainStep.step, renoise, composite]) j.dispose();
    tf.dispose([...plan.values(), known, ...(z0 === o.image ? [] : [z0])]);
  }
}
