/** What DiT, MDT v1 and MDTv2 share: input embedding, conditioning, output head. */
import * as tf from '@tensorflow/tfjs';
import { sym, type Sym } from '../dsl/shape.ts';
import { named } from '../dsl/layer.ts';
import { mergeDecls, param, type ParamDecls, type ParamView } from '../dsl/param.ts';
import { add, unpatchify } from '../dsl/ops.ts';
import { wrap, type Tensor } from '../dsl/tensor.ts';
import { labelEmbedder, patchEmbed, timestepFeatures, timestepMlp } from '../layers/embedders.ts';
import { finalLayer } from '../layers/adaln-block.ts';
import { sincos2d } from '../layers/sincos.ts';
import { gridSize, outChannels, type ModelConfig } from './config.ts';
import type { MaskPlan } from './masking.ts';

export type B = Sym<'B'>;
export type L = Sym<'L'>;
export const B = sym('B');
export const L = sym('L');

export interface ForwardOptions {
  /** Run the masked (training) graph with this plan; absent: the plain graph. */
  readonly mask?: MaskPlan | null;
  /** Receives named intermediates (official module names), for parity debugging. */
  readonly trace?: (name: string, t: tf.Tensor) => void;
}

/** A network for the diffusion: (x (B,C,H,W), original steps t, labels y) → (B, 2C, H, W). */
export interface DiffusionModel {
  readonly config: ModelConfig;
  readonly params: ParamDecls;
  forward(p: ParamView, x: tf.Tensor4D, t: Int32Array, y: Int32Array, opts?: ForwardOptions): tf.Tensor4D;
}

export function sincosInit(c: ModelConfig) {
  return { kind: 'values' as const, values: () => Float32Array.from(sincos2d(c.hiddenSize, gridSize(c))) };
}

export function trunk(c: ModelConfig) {
  const grid = gridSize(c);
  const n = grid * grid;
  const d = c.hiddenSize;
  const patch = named('x_embedder', patchEmbed(B, c.inChannels, grid, c.patchSize, d));
  const tMlp = named('t_embedder', timestepMlp(B, d));
  const yEmb = named('y_embedder', labelEmbedder(B, c.numClasses, d));
  const final = named('final_layer', finalLayer(B, n, d, c.patchSize * c.patchSize * outChannels(c)));
  const params = mergeDecls(
    // MDT trains pos_embed; DiT keeps it frozen at the sin-cos table.
    { pos_embed: param([1, n, d], sincosInit(c), { trainable: c.variant !== 'dit' }) },
    patch.params, tMlp.params, yEmb.params, final.params,
  );
  return {
    params,
    grid,
    tokens: n,
    nullLabel: c.numClasses,
    /** Patch tokens + pos_embed, (B, N, D). */
    embed(p: ParamView, x: tf.Tensor4D, trace?: ForwardOptions['trace']): Tensor<readonly [B, L, number]> {
      const tokens = patch.apply(p, wrap(x), undefined);
      trace?.('x_embedder_out', tokens.raw);
      return add(tokens, p.get<readonly [1, number, number]>('pos_embed')) as unknown as Tensor<readonly [B, L, number]>;
    },
    /** c = t_embedder(t) + y_embedder(y), (B, D). */
    condition(p: ParamView, t: Int32Array, y: Int32Array, trace?: ForwardOptions['trace']): Tensor<readonly [B, number]> {
      if (t.length !== y.length) throw new Error(`forward: t has ${t.length} entries but y has ${y.length}`);
      const te = tMlp.apply(p, timestepFeatures(t), undefined);
      const ye = yEmb.apply(p, wrap(tf.tensor1d(y, 'int32')), undefined);
      trace?.('t_embedder_out', te.raw);
      trace?.('y_embedder_out', ye.raw);
      return add(te, ye) as unknown as Tensor<readonly [B, number]>;
    },
    /** final_layer then unpatchify, (B, 2C, H, W). */
    head(p: ParamView, x: Tensor<readonly [B, L, number]>, cond: Tensor<readonly [B, number]>, trace?: ForwardOptions['trace']): tf.Tensor4D {
      const f = final.apply(p, x, { c: cond });
      trace?.('final_layer_out', f.raw);
      return unpatchify(f as unknown as Tensor<readonly [B, L, number]>, grid, c.patchSize, outChannels(c)).raw as tf.Tensor4D;
    },
  };
}

/** Validates the input sizes once per call site (cheap JS checks, no tensor reads). */
export function checkInputs(c: ModelConfig, x: tf.Tensor, t: Int32Array, y: Int32Array): void {
  const [b, ch, h, w] = x.shape;
  if (x.rank !== 4 || ch !== c.inChannels || h !== c.inputSize || w !== c.inputSize) {
    throw new Error(`forward: x must be (B, ${c.inChannels}, ${c.inputSize}, ${c.inputSize}), got (${x.shape.join(', ')})`);
  }
  if (t.length !== b || y.length !== b) throw new Error(`forward: B=${b} from x, but t has ${t.length} and y has ${y.length} entries`);
}
