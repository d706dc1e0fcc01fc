/**
 * numpy's .npy arrays and .npz archives (a zip of .npy files, STORED by np.savez, DEFLATE by
 * np.savez_compressed), read directly: FID statistics files (pytorch-fid's `mu`/`sigma`), ADM's
 * reference batches (`arr_0` images, `mu`/`sigma`) and sample batches. Entries are read one by
 * one on request, so a 2 GB image array next to the statistics is never loaded unless asked for.
 * Writing produces STORED archives np.load reads.
 */
import { open } from 'node:fs/promises';
import { crc32, inflateRawSync } from 'node:zlib';
import { readExactlyAt } from './safetensors.ts';
import { openZip } from './torch-pt/zip.ts';
import { writeFileAtomic } from './atomic-write.ts';

export type NpyData = Float32Array | Float64Array | Int32Array | Uint8Array | BigInt64Array;

export interface NpyArray {
  /** numpy's dtype string: '<f4', '<f8', '<i4', '<i8', '|u1'. */
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly data: NpyData;
}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

const DTYPES: Readonly<Record<string, { size: number; make: (buf: ArrayBuffer, n: number) => NpyData }>> = {
  '<f4': { size: 4, make: (b, n) => new Float32Array(b, 0, n) },
  '<f8': { size: 8, make: (b, n) => new Float64Array(b, 0, n) },
  '<i4': { size: 4, make: (b, n) => new Int32Array(b, 0, n) },
  '<i8': { size: 8, make: (b, n) => new BigInt64Array(b, 0, n) },
  '|u1': { size: 1, make: (b, n) => new Uint8Array(b, 0, n) },
};
// numpy writes single-byte types with '|', and sometimes '<' for them.
const ALIASES: Readonly<Record<string, string>> = { '<u1': '|u1' };

/** Parses one .npy file held in `bytes`; `what` names it in errors. */
export function parseNpy(bytes: Uint8Array, what: string): NpyArray {
  const fail = (msg: string): never => {
    throw new Error(`${what}: ${msg}`);
  };
  if (bytes.length < 10 || !MAGIC.every((b, i) => bytes[i] === b)) fail('not a .npy array (no \\x93NUMPY magic)');
  const major = bytes[6]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = major === 1 ? view.getUint16(8, true) : major === 2 || major === 3 ? (bytes.length >= 12 ? view.getUint32(8, true) : fail('truncated header')) : fail(`unsupported .npy version ${major}`);
  const start = major === 1 ? 10 : 12;
  if (start + headerLen > bytes.length) fail(`header of ${headerLen} bytes runs past the ${bytes.length}-byte file`);
  const header = new TextDecoder(major === 3 ? 'utf-8' : 'latin1').decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1] ?? fail(`header has no dtype: ${header.trim()}`);
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1] ?? fail(`header has no fortran_order: ${header.trim()}`);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1] ?? fail(`header has no shape: ${header.trim()}`);
  if (fortran === 'True') fail('Fortran-ordered arrays are not supported (save with np.ascontiguousarray)');
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s !== '').map((s) => {
    const d = Number(s.replace(/L$/, ''));
    return Number.isSafeInteger(d) && d >= 0 ? d : fail(`bad dimension '${s}' in shape (${shapeText})`);
  });
  const dtype = ALIASES[descr] ?? descr;
  const kind = DTYPES[dtype] ?? fail(`dtype '${descr}' is not supported (expected one of ${Object.keys(DTYPES).join(', ')})`);
  const n = shape.reduce((a, b) => a * b, 1);
  const body = bytes.subarray(start + headerLen);
  if (body.length !== n * kind.size) fail(`shape (${shape.join(', ')}) of ${descr} needs ${n * kind.size} data bytes, the file has ${body.length}: it is truncated or corrupt`);
  // A copy, aligned for the typed array.
  const buf = new ArrayBuffer(n * kind.size);
  new Uint8Array(buf).set(body);
  return { dtype, shape, data: kind.make(buf, n) };
}

/** The .npy bytes of an array (version 1.0 header, C order). */
export function encodeNpy(a: NpyArray): Uint8Array {
  const kind = DTYPES[a.dtype];
  if (kind === undefined) throw new Error(`encodeNpy: dtype '${a.dtype}' is not supported`);
  const n = a.shape.reduce((x, y) => x * y, 1);
  if (a.data.length !== n) throw new Error(`encodeNpy: shape (${a.shape.join(', ')}) has ${n} elements, the data ${a.data.length}`);
  const dims = a.shape.length === 1 ? `${a.shape[0]},` : a.shape.join(', ');
  let header = `{'descr': '${a.dtype}', 'fortran_order': False, 'shape': (${dims}), }`;
  // The data starts on a 64-byte boundary; the header ends with a newline.
  header += ' '.repeat((64 - ((10 + header.length + 1) % 64)) % 64) + '\n';
  const out = new Uint8Array(10 + header.length + n * kind.size);
  out.set(MAGIC);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  out.set(new TextEncoder().encode(header), 10);
  out.set(new Uint8Array(a.data.buffer, a.data.byteOffset, n * kind.size), 10 + header.length);
  return out;
}

export interface NpzFile {
  /** Array names (entry names without `.npy`). */
  readonly names: readonly string[];
  /** Reads one array; a corrupt entry (bad CRC, truncated) is an error naming it. */
  read(name: string): Promise<NpyArray>;
  close(): Promise<void>;
}

export async function openNpz(path: string): Promise<NpzFile> {
  const handle = await open(path, 'r');
  try {
    const zip = await openZip(handle, (await handle.stat()).size, path, { allowDeflate: true });
    const entries = new Map([...zip.entries.values()].filter((e) => e.name.endsWith('.npy')).map((e) => [e.name.slice(0, -4), e]));
    return {
      names: [...entries.keys()],
      async read(name) {
        const e = entries.get(name);
        if (e === undefined) throw new Error(`${path}: no array '${name}' (it holds ${[...entries.keys()].join(', ') || 'no arrays'})`);
        const stored = new Uint8Array(e.compressedSize);
        await readExactlyAt(handle, stored, await zip.dataOffset(e), path);
        let bytes: Uint8Array;
        try {
          bytes = e.method === 8 ? inflateRawSync(stored) : stored;
        } catch (err) {
          throw new Error(`${path}: array '${name}' does not decompress (${(err as Error).message}): the file is corrupt`);
        }
        if (bytes.length !== e.size || crc32(bytes) !== e.crc32) throw new Error(`${path}: array '${name}' fails its CRC check: the file is corrupt`);
        return parseNpy(bytes, `${path}: array '${name}'`);
      },
      close: () => handle.close(),
    };
  } catch (e) {
    await handle.close();
    throw e;
  }
}

const le = (v: number, bytes: 2 | 4) => {
  const b = new Uint8Array(bytes);
  const dv = new DataView(b.buffer);
  if (bytes === 2) dv.setUint16(0, v, true);
  else dv.setUint32(0, v, true);
  return b;
};

/** Writes arrays as a STORED .npz (np.savez's layout), atomically. */
export async function writeNpz(path: string, arrays: Readonly<Record<string, NpyArray>>): Promise<void> {
  const parts: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  const names = Object.keys(arrays);
  for (const name of names) {
    const data = encodeNpy(arrays[name]!);
    if (offset + data.length > 0xffffffff) throw new Error(`writeNpz: ${path} would pass 4 GB (ZIP64 is not written)`);
    const nameBytes = new TextEncoder().encode(`${name}.npy`);
    const crc = crc32(data);
    // version 20, no flags, STORED, DOS time/date 0 (1980-01-01).
    const common = [le(20, 2), le(0, 2), le(0, 2), le(0, 2), le(0x21, 2), le(crc, 4), le(data.length, 4), le(data.length, 4), le(nameBytes.length, 2), le(0, 2)];
    const local = [le(0x04034b50, 4), ...common, nameBytes];
    central.push(...[le(0x02014b50, 4), le(20, 2), ...common, le(0, 2), le(0, 2), le(0, 2), le(0, 4), le(offset, 4), nameBytes]);
    parts.push(...local, data);
    offset += local.reduce((a, b) => a + b.length, 0) + data.length;
  }
  const cdSize = central.reduce((a, b) => a + b.length, 0);
  const end = [le(0x06054b50, 4), le(0, 2), le(0, 2), le(names.length, 2), le(names.length, 2), le(cdSize, 4), le(offset, 4), le(0, 2)];
  await writeFileAtomic(path, [...parts, ...central, ...end]);
}
