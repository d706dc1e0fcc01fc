/** One entry point for the three model families. */
import { match } from 'ts-pattern';
import type { ModelConfig } from './config.ts';
import type { DiffusionModel } from './trunk.ts';
import { dit } from './dit.ts';
import { mdtV1 } from './mdt-v1.ts';
import { mdtV2 } from './mdt-v2.ts';

export function buildModel(c: ModelConfig): DiffusionModel {
  return match(c.variant)
    .with('dit', () => dit(c))
    .with('mdt-v1', () => mdtV1(c))
    .with('mdt-v2', () => mdtV2(c))
    .exhaustive();
}
