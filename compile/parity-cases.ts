/** One handler per fixture case kind (FORMAT.md §9): inputs in, named outputs back. */
import * as tf from '@tensorflow/tfjs';
import { named } from '../dsl/layer.ts';
import { wrap, type Tensor } from '../dsl/tensor.ts';
import { timestepFeatures, timestepMlp } from '../layers/embedders.ts';
import { adaLNBlock, type B as BT } from '../layers/adaln-block.ts';
import { biasPlan, gatherBias, relPosIndex } from '../layers/relpos.ts';
import { sincos2d, timestepFreqs, timestepSinusoid } from '../layers/sincos.ts';
import { gridSize } from '../mdt/config.ts';
import { planFromShuffle } from '../mdt/masking.ts';
import { mdtBlock } from '../mdt/mdt-v1.ts';
import { B } from '../mdt/trunk.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { f32, linearBetas } from '../mdt/diffusion/schedule.ts';
import { guidanceWeight, type GuidanceSchedule } from '../mdt/diffusion/guidance-weight.ts';
import { minSnrWeights } from '../mdt/diffusion/min-snr.ts';
import { qSample, trainingLosses, type Denoiser } from '../mdt/diffusion/gaussian.ts';
import { ddimStep, pSampleStep } from '../mdt/diffusion/sampler.ts';
import { withGuidance } from '../mdt/diffusion/cfg.ts';
import type { CaseHandler, FixtureCase, FixtureContext, Values } from './parity.ts';

const SCHEDULE_TABLES = {
  betas: 'betas', alphas_cumprod: 'alphasCumprod', alphas_cumprod_prev: 'alphasCumprodPrev', sqrt_alphas_cumprod: 'sqrtAlphasCumprod',
  sqrt_one_minus_alphas_cumprod: 'sqrtOneMinusAlphasCumprod', sqrt_recip_alphas_cumprod: 'sqrtRecipAlphasCumprod',
  sqrt_recipm1_alphas_cumprod: 'sqrtRecipm1AlphasCumprod', posterior_variance: 'posteriorVariance',
  posterior_log_variance_clipped: 'posteriorLogVarianceClipped', posterior_mean_coef1: 'posteriorMeanCoef1', posterior_mean_coef2: 'posteriorMeanCoef2',
} as const;

/** The fixture's guidance: MDT's power-cosine schedule, DiT's constant scale. */
export function fixtureGuidance(ctx: FixtureContext, c: FixtureCase): GuidanceSchedule {
  const scale = ctx.scalar(c, 'cfg_scale');
  return ctx.config.variant === 'dit' ? { kind: 'constant', scale } : { kind: 'power-cosine', scale, power: ctx.scalar(c, 'scale_pow') };
}

function diffusionSteps(ctx: FixtureContext, c: FixtureCase): number {
  return typeof c.inputs.diffusion_steps === 'number' ? c.inputs.diffusion_steps : 1000;
}

/** The model as the fixture ran it: plain, or masked with the given shuffle and len_keep. */
export async function fixturePlan(ctx: FixtureContext, c: FixtureCase, batch: number) {
  const n = gridSize(ctx.config) ** 2;
  return planFromShuffle(await ctx.ints(c, 'ids_shuffle'), batch, n, ctx.scalar(c, 'len_keep'));
}

/** The fixture's network: plain, or wrapped in CFG when the case gives a cfg_scale. */
function fixtureDenoiser(ctx: FixtureContext, c: FixtureCase): Denoiser {
  const plain: Denoiser = (x, t, y) => ctx.model.forward(ctx.params, x, t, y);
  if (!('cfg_scale' in c.inputs)) return plain;
  return withGuidance(plain, { schedule: fixtureGuidance(ctx, c), T: diffusionSteps(ctx, c), inChannels: ctx.config.inChannels });
}

async function stepInputs(ctx: FixtureContext, c: FixtureCase) {
  return {
    x: (await ctx.float(c, 'x_t')) as tf.Tensor4D,
    k: await ctx.ints(c, 'k'),
    y: await ctx.ints(c, 'y'),
    noise: (await ctx.float(c, 'noise')) as tf.Tensor4D,
    tables: respacedTables(1000, String(c.params?.timestep_respacing ?? '')),
  };
}

export const caseHandlers: Record<string, CaseHandler> = {
  async timestep_embedding(ctx, c) {
    const t = await ctx.ints(c, 't');
    const tMlp = named('t_embedder', timestepMlp(B, ctx.config.hiddenSize));
    return {
      freqs: timestepFreqs(128),
      sinusoid: timestepSinusoid(t, 256),
      t_emb: tf.tidy(() => tMlp.apply(ctx.params, timestepFeatures(t), undefined).raw),
    };
  },
  async pos_embed(ctx) {
    const table = sincos2d(ctx.config.hiddenSize, gridSize(ctx.config));
    return { sincos_f64: table, sincos: Float32Array.from(table) };
  },
  async rel_pos_index(ctx) {
    const grid = gridSize(ctx.config);
    const prefix = ctx.config.variant === 'mdt-v2' ? 'en_inblocks.0' : 'blocks.0';
    return {
      relative_position_index: relPosIndex(grid),
      bias_first_block: tf.tidy(() => gatherBias(ctx.params.get(`${prefix}.attn.rel_pos_bias.relative_position_bias_table`).raw, biasPlan(grid, null))),
    };
  },
  async block(ctx, c) {
    const module = String(c.params?.module);
    const cfg = ctx.config;
    const grid = gridSize(cfg);
    const withSkip = /^(en_outblocks|de_blocks)\./.test(module);
    const blk = cfg.variant === 'dit'
      ? adaLNBlock(B, B as unknown as number, cfg.hiddenSize, { heads: cfg.numHeads, mlpRatio: cfg.mlpRatio, grid: null, skip: false })
      : mdtBlock(cfg, grid, withSkip);
    const x = await ctx.float(c, 'x');
    const cond = await ctx.float(c, 'c');
    const skip = 'skip' in c.inputs ? await ctx.float(c, 'skip') : undefined;
    const [batch, len] = x.shape as [number, number];
    const ids = 'ids_keep' in c.inputs ? await ctx.ints(c, 'ids_keep') : null;
    const out = tf.tidy(() => {
      const bias = cfg.variant === 'dit' ? null : biasPlan(grid, ids ? { ids, batch, len } : null);
      return blk.apply(ctx.params.scope(module), wrap(x), { c: wrap(cond) as Tensor<readonly [BT, number]>, bias, ...(skip ? { skip: wrap(skip) } : {}) }).raw;
    });
    tf.dispose([x, cond, ...(skip ? [skip] : [])]);
    return { out };
  },
  async forward(ctx, c) {
    const x = (await ctx.float(c, 'x')) as tf.Tensor4D;
    const [t, y] = [await ctx.ints(c, 't'), await ctx.ints(c, 'y')];
    const out = tf.tidy(() => ctx.model.forward(ctx.params, x, t, y));
    x.dispose();
    return { out };
  },
  async forward_masked(ctx, c) {
    const x = (await ctx.float(c, 'x')) as tf.Tensor4D;
    const [t, y] = [await ctx.ints(c, 't'), await ctx.ints(c, 'y')];
    const plan = await fixturePlan(ctx, c, x.shape[0]);
    const out = tf.tidy(() => ctx.model.forward(ctx.params, x, t, y, { mask: plan }));
    x.dispose();
    return { out, mask: plan.mask };
  },
  async forward_cfg(ctx, c) {
    const x = (await ctx.float(c, 'x')) as tf.Tensor4D;
    const [t, y] = [await ctx.ints(c, 't'), await ctx.ints(c, 'y')];
    const out = tf.tidy(() => fixtureDenoiser(ctx, c)(x, t, y));
    x.dispose();
    return { out };
  },
  async q_sample(ctx, c) {
    const [x0, noise] = [(await ctx.float(c, 'x0')) as tf.Tensor4D, (await ctx.float(c, 'noise')) as tf.Tensor4D];
    const x_t = qSample(respacedTables(1000, ''), x0, await ctx.ints(c, 't'), noise);
    tf.dispose([x0, noise]);
    return { x_t };
  },
  async training_losses(ctx, c) {
    const tables = respacedTables(1000, '');
    const x0 = (await ctx.float(c, 'x0')) as tf.Tensor4D;
    const noise = (await ctx.float(c, 'noise')) as tf.Tensor4D;
    const [t, y] = [await ctx.ints(c, 't'), await ctx.ints(c, 'y')];
    const minSnrGamma = ctx.config.variant === 'mdt-v2' ? 5 : undefined;
    const out: Record<string, tf.Tensor> = {};
    const full = trainingLosses(fixtureDenoiser(ctx, c), tables, x0, t, y, noise, { minSnrGamma });
    Object.assign(out, { mse: full.mse, vb: full.vb, loss: full.loss });
    full.modelOutput.dispose();
    let total = tf.mean(full.loss);
    if ('noise_masked' in c.inputs) {
      const noiseMasked = (await ctx.float(c, 'noise_masked')) as tf.Tensor4D;
      const plan = await fixturePlan(ctx, c, x0.shape[0]);
      const masked = trainingLosses((x, tt, yy) => ctx.model.forward(ctx.params, x, tt, yy, { mask: plan }), tables, x0, t, y, noiseMasked, { minSnrGamma });
      Object.assign(out, { m_mse: masked.mse, m_vb: masked.vb, m_loss: masked.loss });
      masked.modelOutput.dispose();
      const sum = tf.tidy(() => tf.add(total, tf.mean(masked.loss)));
      tf.dispose([total, noiseMasked]);
      total = sum;
    }
    out.total = total;
    tf.dispose([x0, noise]);
    return out;
  },
  async p_sample_step(ctx, c) {
    const { x, k, y, noise, tables } = await stepInputs(ctx, c);
    const r = pSampleStep(fixtureDenoiser(ctx, c), tables, x, k, y, noise);
    r.modelOutput.dispose();
    tf.dispose([x, noise]);
    return { x_prev: r.xPrev, mean: r.mean, log_variance: r.logVariance, pred_xstart: r.predXstart };
  },
  async ddim_step(ctx, c) {
    const { x, k, y, noise, tables } = await stepInputs(ctx, c);
    const r = ddimStep(fixtureDenoiser(ctx, c), tables, x, k, y, noise, 0);
    r.modelOutput.dispose();
    tf.dispose([x, noise]);
    return { x_prev: r.xPrev, pred_xstart: r.predXstart };
  },
  async schedule(_ctx, c) {
    const tables = respacedTables(1000, String(c.params?.timestep_respacing ?? ''));
    const out: Record<string, Values> = { timestep_map: tables.timestepMap };
    for (const [name, field] of Object.entries(SCHEDULE_TABLES)) {
      out[`${name}_f64`] = tables[field];
      out[name] = f32(tables[field]);
    }
    if ('betas_linspace_f64' in c.outputs) out.betas_linspace_f64 = linearBetas(1000);
    return out;
  },
  async cfg_weights(ctx, c) {
    const t = await ctx.ints(c, 't');
    const schedule = fixtureGuidance(ctx, c);
    return { w_t: Float32Array.from(t, (v) => guidanceWeight(schedule, v, diffusionSteps(ctx, c))) };
  },
  async min_snr_weights(ctx, c) {
    const t = await ctx.ints(c, 't');
    const w = minSnrWeights(respacedTables(1000, ''), 5);
    return { mse_weight: Float32Array.from(t, (v) => w[v]!) };
  },
};
