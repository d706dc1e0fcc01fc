/** Image files in and out of the commands: PNG/JPEG decoding for --image/--mask (as PIL's convert('RGB')), single tiles. */
import { readFileSync } from 'node:fs';
import { decodeImage, type RgbImage } from '../mdt/data/image-folder.ts';
import { imageGrid, type Raster } from '../mdt/viz/png.ts';
import { UsageError } from './options.ts';

export function readImage(path: string, flag: string): RgbImage {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    throw new UsageError(`${flag}: cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    return decodeImage(bytes, path);
  } catch (e) {
    throw new UsageError(`${flag}: ${(e as Error).message}`);
  }
}

/** ITU-R 601 luma, as PIL's convert('L'). */
const luma = (d: Uint8Array, p: number) => Math.round((299 * d[3 * p]! + 587 * d[3 * p + 1]! + 114 * d[3 * p + 2]!) / 1000);

/** An image as one CHW image in [-1, 1] with 1 (gray) or 3 (RGB) channels. */
export function imageToChw(img: RgbImage, channels: number): Float32Array {
  const n = img.width * img.height;
  const out = new Float32Array(channels * n);
  for (let p = 0; p < n; p++) {
    if (channels === 1) out[p] = luma(img.data, p) / 127.5 - 1;
    else for (let c = 0; c < channels; c++) out[c * n + p] = img.data[3 * p + c]! / 127.5 - 1;
  }
  return out;
}

/** Per pixel, row-major: true where the mask is dark (< 128), i.e. where the image is kept. */
export function knownFromMask(mask: RgbImage): boolean[] {
  return Array.from({ length: mask.width * mask.height }, (_, p) => luma(mask.data, p) < 128);
}

/** Image `k` of an NCHW batch in [-1, 1] as a raster. */
export function tile(images: Float32Array, k: number, c: 1 | 3, h: number, w: number): Raster {
  const per = c * h * w;
  return imageGrid(images.subarray(k * per, (k + 1) * per), 1, c, h, w, 1, 0);
}

export function pixelChannels(c: number, what: string): 1 | 3 {
  if (c !== 1 && c !== 3) throw new UsageError(`${what} has ${c} channels, which are latents, not pixels: pass --vae FILE (the SD VAE's diffusers .safetensors) to decode them`);
  return c;
}
