/**
 * diffusers' AutoencoderKL (Encoder, Decoder, DiagonalGaussianDistribution) with the parameter
 * paths of its state dict, so a diffusers `diffusion_pytorch_model.safetensors` (sd-vae-ft-mse,
 * sd-vae-ft-ema) loads strictly. Written on the DSL's ops: `encode`/`decode` record the network
 * into the graph being traced (compile/vae.ts compiles them into functions on tensors). Tensors
 * are NCHW at the API and NHWC inside.
 */
import { checkShape, sym } from '../../dsl/shape.ts';
import { layer, named, seq, type Layer } from '../../dsl/layer.ts';
import { mergeDecls, type ParamDecls, type ParamView } from '../../dsl/param.ts';
import { add, batchMatmul, chunk, constant, div, exp, greater, maximum, mul, reshape, scale, softmax, where } from '../../dsl/ops.ts';
import { foldIn, normal, type Key } from '../../dsl/random.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import { conv2d, toNchw, toNhwc, upsampleNearest2x, type B, type Maps, type Padding } from '../../layers/conv.ts';
import { groupNorm, GROUP_NORM_EPS } from '../../layers/group-norm.ts';
import { linear } from '../../layers/linear.ts';
import { siluLayer } from '../../layers/activations.ts';
import { downFactor, type VaeConfig } from './config.ts';

type Stage = Layer<Maps, Maps>;

const LOGVAR_MIN = -30;
const LOGVAR_MAX = 20;

const conv = (inChannels: number, outChannels: number, kernel: 1 | 3, stride = 1, padding: Padding = kernel === 3 ? 1 : 0): Stage =>
  conv2d({ inChannels, outChannels, kernel, stride, padding, layout: 'NHWC' });
const norm = (channels: number, groups: number): Stage => groupNorm(channels, groups, GROUP_NORM_EPS, 'NHWC');

/** ResnetBlock2D without time embedding: norm1 → SiLU → conv1 → norm2 → SiLU → conv2, plus the (1×1 `conv_shortcut` when widths differ) input. */
export function resnetBlock2d(inChannels: number, outChannels: number, groups: number): Stage {
  const norm1 = named('norm1', norm(inChannels, groups));
  const norm2 = named('norm2', norm(outChannels, groups));
  const body = seq(
    norm1,
    siluLayer(norm1.outShape),
    named('conv1', conv(inChannels, outChannels, 3)),
    norm2,
    siluLayer(norm2.outShape),
    named('conv2', conv(outChannels, outChannels, 3)),
  );
  const shortcut = inChannels === outChannels ? null : named('conv_shortcut', conv(inChannels, outChannels, 1));
  return layer(body.inShape, body.outShape, mergeDecls(body.params, shortcut?.params ?? {}), (p, x) => {
    const skip = shortcut ? shortcut.apply(p, x, undefined) : x;
    return add(skip, body.apply(p, x, undefined)) as unknown as Tensor<Maps>;
  });
}

/**
 * The mid block's Attention (heads = 1, dim_head = channels): GroupNorm, then softmax(q·kᵀ/√C)·v
 * over the H·W positions, `to_out.0`, plus the input (rescale_output_factor 1).
 */
export function midAttention(channels: number, groups: number): Stage {
  const b = sym('B') as B;
  const len = sym('L');
  type Tokens = readonly [B, typeof len, number];
  const gn = named('group_norm', norm(channels, groups));
  const proj = (name: string) => named(name, linear([b, len] as const, channels, channels));
  const [toQ, toK, toV, toOut] = [proj('to_q'), proj('to_k'), proj('to_v'), proj('to_out.0')];
  const params = mergeDecls(gn.params, toQ.params, toK.params, toV.params, toOut.params);
  return layer(gn.inShape, gn.outShape, params, (p, x) => {
    const [n, h, w] = x.shape;
    const tokens = reshape(gn.apply(p, x, undefined), [n, h * w, channels]) as unknown as Tensor<Tokens>;
    const q = toQ.apply(p, tokens, undefined);
    const k = toK.apply(p, tokens, undefined);
    const v = toV.apply(p, tokens, undefined);
    const attn = softmax(scale(batchMatmul(q, k, true), 1 / Math.sqrt(channels)));
    const mixed = batchMatmul(attn, v) as unknown as Tensor<Tokens>;
    const out = reshape(toOut.apply(p, mixed, undefined), [n, h, w, channels]);
    return add(out, x) as unknown as Tensor<Maps>;
  });
}

/** UNetMidBlock2D: resnets.0 → attentions.0 → resnets.1, as three stages. */
function midBlock(channels: number, groups: number): Stage[] {
  return [
    named('mid_block.resnets.0', resnetBlock2d(channels, channels, groups)),
    named('mid_block.attentions.0', midAttention(channels, groups)),
    named('mid_block.resnets.1', resnetBlock2d(channels, channels, groups)),
  ];
}

/** conv_norm_out → SiLU → conv_out. */
function outStage(inChannels: number, outChannels: number, groups: number): Stage {
  const n = named('conv_norm_out', norm(inChannels, groups));
  return seq(n, siluLayer(n.outShape), named('conv_out', conv(inChannels, outChannels, 3)));
}

/** Encoder: conv_in, down blocks (3×3 stride-2 conv after F.pad(0, 1, 0, 1), none after the last), mid block, out → 2·latent channels. */
function encoderStages(c: VaeConfig): Stage[] {
  const ch = c.blockOutChannels;
  const g = c.normNumGroups;
  const stages: Stage[] = [named('conv_in', conv(c.inChannels, ch[0]!, 3))];
  ch.forEach((out, i) => {
    const inC = ch[Math.max(i - 1, 0)]!;
    for (let j = 0; j < c.layersPerBlock; j++) stages.push(named(`down_blocks.${i}.resnets.${j}`, resnetBlock2d(j === 0 ? inC : out, out, g)));
    if (i < ch.length - 1) stages.push(named(`down_blocks.${i}.downsamplers.0.conv`, conv(out, out, 3, 2, [0, 1, 0, 1])));
  });
  stages.push(...midBlock(ch[ch.length - 1]!, g), outStage(ch[ch.length - 1]!, 2 * c.latentChannels, g));
  return stages.map((s) => named('encoder', s));
}

/** Upsample2D: nearest ×2, then a 3×3 conv. */
function upsampler(channels: number): Stage {
  const cv = named('conv', conv(channels, channels, 3));
  // Twice the input's side: new symbols, so the per-call check does not bind them to H and W.
  const [b, , , c] = cv.outShape;
  const outShape = [b, sym('Ho'), sym('Wo'), c] as Maps;
  return layer(cv.inShape, outShape, cv.params, (p, x) => cv.apply(p, upsampleNearest2x(x, 'NHWC'), undefined));
}

/** Decoder: conv_in, mid block, up blocks in reversed width order (layersPerBlock + 1 resnets, an upsampler on all but the last), out → image channels. */
function decoderStages(c: VaeConfig): Stage[] {
  const rev = [...c.blockOutChannels].reverse();
  const g = c.normNumGroups;
  const stages: Stage[] = [named('conv_in', conv(c.latentChannels, rev[0]!, 3)), ...midBlock(rev[0]!, g)];
  rev.forEach((out, i) => {
    const inC = rev[Math.max(i - 1, 0)]!;
    for (let j = 0; j <= c.layersPerBlock; j++) stages.push(named(`up_blocks.${i}.resnets.${j}`, resnetBlock2d(j === 0 ? inC : out, out, g)));
    if (i < rev.length - 1) stages.push(named(`up_blocks.${i}.upsamplers.0`, upsampler(out)));
  });
  stages.push(outStage(rev[rev.length - 1]!, c.outChannels, g));
  return stages.map((s) => named('decoder', s));
}

/** The stages one after another. */
function runStages(stages: readonly Stage[], p: ParamView, x: Tensor<Maps>): Tensor<Maps> {
  return stages.reduce((h, s) => s.apply(p, h, undefined), x);
}

/** The encoder's diagonal Gaussian over z, NCHW (B, latentChannels, h, w). */
export interface Posterior {
  readonly mean: Tensor<Maps>;
  /** Clamped to [−30, 20], as DiagonalGaussianDistribution does. */
  readonly logvar: Tensor<Maps>;
}

/**
 * The network on traced tensors: each method records its part of the model into the graph its
 * input belongs to (compile/vae.ts turns them into compiled functions on tfjs tensors).
 */
export interface AutoencoderKL {
  readonly config: VaeConfig;
  /** Paths are diffusers' state-dict keys (`encoder.down_blocks.0.resnets.0.norm1.weight`, …). */
  readonly params: ParamDecls;
  /** Images (B, inChannels, H, W) in [−1, 1], H and W multiples of downFactor → posterior over z (unscaled). */
  encode(p: ParamView, images: Tensor<Maps>): Posterior;
  /** Diffusion latents (z·scalingFactor, NCHW) → images (B, outChannels, H, W), nominally in [−1, 1], not clamped. */
  decode(p: ParamView, latents: Tensor<Maps>): Tensor<Maps>;
  /**
   * encode, then z times scalingFactor, with z the posterior sample mean + exp(½·logvar)·ε for
   * standard-normal `noise` ε (NCHW, the posterior's shape; see posteriorNoise), or the mean.
   */
  encodeToLatents(p: ParamView, images: Tensor<Maps>, noise?: Tensor<Maps>): Tensor<Maps>;
}

export function autoencoderKL(c: VaeConfig): AutoencoderKL {
  const encoder = encoderStages(c);
  const decoder = decoderStages(c);
  const quantConv = named('quant_conv', conv(2 * c.latentChannels, 2 * c.latentChannels, 1));
  const postQuantConv = named('post_quant_conv', conv(c.latentChannels, c.latentChannels, 1));
  const params = mergeDecls(...[...encoder, quantConv, postQuantConv, ...decoder].map((s) => s.params));
  const f = downFactor(c);
  const b = sym('B');

  const encode = (p: ParamView, images: Tensor<Maps>): Posterior => {
    checkShape('encode: images', images.shape, [b, c.inChannels, sym('H'), sym('W')]);
    const [, , h, w] = images.shape;
    if (h % f !== 0 || w % f !== 0) throw new Error(`encode: image sides must be multiples of ${f}, got ${h}×${w}`);
    const moments = runStages([...encoder, quantConv], p, toNhwc(images));
    const [mean, logvar] = chunk(moments, 2, 3) as [Tensor<Maps>, Tensor<Maps>];
    return { mean: toNchw(mean), logvar: toNchw(clamp(logvar, LOGVAR_MIN, LOGVAR_MAX)) };
  };

  return {
    config: c,
    params,
    encode,
    decode(p, latents) {
      checkShape('decode: latents', latents.shape, [b, c.latentChannels, sym('h'), sym('w')]);
      const z = div(latents, constant(latents, c.scalingFactor)) as unknown as Tensor<Maps>;
      return toNchw(runStages([postQuantConv, ...decoder], p, toNhwc(z)));
    },
    encodeToLatents(p, images, noise) {
      const post = encode(p, images);
      const z = noise === undefined ? post.mean : samplePosterior(post, noise);
      return scale(z, c.scalingFactor);
    },
  };
}

/** min(max(x, lo), hi), elementwise (torch.clamp). */
function clamp(x: Tensor<Maps>, lo: number, hi: number): Tensor<Maps> {
  const atLeast = maximum(x, constant(x, lo)) as unknown as Tensor<Maps>;
  const top = constant(x, hi);
  return where(greater(atLeast, top), top, atLeast) as unknown as Tensor<Maps>;
}

/** z = mean + exp(½·logvar)·ε (DiagonalGaussianDistribution.sample), ε standard normal of the posterior's shape. */
export function samplePosterior(post: Posterior, noise: Tensor<Maps>): Tensor<Maps> {
  checkShape('samplePosterior: noise', noise.shape, post.mean.shape);
  return add(post.mean, mul(exp(scale(post.logvar, 0.5)), noise)) as unknown as Tensor<Maps>;
}

/**
 * ε for a posterior of NCHW `shape`. One key draws ε for the whole batch; a list gives sample i
 * its own key (so a sample's noise does not depend on which batch it was encoded in).
 */
export function posteriorNoise(shape: readonly number[], keys: Key | readonly Key[]): Float32Array {
  const per = shape.slice(1).reduce((a, d) => a * d, 1);
  if (!Array.isArray(keys)) return normal(keys as Key, per * shape[0]!);
  if (keys.length !== shape[0]) throw new Error(`samplePosterior: expected one key per sample (${shape[0]}), got ${keys.length}`);
  const eps = new Float32Array(per * keys.length);
  keys.forEach((k: Key, i: number) => eps.set(normal(k, per), i * per));
  return eps;
}

/** The per-sample keys `posteriorNoise` takes for dataset items `indices`: foldIn(key, index). */
export function sampleKeys(key: Key, indices: ArrayLike<number>): Key[] {
  return Array.from(indices, (i) => foldIn(key, i));
}

/**
 * Decoded images (NCHW values of `shape`) → uint8, NHWC: clamp((x + 1)·127.5, 0, 255) truncated
 * toward zero, as the official sampler's `.to(torch.uint8)` does.
 */
export function imagesToUint8(src: ArrayLike<number>, shape: readonly [number, number, number, number]): { data: Uint8Array; shape: [number, number, number, number] } {
  const [n, ch, h, w] = shape;
  const data = new Uint8Array(n * ch * h * w);
  for (let s = 0; s < n; s++) {
    for (let k = 0; k < ch; k++) {
      for (let i = 0; i < h * w; i++) {
        const v = (src[((s * ch + k) * h * w) + i]! + 1) * 127.5;
        data[(s * h * w + i) * ch + k] = v >= 255 ? 255 : v > 0 ? v : 0;
      }
    }
  }
  return { data, shape: [n, h, w, ch] };
}
