import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  bernoulli, foldIn, keyFromJSON, keyFromSeed, keyToJSON, normal, permutation, philox4x32,
  randint, split, uniform, uniform64,
} from '../dsl/random.ts';
import type { Key } from '../dsl/random.ts';

const N = 100_000;

const arbKey = fc.tuple(fc.nat({ max: 0xffffffff }), fc.nat({ max: 0xffffffff })).map(([a, b]) => keyFromJSON([a, b]));

function mean(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i];
  return s / a.length;
}

function variance(a: ArrayLike<number>): number {
  const m = mean(a);
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] - m) ** 2;
  return s / a.length;
}

function correlation(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const ma = mean(a);
  const mb = mean(b);
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < a.length; i++) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) ** 2;
    sbb += (b[i] - mb) ** 2;
  }
  return sab / Math.sqrt(saa * sbb);
}

function isPermutation(p: Int32Array): boolean {
  const seen = new Uint8Array(p.length);
  for (const v of p) {
    if (v < 0 || v >= p.length || seen[v]) return false;
    seen[v] = 1;
  }
  return true;
}

const hex = (a: Uint32Array) => Array.from(a, (x) => x.toString(16).padStart(8, '0')).join(' ');

test('philox4x32-10 matches the Random123 known-answer vectors', () => {
  assert.equal(hex(philox4x32([0, 0, 0, 0], [0, 0])), '6627e8d5 e169c58d bc57ac4c 9b00dbd8');
  const ff = 0xffffffff;
  assert.equal(hex(philox4x32([ff, ff, ff, ff], [ff, ff])), '408f276d 41c83b0e a20bc7c6 6d5451fd');
  assert.equal(
    hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])),
    'd16cfe09 94fdcceb 5001e420 24126ea1',
  );
});

test('keyFromSeed follows the JAX layout and accepts any safe integer', () => {
  assert.deepEqual(keyToJSON(keyFromSeed(0)), [0, 0]);
  assert.deepEqual(keyToJSON(keyFromSeed(42)), [0, 42]);
  assert.deepEqual(keyToJSON(keyFromSeed(2 ** 32 + 5)), [1, 5]);
  assert.deepEqual(keyToJSON(keyFromSeed(-1)), [0xffffffff, 0xffffffff]);
  assert.deepEqual(keyToJSON(keyFromSeed(Number.MAX_SAFE_INTEGER)), [0x1fffff, 0xffffffff]);
  assert.throws(() => keyFromSeed(1.5), /safe integer seed, got 1.5/);
  assert.throws(() => keyFromSeed(2 ** 60), /safe integer/);
  assert.ok(Object.isFrozen(keyFromSeed(3)));
});

test('same key gives identical arrays; shorter draws are prefixes of longer ones', () => {
  const k = keyFromSeed(7);
  assert.deepEqual(uniform(k, 1000), uniform(keyFromSeed(7), 1000));
  assert.deepEqual(normal(k, 1001), normal(k, 1001));
  assert.deepEqual(uniform64(k, 10), uniform64(k, 10));
  assert.deepEqual(randint(k, 500, -3, 11), randint(k, 500, -3, 11));
  assert.deepEqual(permutation(k, 300), permutation(k, 300));
  assert.deepEqual(bernoulli(k, 300, 0.3), bernoulli(k, 300, 0.3));
  assert.deepEqual(uniform(k, 5), uniform(k, 17).subarray(0, 5));
  assert.deepEqual(normal(k, 3), normal(k, 8).subarray(0, 3));
  assert.deepEqual(split(k, 3), split(k, 5).slice(0, 3));
  assert.notDeepEqual(uniform(k, 16), uniform(keyFromSeed(8), 16));
});

test('split keys differ from each other and from the parent, and give uncorrelated streams', () => {
  const k = keyFromSeed(0);
  const ks = split(k, 64);
  assert.equal(split(k).length, 2);
  assert.equal(new Set(ks.map((x) => keyToJSON(x).join(':'))).size, 64);
  assert.ok(!ks.some((x) => x.k0 === k.k0 && x.k1 === k.k1));
  const [a, b] = split(k);
  const ua = uniform(a, N);
  const ub = uniform(b, N);
  const up = uniform(k, N);
  const bound = 4 / Math.sqrt(N);
  assert.ok(Math.abs(correlation(ua, ub)) < bound, `corr(a, b) = ${correlation(ua, ub)}`);
  assert.ok(Math.abs(correlation(ua, up)) < bound, `corr(a, parent) = ${correlation(ua, up)}`);
  // Lag-1 autocorrelation within one stream.
  assert.ok(Math.abs(correlation(ua.subarray(0, N - 1), ua.subarray(1))) < bound);
});

test('foldIn is deterministic and distinct for distinct data, and differs from split', () => {
  const k = keyFromSeed(123);
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) seen.add(keyToJSON(foldIn(k, i)).join(':'));
  for (const d of [-1, -2, 2 ** 32, 2 ** 40 + 1, Number.MAX_SAFE_INTEGER]) seen.add(keyToJSON(foldIn(k, d)).join(':'));
  assert.equal(seen.size, 2005);
  assert.deepEqual(foldIn(k, 5), foldIn(keyFromSeed(123), 5));
  assert.notDeepEqual(foldIn(k, 0), split(k)[0]);
  assert.notDeepEqual(foldIn(k, 3), foldIn(keyFromSeed(124), 3));
  assert.throws(() => foldIn(k, 0.5), /safe integer, got 0.5/);
});

test('uniform and uniform64 have the moments of U[0, 1)', () => {
  const u = uniform(keyFromSeed(1), N);
  const d = uniform64(keyFromSeed(2), N);
  for (const a of [u, d]) {
    assert.ok(Math.abs(mean(a) - 0.5) < 0.005, `mean ${mean(a)}`);
    assert.ok(Math.abs(variance(a) - 1 / 12) < 0.002, `var ${variance(a)}`);
  }
  // float32 draws are multiples of 2^-24; float64 draws use finer bits.
  assert.ok(u.every((x) => Number.isInteger(x * 2 ** 24)));
  assert.ok(d.some((x) => !Number.isInteger(x * 2 ** 24)));
});

test('normal has mean 0, variance 1 and Gaussian tails', () => {
  const z = normal(keyFromSeed(3), N);
  assert.ok(Math.abs(mean(z)) < 0.015, `mean ${mean(z)}`);
  assert.ok(Math.abs(variance(z) - 1) < 0.02, `var ${variance(z)}`);
  assert.ok(z.every(Number.isFinite));
  let beyond2 = 0;
  for (const x of z) if (Math.abs(x) > 2) beyond2++;
  // P(|Z| > 2) = 0.0455
  assert.ok(Math.abs(beyond2 / N - 0.0455) < 0.004, `tail ${beyond2 / N}`);
  assert.equal(normal(keyFromSeed(3), 0).length, 0);
  assert.equal(normal(keyFromSeed(3), 1).length, 1);
});

test('randint stays in [lo, hi) and is uniform (chi-square)', () => {
  const bins = 10;
  const r = randint(keyFromSeed(4), N, -5, -5 + bins);
  const counts = new Array<number>(bins).fill(0);
  for (const v of r) {
    assert.ok(v >= -5 && v < 5);
    counts[v + 5]++;
  }
  const e = N / bins;
  const chi2 = counts.reduce((s, c) => s + (c - e) ** 2 / e, 0);
  assert.ok(chi2 < 27.88, `chi2 = ${chi2} (df 9, p = 0.001 critical 27.88)`);
  const wide = randint(keyFromSeed(5), 1000, -(2 ** 31), 2 ** 31);
  assert.ok(wide.some((v) => v < 0) && wide.some((v) => v > 0));
  assert.deepEqual(randint(keyFromSeed(5), 10, 3, 4), new Int32Array(10).fill(3));
  assert.throws(() => randint(keyFromSeed(5), 1, 4, 4), /lo < hi.*lo=4, hi=4/);
  assert.throws(() => randint(keyFromSeed(5), 1, 0, 2 ** 31 + 1), /hi <= 2\^31/);
});

test('permutation is a permutation and each position is uniform', () => {
  assert.ok(isPermutation(permutation(keyFromSeed(6), 10_000)));
  assert.deepEqual(permutation(keyFromSeed(6), 0), new Int32Array(0));
  assert.deepEqual(permutation(keyFromSeed(6), 1), new Int32Array([0]));
  // Where element 0 lands over many keys: uniform over 5 positions.
  const counts = new Array<number>(5).fill(0);
  const base = keyFromSeed(9);
  const trials = 20_000;
  for (let t = 0; t < trials; t++) counts[permutation(foldIn(base, t), 5).indexOf(0)]++;
  const e = trials / 5;
  const chi2 = counts.reduce((s, c) => s + (c - e) ** 2 / e, 0);
  assert.ok(chi2 < 18.47, `chi2 = ${chi2} (df 4, p = 0.001 critical 18.47)`);
});

test('bernoulli has rate p and handles the edges', () => {
  const b = bernoulli(keyFromSeed(10), N, 0.3);
  assert.ok(b.every((x) => x === 0 || x === 1));
  assert.ok(Math.abs(mean(b) - 0.3) < 0.006, `rate ${mean(b)}`);
  assert.ok(bernoulli(keyFromSeed(10), 1000, 0).every((x) => x === 0));
  assert.ok(bernoulli(keyFromSeed(10), 1000, 1).every((x) => x === 1));
  assert.throws(() => bernoulli(keyFromSeed(10), 1, 1.5), /p in \[0, 1\], got 1.5/);
  assert.throws(() => bernoulli(keyFromSeed(10), 1, Number.NaN), /p in \[0, 1\]/);
});

test('keyToJSON / keyFromJSON round-trip and reject malformed input', () => {
  const k = split(keyFromSeed(11))[1];
  const back = keyFromJSON(JSON.parse(JSON.stringify(keyToJSON(k))));
  assert.deepEqual(back, k);
  assert.deepEqual(uniform(back, 8), uniform(k, 8));
  for (const bad of [null, 3, '1,2', [1], [1, 2, 3], [1, -1], [1, 2 ** 32], [0.5, 1], ['1', 2], { k0: 1, k1: 2 }]) {
    assert.throws(() => keyFromJSON(bad), /keyFromJSON: expected \[k0, k1\].*got/);
  }
});

test('bad counts and keys are rejected with what was given', () => {
  const k = keyFromSeed(0);
  assert.throws(() => uniform(k, -1), /uniform: expected n to be an integer.*got -1/);
  assert.throws(() => normal(k, 2.5), /got 2.5/);
  assert.throws(() => split(k, -2), /split: expected n/);
  assert.throws(() => uniform({ k0: -1, k1: 0 } as Key, 1), /uniform: expected a Key.*\{"k0":-1,"k1":0\}/);
  assert.throws(() => philox4x32([0, 0, 0, 0.5], [0, 0]), /philox4x32: expected 4 counter/);
});

test('property: uniform lies in [0, 1) and normal is finite for any key', () => {
  fc.assert(
    fc.property(arbKey, fc.nat({ max: 300 }), (k, n) => {
      const u = uniform(k, n);
      const d = uniform64(k, n);
      return u.length === n && u.every((x) => x >= 0 && x < 1) && d.every((x) => x >= 0 && x < 1) &&
        normal(k, n).every(Number.isFinite);
    }),
  );
});

test('property: normal(key, n, from) is values from .. from + n of the stream, for odd and even ends', () => {
  fc.assert(
    fc.property(arbKey, fc.nat({ max: 200 }), fc.nat({ max: 200 }), (k, from, n) => {
      assert.deepEqual(normal(k, n, from), normal(k, from + n).subarray(from));
      assert.deepEqual(normal(k, from + n), Float32Array.from([...normal(k, from), ...normal(k, n, from)]));
    }),
  );
  assert.throws(() => normal(keyFromSeed(0), 2, -1), /normal: expected from to be an integer in \[0, \d+\], got -1/);
});

test('property: permutation is bijective for any n and key', () => {
  fc.assert(fc.property(arbKey, fc.nat({ max: 500 }), (k, n) => isPermutation(permutation(k, n))));
});

test('property: randint lands in [lo, hi) for any range', () => {
  fc.assert(
    fc.property(arbKey, fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.integer({ min: 1, max: 2 ** 32 }), (k, lo, width) => {
      const hi = Math.min(lo + width, 2 ** 31);
      return randint(k, 50, lo, hi).every((v) => v >= lo && v < hi);
    }),
  );
});

test('property: split and foldIn are pure functions of their inputs', () => {
  fc.assert(
    fc.property(arbKey, fc.nat({ max: 8 }), fc.maxSafeInteger(), (k, n, d) => {
      const again = keyFromJSON(keyToJSON(k));
      return JSON.stringify(split(k, n)) === JSON.stringify(split(again, n)) &&
        JSON.stringify(foldIn(k, d)) === JSON.stringify(foldIn(again, d));
    }),
  );
});
