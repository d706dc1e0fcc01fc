// JPEG decoding by libjpeg-turbo, the library Pillow decodes with, so that pixels equal the
// official loader's `Image.open(f).convert('RGB')`: its ISLOW IDCT and "fancy" (triangular) chroma
// upsampling are what a pure-JS decoder gets wrong by up to ~100/255 on 4:2:0 images.
// The wasm build ships in @cwasm/jpeg-turbo; its TurboJPEG functions are called directly rather
// than through the package's decode(), which only asks for RGBA (CMYK needs Pillow's own
// conversion) and rejects every image libjpeg warns about, where Pillow decodes most of them.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { RgbImage } from './image-folder.ts';

// The project's lib (ES2023, @types/node 20) has no WebAssembly types: what this file uses of it.
declare const WebAssembly: {
  Module: new (code: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: Record<string, Record<string, (...args: number[]) => number>>) => { readonly exports: unknown };
};
type WasmModule = { readonly __brand: 'WebAssembly.Module' };

interface TurboJpeg {
  readonly memory: { readonly buffer: ArrayBuffer };
  malloc(size: number): number;
  free(pointer: number): void;
  tjInitDecompress(): number;
  tjDecompressHeader3(handle: number, src: number, size: number, width: number, height: number, subsampling: number, colorspace: number): number;
  tjDecompress2(handle: number, src: number, size: number, dst: number, width: number, pitch: number, height: number, pixelFormat: number, flags: number): number;
  tjDestroy(handle: number): number;
}

// turbojpeg.h constants. Flags 0 keep libjpeg's defaults, which Pillow uses too: fancy upsampling
// (no TJFLAG_FASTUPSAMPLE) and the accurate integer IDCT (no TJFLAG_FASTDCT).
const TJPF_RGB = 0;
const TJPF_CMYK = 11;
const TJCS_CMYK = 3;
const TJCS_YCCK = 4;
const DEFAULT_FLAGS = 0;

/** libjpeg's fatal errors end in longjmp, which this build imports: it unwinds back to JS as this. */
class LibjpegError extends Error {}

let wasmModule: WasmModule | undefined;
let instance: TurboJpeg | undefined;

function turboJpeg(): TurboJpeg {
  if (instance) return instance;
  wasmModule ??= new WebAssembly.Module(readFileSync(createRequire(import.meta.url).resolve('@cwasm/jpeg-turbo/jpeg-turbo.wasm')));
  const unsupported = (name: string) => () => {
    throw new Error(`libjpeg-turbo called the WASI function ${name}, which this decoder does not provide`);
  };
  let memory: TurboJpeg['memory'] | undefined;
  const made = new WebAssembly.Instance(wasmModule, {
    env: {
      // setjmp reports "no jump yet" once; a later longjmp cannot return to it, so it throws
      setjmp: () => 0,
      longjmp: () => {
        throw new LibjpegError('libjpeg error');
      },
    },
    wasi_snapshot_preview1: {
      // getenv() reads an empty environment
      environ_sizes_get: (count: number, size: number) => {
        const view = new DataView(memory!.buffer);
        view.setUint32(count, 0, true);
        view.setUint32(size, 0, true);
        return 0;
      },
      environ_get: unsupported('environ_get'),
      proc_exit: unsupported('proc_exit'),
      fd_close: unsupported('fd_close'),
      fd_seek: unsupported('fd_seek'),
      fd_write: unsupported('fd_write'),
    },
  }).exports as unknown as TurboJpeg;
  memory = made.memory;
  instance = made;
  return made;
}

// Pillow reads CMYK JPEGs as Adobe's inverted ink (rawmode 'CMYK;I'), then its cmyk2rgb gives
// R = K − C'·K/255 with C' = 255 − C, in its integer rounding (C, K as libjpeg emits them).
function cmykToRgb(cmyk: Uint8Array, pixels: number): Uint8Array {
  const out = new Uint8Array(pixels * 3);
  for (let p = 0; p < pixels; p++) {
    const k = cmyk[4 * p + 3];
    for (let c = 0; c < 3; c++) {
      const t = (255 - cmyk[4 * p + c]) * k + 128;
      out[3 * p + c] = Math.max(0, k - (((t >> 8) + t) >> 8));
    }
  }
  return out;
}

function endsWithEoi(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[bytes.length - 2] === 0xff && bytes[bytes.length - 1] === 0xd9;
}

/** JPEG bytes → RGB exactly as Pillow's `convert('RGB')` gives them (gray repeated, CMYK converted). */
export function decodeJpeg(bytes: Uint8Array): RgbImage {
  const tj = turboJpeg();
  const src = tj.malloc(bytes.length);
  const header = tj.malloc(16);
  const handle = tj.tjInitDecompress();
  let dst = 0;
  try {
    if (src === 0 || header === 0 || handle === 0) throw new Error(`cannot allocate ${bytes.length} bytes in the wasm heap`);
    new Uint8Array(tj.memory.buffer, src, bytes.length).set(bytes);
    new Int32Array(tj.memory.buffer, header, 4).fill(0);
    // with the arguments given here, -1 without a longjmp is a libjpeg warning (the header was
    // read, e.g. past stray bytes): the decode below decides
    const headerStatus = tj.tjDecompressHeader3(handle, src, bytes.length, header, header + 4, header + 8, header + 12);
    const [width, height, , colorspace] = new Int32Array(tj.memory.buffer, header, 4);
    if (headerStatus !== 0 && !(width > 0 && height > 0)) {
      throw new Error('expected a JPEG header libjpeg-turbo can read, got one it rejects (unusual chroma subsampling or a damaged header)');
    }
    const cmyk = colorspace === TJCS_CMYK || colorspace === TJCS_YCCK;
    const channels = cmyk ? 4 : 3;
    dst = tj.malloc(width * height * channels);
    if (dst === 0) throw new Error(`cannot allocate ${width}×${height}×${channels} bytes in the wasm heap`);
    const status = tj.tjDecompress2(handle, src, bytes.length, dst, width, width * channels, height, cmyk ? TJPF_CMYK : TJPF_RGB, DEFAULT_FLAGS);
    // libjpeg only warns on a truncated file and pads it with gray; Pillow raises "image file is
    // truncated". Other warnings (e.g. extraneous bytes before a marker) Pillow ignores, as here.
    if (status !== 0 && !endsWithEoi(bytes)) {
      throw new Error('expected a complete JPEG, got one libjpeg-turbo warns about that does not end in an end-of-image marker (truncated)');
    }
    const decoded = new Uint8Array(tj.memory.buffer, dst, width * height * channels);
    return { width, height, data: cmyk ? cmykToRgb(decoded, width * height) : decoded.slice() };
  } catch (err) {
    if (!(err instanceof LibjpegError)) throw err;
    // the longjmp skipped the C stack's unwinding: start the next decode on a fresh instance
    instance = undefined;
    throw new Error('expected a baseline or progressive 8-bit JPEG, got data libjpeg-turbo stops on (corrupt or truncated, or 12-bit, lossless or arithmetic-coded)');
  } finally {
    tj.free(src);
    tj.free(header);
    tj.free(dst);
    tj.tjDestroy(handle);
  }
}
