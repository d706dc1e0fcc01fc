/**
 * Classifier-free guidance flags of `sample` and `inpaint`. The defaults follow the released
 * recipes: MDT on 4-channel latents samples with the power-cosine schedule at w = 3.8, s = 4
 * (its README); DiT with a constant w = 4 (its sample.py); models of pixel data sample unguided.
 */
import type { Command } from 'commander';
import type { ModelConfig } from '../mdt/config.ts';
import type { GuidanceSchedule } from '../mdt/diffusion/guidance-weight.ts';
import { numberArg, option, UsageError } from './options.ts';

export type ScheduleKind = GuidanceSchedule['kind'];
export type GuideChannels = 'first3' | 'all';

export interface GuidanceFlags {
  readonly cfgScale?: number;
  readonly cfgPower: number;
  readonly cfgSchedule?: ScheduleKind;
  readonly guideChannels?: GuideChannels;
}

export const MDT_LATENT_CFG = 3.8;
export const DIT_LATENT_CFG = 4;

export function addGuidanceOptions(cmd: Command): Command {
  return cmd
    .addOption(option('--cfg-scale <w>', 'guidance scale w (1 = no guidance)', { defaultText: `${MDT_LATENT_CFG} for MDT on 4-channel latents, ${DIT_LATENT_CFG} for DiT on latents, 1 for pixel models`, parse: numberArg(0, Infinity) }))
    .addOption(option('--cfg-power <s>', 'power s of the power-cosine and paper schedules', { default: 4, parse: numberArg(0, Infinity) }))
    .addOption(option('--cfg-schedule <kind>', 'w_t over sampling: power-cosine (official MDT, 1 → w), paper, constant (DiT)', { defaultText: 'power-cosine for MDT, constant for DiT', choices: ['power-cosine', 'paper', 'constant'] }))
    .addOption(option('--guide-channels <which>', 'ε channels guided: first3 (the official DiT/MDT code) or all', { defaultText: 'first3 for 4-channel latents, all otherwise', choices: ['first3', 'all'] }));
}

const isLatent = (c: ModelConfig) => c.inChannels === 4;

export function defaultCfgScale(c: ModelConfig): number {
  if (!isLatent(c)) return 1;
  return c.variant === 'dit' ? DIT_LATENT_CFG : MDT_LATENT_CFG;
}

/** The schedule, or null for no guidance (w = 1). */
export function guidanceFrom(f: GuidanceFlags, c: ModelConfig, scale = f.cfgScale ?? defaultCfgScale(c)): GuidanceSchedule | null {
  if (scale === 1) return null;
  const kind = f.cfgSchedule ?? (c.variant === 'dit' ? 'constant' : 'power-cosine');
  return kind === 'constant' ? { kind, scale } : { kind, scale, power: f.cfgPower };
}

export function guideChannelsFrom(f: GuidanceFlags, c: ModelConfig): GuideChannels {
  const g = f.guideChannels ?? (isLatent(c) ? 'first3' : 'all');
  if (g === 'first3' && c.inChannels < 3) throw new UsageError(`--guide-channels first3 needs at least 3 channels; the model has ${c.inChannels} (use all)`);
  return g;
}
