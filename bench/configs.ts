/** The model sizes the benches measure, and a ready-to-step trainer for each. */
import * as tf from '@tensorflow/tfjs';
import { initParams } from '../compile/init.ts';
import { compileTraining, type Trainer } from '../compile/train.ts';
import { keyFromSeed, normal } from '../dsl/random.ts';
import { namedConfig, type ModelConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';

export interface BenchConfig {
  readonly name: string;
  readonly config: ModelConfig;
  readonly batch: number;
  /**
   * The official PyTorch training step for this config as measured by the issue that set the
   * targets (2-core AMD Zen 3, Debian's PyTorch 1.13 + OpenBLAS), in ms.
   */
  readonly pytorchIssueMs?: number;
  /** Its item in a bench/pytorch/bench_step.py record (the port of the official code, run here). */
  readonly pytorchItem?: string;
}

export const BENCH_CONFIGS: Readonly<Record<'tiny' | 's2' | 'dit-s2' | 'main', BenchConfig>> = {
  // The parity fixture's MDT v1: 8×8×4 latents, patch 2 → 16 tokens.
  tiny: {
    name: 'tiny (MDT d4 D64, 16 tok, b8)',
    config: namedConfig('MDT-S/2', { inputSize: 8, depth: 4, hiddenSize: 64, numHeads: 4, numClasses: 10 }),
    batch: 8,
  },
  s2: { name: 'MDT-S/2 (32×32×4, 256 tok, b8)', config: namedConfig('MDT-S/2'), batch: 8, pytorchIssueMs: 13_500, pytorchItem: 'mdt_s2_train_step' },
  // DiT-S/2 with the same settings: what an MDT step should cost at most 1.8× of.
  'dit-s2': { name: 'DiT-S/2 (32×32×4, 256 tok, b8)', config: namedConfig('DiT-S/2'), batch: 8, pytorchIssueMs: 6_650, pytorchItem: 'dit_s2_train_step' },
  // The main job's model (`npm start`, cli/train.ts TRAIN_DEFAULTS): a DiT on Fashion-MNIST padded
  // to 32×32×1, patch 4 → 64 tokens, depth 4, D 96, 4 heads, 10 classes, batch 32. Records before
  // 2026-12-03's second half time the MDT v1 of that size (decode layer 1), the main job before.
  main: {
    name: 'main job (DiT d4 D96, 64 tok, b32)',
    config: namedConfig('DiT-S/2', { inChannels: 1, patchSize: 4, depth: 4, hiddenSize: 96, numHeads: 4, numClasses: 10 }),
    batch: 32,
    pytorchItem: 'main_train_step',
  },
};

export type BenchConfigName = keyof typeof BENCH_CONFIGS;

export function isBenchConfigName(v: string): v is BenchConfigName {
  return v in BENCH_CONFIGS;
}

export interface TrainFixture {
  readonly model: DiffusionModel;
  readonly trainer: Trainer;
  readonly x0: tf.Tensor4D;
  readonly y: Int32Array;
  dispose(): void;
}

/** A trainer (AdamW + EMA, both branches) on one fixed random batch. */
export function trainFixture(b: BenchConfig, seed = 0): TrainFixture {
  const model = buildModel(b.config);
  const initial = initParams(model.params, keyFromSeed(seed));
  const trainer = compileTraining(model, initial, { optimizer: { kind: 'adamw', lr: 1e-4 }, emaDecay: 0.9999 });
  tf.dispose([...initial.values()]);
  const c = b.config;
  const x0 = tf.tensor4d(normal(keyFromSeed(seed + 1), b.batch * c.inChannels * c.inputSize ** 2), [b.batch, c.inChannels, c.inputSize, c.inputSize]);
  const y = Int32Array.from({ length: b.batch }, (_, i) => i % c.numClasses);
  return {
    model,
    trainer,
    x0,
    y,
    dispose() {
      trainer.dispose();
      x0.dispose();
    },
  };
}
