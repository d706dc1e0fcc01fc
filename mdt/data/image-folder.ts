// Users' own images, read the way the official ADM/MDT loader reads them (guided-diffusion
// image_datasets.py): files found recursively in sorted order, converted to RGB, center-cropped
// by `center_crop_arr`, scaled to [-1, 1]. Every file is decoded and cropped once, at load time,
// and kept as bytes at the target size: a corrupt file fails the load (not step 40k of a run),
// and batches cost no decoding. The cost is n·3·size² bytes of memory.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, relative, sep } from 'node:path';
import { ByteImageDataset } from './dataset.ts';
import { decodeJpeg } from './jpeg-decode.ts';
import { decodePng } from './png-decode.ts';
import { resizeHWC } from './resample.ts';

export type LabelSource = 'folder' | 'prefix' | 'none';

export interface ImageFolderOptions {
  /** side of the square crop */
  readonly size: number;
  /**
   * 'folder': the first sub-folder under the root names the class (root/cat/…/x.png);
   * 'prefix': the file name up to the first '_' does (the official convention, cat_001.png);
   * 'none': one class, every label 0.
   */
  readonly labels?: LabelSource;
}

/** An RGB image, rows of interleaved R, G, B bytes. */
export interface RgbImage {
  readonly width: number;
  readonly height: number;
  readonly data: Uint8Array;
}

const IMAGE_EXTENSIONS = new Set(['png', 'jpg', 'jpeg']);

/** Image files under `root`, each folder's entries in sorted order as the official loader lists them. */
export function listImageFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir).sort()) {
      const path = join(dir, entry);
      const ext = entry.includes('.') ? entry.split('.').pop()!.toLowerCase() : '';
      if (IMAGE_EXTENSIONS.has(ext)) out.push(path);
      else if (ext === 'gif') throw new Error(`${path}: GIF is not supported; expected PNG or JPEG files (convert it to PNG)`);
      else if (statSync(path).isDirectory()) walk(path);
    }
  };
  if (!statSync(root, { throwIfNoEntry: false })?.isDirectory()) throw new Error(`expected an image folder, got ${root} (not a directory)`);
  walk(root);
  return out;
}

/**
 * Decodes PNG or JPEG bytes (told apart by signature) to the RGB bytes of the official loader's
 * `Image.open(path).convert('RGB')` (Pillow): gray repeated, alpha dropped.
 */
export function decodeImage(bytes: Uint8Array, source: string): RgbImage {
  const isPng = bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 && bytes[2] === 0x4e && bytes[3] === 0x47;
  const isJpeg = bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
  if (!isPng && !isJpeg) {
    throw new Error(`${source}: expected a PNG or JPEG file, got ${bytes.length} bytes with neither signature`);
  }
  let image: RgbImage;
  try {
    image = isPng ? decodePng(bytes) : decodeJpeg(bytes);
  } catch (err) {
    throw new Error(`${source}: cannot decode ${isPng ? 'PNG' : 'JPEG'}: ${(err as Error).message}`);
  }
  const { width, height, data } = image;
  if (width < 1 || height < 1 || data.length !== width * height * 3) {
    throw new Error(`${source}: decoded ${width}×${height} image has ${data.length} bytes, expected ${width * height * 3}`);
  }
  return image;
}

// Python's round(): ties go to the even neighbour.
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x - Math.trunc(x)) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/**
 * ADM `center_crop_arr`: halve with BOX while the short side is at least 2·size, BICUBIC-resize so
 * the short side is `size`, then take the centred size×size square.
 */
export function centerCrop(image: RgbImage, size: number): RgbImage {
  let { width, height, data } = image;
  while (Math.min(width, height) >= 2 * size) {
    const w2 = Math.floor(width / 2);
    const h2 = Math.floor(height / 2);
    data = resizeHWC(data, height, width, 3, h2, w2, 'box');
    width = w2;
    height = h2;
  }
  const scale = size / Math.min(width, height);
  const w2 = roundHalfEven(width * scale);
  const h2 = roundHalfEven(height * scale);
  data = resizeHWC(data, height, width, 3, h2, w2, 'bicubic');
  const top = Math.floor((h2 - size) / 2);
  const left = Math.floor((w2 - size) / 2);
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const from = ((top + y) * w2 + left) * 3;
    out.set(data.subarray(from, from + size * 3), y * size * 3);
  }
  return { width: size, height: size, data: out };
}

function classOf(file: string, root: string, labels: LabelSource): string {
  if (labels === 'none') return 'unlabeled';
  if (labels === 'folder') {
    const parts = relative(root, file).split(sep);
    if (parts.length < 2) {
      throw new Error(`${file}: labels 'folder' expects every image inside a class folder (root/<class>/...), got one directly in ${root}`);
    }
    return parts[0];
  }
  const name = basename(file);
  const cut = name.indexOf('_');
  if (cut <= 0) throw new Error(`${file}: labels 'prefix' expects a file name <class>_<rest>, got ${name}`);
  return name.slice(0, cut);
}

export interface ImageFolderDataset extends ByteImageDataset {
  /** the file each image came from, by index */
  readonly files: readonly string[];
}

/** Every PNG/JPEG under `root` as 3×size×size images with classes 0..K−1 from sorted unique class names. */
export function loadImageFolder(root: string, options: ImageFolderOptions): ImageFolderDataset {
  const { size } = options;
  const labelSource = options.labels ?? 'folder';
  if (!Number.isInteger(size) || size < 1) throw new Error(`loadImageFolder: expected a positive integer size, got ${size}`);
  if (!['folder', 'prefix', 'none'].includes(labelSource)) {
    throw new Error(`loadImageFolder: expected labels 'folder', 'prefix' or 'none', got ${String(labelSource)}`);
  }
  const files = listImageFiles(root);
  if (files.length === 0) throw new Error(`${root}: expected PNG or JPEG files (searched recursively), found none`);
  const names = files.map((f) => classOf(f, root, labelSource));
  const classNames = [...new Set(names)].sort();
  const index = new Map(classNames.map((name, i) => [name, i]));
  const per = 3 * size * size;
  const pixels = new Uint8Array(files.length * per);
  files.forEach((file, i) => {
    let bytes: Uint8Array;
    try {
      bytes = readFileSync(file);
    } catch (err) {
      throw new Error(`${file}: cannot read: ${(err as Error).message}`);
    }
    const crop = centerCrop(decodeImage(bytes, file), size);
    // HWC → CHW
    for (let p = 0; p < size * size; p++) {
      for (let c = 0; c < 3; c++) pixels[i * per + c * size * size + p] = crop.data[3 * p + c];
    }
  });
  const dataset = new ByteImageDataset({
    name: `folder:${basename(root)}`,
    channels: 3,
    height: size,
    width: size,
    classNames,
    pixels,
    labels: Int32Array.from(names, (n) => index.get(n)!),
  });
  return Object.assign(dataset, { files });
}
