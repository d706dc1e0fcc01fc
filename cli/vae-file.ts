/**
 * `--vae FILE`: a diffusers AutoencoderKL .safetensors as plain NCHW tensor functions (compiled
 * once per shape by compile/vae.ts). Its widths, depth and channels are read off the keys (the
 * SD VAE's are [128, 256, 512, 512], 2, 3 → 4); the group count and the latent scaling factor
 * are not in the file and stay SD's.
 */
import * as tf from '@tensorflow/tfjs';
import { openSafetensors } from '../formats/safetensors.ts';
import { compileVae, loadVaeParams, type CompiledVae } from '../compile/vae.ts';
import { autoencoderKL, type AutoencoderKL } from '../mdt/vae/autoencoder-kl.ts';
import { downFactor, vaeConfig, type VaeConfig } from '../mdt/vae/config.ts';
import { UsageError } from './options.ts';
import { HeapExhaustedError } from '../runtime/heap.ts';

export interface Vae {
  readonly config: VaeConfig;
  readonly model: AutoencoderKL;
  /** The compiled network on the file's weights (what `mdt encode` hands to encodeLatents). */
  readonly compiled: CompiledVae;
  readonly factor: number;
  /** Images in [-1, 1] → latents (posterior mean × scaling factor). */
  encode(images: tf.Tensor4D): tf.Tensor4D;
  /** Latents → images, clipped to [-1, 1]. */
  decode(latents: tf.Tensor4D): tf.Tensor4D;
  dispose(): void;
}

/** The architecture fields of a diffusers AutoencoderKL state dict. */
export function vaeConfigFromKeys(shapes: ReadonlyMap<string, readonly number[]>, path: string): VaeConfig {
  const dim = (key: string, axis: number): number => {
    const s = shapes.get(key);
    if (s === undefined) throw new UsageError(`--vae: ${path} has no ${key}; expected a diffusers AutoencoderKL state dict (e.g. sd-vae-ft-mse's diffusion_pytorch_model.safetensors)`);
    return s[axis]!;
  };
  const count = (prefix: string): number => new Set([...shapes.keys()].map((k) => (k.startsWith(prefix) ? k.slice(prefix.length).split('.')[0] : undefined)).filter((v) => v !== undefined)).size;
  const blocks = count('encoder.down_blocks.');
  return vaeConfig({
    inChannels: dim('encoder.conv_in.weight', 1),
    outChannels: dim('decoder.conv_out.weight', 0),
    blockOutChannels: Array.from({ length: blocks }, (_, i) => dim(`encoder.down_blocks.${i}.resnets.0.conv1.weight`, 0)),
    layersPerBlock: count('encoder.down_blocks.0.resnets.'),
    latentChannels: dim('post_quant_conv.weight', 0),
  });
}

export async function openVae(path: string): Promise<Vae> {
  const f = await openSafetensors(path).catch((e: unknown) => {
    throw new UsageError(`--vae: ${(e as Error).message}`);
  });
  let config: VaeConfig;
  try {
    config = vaeConfigFromKeys(new Map([...f.entries].map(([k, e]) => [k, e.shape])), path);
  } finally {
    await f.close();
  }
  const vae = autoencoderKL(config);
  const values = await loadVaeParams(vae, path);
  const compiled = compileVae(vae, values);
  return {
    config,
    model: vae,
    compiled,
    factor: downFactor(config),
    encode: (images) => compiled.encodeToLatents(images),
    decode(latents) {
      const x = compiled.decode(latents);
      const clipped = tf.clipByValue(x, -1, 1) as tf.Tensor4D;
      x.dispose();
      return clipped;
    },
    dispose: () => {
      compiled.dispose();
      tf.dispose([...values.values()]);
    },
  };
}

/**
 * The VAE's images of `latents`, `size` at a time, halving the part whenever the wasm heap cannot
 * hold it (a 256×256 decode takes ~0.25 GiB per image and activation); the result is the caller's.
 */
export function decodeInParts(vae: Vae, latents: tf.Tensor4D, size: number, onNote: (text: string) => void): tf.Tensor4D {
  const n = latents.shape[0];
  const parts: tf.Tensor4D[] = [];
  try {
    for (let from = 0; from < n;) {
      const to = Math.min(n, from + size);
      const part = tf.slice(latents, [from, 0, 0, 0], [to - from, -1, -1, -1]);
      try {
        parts.push(vae.decode(part));
        from = to;
      } catch (e) {
        if (!(e instanceof HeapExhaustedError) || to - from === 1) throw e;
        size = Math.ceil((to - from) / 2);
        onNote(`decoding ${to - from} latents at once: ${e.message}; decoding ${size} at a time`);
      } finally {
        part.dispose();
      }
    }
    return parts.length === 1 ? parts.pop()! : (tf.concat(parts, 0) as tf.Tensor4D);
  } finally {
    tf.dispose(parts);
  }
}
