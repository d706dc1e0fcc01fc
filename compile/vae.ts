/**
 * The SD VAE (mdt/vae/autoencoder-kl.ts) as compiled functions on tfjs tensors, and its weights
 * from a diffusers safetensors file. Each entry point is jitted: traced and compiled once per
 * shape signature (batch, image side), then run by the executor, which frees each intermediate
 * map after its last reader. Tensors are NCHW at the API; the results are the caller's.
 */
import * as tf from '@tensorflow/tfjs';
import type { Key } from '../dsl/random.ts';
import { readSafetensors, type StTensor } from '../formats/safetensors.ts';
import type { Maps } from '../layers/conv.ts';
import { posteriorNoise, type AutoencoderKL } from '../mdt/vae/autoencoder-kl.ts';
import { downFactor, type VaeConfig } from '../mdt/vae/config.ts';
import { jit, type Jitted, type TraceIO } from './trace.ts';
import { paramsFromStateDict, StateDictError, type LoadOptions } from './weights.ts';

export interface CompiledVae {
  readonly config: VaeConfig;
  readonly model: AutoencoderKL;
  /** Images (B, inChannels, H, W) in [−1, 1] → the posterior's mean and (clamped) logvar, (B, latentChannels, H/f, W/f). */
  encode(images: tf.Tensor4D): { mean: tf.Tensor4D; logvar: tf.Tensor4D };
  /**
   * Images → diffusion latents z·scalingFactor: z drawn from the posterior with `keys` (one key
   * for the batch, or one per sample: see posteriorNoise), the posterior mean when omitted.
   */
  encodeToLatents(images: tf.Tensor4D, keys?: Key | readonly Key[]): tf.Tensor4D;
  /** Diffusion latents (z·scalingFactor) → images (B, outChannels, H, W), nominally in [−1, 1], not clamped. */
  decode(latents: tf.Tensor4D): tf.Tensor4D;
  /** Frees the compiled executables (the parameter values stay the caller's). */
  dispose(): void;
}

/**
 * Compiles `vae` with parameter `values` (by state-dict path; read at each call, never disposed
 * here). Data inputs are named `images`, `latents` and `noise`, beside the parameter paths.
 */
export function compileVae(vae: AutoencoderKL, values: ReadonlyMap<string, tf.Tensor>): CompiledVae {
  const images = (io: TraceIO) => io.data<Maps>('images');
  const posterior = jit((io) => {
    const { mean, logvar } = vae.encode(io.params(vae.params), images(io));
    return { mean, logvar };
  });
  const latentsMean = jit((io) => ({ z: vae.encodeToLatents(io.params(vae.params), images(io)) }));
  const latentsSample = jit((io) => ({ z: vae.encodeToLatents(io.params(vae.params), images(io), io.data<Maps>('noise')) }));
  const decoder = jit((io) => ({ images: vae.decode(io.params(vae.params), io.data<Maps>('latents')) }));
  const jitted: Jitted[] = [posterior, latentsMean, latentsSample, decoder];
  const c = vae.config;
  const f = downFactor(c);
  const call = (fn: Jitted, data: Record<string, tf.Tensor>) => {
    const inputs = new Map(values);
    for (const [k, v] of Object.entries(data)) inputs.set(k, v);
    return fn(inputs) as Map<string, tf.Tensor4D>;
  };
  return {
    config: c,
    model: vae,
    encode(images) {
      const out = call(posterior, { images });
      return { mean: out.get('mean')!, logvar: out.get('logvar')! };
    },
    encodeToLatents(images, keys) {
      if (keys === undefined) return call(latentsMean, { images }).get('z')!;
      const [n, , h, w] = images.shape;
      const shape = [n, c.latentChannels, Math.floor(h / f), Math.floor(w / f)];
      const noise = tf.tensor(posteriorNoise(shape, keys), shape);
      try {
        return call(latentsSample, { images, noise }).get('z')!;
      } finally {
        noise.dispose();
      }
    },
    decode(latents) {
      return call(decoder, { latents }).get('images')!;
    },
    dispose() {
      for (const j of jitted) j.dispose();
    },
  };
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
