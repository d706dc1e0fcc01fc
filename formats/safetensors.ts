// safetensors reader/writer (FORMAT.md §2). The reader only keeps the header in memory and fetches
// each tensor with positioned reads, so files larger than a Node Buffer (2 GiB) work.
import { open, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { match } from 'ts-pattern';
import { withAtomicFile, writeAllAt } from './atomic-write.ts';

export type StDtype = 'F32' | 'F64' | 'I64' | 'I32' | 'F16' | 'BF16';
export type StData = Float32Array | Float64Array | BigInt64Array | Int32Array;
/** F16/BF16 are widened to Float32Array on read; `dtype` still reports the stored dtype. */
export interface StTensor {
  readonly dtype: StDtype;
  readonly shape: readonly number[];
  readonly data: StData;
}
/** `begin`/`end` count from the first byte after the header. */
export interface StHeaderEntry {
  dtype: StDtype;
  shape: number[];
  begin: number;
  end: number;
}
export interface StFile {
  readonly entries: ReadonlyMap<string, StHeaderEntry>;
  readonly metadata: Readonly<Record<string, string>>;
  /** With `scratch`, the data is a view on it (valid until the next read into it) when it fits. */
  read(name: string, scratch?: ArrayBuffer): Promise<StTensor>;
  close(): Promise<void>;
}
/** The dtypes this module writes; half precision must be widened by the caller first. */
export type StWritableDtype = 'F32' | 'F64' | 'I64' | 'I32';
/** A tensor whose data is produced only when the writer reaches it. */
export interface StTensorSource {
  readonly name: string;
  readonly dtype: StWritableDtype;
  readonly shape: readonly number[];
  load(): Promise<StData>;
}

const ITEM_SIZE: Readonly<Record<StDtype, number>> = { F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2 };
const WRITABLE: ReadonlySet<string> = new Set<StWritableDtype>(['F32', 'F64', 'I64', 'I32']);
const MAX_HEADER_BYTES = 100_000_000;
const RESERVED_KEY = '__metadata__';

export function isStDtype(s: unknown): s is StDtype {
  return typeof s === 'string' && Object.hasOwn(ITEM_SIZE, s);
}

export function stItemSize(dtype: StDtype): number {
  return ITEM_SIZE[dtype];
}

/** Product of `shape`, or an error naming `what` when it is not a list of non-negative integers. */
export function numelOf(shape: readonly unknown[], what: string): number {
  let n = 1;
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 0) {
      throw new Error(`${what}: shape must hold non-negative integers, got ${JSON.stringify(shape)}`);
    }
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw new Error(`${what}: shape ${JSON.stringify(shape)} has too many elements`);
  return n;
}

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

let halfToFloatBits: Uint32Array | null = null;

// All 65536 half values fit a 256 KiB table; building it bit by bit keeps NaN payloads exact.
function halfTable(): Uint32Array {
  if (halfToFloatBits) return halfToFloatBits;
  const table = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exp = (h >> 10) & 0x1f;
    let mant = h & 0x3ff;
    if (exp === 0 && mant === 0) table[h] = sign;
    else if (exp === 0) {
      let e = 127 - 15 + 1;
      while ((mant & 0x400) === 0) {
        mant <<= 1;
        e--;
      }
      table[h] = sign | (e << 23) | ((mant & 0x3ff) << 13);
    } else if (exp === 31) table[h] = sign | (0xff << 23) | (mant << 13);
    else table[h] = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  halfToFloatBits = table;
  return table;
}

/** Exact widening of IEEE half or bfloat16 bit patterns to float32. */
export function widenHalf(bits: Uint16Array, dtype: 'F16' | 'BF16'): Float32Array {
  const out = new Uint32Array(bits.length);
  if (dtype === 'BF16') {
    for (let i = 0; i < bits.length; i++) out[i] = bits[i] << 16;
  } else {
    const table = halfTable();
    for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  }
  return new Float32Array(out.buffer);
}

/**
 * The array a tensor of `dtype` is stored in on disk (half types as raw 16-bit words): a view on
 * `scratch` when given and large enough (the caller reuses it, so nothing is allocated per
 * tensor), else a new one.
 */
export function allocStored(dtype: StDtype, numel: number, scratch?: ArrayBuffer): StData | Uint16Array {
  const on = scratch !== undefined && numel * ITEM_SIZE[dtype] <= scratch.byteLength ? scratch : undefined;
  return match(dtype)
    .with('F32', () => (on ? new Float32Array(on, 0, numel) : new Float32Array(numel)))
    .with('F64', () => (on ? new Float64Array(on, 0, numel) : new Float64Array(numel)))
    .with('I64', () => (on ? new BigInt64Array(on, 0, numel) : new BigInt64Array(numel)))
    .with('I32', () => (on ? new Int32Array(on, 0, numel) : new Int32Array(numel)))
    .with('F16', 'BF16', () => (on ? new Uint16Array(on, 0, numel) : new Uint16Array(numel)))
    .exhaustive();
}

/** Turns the on-disk array into what StTensor holds (widening half types). */
export function fromStored(dtype: StDtype, stored: StData | Uint16Array): StData {
  return stored instanceof Uint16Array ? widenHalf(stored, dtype === 'BF16' ? 'BF16' : 'F16') : stored;
}

export function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

// JSON.parse keeps the last of duplicated keys silently; a header with two entries of the same
// name is ambiguous, so scan the (already valid) JSON text for repeated keys in any object.
function findDuplicateKey(text: string): string | null {
  const scopes: (Set<string> | null)[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '{') scopes.push(new Set());
    else if (c === '[') scopes.push(null);
    else if (c === '}' || c === ']') scopes.pop();
    else if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const literal = text.slice(i, j + 1);
      i = j;
      let k = j + 1;
      while (text[k] === ' ' || text[k] === '\n' || text[k] === '\r' || text[k] === '\t') k++;
      const keys = scopes[scopes.length - 1];
      if (text[k] === ':' && keys) {
        const key = JSON.parse(literal) as string;
        if (keys.has(key)) return key;
        keys.add(key);
      }
    }
  }
  return null;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseEntry(name: string, raw: unknown, fail: (msg: string) => never): StHeaderEntry {
  if (!isPlainObject(raw)) fail(`tensor '${name}': expected an object {dtype, shape, data_offsets}, got ${JSON.stringify(raw)}`);
  const { dtype, shape, data_offsets: offsets } = raw;
  if (!isStDtype(dtype)) {
    fail(`tensor '${name}': unknown dtype ${JSON.stringify(dtype)} (expected one of ${Object.keys(ITEM_SIZE).join(', ')})`);
  }
  if (!Array.isArray(shape)) fail(`tensor '${name}': shape must be an array, got ${JSON.stringify(shape)}`);
  let numel = 0;
  try {
    numel = numelOf(shape, `tensor '${name}'`);
  } catch (e) {
    fail((e as Error).message);
  }
  if (
    !Array.isArray(offsets) || offsets.length !== 2 ||
    !offsets.every((o) => typeof o === 'number' && Number.isSafeInteger(o) && o >= 0) || offsets[0] > offsets[1]
  ) {
    fail(`tensor '${name}': data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offsets)}`);
  }
  const [begin, end] = offsets as [number, number];
  const need = numel * ITEM_SIZE[dtype];
  if (end - begin !== need) {
    fail(`tensor '${name}': data_offsets [${begin}, ${end}] span ${end - begin} bytes but dtype ${dtype} shape ${JSON.stringify(shape)} needs ${need} bytes`);
  }
  return { dtype, shape: [...(shape as number[])], begin, end };
}

// Tensors must tile the data section exactly: no overlaps, no gaps, nothing missing or left over.
function checkLayout(entries: Map<string, StHeaderEntry>, dataBytes: number, fail: (msg: string) => never): void {
  const sorted = [...entries].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let pos = 0;
  let prev = '';
  for (const [name, e] of sorted) {
    if (e.begin < pos) fail(`tensor '${name}' (data bytes [${e.begin}, ${e.end})) overlaps tensor '${prev}' which ends at ${pos}`);
    if (e.begin > pos) fail(`gap of ${e.begin - pos} bytes before tensor '${name}' at data offset ${pos} (tensors must be packed)`);
    pos = e.end;
    prev = name;
  }
  if (pos > dataBytes) {
    fail(`tensor '${prev}' ends at data byte ${pos} but the data section holds only ${dataBytes} bytes (truncated file or bad data_offsets)`);
  }
  if (pos < dataBytes) fail(`${dataBytes - pos} unexpected bytes after the last tensor (data section is ${dataBytes} bytes, tensors cover ${pos})`);
}

/** Opens a safetensors file, validating the whole header; tensors are read one at a time. */
export async function openSafetensors(path: string): Promise<StFile> {
  const fail = (msg: string): never => {
    throw new Error(`safetensors ${path}: ${msg}`);
  };
  const handle = await open(path, 'r');
  try {
    const size = (await handle.stat()).size;
    if (size < 8) fail(`file is ${size} bytes, too short for the 8-byte header length`);
    const lenBytes = new Uint8Array(8);
    await readExactlyAt(handle, lenBytes, 0, `safetensors ${path}`);
    const headerLen = new DataView(lenBytes.buffer).getBigUint64(0, true);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) fail(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
    const n = Number(headerLen);
    if (8 + n > size) fail(`header length ${n} runs past the end of the ${size}-byte file (truncated or not a safetensors file)`);
    const headerBytes = new Uint8Array(n);
    await readExactlyAt(handle, headerBytes, 8, `safetensors ${path}`);
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(headerBytes);
    } catch {
      return fail('header is not valid UTF-8');
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(text);
    } catch (e) {
      return fail(`header is not valid JSON (${(e as Error).message})`);
    }
    if (!isPlainObject(parsed)) return fail(`header must be a JSON object, got ${Array.isArray(parsed) ? 'an array' : JSON.stringify(parsed)}`);
    const dup = findDuplicateKey(text);
    if (dup !== null) fail(`header has the key '${dup}' more than once`);

    const rawMeta = parsed[RESERVED_KEY] ?? {};
    if (!isPlainObject(rawMeta)) fail(`__metadata__ must be an object of strings, got ${JSON.stringify(rawMeta)}`);
    for (const [k, v] of Object.entries(rawMeta as Record<string, unknown>)) {
      if (typeof v !== 'string') fail(`__metadata__ value for '${k}' must be a string, got ${JSON.stringify(v)}`);
    }
    const metadata = Object.fromEntries(Object.entries(rawMeta as Record<string, string>));
    const entries = new Map<string, StHeaderEntry>();
    for (const [name, raw] of Object.entries(parsed)) {
      if (name !== RESERVED_KEY) entries.set(name, parseEntry(name, raw, fail));
    }
    const dataStart = 8 + n;
    checkLayout(entries, size - dataStart, fail);
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
    async read(name: string, scratch?: ArrayBuffer): Promise<StTensor> {
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
