// Safe reader for PyTorch `torch.save` checkpoints (zip format, torch >= 1.6) and a streaming
// converter to safetensors. No Python is involved: the pickle is interpreted by a whitelist
// machine (./torch-pt/pickle.ts) and storages are read lazily by offset from the archive.
import { open } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { basename } from 'node:path';
import { crc32 } from 'node:zlib';
import {
  allocStored, bytesOf, fromStored, readExactlyAt, stItemSize, writeSafetensorsStreaming,
} from './safetensors.ts';
import type { StData, StDtype, StTensor, StTensorSource, StWritableDtype } from './safetensors.ts';
import { openZip } from './torch-pt/zip.ts';
import type { ZipArchive, ZipEntry } from './torch-pt/zip.ts';
import { PyDict, PyGlobal, PyRecord, PyTuple, StorageRef, TensorRef, describePy, unpickle } from './torch-pt/pickle.ts';
import type { PyValue } from './torch-pt/pickle.ts';

export interface ReadTensorOptions {
  /** Materialise a broadcast view (see `PtTensorRef.broadcast`) instead of refusing it. */
  expandViews?: boolean;
  /** Read into these bytes when they are large enough (the data is then a view on them, valid until the next read into them). */
  scratch?: Uint8Array;
}
export interface PtTensorRef {
  key: string;
  dtype: StDtype;
  shape: number[];
  /** The view into its storage as torch.save recorded it, in elements. */
  stride: number[];
  storageOffset: number;
  /**
   * The view shows some stored element more than once: it is non-empty with a stride-0 dimension
   * of size > 1, as `expand()` makes, or its strides overlap into more elements than the storage
   * span it covers.
   * Its materialised size is then not bounded by the file's, so read() expands it only on request.
   */
  broadcast: boolean;
  /** Throws the error read() would (an unrequested broadcast view, a size limit) without reading anything. */
  checkReadable(opts?: ReadTensorOptions): void;
  /** Reads the tensor as a contiguous C-order array (F16/BF16 widened to Float32Array). */
  read(opts?: ReadTensorOptions): Promise<StTensor>;
}
export interface TorchCheckpoint {
  tensors: PtTensorRef[];
  /** Top-level key the state_dict was found under (e.g. 'ema'), or null for a bare state_dict. */
  wrapperKey: string | null;
  /** The other top-level entries as plain values; tensors and nested state_dicts are summarised as strings. */
  extra: Record<string, unknown>;
  close(): Promise<void>;
}
export interface OpenTorchOptions {
  /** Which wrapped state_dict to take first when a checkpoint holds several (default 'ema', as DiT/MDT sampling does). */
  prefer?: 'ema' | 'model';
  /** The top-level key holding the state_dict (overrides `prefer`; an error lists the keys when it holds none). */
  key?: string;
  /** Limit on the pickle's object graph in slots (default MAX_PICKLE_SLOTS; see `unpickle`). */
  maxPickleSlots?: number;
  /** Most bytes one tensor's read() may return, or fetch from its storage (default MAX_TENSOR_BYTES). */
  maxTensorBytes?: number;
}
export interface ConvertTorchOptions extends OpenTorchOptions, ReadTensorOptions {
  /** Store F16/BF16 tensors as F32 (exact); without it, half-precision input is refused. */
  fp16ToFp32?: boolean;
  /** Called after each tensor with tensor bytes written so far and in total. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

const MAX_PICKLE_BYTES = 1 << 30;
// Past this an element index no longer fits a positive int32, which TF.js backends (the wasm one,
// with its 32-bit heap, among them) do not handle; no MDT or DiT tensor comes near.
const MAX_TENSOR_ELEMENTS = 2 ** 31 - 1;
// Default maxTensorBytes: Node's largest Buffer (4 GiB); MDT-XL's largest tensor (an adaLN weight,
// 6912 × 1152) takes 32 MB.
const MAX_TENSOR_BYTES = 2 ** 32;
const WRAPPER_KEYS = ['ema', 'model', 'state_dict', 'model_state_dict'] as const;

function isStateDict(v: PyValue): v is PyDict {
  if (!(v instanceof PyDict) || v.map.size === 0) return false;
  for (const [k, t] of v.map) if (typeof k !== 'string' || !(t instanceof TensorRef)) return false;
  return true;
}

// Deeper containers are summarised, so a deeply nested pickle cannot overflow the JS stack here.
const MAX_EXTRA_DEPTH = 32;

/**
 * A plain tree of `v`. Containers the pickle shares (through its memo) are written out once and
 * summarised wherever they recur, cycles included, so the tree is never larger than the pickle's
 * object graph: `[L]*10` nested 30 deep takes 300 steps, not 10^30.
 */
function toPlain(v: PyValue, seen: Set<PyValue>, depth = 0): unknown {
  if (v instanceof PyRecord) return toPlain(recordDict(v), seen, depth);
  if (!(v instanceof PyDict || v instanceof PyTuple || Array.isArray(v))) {
    return v instanceof TensorRef || v instanceof StorageRef || v instanceof PyGlobal ? `<${describePy(v)}>` : v;
  }
  if (seen.has(v)) return `<${describePy(v)}, shared: written out at its first occurrence>`;
  seen.add(v);
  if (isStateDict(v)) return `<state_dict of ${v.map.size} tensors>`;
  const inner = (x: PyValue): unknown => (depth < MAX_EXTRA_DEPTH ? toPlain(x, seen, depth + 1) : `<${describePy(x)}>`);
  if (v instanceof PyDict) return Object.fromEntries([...v.map].map(([k, x]) => [typeof k === 'string' ? k : String(inner(k)), inner(x)]));
  return (v instanceof PyTuple ? v.items : v).map(inner);
}

/** A record as the dict `vars()` gives, with its class under `__class__`. */
function recordDict(r: PyRecord): PyDict {
  const d = new PyDict(true);
  d.map.set('__class__', r.qualname);
  for (const [k, x] of r.fields) d.map.set(k, x);
  return d;
}

function keyList(d: PyDict): string {
  return [...d.map.keys()].map((k) => (typeof k === 'string' ? `'${k}'` : describePy(k))).join(', ');
}

/**
 * Finds the tensor dict: the root itself, the top-level entry `key` when given, else the first
 * wrapper key (in preference order) holding one.
 */
function findStateDict(root: PyValue, prefer: 'ema' | 'model', path: string, key?: string): { dict: PyDict; wrapperKey: string | null; extra: Record<string, unknown> } {
  if (isStateDict(root) && key === undefined) return { dict: root, wrapperKey: null, extra: {} };
  if (!(root instanceof PyDict)) {
    throw new Error(`${path}: no state_dict found: the checkpoint holds a ${describePy(root)}, expected a dict of tensors or a dict wrapping one`);
  }
  if (key !== undefined) {
    const candidate = root.map.get(key);
    if (candidate === undefined || !isStateDict(candidate)) {
      const holding = [...root.map].filter(([, v]) => isStateDict(v)).map(([k]) => (typeof k === 'string' ? `'${k}'` : describePy(k)));
      throw new Error(
        `${path}: ${candidate === undefined ? `has no top-level key '${key}'` : `'${key}' holds a ${describePy(candidate)}, not a dict of tensors`}; ` +
        `the top-level dict has keys [${keyList(root)}]${holding.length > 0 ? `, of which ${holding.join(', ')} hold${holding.length === 1 ? 's' : ''} a state_dict` : ''}`,
      );
    }
  }
  const order = key !== undefined ? [key] : prefer === 'model' ? [...WRAPPER_KEYS.filter((k) => k !== 'ema'), 'ema'] : WRAPPER_KEYS;
  for (const name of order) {
    const candidate = root.map.get(name);
    if (candidate !== undefined && isStateDict(candidate)) {
      const seen = new Set<PyValue>();
      const extra = Object.fromEntries([...root.map].filter(([k]) => k !== name).map(([k, v]) => [String(k), toPlain(v, seen)]));
      return { dict: candidate, wrapperKey: name, extra };
    }
  }
  throw new Error(
    `${path}: no state_dict found: the top-level dict has keys [${keyList(root)}]; expected it to map names to tensors, ` +
    `or to hold such a dict under one of ${WRAPPER_KEYS.map((k) => `'${k}'`).join(', ')}`,
  );
}

function isCContiguous(size: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = size.length - 1; d >= 0; d--) {
    if (size[d] !== 1 && stride[d] !== expected) return false;
    expected *= size[d];
  }
  return true;
}

type Elements = { [i: number]: number | bigint; readonly length: number };

/** Copies the strided view (shape, stride, starting at `base`) of `src` into C-order `dst`. */
function gather(src: Elements, dst: Elements, shape: readonly number[], stride: readonly number[], base: number): void {
  if (dst.length === 0) return;
  if (shape.length === 0) {
    dst[0] = src[base];
    return;
  }
  const last = shape.length - 1;
  const inner = shape[last];
  const innerStride = stride[last];
  const index = new Array<number>(last).fill(0);
  let rowStart = base;
  let o = 0;
  for (let rows = dst.length / inner; rows > 0; rows--) {
    for (let j = 0, s = rowStart; j < inner; j++, s += innerStride) dst[o++] = src[s];
    for (let d = last - 1; d >= 0; d--) {
      rowStart += stride[d];
      if (++index[d] < shape[d]) break;
      rowStart -= stride[d] * shape[d];
      index[d] = 0;
    }
  }
}

interface Archive {
  path: string;
  handle: FileHandle;
  zip: ZipArchive;
  stem: string;
}

function storageEntry(a: Archive, s: StorageRef, key: string): ZipEntry {
  const name = `${a.stem}/data/${s.key}`;
  const entry = a.zip.entries.get(name);
  if (!entry) throw new Error(`${a.path}: tensor '${key}' refers to storage '${s.key}' but the archive has no entry '${name}'`);
  const want = s.numel * stItemSize(s.dtype);
  if (entry.size !== want) {
    throw new Error(`${a.path}: storage '${s.key}' should hold ${s.numel} ${s.dtype} elements (${want} bytes) but its archive entry has ${entry.size} bytes`);
  }
  return entry;
}

/**
 * Validates a tensor view against its storage up front, returning a lazy reader for it: nothing
 * is fetched or allocated until read(), so a tensor nobody reads costs nothing.
 */
function tensorRef(a: Archive, key: string, t: TensorRef, maxBytes: number): PtTensorRef {
  const entry = storageEntry(a, t.storage, key);
  const numel = t.size.reduce((x, y) => x * y, 1);
  if (!Number.isSafeInteger(numel)) throw new Error(`${a.path}: tensor '${key}' has an impossible size [${t.size.join(', ')}]`);
  // With non-negative strides the view spans storage elements offset .. offset + Σ(size−1)·stride.
  const extent = numel === 0 ? 0 : 1 + t.size.reduce((acc, n, d) => acc + (n - 1) * t.stride[d], 0);
  if (t.offset + extent > t.storage.numel) {
    throw new Error(
      `${a.path}: tensor '${key}' (storage offset ${t.offset}, size [${t.size.join(', ')}], stride [${t.stride.join(', ')}]) ` +
      `needs storage elements up to ${t.offset + extent} but storage '${t.storage.key}' holds only ${t.storage.numel}`,
    );
  }
  const dtype = t.storage.dtype;
  const shape = [...t.size];
  const stride = [...t.stride];
  const broadcast = numel > extent || (numel > 0 && shape.some((n, d) => n > 1 && stride[d] === 0));
  const spanBytes = extent * stItemSize(dtype);
  const outBytes = numel * (dtype === 'F16' || dtype === 'BF16' ? stItemSize('F32') : stItemSize(dtype));
  const checkReadable = (opts: ReadTensorOptions = {}): void => {
    const what = `${a.path}: tensor '${key}' of shape [${shape.join(', ')}] (${numel} elements, strides [${stride.join(', ')}])`;
    if (broadcast && !opts.expandViews) {
      throw new Error(
        `${what} is a broadcast view repeating ${extent} stored element${extent === 1 ? '' : 's'} (such as expand() makes); ` +
        `expanded it takes ${outBytes} bytes, so it is read only on request (expandViews: true; mdt convert --expand-views)`,
      );
    }
    if (numel > MAX_TENSOR_ELEMENTS) throw new Error(`${what} exceeds the limit of ${MAX_TENSOR_ELEMENTS} elements per tensor`);
    if (outBytes > maxBytes) throw new Error(`${what} takes ${outBytes} bytes when read, over the limit of ${maxBytes} bytes per tensor (maxTensorBytes)`);
    if (spanBytes > maxBytes) {
      throw new Error(`${what} is read from a span of ${extent} stored elements (${spanBytes} bytes), over the limit of ${maxBytes} bytes per tensor (maxTensorBytes)`);
    }
  };
  return {
    key,
    dtype,
    shape,
    stride,
    storageOffset: t.offset,
    broadcast,
    checkReadable,
    async read(opts?: ReadTensorOptions): Promise<StTensor> {
      checkReadable(opts);
      const span = allocStored(dtype, extent, opts?.scratch);
      const bytes = bytesOf(span);
      const start = (await a.zip.dataOffset(entry)) + t.offset * stItemSize(dtype);
      await readExactlyAt(a.handle, bytes, start, `${a.path}, tensor '${key}'`);
      // The archive's CRC covers the whole storage; check it whenever this read covered all of it.
      if (bytes.byteLength === entry.size && crc32(bytes) !== entry.crc32) {
        throw new Error(`${a.path}: storage '${t.storage.key}' (tensor '${key}') fails its CRC check; the file is corrupt`);
      }
      let stored = span;
      if (!isCContiguous(shape, stride)) {
        stored = allocStored(dtype, numel);
        gather(span, stored, shape, stride, 0);
      }
      return { dtype, shape: [...shape], data: fromStored(dtype, stored) };
    },
  };
}

/** Opens a torch.save checkpoint and lists the tensors of its state_dict without reading their data. */
export async function openTorchCheckpoint(path: string, opts: OpenTorchOptions = {}): Promise<TorchCheckpoint> {
  const handle = await open(path, 'r');
  try {
    const zip = await openZip(handle, (await handle.stat()).size, path);
    const pickles = [...zip.entries.values()].filter((e) => /^[^/]+\/data\.pkl$/.test(e.name));
    if (pickles.length !== 1) {
      const names = [...zip.entries.keys()].slice(0, 5).join(', ');
      throw new Error(
        `${path}: expected exactly one '<name>/data.pkl' entry as torch.save writes, found ${pickles.length} (entries: ${names}${zip.entries.size > 5 ? ', ...' : ''})`,
      );
    }
    const pkl = pickles[0];
    const stem = pkl.name.slice(0, -'/data.pkl'.length);
    const archive: Archive = { path, handle, zip, stem };
    const byteorder = zip.entries.get(`${stem}/byteorder`);
    if (byteorder) {
      const text = new Uint8Array(Math.min(byteorder.size, 16));
      await readExactlyAt(handle, text, await zip.dataOffset(byteorder), path);
      const order = new TextDecoder().decode(text);
      if (order !== 'little') throw new Error(`${path}: storages are stored '${order}'-endian; only little-endian checkpoints are supported`);
    }
    if (pkl.size > MAX_PICKLE_BYTES) throw new Error(`${path}: ${pkl.name} is ${pkl.size} bytes, too large for a checkpoint's object pickle`);
    const pickleBytes = new Uint8Array(pkl.size);
    await readExactlyAt(handle, pickleBytes, await zip.dataOffset(pkl), `${path}: ${pkl.name}`);
    if (crc32(pickleBytes) !== pkl.crc32) throw new Error(`${path}: ${pkl.name} fails its CRC check; the file is corrupt`);
    const root = unpickle(pickleBytes, `${path}: ${pkl.name}`, { maxSlots: opts.maxPickleSlots });
    const { dict, wrapperKey, extra } = findStateDict(root, opts.prefer ?? 'ema', path, opts.key);
    const maxBytes = opts.maxTensorBytes ?? MAX_TENSOR_BYTES;
    const tensors = [...dict.map].map(([k, t]) => tensorRef(archive, k as string, t as TensorRef, maxBytes));
    let closed = false;
    return {
      tensors,
      wrapperKey,
      extra,
      async close(): Promise<void> {
        if (closed) return;
        closed = true;
        await handle.close();
      },
    };
  } catch (e) {
    await handle.close();
    throw e;
  }
}

function writableDtype(t: PtTensorRef): StWritableDtype {
  return t.dtype === 'F16' || t.dtype === 'BF16' ? 'F32' : t.dtype;
}

/**
 * Converts a torch.save checkpoint's state_dict to safetensors, one tensor at a time (memory stays
 * around the largest tensor), writing atomically; broadcast views are refused unless `expandViews`.
 * Returns the tensor count and the output file size.
 */
export async function convertTorchToSafetensors(inPath: string, outPath: string, opts: ConvertTorchOptions = {}): Promise<{ count: number; bytes: number }> {
  const ckpt = await openTorchCheckpoint(inPath, opts);
  try {
    const halves = ckpt.tensors.filter((t) => t.dtype === 'F16' || t.dtype === 'BF16');
    if (halves.length > 0 && !opts.fp16ToFp32) {
      throw new Error(
        `${inPath}: ${halves.length} tensors are half precision (first: '${halves[0].key}', ${halves[0].dtype}); ` +
        'pass --fp16-to-fp32 (fp16ToFp32: true) to store them as float32',
      );
    }
    // Refuse before writing anything rather than after writing gigabytes.
    for (const t of ckpt.tensors) t.checkReadable(opts);
    const sources = ckpt.tensors.map((t): StTensorSource => ({
      name: t.key,
      dtype: writableDtype(t),
      shape: t.shape,
      load: async (): Promise<StData> => (await t.read(opts)).data,
    }));
    const metadata: Record<string, string> = { format: 'pt', converted_from: basename(inPath) };
    if (ckpt.wrapperKey !== null) metadata.state_dict_key = ckpt.wrapperKey;
    const { bytes } = await writeSafetensorsStreaming(outPath, sources, metadata, opts.onProgress);
    return { count: sources.length, bytes };
  } finally {
    await ckpt.close();
  }
}
