/**
 * NumPy's .npy format (version 1.0) for a C-order float32 or int32 array: what `np.load` reads
 * without pickle. Written atomically (temp file + rename).
 */
import { writeFileAtomic } from './atomic-write.ts';

const MAGIC = [0x93, ...Buffer.from('NUMPY', 'latin1'), 1, 0];

/** The file's bytes: magic, version, header length, the header dict padded to 64 bytes, the data. */
export function encodeNpy(data: Float32Array | Int32Array, shape: readonly number[]): Uint8Array[] {
  const n = shape.reduce((a, b) => a * b, 1);
  if (!shape.every((d) => Number.isInteger(d) && d >= 0) || n !== data.length) {
    throw new Error(`encodeNpy: shape [${shape.join(', ')}] holds ${n} elements, the data ${data.length}`);
  }
  const descr = data instanceof Float32Array ? '<f4' : '<i4';
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  const dict = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${dims}), }`;
  // The header (with its trailing newline) ends on a multiple of 64 bytes, as numpy writes it.
  const pad = 64 - ((MAGIC.length + 2 + dict.length + 1) % 64);
  const header = Buffer.from(`${dict}${' '.repeat(pad % 64)}\n`, 'latin1');
  const len = Buffer.alloc(2);
  len.writeUInt16LE(header.byteLength);
  return [Uint8Array.from(MAGIC), len, header, new Uint8Array(data.buffer, data.byteOffset, data.byteLength)];
}

export async function writeNpy(path: string, data: Float32Array | Int32Array, shape: readonly number[]): Promise<void> {
  await writeFileAtomic(path, encodeNpy(data, shape));
}
