/** What DiT, MDT v1 and MDTv2 share: input embedding, conditioning, output head. */
import { sym, type Dim, type Shape, type Sym } from '../dsl/shape.ts';
import { named } from '../dsl/layer.ts';
import { mergeDecls, param, type ParamDecls, type ParamView } from '../dsl/param.ts';
import { add, unpatchify } from '../dsl/ops.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { labelEmbedder, patchEmbed, timestepFeatures, timestepMlp } from '../layers/embedders.ts';
import { finalLayer } from '../layers/adaln-block.ts';
import { sincos2d } from '../layers/sincos.ts';
import { gridSize, outChannels, type ModelConfig } from './config.ts';
import type { MaskTensors } from './masking.ts';

export type B = Sym<'B'>;
export type L = Sym<'L'>;
export const B = sym('B');
export const L = sym('L');

/** x (B, C, H, W), original diffusion steps t (B, float32), labels y (B, int32). */
export type Images = Tensor<readonly [B, Dim, Dim, Dim]>;
export type Steps = Tensor<readonly [B]>;
export type Labels = Tensor<readonly [B]>;

export interface ForwardOptions {
  /** Run the masked (training) graph with these plan tensors; absent: the plain graph. */
  readonly mask?: MaskTensors | null;
  /** Receives named intermediates (official module names), for parity debugging. */
  readonly trace?: (name: string, t: Tensor<Shape>) => void;
}

/** A network for the diffusion: (x (B,C,H,W), original steps t, labels y) → (B, 2C, H, W), written with the DSL's ops. */
export interface DiffusionModel {
  readonly config: ModelConfig;
  readonly params: ParamDecls;
  forward(p: ParamView, x: Images, t: Steps, y: Labels, opts?: ForwardOptions): Images;
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
    embed(p: ParamView, x: Images, trace?: ForwardOptions['trace']): Tensor<readonly [B, L, number]> {
      const tokens = patch.apply(p, x as never, undefined);
      trace?.('x_embedder_out', tokens);
      return add(tokens, p.get('pos_embed', [1, n, d] as const)) as unknown as Tensor<readonly [B, L, number]>;
    },
    /** c = t_embedder(t) + y_embedder(y), (B, D). */
    condition(p: ParamView, t: Steps, y: Labels, trace?: ForwardOptions['trace']): Tensor<readonly [B, number]> {
      const te = tMlp.apply(p, timestepFeatures(t), undefined);
      const ye = yEmb.apply(p, y, undefined);
      trace?.('t_embedder_out', te);
      trace?.('y_embedder_out', ye);
      return add(te, ye) as unknown as Tensor<readonly [B, number]>;
    },
    /** final_layer then unpatchify, (B, 2C, H, W). */
    head(p: ParamView, x: Tensor<readonly [B, L, number]>, cond: Tensor<readonly [B, number]>, trace?: ForwardOptions['trace']): Images {
      const f = final.apply(p, x, { c: cond });
      trace?.('final_layer_out', f);
      return unpatchify(f as unknown as Tensor<readonly [B, L, number]>, grid, c.patchSize, outChannels(c)) as unknown as Images;
    },
  };
}

/** Validates the input sizes once per trace (no tensor reads). */
export function checkInputs(c: ModelConfig, x: Images, t: Steps, y: Labels): void {
  const [b, ch, h, w] = x.shape as unknown as number[];
  if (x.shape.length !== 4 || ch !== c.inChannels || h !== c.inputSize || w !== c.inputSize) {
    throw new Error(`forward: x must be (B, ${c.inChannels}, ${c.inputSize}, ${c.inputSize}), got (${x.shape.join(', ')})`);
  }
  if (t.shape[0] !== b || y.shape[0] !== b) throw new Error(`forward: B=${b} from x, but t has ${t.shape[0]} and y has ${y.shape[0]} entries`);
  if (y.dtype !== 'int32') throw new Error(`forward: labels y must be int32, got ${y.dtype}`);
}
