// The safetensors layout without file access (FORMAT.md §2): dtypes, the header's validation and
// a whole file parsed from memory. formats/safetensors.ts reads and writes files with it; the web
// page (web/) parses a dropped or fetched file with it.
import { match } from 'ts-pattern';

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
  read(name: string, scratch?: Uint8Array): Promise<StTensor>;
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

export const ITEM_SIZE: Readonly<Record<StDtype, number>> = { F64: 8, I64: 8, F32: 4, I32: 4, F16: 2, BF16: 2 };
export const WRITABLE: ReadonlySet<string> = new Set<StWritableDtype>(['F32', 'F64', 'I64', 'I32']);
export const MAX_HEADER_BYTES = 100_000_000;
export const RESERVED_KEY = '__metadata__';

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
 * the start of `scratch` when given, large enough and aligned for the type (a reused buffer, or
 * the tensor's final place in the wasm heap: nothing is allocated or copied per tensor), else a
 * new one.
 */
export function allocStored(dtype: StDtype, numel: number, scratch?: Uint8Array): StData | Uint16Array {
  const size = ITEM_SIZE[dtype];
  const on = scratch !== undefined && numel * size <= scratch.byteLength && scratch.byteOffset % size === 0 ? scratch : undefined;
  const at = <T>(View: new (b: ArrayBufferLike, offset: number, length: number) => T, New: new (n: number) => T): T =>
    (on ? new View(on.buffer, on.byteOffset, numel) : new New(numel));
  return match(dtype)
    .with('F32', () => at(Float32Array, Float32Array))
    .with('F64', () => at(Float64Array, Float64Array))
    .with('I64', () => at(BigInt64Array, BigInt64Array))
    .with('I32', () => at(Int32Array, Int32Array))
    .with('F16', 'BF16', () => at(Uint16Array, Uint16Array))
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


/** The header's length from a file's first 8 bytes (`size`: the file's), checked against the file. */
export function headerLength(first8: Uint8Array, size: number, fail: (msg: string) => never): number {
  if (size < 8) fail(`file is ${size} bytes, too short for the 8-byte header length`);
  const headerLen = new DataView(first8.buffer, first8.byteOffset, 8).getBigUint64(0, true);
  if (headerLen > BigInt(MAX_HEADER_BYTES)) fail(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit (corrupt or not a safetensors file)`);
  const n = Number(headerLen);
  if (8 + n > size) fail(`header length ${n} runs past the end of the ${size}-byte file (truncated or not a safetensors file)`);
  return n;
}

/** Validates a header (its bytes, and the size of the data section after it): the tensors' entries and the metadata. */
export function parseHeader(headerBytes: Uint8Array, dataBytes: number, fail: (msg: string) => never): { entries: Map<string, StHeaderEntry>; metadata: Record<string, string> } {
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
  checkLayout(entries, dataBytes, fail);
  return { entries, metadata };
}

/** A whole safetensors file in memory (`name` names it in errors), every tensor copied out. */
export function parseSafetensors(bytes: Uint8Array, name: string): { tensors: Map<string, StTensor>; metadata: Record<string, string> } {
  const fail = (msg: string): never => {
    throw new Error(`safetensors ${name}: ${msg}`);
  };
  const n = headerLength(bytes, bytes.length, fail);
  const { entries, metadata } = parseHeader(bytes.subarray(8, 8 + n), bytes.length - 8 - n, fail);
  const tensors = new Map<string, StTensor>();
  for (const [key, e] of entries) {
    const stored = allocStored(e.dtype, (e.end - e.begin) / ITEM_SIZE[e.dtype]);
    bytesOf(stored).set(bytes.subarray(8 + n + e.begin, 8 + n + e.end));
    tensors.set(key, { dtype: e.dtype, shape: [...e.shape], data: fromStored(e.dtype, stored) });
  }
  return { tensors, metadata };
}
