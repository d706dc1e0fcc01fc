// Writes torch.save-style archives byte by byte (STORED zip, optionally ZIP64, and a protocol-2
// pickle) so tests and the large-file benchmark can build checkpoints, good and malicious, without Python.
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { crc32 } from 'node:zlib';
import { writeAllAt } from '../formats/atomic-write.ts';

const bytes = (...xs: number[]): Uint8Array => Uint8Array.from(xs);
const le = (n: number, width: 1 | 2 | 4): Uint8Array => {
  const b = Buffer.alloc(width);
  b.writeUIntLE(n, 0, width);
  return b;
};
const cat = (parts: readonly Uint8Array[]): Uint8Array => Buffer.concat(parts);

/** Pickle fragments; concatenate them with `pickle(...)`. */
export const op = {
  proto: (n: number) => bytes(0x80, n),
  stop: bytes(0x2e),
  mark: bytes(0x28),
  emptyDict: bytes(0x7d),
  emptyList: bytes(0x5d),
  append: bytes(0x61),
  appends: bytes(0x65),
  memoize: bytes(0x94),
  emptyTuple: bytes(0x29),
  tuple: bytes(0x74),
  setitems: bytes(0x75),
  reduce: bytes(0x52),
  newobj: bytes(0x81),
  binpersid: bytes(0x51),
  newfalse: bytes(0x89),
  build: bytes(0x62),
  binput: (i: number) => bytes(0x71, i),
  binget: (i: number) => bytes(0x68, i),
  global: (module: string, name: string) => cat([bytes(0x63), Buffer.from(`${module}\n${name}\n`)]),
  stackGlobal: bytes(0x93),
  inst: (module: string, name: string) => cat([bytes(0x69), Buffer.from(`${module}\n${name}\n`)]),
  str: (s: string) => {
    const b = Buffer.from(s, 'utf8');
    return cat([bytes(0x58), le(b.byteLength, 4), b]);
  },
  int: (n: number) => {
    if (n < 0x100) return bytes(0x4b, n);
    if (n < 0x10000) return cat([bytes(0x4d), le(n, 2)]);
    if (n < 0x80000000) return cat([bytes(0x4a), le(n, 4)]);
    const b = Buffer.alloc(8);
    b.writeBigInt64LE(BigInt(n));
    return cat([bytes(0x8a, 8), b]);
  },
};
export const pickle = (...parts: Uint8Array[]): Uint8Array => cat(parts);
const tupleOf = (items: readonly Uint8Array[]): Uint8Array => cat([op.mark, ...items, op.tuple]);

export type StorageType = 'FloatStorage' | 'DoubleStorage' | 'LongStorage' | 'IntStorage' | 'HalfStorage' | 'BFloat16Storage';
export interface TensorSpec {
  key: string;
  storage: StorageType;
  storageKey: string;
  /** Element count written into the persistent id. */
  numel: number;
  offset: number;
  size: readonly number[];
  stride: readonly number[];
  /** Wrap in torch._utils._rebuild_parameter, as a pickled nn.Parameter is. */
  parameter?: boolean;
}

/** The pickle of an OrderedDict state_dict, exactly as torch.save lays it out (minus memo opcodes). */
export function stateDictOps(tensors: readonly TensorSpec[]): Uint8Array {
  const emptyOrderedDict = cat([op.global('collections', 'OrderedDict'), op.emptyTuple, op.reduce]);
  const items = tensors.map((t) => {
    const rebuilt = cat([
      op.global('torch._utils', '_rebuild_tensor_v2'),
      op.mark,
      tupleOf([op.str('storage'), op.global('torch', t.storage), op.str(t.storageKey), op.str('cpu'), op.int(t.numel)]),
      op.binpersid,
      op.int(t.offset),
      tupleOf(t.size.map(op.int)),
      tupleOf(t.stride.map(op.int)),
      op.newfalse,
      emptyOrderedDict,
      op.tuple,
      op.reduce,
    ]);
    const value = t.parameter
      ? cat([op.global('torch._utils', '_rebuild_parameter'), op.mark, rebuilt, op.newfalse, emptyOrderedDict, op.tuple, op.reduce])
      : rebuilt;
    return cat([op.str(t.key), value]);
  });
  return cat([emptyOrderedDict, op.mark, ...items, op.setitems]);
}

/**
 * Python's pickle of `L = []; for _ in range(depth): L = [L] * width`: each list holds `width`
 * references to the one below, pickled inline once and fetched from memo slot 0..depth after
 * that (the rest of the pickle must not use these slots); as a tree it would have width^depth leaves.
 */
export function sharedListChain(depth: number, width: number): Uint8Array {
  if (depth > 0xff) throw new Error(`sharedListChain: depth must be at most 255 (BINPUT's one-byte memo slot), got ${depth}`);
  const opens = Array.from({ length: depth }, (_, i) => cat([op.emptyList, op.binput(i), op.mark]));
  const closes = Array.from({ length: depth }, (_, i) => cat([...Array.from({ length: width - 1 }, () => op.binget(depth - i)), op.appends]));
  return cat([...opens, op.emptyList, op.binput(depth), ...closes]);
}

/** A complete data.pkl: a bare state_dict, or a plain dict `{wrapKey: state_dict, ...extra}`. */
export function checkpointPickle(tensors: readonly TensorSpec[], wrap?: { key: string; extraInts?: Record<string, number> }): Uint8Array {
  if (!wrap) return pickle(op.proto(2), stateDictOps(tensors), op.stop);
  const extra = Object.entries(wrap.extraInts ?? {}).flatMap(([k, v]) => [op.str(k), op.int(v)]);
  return pickle(op.proto(2), op.emptyDict, op.mark, op.str(wrap.key), stateDictOps(tensors), ...extra, op.setitems, op.stop);
}

interface Written {
  name: Buffer;
  crc: number;
  size: number;
  offset: number;
}

/**
 * Streams STORED entries into a zip file. Data starts are padded to 64 bytes with an extra field,
 * as PyTorch does; `zip64` writes ZIP64 sizes/offsets and end records for every entry.
 */
export class ZipBuilder {
  private position = 0;
  private readonly written: Written[] = [];

  private constructor(private readonly handle: FileHandle, private readonly zip64: boolean) {}

  static async create(path: string, zip64: boolean): Promise<ZipBuilder> {
    return new ZipBuilder(await open(path, 'w'), zip64);
  }

  private async put(b: Uint8Array): Promise<void> {
    await writeAllAt(this.handle, b, this.position);
    this.position += b.byteLength;
  }

  async add(name: string, data: Uint8Array): Promise<void> {
    const nameBytes = Buffer.from(name, 'utf8');
    const crc = crc32(data);
    const zip64Extra = this.zip64 ? cat([le(1, 2), le(16, 2), u64(data.byteLength), u64(data.byteLength)]) : new Uint8Array(0);
    const unpadded = this.position + 30 + nameBytes.byteLength + zip64Extra.byteLength + 4;
    const pad = (64 - (unpadded % 64)) % 64;
    const extra = cat([zip64Extra, le(0x4246, 2), le(pad, 2), new Uint8Array(pad)]);
    const size32 = this.zip64 ? 0xffffffff : data.byteLength;
    this.written.push({ name: nameBytes, crc, size: data.byteLength, offset: this.position });
    await this.put(cat([
      le(0x04034b50, 4), le(this.zip64 ? 45 : 20, 2), le(0, 2), le(0, 2), le(0, 2), le(0x21, 2),
      le(crc, 4), le(size32, 4), le(size32, 4), le(nameBytes.byteLength, 2), le(extra.byteLength, 2), nameBytes, extra,
    ]));
    await this.put(data);
  }

  async finish(): Promise<void> {
    const cdStart = this.position;
    for (const w of this.written) {
      const extra = this.zip64 ? cat([le(1, 2), le(24, 2), u64(w.size), u64(w.size), u64(w.offset)]) : new Uint8Array(0);
      const size32 = this.zip64 ? 0xffffffff : w.size;
      await this.put(cat([
        le(0x02014b50, 4), le(45, 2), le(this.zip64 ? 45 : 20, 2), le(0, 2), le(0, 2), le(0, 2), le(0x21, 2),
        le(w.crc, 4), le(size32, 4), le(size32, 4), le(w.name.byteLength, 2), le(extra.byteLength, 2), le(0, 2),
        le(0, 2), le(0, 2), le(0, 4), le(this.zip64 ? 0xffffffff : w.offset, 4), w.name, extra,
      ]));
    }
    const cdSize = this.position - cdStart;
    const count = this.written.length;
    if (this.zip64) {
      const z64At = this.position;
      await this.put(cat([
        le(0x06064b50, 4), u64(44), le(45, 2), le(45, 2), le(0, 4), le(0, 4), u64(count), u64(count), u64(cdSize), u64(cdStart),
      ]));
      await this.put(cat([le(0x07064b50, 4), le(0, 4), u64(z64At), le(1, 4)]));
    }
    await this.put(cat([
      le(0x06054b50, 4), le(0, 2), le(0, 2), le(this.zip64 ? 0xffff : count, 2), le(this.zip64 ? 0xffff : count, 2),
      le(this.zip64 ? 0xffffffff : cdSize, 4), le(this.zip64 ? 0xffffffff : cdStart, 4), le(0, 2),
    ]));
    await this.handle.close();
  }
}

function u64(n: number): Uint8Array {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(n));
  return b;
}

/** Writes a torch.save-style archive: `<stem>/data.pkl`, `<stem>/data/<key>` storages, `<stem>/version`. */
export async function writeTorchArchive(
  path: string,
  pkl: Uint8Array,
  storages: ReadonlyMap<string, Uint8Array>,
  opts: { zip64?: boolean; stem?: string } = {},
): Promise<void> {
  const stem = opts.stem ?? 'archive';
  const zip = await ZipBuilder.create(path, opts.zip64 ?? false);
  await zip.add(`${stem}/data.pkl`, pkl);
  for (const [key, data] of storages) await zip.add(`${stem}/data/${key}`, data);
  await zip.add(`${stem}/version`, Buffer.from('3\n'));
  await zip.finish();
}
