// A whitelist pickle interpreter for torch.save's data.pkl. It builds plain values and lazy
// tensor/storage references; it never imports or calls anything, and any global outside the short
// list a state_dict needs is refused (a pickle that names other globals can run code in PyTorch).
import type { StDtype } from '../safetensors.ts';

export class PyTuple {
  constructor(readonly items: readonly PyValue[]) {}
}
export class PyDict {
  readonly map = new Map<PyValue, PyValue>();
  constructor(readonly ordered: boolean) {}
}
/** A whitelisted global; only meaningful as the callable of REDUCE/NEWOBJ or inside a persistent id. */
export class PyGlobal {
  constructor(readonly qualname: string) {}
}
/** `('storage', storage_type, key, location, numel)`: the raw bytes live in the archive at `data/<key>`. */
export class StorageRef {
  constructor(readonly dtype: StDtype, readonly key: string, readonly location: string, readonly numel: number) {}
}
/** `_rebuild_tensor_v2(storage, offset, size, stride, ...)`: a view into a storage, in elements. */
export class TensorRef {
  constructor(readonly storage: StorageRef, readonly offset: number, readonly size: readonly number[], readonly stride: readonly number[]) {}
}
/**
 * An instance of an inert record class (`argparse.Namespace`, which training scripts save as
 * `args`): its class name and the attribute dict BUILD gave it. Nothing is constructed or called.
 */
export class PyRecord {
  readonly fields = new Map<string, PyValue>();
  constructor(readonly qualname: string) {}
}
export type PyValue =
  | null | boolean | number | bigint | string | Uint8Array
  | PyValue[] | PyTuple | PyDict | PyGlobal | PyRecord | StorageRef | TensorRef;

const ORDERED_DICT = 'collections.OrderedDict';
const REBUILD_TENSOR = 'torch._utils._rebuild_tensor_v2';
const REBUILD_PARAMETER = 'torch._utils._rebuild_parameter';
const STORAGE_DTYPES: ReadonlyMap<string, StDtype> = new Map([
  ['torch.FloatStorage', 'F32'],
  ['torch.DoubleStorage', 'F64'],
  ['torch.LongStorage', 'I64'],
  ['torch.IntStorage', 'I32'],
  ['torch.HalfStorage', 'F16'],
  ['torch.BFloat16Storage', 'BF16'],
]);
/** Classes whose instances are plain attribute records: NEWOBJ + BUILD make a PyRecord of them. */
const RECORD_CLASSES: readonly string[] = ['argparse.Namespace'];
const ALLOWED_GLOBALS: readonly string[] = [ORDERED_DICT, REBUILD_TENSOR, REBUILD_PARAMETER, ...STORAGE_DTYPES.keys(), ...RECORD_CLASSES];

// Names of every pickle opcode, so refusals can say which one was met. The one-character
// opcodes are listed as <char><name>; the protocol 2+ opcodes by code.
const OPCODE_NAMES: ReadonlyMap<number, string> = new Map([
  ...'(MARK .STOP 0POP 1POP_MARK 2DUP FFLOAT IINT JBININT KBININT1 LLONG MBININT2 NNONE PPERSID QBINPERSID RREDUCE SSTRING TBINSTRING USHORT_BINSTRING VUNICODE XBINUNICODE aAPPEND bBUILD cGLOBAL dDICT }EMPTY_DICT eAPPENDS gGET hBINGET iINST jLONG_BINGET lLIST ]EMPTY_LIST oOBJ pPUT qBINPUT rLONG_BINPUT sSETITEM tTUPLE )EMPTY_TUPLE uSETITEMS GBINFLOAT BBINBYTES CSHORT_BINBYTES'
    .split(' ')
    .map((s): [number, string] => [s.charCodeAt(0), s.slice(1)]),
  ...'PROTO NEWOBJ EXT1 EXT2 EXT4 TUPLE1 TUPLE2 TUPLE3 NEWTRUE NEWFALSE LONG1 LONG4 SHORT_BINUNICODE BINUNICODE8 BINBYTES8 EMPTY_SET ADDITEMS FROZENSET NEWOBJ_EX STACK_GLOBAL MEMOIZE FRAME BYTEARRAY8 NEXT_BUFFER READONLY_BUFFER'
    .split(' ')
    .map((name, i): [number, string] => [0x80 + i, name]),
]);

export function describePy(v: PyValue): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return `list of ${v.length}`;
  if (v instanceof PyTuple) return `tuple of ${v.items.length}`;
  if (v instanceof PyDict) return `${v.ordered ? 'OrderedDict' : 'dict'} of ${v.map.size}`;
  if (v instanceof PyGlobal) return v.qualname;
  if (v instanceof PyRecord) return `${v.qualname} of ${v.fields.size} fields`;
  if (v instanceof StorageRef) return `storage '${v.key}'`;
  if (v instanceof TensorRef) return `tensor ${v.storage.dtype} [${v.size.join(', ')}]`;
  if (v instanceof Uint8Array) return `bytes of ${v.length}`;
  return `${typeof v} ${String(v)}`;
}

/**
 * Default for `maxSlots`: far above any real checkpoint (a state_dict takes a few dozen slots per
 * tensor) and under V8's 2^24-entry limit on one Map (a dict or the memo); at worst (all empty
 * dicts or lists) the graph then holds about 700 MB.
 */
const MAX_PICKLE_SLOTS = 10_000_000;
// A dict's Map costs about four times what a list, tuple or short string does.
const DICT_SLOTS = 4;

export interface UnpickleOptions {
  /** Refuse a pickle whose object graph takes more slots than this (see `unpickle`). */
  maxSlots?: number;
}

/**
 * Runs the pickle in `bytes`; `where` names it in errors ("file.pt: archive/data.pkl"). A memo
 * GET yields the very object that was PUT, as in Python, so a shared reference costs one slot.
 * Each value pushed or memoised takes a slot (a new dict takes four): every container item, stack
 * entry and memo entry was first pushed or memoised, so the slot count bounds the graph's memory.
 */
export function unpickle(bytes: Uint8Array, where: string, opts: UnpickleOptions = {}): PyValue {
  const maxSlots = opts.maxSlots ?? MAX_PICKLE_SLOTS;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const utf8 = new TextDecoder('utf-8');
  const stack: PyValue[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  let pos = 0;
  let opStart = 0;
  let slots = 0;

  const fail = (msg: string): never => {
    throw new Error(`${where}: pickle byte ${opStart}: ${msg}`);
  };
  const need = (n: number): number => {
    if (n < 0 || pos + n > bytes.length) fail(`needs ${n} more bytes but the pickle ends at byte ${bytes.length} (truncated)`);
    const at = pos;
    pos += n;
    return at;
  };
  const take = (n: number): Uint8Array => bytes.subarray(need(n), pos);
  const u8 = (): number => view.getUint8(need(1));
  const u32 = (): number => view.getUint32(need(4), true);
  const u64 = (): number => {
    const v = view.getBigUint64(need(8), true);
    if (v > BigInt(bytes.length)) fail(`length ${v} exceeds the pickle size`);
    return Number(v);
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, pos);
    if (end < 0) fail('GLOBAL name is not newline-terminated (truncated)');
    const s = utf8.decode(bytes.subarray(pos, end));
    pos = end + 1;
    return s;
  };
  const pop = (): PyValue => {
    if (stack.length === 0 || (marks.length > 0 && stack.length === marks[marks.length - 1])) fail('stack underflow');
    return stack.pop()!;
  };
  const top = (): PyValue => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const count = (n: number): void => {
    slots += n;
    if (slots > maxSlots) {
      fail(`the pickle's object graph exceeds the limit of ${maxSlots} slots (one per value pushed or memoised, ${DICT_SLOTS} per new dict); a weights checkpoint needs far fewer`);
    }
  };
  const push = (v: PyValue): void => {
    count(1);
    stack.push(v);
  };
  const newDict = (ordered: boolean): PyDict => {
    count(DICT_SLOTS - 1);
    return new PyDict(ordered);
  };
  const put = (idx: number): void => {
    count(1);
    memo.set(idx, top());
  };
  const popMark = (): PyValue[] => {
    const m = marks.pop();
    if (m === undefined) fail('no MARK to pop to');
    return stack.splice(m!);
  };
  const signedLittle = (b: Uint8Array): number | bigint => {
    if (b.length > 64) fail(`a ${b.length}-byte integer is implausible in a checkpoint`);
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
    if (b.length > 0 && b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };
  const global = (qualname: string): PyGlobal => {
    if (!ALLOWED_GLOBALS.includes(qualname)) {
      fail(`refusing global '${qualname}': a weights checkpoint may only use ${ALLOWED_GLOBALS.join(', ')} (anything else could run code when loaded by PyTorch)`);
    }
    return new PyGlobal(qualname);
  };
  const int = (v: PyValue, what: string): number => {
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${what} must be a non-negative integer, got ${describePy(v)}`);
    return v as number;
  };
  const ints = (v: PyValue, what: string): number[] => {
    if (!(v instanceof PyTuple)) return fail(`${what} must be a tuple of integers, got ${describePy(v)}`);
    return v.items.map((x) => int(x, what));
  };
  const call = (fn: PyValue, args: PyValue): PyValue => {
    if (!(fn instanceof PyGlobal)) return fail(`REDUCE on ${describePy(fn)}, which is not a callable global`);
    if (!(args instanceof PyTuple)) return fail(`REDUCE arguments must be a tuple, got ${describePy(args)}`);
    const a = args.items;
    switch (fn.qualname) {
      case ORDERED_DICT:
        if (a.length !== 0) fail(`${ORDERED_DICT} is only supported without arguments, got ${a.length}`);
        return newDict(true);
      case REBUILD_TENSOR: {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (a.length !== 6 && a.length !== 7) fail(`${REBUILD_TENSOR} takes 6 or 7 arguments, got ${a.length}`);
        const storage = a[0];
        if (!(storage instanceof StorageRef)) return fail(`${REBUILD_TENSOR}: first argument must be a storage, got ${describePy(storage)}`);
        const size = ints(a[2], 'tensor size');
        const stride = ints(a[3], 'tensor stride');
        if (size.length !== stride.length) fail(`tensor size [${size}] and stride [${stride}] differ in length`);
        return new TensorRef(storage, int(a[1], 'storage offset'), size, stride);
      }
      case REBUILD_PARAMETER:
        if (a.length !== 3 || !(a[0] instanceof TensorRef)) fail(`${REBUILD_PARAMETER} expects (tensor, requires_grad, hooks), got ${a.length} arguments`);
        return a[0];
      default:
        return fail(`${fn.qualname} may not be called (it may only appear inside a storage reference)`);
    }
  };
  const storageRef = (pid: PyValue): StorageRef => {
    const t = pid instanceof PyTuple ? pid.items : [];
    const [tag, type, key, location, numel] = t;
    if (t.length !== 5 || tag !== 'storage' || !(type instanceof PyGlobal) || typeof key !== 'string' || typeof location !== 'string') {
      return fail(`persistent id must be ('storage', storage_type, key, location, numel), got ${describePy(pid)}`);
    }
    const dtype = STORAGE_DTYPES.get(type.qualname);
    if (dtype === undefined) return fail(`persistent id names ${type.qualname}, which is not a storage type`);
    return new StorageRef(dtype, key, location, int(numel, 'storage numel'));
  };

  while (pos < bytes.length) {
    opStart = pos;
    const op = u8();
    switch (op) {
      case 0x80: { // PROTO
        const proto = u8();
        if (proto > 5) fail(`unsupported pickle protocol ${proto}`);
        break;
      }
      case 0x95: need(8); break; // FRAME: framing is only a buffering hint
      case 0x2e: { // STOP
        const result = pop();
        if (stack.length !== 0 || marks.length !== 0) fail(`STOP with ${stack.length} values and ${marks.length} marks left over`);
        return result;
      }
      case 0x28: marks.push(stack.length); break; // MARK
      case 0x7d: push(newDict(false)); break; // EMPTY_DICT
      case 0x5d: push([]); break; // EMPTY_LIST
      case 0x29: push(new PyTuple([])); break; // EMPTY_TUPLE
      case 0x58: push(utf8.decode(take(u32()))); break; // BINUNICODE
      case 0x8d: push(utf8.decode(take(u64()))); break; // BINUNICODE8
      case 0x8c: push(utf8.decode(take(u8()))); break; // SHORT_BINUNICODE
      case 0x54: { // BINSTRING (Python 2 str; torch.load decodes these as UTF-8)
        const n = view.getInt32(need(4), true);
        push(utf8.decode(take(n)));
        break;
      }
      case 0x55: push(utf8.decode(take(u8()))); break; // SHORT_BINSTRING
      case 0x42: push(take(u32()).slice()); break; // BINBYTES
      case 0x43: push(take(u8()).slice()); break; // SHORT_BINBYTES
      case 0x4a: push(view.getInt32(need(4), true)); break; // BININT
      case 0x4b: push(u8()); break; // BININT1
      case 0x4d: push(view.getUint16(need(2), true)); break; // BININT2
      case 0x8a: push(signedLittle(take(u8()))); break; // LONG1
      case 0x8b: push(signedLittle(take(u32()))); break; // LONG4
      case 0x47: push(view.getFloat64(need(8), false)); break; // BINFLOAT (big-endian)
      case 0x4e: push(null); break; // NONE
      case 0x88: push(true); break; // NEWTRUE
      case 0x89: push(false); break; // NEWFALSE
      case 0x74: push(new PyTuple(popMark())); break; // TUPLE
      case 0x85: push(new PyTuple([pop()])); break; // TUPLE1
      case 0x86: { // TUPLE2
        const b = pop();
        push(new PyTuple([pop(), b]));
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop();
        const b = pop();
        push(new PyTuple([pop(), b, c]));
        break;
      }
      case 0x73: { // SETITEM
        const value = pop();
        const key = pop();
        const d = top();
        if (!(d instanceof PyDict)) fail(`SETITEM on ${describePy(d)}`);
        (d as PyDict).map.set(key, value);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        const d = top();
        if (!(d instanceof PyDict)) fail(`SETITEMS on ${describePy(d)}`);
        if (items.length % 2 !== 0) fail(`SETITEMS with an odd number (${items.length}) of keys and values`);
        for (let i = 0; i < items.length; i += 2) (d as PyDict).map.set(items[i], items[i + 1]);
        break;
      }
      case 0x61: { // APPEND
        const v = pop();
        const l = top();
        if (!Array.isArray(l)) fail(`APPEND on ${describePy(l)}`);
        (l as PyValue[]).push(v);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark();
        const l = top();
        if (!Array.isArray(l)) fail(`APPENDS on ${describePy(l)}`);
        for (const v of items) (l as PyValue[]).push(v);
        break;
      }
      case 0x71: put(u8()); break; // BINPUT
      case 0x72: put(u32()); break; // LONG_BINPUT
      case 0x94: put(memo.size); break; // MEMOIZE
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const idx = op === 0x68 ? u8() : u32();
        if (!memo.has(idx)) fail(`memo slot ${idx} was never stored`);
        push(memo.get(idx)!);
        break;
      }
      case 0x63: { // GLOBAL
        const module = line();
        push(global(`${module}.${line()}`));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        push(global(`${module}.${name}`));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop();
        push(call(pop(), args));
        break;
      }
      case 0x81: { // NEWOBJ: cls.__new__(cls, *args); an empty OrderedDict, or a record to be filled by BUILD
        const args = pop();
        const cls = pop();
        const name = cls instanceof PyGlobal ? cls.qualname : '';
        if ((name !== ORDERED_DICT && !RECORD_CLASSES.includes(name)) || !(args instanceof PyTuple) || args.items.length !== 0) {
          fail(`NEWOBJ is only supported for ${[ORDERED_DICT, ...RECORD_CLASSES].map((c) => `${c}()`).join(', ')}, got ${describePy(cls)}`);
        }
        push(name === ORDERED_DICT ? newDict(true) : (count(DICT_SLOTS - 1), new PyRecord(name)));
        break;
      }
      case 0x51: push(storageRef(pop())); break; // BINPERSID
      case 0x62: { // BUILD: sets attributes (a state_dict's _metadata, which carries no tensor data; a record's fields)
        const state = pop();
        const obj = top();
        if (obj instanceof PyRecord) {
          // object.__setstate__ takes the instance dict (string keys), as `vars(args)` is.
          if (!(state instanceof PyDict) || [...state.map.keys()].some((k) => typeof k !== 'string')) fail(`BUILD of ${obj.qualname} needs a dict of attribute names, got ${describePy(state)}`);
          for (const [k, v] of (state as PyDict).map) obj.fields.set(k as string, v);
        } else if (!(obj instanceof PyDict) || !(state instanceof PyDict || state instanceof PyTuple || state === null)) {
          fail(`BUILD with ${describePy(state)} on ${describePy(obj)} is not supported`);
        }
        break;
      }
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: push(top()); break; // DUP
      default: {
        const name = OPCODE_NAMES.get(op);
        fail(`opcode ${name ?? 'unknown'} (0x${op.toString(16).padStart(2, '0')}) is not allowed in a weights checkpoint`);
      }
    }
  }
  return fail('the pickle ends without STOP (truncated)');
}
