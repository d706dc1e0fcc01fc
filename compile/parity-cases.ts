/** One handler per fixture case kind (FORMAT.md §9): inputs in, named outputs back, each through a compiled graph. */
import * as tf from '@tensorflow/tfjs';
import { named } from '../dsl/layer.ts';
import type { Dim } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { timestepFeatures, timestepMlp } from '../layers/embedders.ts';
import { adaLNBlock } from '../layers/adaln-block.ts';
import { add, mean } from '../dsl/ops.ts';
import { keptBiasIndex, relPosBias, relPosIndex } from '../layers/relpos.ts';
import { sincos2d, timestepFreqs, timestepSinusoid } from '../layers/sincos.ts';
import { gridSize } from '../mdt/config.ts';
import { planFromShuffle } from '../mdt/masking.ts';
import { mdtBlock } from '../mdt/mdt-v1.ts';
import { B, L } from '../mdt/trunk.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import { f32, linearBetas } from '../mdt/diffusion/schedule.ts';
import { guidanceWeight, type GuidanceSchedule } from '../mdt/diffusion/guidance-weight.ts';
import { minSnrWeights } from '../mdt/diffusion/min-snr.ts';
import { ddimStep, pSampleStep, qSample, trainingLosses, type Denoiser } from '../mdt/diffusion/gaussian.ts';
import { withGuidance, type GuidanceOptions } from '../mdt/diffusion/cfg.ts';
import { maskInputs, traceDenoiser } from './model-graph.ts';
import type { TraceIO } from './trace.ts';
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

/** The case's classifier-free guidance, or null when it gives no cfg_scale. */
export function fixtureGuidanceOptions(ctx: FixtureContext, c: FixtureCase): GuidanceOptions | null {
  return 'cfg_scale' in c.inputs ? { schedule: fixtureGuidance(ctx, c), T: diffusionSteps(ctx, c), inChannels: ctx.config.inChannels } : null;
}

/** The fixture's network in a trace: plain, or wrapped in CFG when the case gives a cfg_scale. */
function fixtureDenoiser(ctx: FixtureContext, c: FixtureCase, io: TraceIO): Denoiser {
  const plain = traceDenoiser(ctx.model, io, false);
  const guidance = fixtureGuidanceOptions(ctx, c);
  return guidance === null ? plain : withGuidance(plain, guidance);
}

const ints = (v: Int32Array) => tf.tensor1d(v, 'int32');
const mean0 = (v: Tensor<readonly number[]>) => mean(v, [0]);

/** The sampling-step cases' data: x, k, y (and noise when the step draws it), and the respaced tables. */
async function stepInputs(ctx: FixtureContext, c: FixtureCase, withNoise: boolean) {
  const data = new Map<string, tf.Tensor>([['x', await ctx.float(c, 'x_t')], ['k', ints(await ctx.ints(c, 'k'))], ['y', ints(await ctx.ints(c, 'y'))]]);
  if (withNoise) data.set('noise', await ctx.float(c, 'noise'));
  return { data, tables: respacedTables(1000, String(c.params?.timestep_respacing ?? '')) };
}

/** The model-input cases' data: x (or x0), steps t, and labels y where the case has them. */
async function modelInputs(ctx: FixtureContext, c: FixtureCase, x: string): Promise<Map<string, tf.Tensor>> {
  const data = new Map<string, tf.Tensor>([[x, await ctx.float(c, x)], ['t', ints(await ctx.ints(c, 't'))]]);
  if ('y' in c.inputs) data.set('y', ints(await ctx.ints(c, 'y')));
  return data;
}

export const caseHandlers: Record<string, CaseHandler> = {
  async timestep_embedding(ctx, c) {
    const t = await ctx.ints(c, 't');
    const tMlp = named('t_embedder', timestepMlp(B, ctx.config.hiddenSize));
    const { t_emb } = ctx.run((io) => ({ t_emb: tMlp.apply(io.params(ctx.model.params), timestepFeatures(io.data('t')), undefined) }), new Map([['t', ints(t)]]));
    return { freqs: timestepFreqs(128), sinusoid: timestepSinusoid(t, 256), t_emb: t_emb! };
  },
  async pos_embed(ctx) {
    const table = sincos2d(ctx.config.hiddenSize, gridSize(ctx.config));
    return { sincos_f64: table, sincos: Float32Array.from(table) };
  },
  async rel_pos_index(ctx) {
    const prefix = ctx.config.variant === 'mdt-v2' ? 'en_inblocks.0' : 'blocks.0';
    const { bias } = ctx.run((io) => ({ bias: relPosBias(io.params(ctx.model.params).scope(`${prefix}.attn.rel_pos_bias`), ctx.config.numHeads) }), new Map());
    return { relative_position_index: relPosIndex(gridSize(ctx.config)), bias_first_block: bias! };
  },
  async block(ctx, c) {
    const module = String(c.params?.module);
    const cfg = ctx.config;
    const grid = gridSize(cfg);
    const withSkip = /^(en_outblocks|de_blocks)\./.test(module);
    const blk = cfg.variant === 'dit'
      ? adaLNBlock(B, L, cfg.hiddenSize, { heads: cfg.numHeads, mlpRatio: cfg.mlpRatio, grid: null, skip: false })
      : mdtBlock(cfg, grid, withSkip);
    const x = await ctx.float(c, 'x');
    const [batch, len] = x.shape as [number, number];
    const data = new Map<string, tf.Tensor>([['x', x], ['c', await ctx.float(c, 'c')]]);
    if ('skip' in c.inputs) data.set('skip', await ctx.float(c, 'skip'));
    if ('ids_keep' in c.inputs) data.set('biasIndex', tf.tensor3d(keptBiasIndex(grid, await ctx.ints(c, 'ids_keep'), batch, len), [batch, len, len], 'int32'));
    const { out } = ctx.run((io) => ({
      out: blk.apply(io.params(ctx.model.params).scope(module), io.data('x'), {
        c: io.data('c'),
        ...(data.has('skip') ? { skip: io.data<readonly [typeof B, Dim, number]>('skip') } : {}),
        ...(data.has('biasIndex') ? { biasIndex: io.data<readonly [Dim, Dim, Dim]>('biasIndex') } : {}),
      }),
    }), data);
    return { out: out! };
  },
  async forward(ctx, c) {
    return ctx.run((io) => ({ out: traceDenoiser(ctx.model, io, false)(io.data('x'), io.data('t'), io.data('y')) }), await modelInputs(ctx, c, 'x'));
  },
  async forward_masked(ctx, c) {
    const data = await modelInputs(ctx, c, 'x');
    const plan = await fixturePlan(ctx, c, data.get('x')!.shape[0]!);
    for (const [k, v] of maskInputs(plan, gridSize(ctx.config))) data.set(k, v);
    const { out } = ctx.run((io) => ({ out: traceDenoiser(ctx.model, io, true)(io.data('x'), io.data('t'), io.data('y')) }), data);
    return { out: out!, mask: plan.mask };
  },
  async forward_cfg(ctx, c) {
    return ctx.run((io) => ({ out: fixtureDenoiser(ctx, c, io)(io.data('x'), io.data('t'), io.data('y')) }), await modelInputs(ctx, c, 'x'));
  },
  async q_sample(ctx, c) {
    const data = await modelInputs(ctx, c, 'x0');
    data.set('noise', await ctx.float(c, 'noise'));
    return ctx.run((io) => ({ x_t: qSample(respacedTables(1000, ''), io.data('x0'), io.data('t'), io.data('noise')) }), data);
  },
  async training_losses(ctx, c) {
    const tables = respacedTables(1000, '');
    const data = await modelInputs(ctx, c, 'x0');
    data.set('noise', await ctx.float(c, 'noise'));
    const masked = 'noise_masked' in c.inputs;
    if (masked) {
      data.set('noise_masked', await ctx.float(c, 'noise_masked'));
      const plan = await fixturePlan(ctx, c, data.get('x0')!.shape[0]!);
      for (const [k, v] of maskInputs(plan, gridSize(ctx.config))) data.set(k, v);
    }
    const opts = ctx.config.variant === 'mdt-v2' ? { minSnrGamma: 5 } : {};
    return ctx.run((io) => {
      const [x0, t, y] = [io.data('x0'), io.data('t'), io.data('y')] as const;
      const full = trainingLosses(fixtureDenoiser(ctx, c, io), tables, x0 as never, t as never, y as never, io.data('noise'), opts);
      const out: Record<string, Tensor<readonly number[]>> = { mse: full.mse, vb: full.vb, loss: full.loss, total: mean0(full.loss) };
      if (!masked) return out;
      const m = trainingLosses(traceDenoiser(ctx.model, io, true), tables, x0 as never, t as never, y as never, io.data('noise_masked'), opts);
      return { ...out, m_mse: m.mse, m_vb: m.vb, m_loss: m.loss, total: add(out.total!, mean0(m.loss)) };
    }, data);
  },
  async p_sample_step(ctx, c) {
    const { data, tables } = await stepInputs(ctx, c, true);
    return ctx.run((io) => {
      const r = pSampleStep(fixtureDenoiser(ctx, c, io), tables, io.data('x'), io.data('k'), io.data('y'), io.data('noise'));
      return { x_prev: r.xPrev, mean: r.mean, log_variance: r.logVariance, pred_xstart: r.predXstart };
    }, data);
  },
  async ddim_step(ctx, c) {
    const { data, tables } = await stepInputs(ctx, c, false);
    return ctx.run((io) => {
      const r = ddimStep(fixtureDenoiser(ctx, c, io), tables, io.data('x'), io.data('k'), io.data('y'), null, 0);
      return { x_prev: r.xPrev, pred_xstart: r.predXstart };
    }, data);
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
