// Minimal read-only zip reader for torch.save archives and numpy's .npz: STORED entries (and,
// when asked, DEFLATE ones as np.savez_compressed writes), ZIP64 aware, and driven by
// positioned reads so archives far larger than a Node Buffer can be used.
import type { FileHandle } from 'node:fs/promises';
import { readExactlyAt } from '../safetensors.ts';

export interface ZipEntry {
  readonly name: string;
  /** Uncompressed size. */
  readonly size: number;
  /** Stored size: `size` for STORED entries. */
  readonly compressedSize: number;
  /** 0 STORED, 8 DEFLATE. */
  readonly method: number;
  readonly crc32: number;
  readonly localHeaderOffset: number;
}

export interface ZipArchive {
  readonly entries: ReadonlyMap<string, ZipEntry>;
  /** Absolute file offset of the entry's first data byte (read from its local header). */
  dataOffset(entry: ZipEntry): Promise<number>;
}

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;
const MAX_CENTRAL_DIRECTORY = 256 * 1024 * 1024;

function u64(view: DataView, at: number, fail: (msg: string) => never): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) fail(`64-bit field ${v} is too large`);
  return Number(v);
}

/** Reads the central directory of the zip archive open on `handle` (`path` only names it in errors). */
export async function openZip(handle: FileHandle, size: number, path: string, opts: { readonly allowDeflate?: boolean } = {}): Promise<ZipArchive> {
  const fail = (msg: string): never => {
    throw new Error(`${path}: ${msg}`);
  };
  const read = async (position: number, length: number): Promise<DataView> => {
    if (position < 0 || position + length > size) fail(`zip structure points outside the ${size}-byte file (bytes ${position}..${position + length})`);
    const bytes = new Uint8Array(length);
    await readExactlyAt(handle, bytes, position, path);
    return new DataView(bytes.buffer);
  };

  const tailLen = Math.min(size, EOCD_SIZE + MAX_COMMENT);
  const tail = await read(size - tailLen, tailLen);
  let eocd = -1;
  for (let i = tailLen - EOCD_SIZE; i >= 0; i--) {
    if (tail.getUint32(i, true) === EOCD_SIG && i + EOCD_SIZE + tail.getUint16(i + 20, true) === tailLen) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) {
    const first = size > 0 ? (await read(0, 1)).getUint8(0) : -1;
    fail(
      first === 0x80
        ? 'this is a legacy (pre-1.6, non-zip) torch.save file, which is not supported; re-save it with torch >= 1.6'
        : 'not a zip archive: no end-of-central-directory record found (the file is truncated, or not a torch.save checkpoint)',
    );
  }
  const eocdPos = size - tailLen + eocd;
  let count = tail.getUint16(eocd + 10, true);
  let cdSize = tail.getUint32(eocd + 12, true);
  let cdOffset = tail.getUint32(eocd + 16, true);
  let cdLimit = eocdPos;

  if (eocdPos >= 20 && (await read(eocdPos - 20, 4)).getUint32(0, true) === ZIP64_LOCATOR_SIG) {
    const locator = await read(eocdPos - 20, 20);
    const z64Pos = u64(locator, 8, fail);
    const z64 = await read(z64Pos, 56);
    if (z64.getUint32(0, true) !== ZIP64_EOCD_SIG) fail(`no ZIP64 end-of-central-directory record at byte ${z64Pos}`);
    count = u64(z64, 32, fail);
    cdSize = u64(z64, 40, fail);
    cdOffset = u64(z64, 48, fail);
    cdLimit = z64Pos;
  }
  if (cdOffset + cdSize > cdLimit) fail(`central directory (bytes ${cdOffset}..${cdOffset + cdSize}) runs past its end record at ${cdLimit}; the file is truncated or corrupt`);
  if (cdSize > MAX_CENTRAL_DIRECTORY) fail(`central directory of ${cdSize} bytes is implausibly large`);

  const cd = await read(cdOffset, cdSize);
  const cdBytes = new Uint8Array(cd.buffer);
  const decoder = new TextDecoder('utf-8');
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || cd.getUint32(p, true) !== CENTRAL_SIG) fail(`central directory entry ${i} at byte ${cdOffset + p} is malformed`);
    const flags = cd.getUint16(p + 8, true);
    const method = cd.getUint16(p + 10, true);
    const crc32 = cd.getUint32(p + 16, true);
    let compressed = cd.getUint32(p + 20, true);
    let size32 = cd.getUint32(p + 24, true);
    const nameLen = cd.getUint16(p + 28, true);
    const extraLen = cd.getUint16(p + 30, true);
    const commentLen = cd.getUint16(p + 32, true);
    let localHeaderOffset = cd.getUint32(p + 42, true);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cdSize) fail(`central directory entry ${i} runs past the directory`);
    const name = decoder.decode(cdBytes.subarray(p + 46, p + 46 + nameLen));
    // ZIP64 extra field: only the fields saturated at 0xFFFFFFFF in the fixed part are present, in this order.
    for (let x = p + 46 + nameLen; x + 4 <= p + 46 + nameLen + extraLen;) {
      const id = cd.getUint16(x, true);
      const len = cd.getUint16(x + 2, true);
      if (id === 0x0001) {
        let q = x + 4;
        const next = (): number => {
          if (q + 8 > x + 4 + len) fail(`entry '${name}': ZIP64 extra field is too short`);
          const v = u64(cd, q, fail);
          q += 8;
          return v;
        };
        if (size32 === 0xffffffff) size32 = next();
        if (compressed === 0xffffffff) compressed = next();
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = next();
      }
      x += 4 + len;
    }
    if (flags & 1) fail(`entry '${name}' is encrypted`);
    if (method !== 0 && !(method === 8 && opts.allowDeflate)) fail(`entry '${name}' is compressed (method ${method}); torch.save writes uncompressed (STORED) entries`);
    if (method === 0 && compressed !== size32) fail(`entry '${name}' is STORED but its compressed size ${compressed} differs from its size ${size32}`);
    if (entries.has(name)) fail(`entry '${name}' appears twice in the archive`);
    if (localHeaderOffset + 30 + compressed > cdOffset) fail(`entry '${name}' (${compressed} bytes at ${localHeaderOffset}) overlaps the central directory; the file is corrupt`);
    entries.set(name, { name, size: size32, compressedSize: compressed, method, crc32, localHeaderOffset });
    p = end;
  }

  const dataOffsets = new Map<string, number>();
  return {
    entries,
    async dataOffset(entry: ZipEntry): Promise<number> {
      const known = dataOffsets.get(entry.name);
      if (known !== undefined) return known;
      const nameBytes = new TextEncoder().encode(entry.name);
      const local = await read(entry.localHeaderOffset, 30 + nameBytes.byteLength);
      const localName = new Uint8Array(local.buffer, 30);
      if (local.getUint32(0, true) !== LOCAL_SIG || local.getUint16(26, true) !== nameBytes.byteLength || !localName.every((b, i) => b === nameBytes[i])) {
        fail(`entry '${entry.name}': no matching local header at byte ${entry.localHeaderOffset}; the file is corrupt`);
      }
      const start = entry.localHeaderOffset + 30 + nameBytes.byteLength + local.getUint16(28, true);
      if (start + entry.compressedSize > cdOffset) fail(`entry '${entry.name}': data (${entry.compressedSize} bytes at ${start}) runs into the central directory; the file is corrupt`);
      dataOffsets.set(entry.name, start);
      return start;
    },
  };
}
