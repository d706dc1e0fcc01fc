// Explicit, splittable, counter-based randomness (Philox4x32-10, Salmon et al. 2011).
// Numbers are produced in plain JS from a key and a counter, so the same key gives the
// same numbers on every backend, every run and every platform; callers turn them into
// tensors. Keys are values: nothing here holds hidden state.
//
// Counter layout of one Philox block: [i mod 2^32, floor(i / 2^32), domain, 0]. The
// domain word keeps the data stream, split() and foldIn() of one key apart, so
// drawing numbers from a key and splitting the same key never yield related bits.
// Data stream i-th 32-bit word = word (i mod 4) of block floor(i / 4); because of this,
// a shorter draw is always a prefix of a longer one from the same key.

export type Key = { readonly k0: number; readonly k1: number };

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

const DOMAIN_DATA = 0;
const DOMAIN_SPLIT = 1;
const DOMAIN_FOLD = 2;

const TWO32 = 4294967296;
const MAX_LENGTH = 2 ** 31 - 1;

/** High 32 bits of the 64-bit product of two uint32 (16-bit limbs keep every step exact in doubles). */
function mulhi(a: number, b: number): number {
  const a0 = a & 0xffff;
  const a1 = a >>> 16;
  const b0 = b & 0xffff;
  const b1 = b >>> 16;
  const t = a0 * b0;
  const w1 = a1 * b0 + (t >>> 16);
  const w2 = a0 * b1 + (w1 & 0xffff);
  return (a1 * b1 + (w1 >>> 16) + (w2 >>> 16)) >>> 0;
}

/** Philox4x32-10 block function, written into out[o..o+3]. */
function philoxInto(
  c0: number, c1: number, c2: number, c3: number,
  k0: number, k1: number,
  out: Uint32Array, o: number,
): void {
  for (let r = 0; r < 10; r++) {
    if (r > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi(M0, c0);
    const lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi(M1, c2);
    const lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  out[o] = c0;
  out[o + 1] = c1;
  out[o + 2] = c2;
  out[o + 3] = c3;
}

function isUint32(x: unknown): x is number {
  return typeof x === 'number' && Number.isInteger(x) && x >= 0 && x < TWO32;
}

function describe(v: unknown): string {
  let s: string;
  try {
    s = JSON.stringify(v) ?? String(v);
  } catch {
    s = String(v);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

function assertKey(key: Key, fn: string): void {
  if (key === null || typeof key !== 'object' || !isUint32(key.k0) || !isUint32(key.k1)) {
    throw new TypeError(`${fn}: expected a Key {k0, k1} of two uint32 words, got ${describe(key)}`);
  }
}

function assertCount(n: number, fn: string, what = 'n'): void {
  if (!Number.isInteger(n) || n < 0 || n > MAX_LENGTH) {
    throw new RangeError(`${fn}: expected ${what} to be an integer in [0, ${MAX_LENGTH}], got ${describe(n)}`);
  }
}

function makeKey(k0: number, k1: number): Key {
  return Object.freeze({ k0: k0 >>> 0, k1: k1 >>> 0 });
}

/** Raw Philox4x32-10: four counter words and two key words (uint32) to four output words. */
export function philox4x32(counter: readonly [number, number, number, number], key: readonly [number, number]): Uint32Array {
  if (counter.length !== 4 || !counter.every(isUint32) || key.length !== 2 || !key.every(isUint32)) {
    throw new TypeError(
      `philox4x32: expected 4 counter and 2 key uint32 words, got counter ${describe(counter)} and key ${describe(key)}`,
    );
  }
  const out = new Uint32Array(4);
  philoxInto(counter[0], counter[1], counter[2], counter[3], key[0], key[1], out, 0);
  return out;
}

/** Like jax.random.PRNGKey: the seed's 64-bit two's complement, high word first. */
export function keyFromSeed(seed: number): Key {
  if (!Number.isSafeInteger(seed)) {
    throw new TypeError(`keyFromSeed: expected a safe integer seed, got ${describe(seed)}`);
  }
  return makeKey(Math.floor(seed / TWO32) >>> 0, seed >>> 0);
}

function deriveKey(key: Key, lo: number, hi: number, domain: number): Key {
  const out = new Uint32Array(4);
  philoxInto(lo >>> 0, hi >>> 0, domain, 0, key.k0, key.k1, out, 0);
  return makeKey(out[0], out[1]);
}

export function split(key: Key, n = 2): Key[] {
  assertKey(key, 'split');
  assertCount(n, 'split');
  const keys: Key[] = new Array(n);
  for (let i = 0; i < n; i++) keys[i] = deriveKey(key, i, 0, DOMAIN_SPLIT);
  return keys;
}

/** Derives a key from any safe integer (e.g. a step index); negatives use 64-bit two's complement. */
export function foldIn(key: Key, data: number): Key {
  assertKey(key, 'foldIn');
  if (!Number.isSafeInteger(data)) {
    throw new TypeError(`foldIn: expected a safe integer, got ${describe(data)}`);
  }
  return deriveKey(key, data >>> 0, Math.floor(data / TWO32) >>> 0, DOMAIN_FOLD);
}

/** The first `count` words of the key's data stream. */
function words(key: Key, count: number, firstBlock = 0): Uint32Array {
  const blocks = Math.ceil(count / 4);
  const buf = new Uint32Array(blocks * 4);
  for (let i = 0; i < blocks; i++) {
    const b = firstBlock + i;
    philoxInto(b >>> 0, Math.floor(b / TWO32), DOMAIN_DATA, 0, key.k0, key.k1, buf, i * 4);
  }
  return count === buf.length ? buf : buf.subarray(0, count);
}

/** Sequential reader over the data stream, for samplers that consume a variable number of words. */
class WordStream {
  private block = 0;
  private pos = 4;
  private readonly buf = new Uint32Array(4);
  constructor(private readonly key: Key) {}

  next(): number {
    if (this.pos === 4) {
      philoxInto(this.block >>> 0, Math.floor(this.block / TWO32), DOMAIN_DATA, 0, this.key.k0, this.key.k1, this.buf, 0);
      this.block++;
      this.pos = 0;
    }
    return this.buf[this.pos++];
  }

  /** Unbiased integer in [0, range) for 1 <= range <= 2^32, by rejecting the incomplete top bucket. */
  below(range: number): number {
    const limit = TWO32 - (TWO32 % range);
    for (;;) {
      const w = this.next();
      if (w < limit) return w % range;
    }
  }
}

export function uniform(key: Key, n: number): Float32Array {
  assertKey(key, 'uniform');
  assertCount(n, 'uniform');
  const w = words(key, n);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (w[i] >>> 8) * 2 ** -24;
  return out;
}

function fillUniform64(w: Uint32Array, out: Float64Array): void {
  for (let i = 0; i < out.length; i++) {
    out[i] = ((w[2 * i] >>> 5) * 67108864 + (w[2 * i + 1] >>> 6)) * 2 ** -53;
  }
}

export function uniform64(key: Key, n: number): Float64Array {
  assertKey(key, 'uniform64');
  assertCount(n, 'uniform64');
  const out = new Float64Array(n);
  fillUniform64(words(key, 2 * n), out);
  return out;
}

/**
 * The n values from index `from` (default 0) of the key's stream of standard normals: pair p of
 * the stream comes from Philox block p alone, so normal(key, a + b) is normal(key, a) followed by
 * normal(key, b, a), and a part of a batch draws only its own values.
 */
export function normal(key: Key, n: number, from = 0): Float32Array {
  assertKey(key, 'normal');
  assertCount(n, 'normal');
  assertCount(from, 'normal', 'from');
  const p0 = Math.floor(from / 2);
  const pairs = Math.ceil((from + n) / 2) - p0;
  const u = new Float64Array(2 * pairs);
  fillUniform64(words(key, 4 * pairs, p0), u);
  const out = new Float32Array(n);
  for (let i = 0; i < pairs; i++) {
    // 1 - u lies in (0, 1], so the log is finite.
    const r = Math.sqrt(-2 * Math.log(1 - u[2 * i]));
    const theta = 2 * Math.PI * u[2 * i + 1];
    // Pair p0 + i is values 2(p0 + i) and the next: an odd `from` starts at the second.
    const at = 2 * (p0 + i) - from;
    if (at >= 0) out[at] = r * Math.cos(theta);
    if (at + 1 < n) out[at + 1] = r * Math.sin(theta);
  }
  return out;
}

export function randint(key: Key, n: number, lo: number, hi: number): Int32Array {
  assertKey(key, 'randint');
  assertCount(n, 'randint');
  if (!Number.isInteger(lo) || !Number.isInteger(hi) || lo < -(2 ** 31) || hi > 2 ** 31 || lo >= hi) {
    throw new RangeError(
      `randint: expected integers -2^31 <= lo < hi <= 2^31, got lo=${describe(lo)}, hi=${describe(hi)}`,
    );
  }
  const range = hi - lo;
  const s = new WordStream(key);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = lo + s.below(range);
  return out;
}

/** Fisher–Yates with unbiased bounded draws. */
export function permutation(key: Key, n: number): Int32Array {
  assertKey(key, 'permutation');
  assertCount(n, 'permutation');
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = i;
  const s = new WordStream(key);
  for (let i = n - 1; i > 0; i--) {
    const j = s.below(i + 1);
    const t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
  return out;
}

export function bernoulli(key: Key, n: number, p: number): Uint8Array {
  assertKey(key, 'bernoulli');
  assertCount(n, 'bernoulli');
  if (typeof p !== 'number' || !(p >= 0 && p <= 1)) {
    throw new RangeError(`bernoulli: expected a probability p in [0, 1], got ${describe(p)}`);
  }
  const u = uniform64(key, n);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = u[i] < p ? 1 : 0;
  return out;
}

export function keyToJSON(k: Key): [number, number] {
  assertKey(k, 'keyToJSON');
  return [k.k0, k.k1];
}

export function keyFromJSON(v: unknown): Key {
  if (!Array.isArray(v) || v.length !== 2 || !isUint32(v[0]) || !isUint32(v[1])) {
    throw new TypeError(`keyFromJSON: expected [k0, k1], two integers in [0, 4294967295], got ${describe(v)}`);
  }
  return makeKey(v[0], v[1]);
}
