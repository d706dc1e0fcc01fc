// IDX, the format the original MNIST files use: two zero bytes, a type code, the number of
// dimensions, each dimension as a big-endian uint32, then the values in row-major order.
import { readFileSync } from 'node:fs';

export interface IdxArray {
  readonly dims: readonly number[];
  readonly data: Uint8Array;
}

const UBYTE = 0x08;

/** Parses an unsigned-byte IDX buffer, checking the header against the buffer's exact length. */
export function parseIdx(bytes: Uint8Array, source: string): IdxArray {
  if (bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b) {
    throw new Error(`${source}: expected a raw IDX file, got a gzip stream (decompress it first)`);
  }
  if (bytes.length < 4 || bytes[0] !== 0 || bytes[1] !== 0) {
    const head = Array.from(bytes.subarray(0, 4), (b) => b.toString(16).padStart(2, '0')).join(' ');
    throw new Error(`${source}: expected an IDX magic number starting 00 00, got ${head || 'an empty file'}`);
  }
  if (bytes[2] !== UBYTE) {
    throw new Error(`${source}: expected IDX type code 0x08 (unsigned byte), got 0x${bytes[2].toString(16).padStart(2, '0')}`);
  }
  const ndim = bytes[3];
  const headerLen = 4 + 4 * ndim;
  if (ndim === 0 || bytes.length < headerLen) {
    throw new Error(`${source}: IDX header declares ${ndim} dimensions, which needs ${headerLen} header bytes; file has ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dims: number[] = [];
  let count = 1;
  for (let d = 0; d < ndim; d++) {
    const n = view.getUint32(4 + 4 * d, false);
    dims.push(n);
    count *= n;
  }
  if (bytes.length !== headerLen + count) {
    throw new Error(
      `${source}: IDX header says dims [${dims.join(', ')}] = ${count} bytes of data after a ${headerLen}-byte header (${headerLen + count} in all), file has ${bytes.length}`,
    );
  }
  return { dims, data: bytes.subarray(headerLen) };
}

/** Reads and parses an IDX file, with an error that names the file if it cannot be read. */
export function readIdxFile(path: string): IdxArray {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new Error(`cannot read IDX file ${path}: ${(err as Error).message}`);
  }
  return parseIdx(bytes, path);
}
