/**
 * diffusers' AutoencoderKL (Encoder, Decoder, DiagonalGaussianDistribution) with the parameter
 * paths of its state dict, so a diffusers `diffusion_pytorch_model.safetensors` (sd-vae-ft-mse,
 * sd-vae-ft-ema) loads strictly. Tensors are NCHW at the API and NHWC inside; every stage (a
 * resnet, the attention, a sampler) runs in its own tf.tidy, so only one stage's temporaries
 * are alive at a time.
 */
import * as tf from '@tensorflow/tfjs';
import { checkShape, sym } from '../../dsl/shape.ts';
import { layer, named, seq, type Layer } from '../../dsl/layer.ts';
import { mergeDecls, type ParamDecls, type ParamView } from '../../dsl/param.ts';
import { add } from '../../dsl/ops.ts';
import { foldIn, normal, type Key } from '../../dsl/random.ts';
import { readSafetensors, type StTensor } from '../../dsl/safetensors.ts';
import { wrap, type Tensor } from '../../dsl/tensor.ts';
import { paramsFromStateDict, StateDictError, type LoadOptions } from '../../compile/weights.ts';
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
  const gn = named('group_norm', norm(channels, groups));
  const proj = (name: string) => named(name, linear([b, len] as const, channels, channels));
  const [toQ, toK, toV, toOut] = [proj('to_q'), proj('to_k'), proj('to_v'), proj('to_out.0')];
  const params = mergeDecls(gn.params, toQ.params, toK.params, toV.params, toOut.params);
  const scale = 1 / Math.sqrt(channels);
  return layer(gn.inShape, gn.outShape, params, (p, x) => {
    const [n, h, w] = x.raw.shape as [number, number, number, number];
    const tokens = wrap<readonly [B, typeof len, number]>(tf.reshape(gn.apply(p, x, undefined).raw, [n, h * w, channels]));
    const q = toQ.apply(p, tokens, undefined).raw as tf.Tensor3D;
    const k = toK.apply(p, tokens, undefined).raw as tf.Tensor3D;
    const v = toV.apply(p, tokens, undefined).raw as tf.Tensor3D;
    // Plain products with an explicit transpose: the form XNNPACK runs fastest on wasm.
    const attn = tf.softmax(tf.mul(tf.matMul(q, tf.transpose(k, [0, 2, 1])), scale));
    const mixed = wrap<readonly [B, typeof len, number]>(tf.matMul(attn, v));
    const out = tf.reshape(toOut.apply(p, mixed, undefined).raw, [n, h, w, channels]);
    return wrap<Maps>(tf.add(out, x.raw));
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
  return layer(cv.inShape, cv.outShape, cv.params, (p, x) => cv.apply(p, upsampleNearest2x(x, 'NHWC'), undefined));
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

/** Runs stages one tf.tidy each, freeing every intermediate map as soon as the next exists; `x` is left to the caller. */
function runStages(stages: readonly Stage[], p: ParamView, x: tf.Tensor): tf.Tensor {
  let h = x;
  for (const s of stages) {
    const next = tf.tidy(() => s.apply(p, wrap<Maps>(h), undefined).raw);
    if (h !== x) h.dispose();
    h = next;
  }
  return h;
}

/** The encoder's diagonal Gaussian over z, NCHW (B, latentChannels, h, w). */
export interface Posterior {
  readonly mean: Tensor<Maps>;
  /** Clamped to [−30, 20], as DiagonalGaussianDistribution does. */
  readonly logvar: Tensor<Maps>;
}

export interface AutoencoderKL {
  readonly config: VaeConfig;
  /** Paths are diffusers' state-dict keys (`encoder.down_blocks.0.resnets.0.norm1.weight`, …). */
  readonly params: ParamDecls;
  /** Images (B, inChannels, H, W) in [−1, 1], H and W multiples of downFactor → posterior over z (unscaled). */
  encode(p: ParamView, images: Tensor<Maps>): Posterior;
  /** Diffusion latents (z·scalingFactor, NCHW) → images (B, outChannels, H, W), nominally in [−1, 1], not clamped. */
  decode(p: ParamView, latents: Tensor<Maps>): Tensor<Maps>;
  /** encode, then z = the posterior sample drawn with `keys` (the mean when omitted), times scalingFactor. */
  encodeToLatents(p: ParamView, images: Tensor<Maps>, keys?: Key | readonly Key[]): Tensor<Maps>;
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
    const [, , h, w] = checkInput('encode: images', images, [b, c.inChannels, sym('H'), sym('W')]);
    if (h % f !== 0 || w % f !== 0) throw new Error(`encode: image sides must be multiples of ${f}, got ${h}×${w}`);
    const x = tf.tidy(() => toNhwc(images.raw));
    const moments = runStages([...encoder, quantConv], p, x);
    x.dispose();
    const [mean, logvar] = tf.tidy(() => {
      const [m, lv] = tf.split(moments, 2, 3);
      return [toNchw(m!), toNchw(tf.clipByValue(lv!, LOGVAR_MIN, LOGVAR_MAX))];
    });
    moments.dispose();
    return { mean: wrap<Maps>(mean), logvar: wrap<Maps>(logvar) };
  };

  return {
    config: c,
    params,
    encode,
    decode(p, latents) {
      checkInput('decode: latents', latents, [b, c.latentChannels, sym('h'), sym('w')]);
      const z = tf.tidy(() => toNhwc(tf.div(latents.raw, c.scalingFactor)));
      const out = runStages([postQuantConv, ...decoder], p, z);
      z.dispose();
      const images = tf.tidy(() => toNchw(out));
      out.dispose();
      return wrap<Maps>(images);
    },
    encodeToLatents(p, images, keys) {
      const post = encode(p, images);
      const z = tf.tidy(() => tf.mul(keys === undefined ? post.mean.raw : samplePosterior(post, keys).raw, c.scalingFactor));
      post.mean.raw.dispose();
      post.logvar.raw.dispose();
      return wrap<Maps>(z);
    },
  };
}

function checkInput(what: string, t: Tensor<Maps>, declared: Maps): [number, number, number, number] {
  checkShape(what, t.raw.shape, declared);
  return t.raw.shape as [number, number, number, number];
}

/**
 * z = mean + exp(½·logvar)·ε. One key draws ε for the whole batch; a list gives sample i its own
 * key (so a sample's noise does not depend on which batch it was encoded in).
 */
export function samplePosterior(post: Posterior, keys: Key | readonly Key[]): Tensor<Maps> {
  const shape = post.mean.raw.shape;
  const per = shape.slice(1).reduce((a, d) => a * d, 1);
  let eps: Float32Array;
  if (Array.isArray(keys)) {
    if (keys.length !== shape[0]) throw new Error(`samplePosterior: expected one key per sample (${shape[0]}), got ${keys.length}`);
    eps = new Float32Array(per * keys.length);
    keys.forEach((k: Key, i: number) => eps.set(normal(k, per), i * per));
  } else {
    eps = normal(keys as Key, per * shape[0]!);
  }
  return wrap<Maps>(tf.tidy(() => tf.add(post.mean.raw, tf.mul(tf.exp(tf.mul(post.logvar.raw, 0.5)), tf.tensor(eps, shape)))));
}

/** The per-sample keys `samplePosterior` needs for dataset items `indices`: foldIn(key, index). */
export function sampleKeys(key: Key, indices: ArrayLike<number>): Key[] {
  return Array.from(indices, (i) => foldIn(key, i));
}

/**
 * Decoded images → uint8, NHWC: clamp((x + 1)·127.5, 0, 255) truncated toward zero, as the
 * official sampler's `.to(torch.uint8)` does.
 */
export async function imagesToUint8(images: Tensor<Maps>): Promise<{ data: Uint8Array; shape: [number, number, number, number] }> {
  const [n, ch, h, w] = images.raw.shape as [number, number, number, number];
  const src = (await images.raw.data()) as Float32Array;
  const data = new Uint8Array(src.length);
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

const LEGACY_ATTENTION_NAMES: Readonly<Record<string, string>> = { query: 'to_q', key: 'to_k', value: 'to_v', proj_attn: 'to_out.0' };
const LEGACY_KEY = /^(.+\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$/;
const ATTENTION_WEIGHT = /\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$/;

/**
 * A diffusers VAE state dict in the names and shapes this model declares. Older diffusers files
 * (sd-vae-ft-mse/ema among them) name the mid-block attention `query`/`key`/`value`/`proj_attn`;
 * these become `to_q`/`to_k`/`to_v`/`to_out.0`, as diffusers' _convert_deprecated_attention_blocks
 * does. Attention weights stored 1×1-conv shaped (out, in, 1, 1) become Linear (out, in).
 */
export function normalizeVaeStateDict(sd: ReadonlyMap<string, StTensor>): Map<string, StTensor> {
  const out = new Map<string, StTensor>();
  const clashes: string[] = [];
  for (const [key, t] of sd) {
    const m = LEGACY_KEY.exec(key);
    const name = m ? `${m[1]}.${LEGACY_ATTENTION_NAMES[m[2]!]}.${m[3]}` : key;
    if (m && sd.has(name)) clashes.push(`${key} and ${name}`);
    const s = t.shape;
    const conv1x1 = ATTENTION_WEIGHT.test(name) && s.length === 4 && s[2] === 1 && s[3] === 1;
    out.set(name, conv1x1 ? { ...t, shape: [s[0]!, s[1]!] } : t);
  }
  if (clashes.length > 0) throw new StateDictError(`VAE state dict holds both the old and the new name of: ${clashes.join('; ')}`);
  return out;
}

/** Reads a diffusers VAE safetensors file into this model's parameters (strict unless told otherwise). */
export async function loadVaeParams(vae: AutoencoderKL, path: string, opts: LoadOptions = {}): Promise<Map<string, tf.Tensor>> {
  const sd = await readSafetensors(path);
  try {
    return paramsFromStateDict(vae.params, normalizeVaeStateDict(sd), { strict: opts.strict ?? true });
  } catch (e) {
    if (e instanceof StateDictError) throw new StateDictError(`${path}: ${e.message}`);
    throw e;
  }
}
