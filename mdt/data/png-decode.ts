// PNG decoding to the bytes of Pillow's `Image.open(f).convert('RGB')`, which for some colour types
// and bit depths are not the usual 8-bit rendering: pngjs reads the samples unscaled, the mapping
// to bytes follows the mode Pillow opens each kind as.
import { PNG } from 'pngjs';
import type { RgbImage } from './image-folder.ts';

const GRAY = 0;
const RGB = 2;
const PALETTE = 3;

/** Pillow's byte for a raw sample of a PNG of this colour type and bit depth. */
function pillowByte(colorType: number, depth: number): (sample: number) => number {
  if (colorType === PALETTE || depth === 8) return (v) => v;
  // 16-bit gray opens as mode 'I' (32-bit integers), whose conversion to RGB clips at 255 rather
  // than scaling; 16-bit RGB, RGBA and gray+alpha unpack as 'RGB;16B' etc., keeping the high byte
  if (depth === 16) return colorType === GRAY ? (v) => Math.min(v, 255) : (v) => v >> 8;
  // 1-, 2- and 4-bit gray: 0 → 0, max → 255, exact multiples of 255, 85 and 17
  const scale = 255 / ((1 << depth) - 1);
  return (v) => v * scale;
}

/** PNG bytes → RGB as Pillow's `convert('RGB')` gives them: palette looked up, alpha and tRNS ignored. */
export function decodePng(bytes: Uint8Array): RgbImage {
  const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), { skipRescale: true });
  const { width, height, colorType, depth } = png;
  // RGBA per pixel, palette already looked up; 16-bit samples come as a Uint16Array
  const rgba = png.data as Uint8Array | Uint16Array;
  // pngjs blacks out pixels of the tRNS colour key (RGB and alpha zeroed, not just alpha); Pillow
  // keeps their colour, which is the key itself
  const key = (png as { transColor?: readonly number[] }).transColor;
  const keyed = key !== undefined && (colorType === GRAY || colorType === RGB);
  const toByte = pillowByte(colorType, depth);
  const data = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    const fromKey = keyed && rgba[4 * p + 3] === 0;
    for (let c = 0; c < 3; c++) data[3 * p + c] = toByte(fromKey ? key[colorType === GRAY ? 0 : c] : rgba[4 * p + c]);
  }
  return { width, height, data };
}
