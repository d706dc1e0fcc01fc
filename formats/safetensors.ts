// safetensors reader/writer (FORMAT.md §2). The reader only keeps the header in memory and fetches
// each tensor with positioned reads, so files larger than a Node Buffer (2 GiB) work.
import { open, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { match } from 'ts-pattern';
import { withAtomicFile, writeAllAt } from './atomic-write.ts';
import { allocStored, bytesOf, fromStored, headerLength, ITEM_SIZE, numelOf, parseHeader, RESERVED_KEY, WRITABLE } from './safetensors-header.ts';
import type { StData, StDtype, StFile, StHeaderEntry, StTensor, StTensorSource, StWritableDtype } from './safetensors-header.ts';

export * from './safetensors-header.ts';

/** Reads exactly `target.byteLength` bytes at `position`; a short file is an error, never a partial read. */
export async function readExactlyAt(handle: FileHandle, target: Uint8Array, position: number, what: string): Promise<void> {
  const chunk = 1 << 30;
  let done = 0;
  while (done < target.byteLength) {
    const len = Math.min(chunk, target.byteLength - done);
    const { bytesRead } = await handle.read(target, done, len, position + done);
    if (bytesRead === 0) {
      throw new Error(`${what}: unexpected end of file at byte ${position + done} (wanted ${target.byteLength} bytes from byte ${position})`);
    }
    done += bytesRead;
  }
}

/** Opens a safetensors file, validating the whole header; tensors are read one at a time. */
export async function openSafetensors(path: string): Promise<StFile> {
  const fail = (msg: string): never => {
    throw new Error(`safetensors ${path}: ${msg}`);
  };
  const handle = await open(path, 'r');
  try {
    const size = (await handle.stat()).size;
    const lenBytes = new Uint8Array(8);
    if (size >= 8) await readExactlyAt(handle, lenBytes, 0, `safetensors ${path}`);
    const n = headerLength(lenBytes, size, fail);
    const headerBytes = new Uint8Array(n);
    await readExactlyAt(handle, headerBytes, 8, `safetensors ${path}`);
    const { entries, metadata } = parseHeader(headerBytes, size - 8 - n, fail);
    const dataStart = 8 + n;
    return makeStFile(path, handle, entries, metadata, dataStart);
  } catch (e) {
    await handle.close();
    throw e;
  }
}

function makeStFile(
  path: string,
  handle: FileHandle,
  entries: Map<string, StHeaderEntry>,
  metadata: Record<string, string>,
  dataStart: number,
): StFile {
  let closed = false;
  return {
    entries,
    metadata,
    async read(name: string, scratch?: Uint8Array): Promise<StTensor> {
      if (closed) throw new Error(`safetensors ${path}: read('${name}') after close()`);
      const e = entries.get(name);
      if (!e) throw new Error(`safetensors ${path}: no tensor named '${name}' (the file has ${entries.size} tensors)`);
      const stored = allocStored(e.dtype, (e.end - e.begin) / ITEM_SIZE[e.dtype], scratch);
      await readExactlyAt(handle, bytesOf(stored), dataStart + e.begin, `safetensors ${path}, tensor '${name}'`);
      return { dtype: e.dtype, shape: [...e.shape], data: fromStored(e.dtype, stored) };
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await handle.close();
    },
  };
}

/** Reads every tensor of a safetensors file. */
export async function readSafetensors(path: string): Promise<Map<string, StTensor>> {
  const file = await openSafetensors(path);
  try {
    const out = new Map<string, StTensor>();
    for (const name of file.entries.keys()) out.set(name, await file.read(name));
    return out;
  } finally {
    await file.close();
  }
}

function dataMatches(dtype: StWritableDtype, data: StData): boolean {
  return match(dtype)
    .with('F32', () => data instanceof Float32Array)
    .with('F64', () => data instanceof Float64Array)
    .with('I64', () => data instanceof BigInt64Array)
    .with('I32', () => data instanceof Int32Array)
    .exhaustive();
}

/**
 * Writes tensors produced one at a time by `sources` (only one tensor's data is held at once).
 * 8-byte dtypes come first so every tensor starts at a file offset that is a multiple of its item
 * size; the header is space-padded to a multiple of 8. `onProgress` gets tensor bytes written so far.
 */
export async function writeSafetensorsStreaming(
  path: string,
  sources: readonly StTensorSource[],
  metadata?: Record<string, string>,
  onProgress?: (doneBytes: number, totalBytes: number) => void,
): Promise<{ bytes: number }> {
  const fail = (msg: string): never => {
    throw new Error(`writing safetensors ${path}: ${msg}`);
  };
  const seen = new Set<string>();
  for (const s of sources) {
    if (s.name === RESERVED_KEY) fail(`'${RESERVED_KEY}' is reserved and cannot name a tensor`);
    if (seen.has(s.name)) fail(`tensor name '${s.name}' appears twice`);
    seen.add(s.name);
    if (!WRITABLE.has(s.dtype)) fail(`tensor '${s.name}': cannot write dtype ${String(s.dtype)} (only F32, F64, I64, I32; widen half precision to F32 first)`);
  }
  for (const [k, v] of Object.entries(metadata ?? {})) {
    if (typeof v !== 'string') fail(`metadata value for '${k}' must be a string, got ${JSON.stringify(v)}`);
  }
  const ordered = [...sources.filter((s) => ITEM_SIZE[s.dtype] === 8), ...sources.filter((s) => ITEM_SIZE[s.dtype] !== 8)];
  // A null prototype so that a tensor named "__proto__" is stored as data, not as the prototype.
  const header: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length > 0) header[RESERVED_KEY] = metadata;
  const layout: { source: StTensorSource; numel: number; begin: number }[] = [];
  let offset = 0;
  for (const s of ordered) {
    const numel = numelOf(s.shape, `writing safetensors ${path}, tensor '${s.name}'`);
    const end = offset + numel * ITEM_SIZE[s.dtype];
    header[s.name] = { dtype: s.dtype, shape: [...s.shape], data_offsets: [offset, end] };
    layout.push({ source: s, numel, begin: offset });
    offset = end;
  }
  const totalData = offset;
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const padded = Math.ceil((8 + json.byteLength) / 8) * 8 - 8;
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);
  const dataStart = head.byteLength;

  await withAtomicFile(path, async (handle) => {
    await writeAllAt(handle, head, 0);
    for (const { source, numel, begin } of layout) {
      const data = await source.load();
      if (!dataMatches(source.dtype, data)) {
        fail(`tensor '${source.name}': dtype ${source.dtype} does not match its data (${data.constructor.name})`);
      }
      if (data.length !== numel) {
        fail(`tensor '${source.name}': shape ${JSON.stringify(source.shape)} needs ${numel} elements but the data has ${data.length}`);
      }
      await writeAllAt(handle, bytesOf(data), dataStart + begin);
      onProgress?.(begin + data.byteLength, totalData);
    }
  });
  return { bytes: (await stat(path)).size };
}

/** Writes tensors (F32/F64/I64/I32 only) atomically; see writeSafetensorsStreaming for the layout. */
export async function writeSafetensors(
  path: string,
  tensors: ReadonlyMap<string, StTensor> | Record<string, StTensor>,
  metadata?: Record<string, string>,
): Promise<void> {
  const list = tensors instanceof Map ? [...tensors] : Object.entries(tensors as Record<string, StTensor>);
  const sources = list.map(([name, t]): StTensorSource => {
    if (!WRITABLE.has(t.dtype)) {
      throw new Error(`writing safetensors ${path}: tensor '${name}': cannot write dtype ${t.dtype} (only F32, F64, I64, I32; store half precision as F32)`);
    }
    return { name, dtype: t.dtype as StWritableDtype, shape: t.shape, load: async () => t.data };
  });
  await writeSafetensorsStreaming(path, sources, metadata);
}
