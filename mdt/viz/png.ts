import { PNG } from 'pngjs';
import { writeFileAtomic } from '../../formats/atomic-write.ts';
import type { Raster } from './raster.ts';

export { imageGrid, toUint8, type Raster } from './raster.ts';

function checkRaster(img: Raster, what: string): void {
  if (!Number.isInteger(img.width) || !Number.isInteger(img.height) || img.width < 1 || img.height < 1) {
    throw new Error(`${what}: expected positive integer width and height, got ${img.width}×${img.height}`);
  }
  if (img.channels !== 1 && img.channels !== 3) throw new Error(`${what}: expected 1 or 3 channels, got ${img.channels}`);
  const want = img.width * img.height * img.channels;
  if (img.data.length !== want) {
    throw new Error(`${what}: expected ${img.width}×${img.height}×${img.channels} = ${want} bytes, got ${img.data.length}`);
  }
}

/** PNG file bytes for `img` (gray or RGB, 8 bits, no alpha). */
export function encodePng(img: Raster): Buffer {
  checkRaster(img, 'encodePng');
  const colorType = img.channels === 1 ? 0 : 2;
  const png = new PNG({ width: img.width, height: img.height, colorType, inputColorType: colorType, inputHasAlpha: false });
  png.data = Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength);
  return PNG.sync.write(png, { colorType, inputColorType: colorType, inputHasAlpha: false });
}

/** Writes `img` as a PNG at `path`, atomically (temp file + rename). */
export async function writePng(path: string, img: Raster): Promise<void> {
  await writeFileAtomic(path, encodePng(img));
}
