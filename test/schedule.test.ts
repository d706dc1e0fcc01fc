import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { linearBetas, tablesFromBetas, f32 } from '../mdt/diffusion/schedule.ts';
import { spaceTimesteps, respacedTables } from '../mdt/diffusion/respace.ts';
import { powerCosineWeight, paperWeight, constantWeight, guidanceWeight } from '../mdt/diffusion/guidance-weight.ts';
import { minSnrWeight, minSnrWeights } from '../mdt/diffusion/min-snr.ts';

function assertRel(actual: number, expected: number, rtol: number, what: string): void {
  assert.ok(
    Math.abs(actual - expected) <= rtol * Math.abs(expected),
    `${what}: expected ${expected} (rtol ${rtol}), got ${actual}`,
  );
}

test('MDT-SPEC §11 vectors: cumulative alphas of the 1000-step schedule', () => {
  const tables = respacedTables(1000, '');
  assertRel(tables.alphasCumprod[0], 0.9999, 1e-12, 'ᾱ_0');
  assertRel(tables.alphasCumprod[499], 0.0785872429, 1e-9, 'ᾱ_499');
  assertRel(tables.alphasCumprod[999], 4.03582977e-5, 1e-8, 'ᾱ_999');
  assert.deepEqual(Array.from(tables.timestepMap), Array.from({ length: 1000 }, (_, i) => i));
});

test('MDT-SPEC §11 vectors: respaced 250 steps and their betas', () => {
  const tables = respacedTables(1000, '250');
  assert.equal(tables.T, 250);
  assert.deepEqual(Array.from(tables.timestepMap.subarray(0, 6)), [0, 4, 8, 12, 16, 20]);
  assert.deepEqual(Array.from(tables.timestepMap.subarray(246)), [987, 991, 995, 999]);
  assertRel(tables.betas[0], 1e-4, 1e-12, "β'_0");
  assertRel(tables.betas[1], 5.990656e-4, 1e-7, "β'_1");
  assertRel(tables.betas[249], 0.077519345, 1e-9, "β'_249");
});

test('MDT-SPEC §11 vectors: SNR and min-SNR-5 weights', () => {
  const tables = respacedTables(1000, '');
  const snr = (t: number) => tables.alphasCumprod[t] / (1 - tables.alphasCumprod[t]);
  assertRel(snr(0), 9999, 1e-9, 'SNR_0');
  assertRel(snr(100), 8.53667, 5e-6, 'SNR_100');
  assertRel(snr(200), 1.90991, 5e-6, 'SNR_200');
  const w = minSnrWeights(tables, 5);
  assertRel(w[0], 5.0005e-4, 1e-5, 'w(0)');
  assertRel(w[100], 0.585709, 1e-5, 'w(100)');
  assert.equal(w[200], 1);
  assert.equal(w[999], 1);
});

test('MDT-SPEC §7: power-cosine weights for w = 3.8', () => {
  const expected: Array<[number, number, number]> = [
    // [t, w_t, absolute tolerance of the spec's printed digits]
    [999, 1.0, 1e-4],
    [750, 1.0001, 1e-4],
    [500, 1.027, 1e-3],
    [250, 1.637, 1e-3],
    [100, 3.059, 1e-3],
    [0, 3.8, 1e-6],
  ];
  for (const [t, w, tol] of expected) {
    const got = powerCosineWeight(t, { scale: 3.8, power: 4 });
    assert.ok(Math.abs(got - w) <= tol, `w_${t}: expected ${w} ± ${tol}, got ${got}`);
  }
  for (const t of [0, 1, 250, 500, 999]) {
    const got = powerCosineWeight(t, { scale: 3.8, power: 0.01 });
    assert.ok(got >= 3.765 && got <= 3.8 + 1e-6, `s = 0.01, t = ${t}: expected ≈3.77–3.80, got ${got}`);
  }
});

test('FORMAT.md §8.1 respacing examples', () => {
  const fifty = Array.from(spaceTimesteps(1000, '50'));
  assert.equal(fifty.length, 50);
  assert.deepEqual(fifty.slice(0, 5), [0, 20, 41, 61, 82]);
  assert.deepEqual(fifty.slice(-2), [979, 999]);
  assert.deepEqual(Array.from(spaceTimesteps(1000, 'ddim25')), Array.from({ length: 25 }, (_, i) => 40 * i));
  assert.deepEqual(Array.from(spaceTimesteps(1000, '')), Array.from({ length: 1000 }, (_, i) => i));
});

test('multi-section respacing follows ADM (extra steps to the first sections)', () => {
  // T = 10 into 3 sections of sizes 4, 3, 3.
  assert.deepEqual(Array.from(spaceTimesteps(10, '2,1,3')), [0, 3, 4, 7, 8, 9]);
  // ADM docstring example: space_timesteps(300, [10, 15, 20]) keeps 45 steps.
  const steps = spaceTimesteps(300, '10,15,20');
  assert.equal(steps.length, 45);
  assert.deepEqual(Array.from(steps.subarray(0, 3)), [0, 11, 22]);
  assert.equal(steps[10], 100);
  assert.equal(steps[25], 200);
  assert.equal(steps[44], 299);
  // Ties round half to even like Python's round(): stride 2.5 → round(2.5) = 2, not 3.
  assert.deepEqual(Array.from(spaceTimesteps(6, '3')), [0, 2, 5]);
  assert.deepEqual(Array.from(spaceTimesteps(1000, '1,1')), [0, 500]);
});

test('bad respacing specs are rejected with what is allowed', () => {
  assert.throws(() => spaceTimesteps(1000, 'abc'), /expected "" \(all steps\).*"250".*"25,25".*"ddim25".*got "abc"/);
  assert.throws(() => spaceTimesteps(1000, '25,,25'), /"25,25"/);
  assert.throws(() => spaceTimesteps(1000, '0'), /positive integer/);
  assert.throws(() => spaceTimesteps(1000, 'ddimx'), /"ddim25"/);
  assert.throws(() => spaceTimesteps(1000, 'ddim600'), /cannot create exactly 600 steps with an integer stride/);
  assert.throws(() => spaceTimesteps(1000, '1001'), /cannot divide section of 1000 steps into 1001/);
  assert.throws(() => spaceTimesteps(10, '5,6'), /cannot divide section of 5 steps into 6/);
  assert.throws(() => linearBetas(0), /positive integer.*got 0/);
  assert.throws(() => tablesFromBetas(new Float64Array([0.5, 0]), new Int32Array(2)), /\(0, 1\].*betas\[1\] = 0/);
  assert.throws(() => tablesFromBetas(new Float64Array([0.5]), new Int32Array(2)), /length 1.*got 2/);
});

test('linearBetas reproduces numpy linspace exactly', () => {
  const betas = linearBetas(1000);
  assert.equal(betas[0], 0.0001);
  assert.equal(betas[999], 0.02);
  const step = (0.02 - 0.0001) / 999;
  for (const i of [1, 17, 500, 998]) assert.equal(betas[i], i * step + 0.0001);
  // Other T rescale by 1000/T (the 250-step linear schedule starts at 4e−4).
  assert.equal(linearBetas(250)[0], 4 * 0.0001);
});

test('a single kept step still gives finite tables', () => {
  const tables = respacedTables(1000, '1');
  assert.deepEqual(Array.from(tables.timestepMap), [0]);
  assert.equal(tables.posteriorMeanCoef1[0], 1);
  assert.equal(tables.posteriorMeanCoef2[0], 0);
  assert.ok(Number.isFinite(tables.posteriorLogVarianceClipped[0]));
});

test('f32 casts with round-to-nearest-even like Math.fround', () => {
  const values = new Float64Array([0.1, 1 / 3, 4.03582977e-5, 1 + 2 ** -24, 1 + 3 * 2 ** -24]);
  assert.deepEqual(Array.from(f32(values)), Array.from(values, Math.fround));
  assert.equal(f32(values)[3], 1); // tie → even
});

test('respaced ᾱ equal the base ᾱ at the kept steps to 1e-12 for the 1000-step schedule', () => {
  const base = respacedTables(1000, '').alphasCumprod;
  for (const spec of ['250', '100', '50', '10', 'ddim25', '25,25']) {
    const tables = respacedTables(1000, spec);
    tables.timestepMap.forEach((step, k) => {
      assertRel(tables.alphasCumprod[k], base[step], 1e-12, `${spec}: ᾱ at step ${step}`);
    });
  }
});

// Linear schedules need T > 20: at T = 20 the last beta is 0.02·1000/20 = 1.
const stepCount = fc.integer({ min: 21, max: 3000 });

test('property: linear betas lie in (0, 1) and increase; ᾱ decreases strictly inside (0, 1)', () => {
  fc.assert(
    fc.property(stepCount, (T) => {
      const betas = linearBetas(T);
      const tables = tablesFromBetas(betas, Int32Array.from({ length: T }, (_, i) => i));
      for (let i = 0; i < T; i++) {
        if (!(betas[i] > 0 && betas[i] < 1)) return false;
        if (i > 0 && !(betas[i] > betas[i - 1])) return false;
        const ab = tables.alphasCumprod[i];
        if (!(ab > 0 && ab < 1)) return false;
        if (i > 0 && !(ab < tables.alphasCumprod[i - 1])) return false;
        if (!(tables.posteriorVariance[i] >= 0)) return false;
      }
      return true;
    }),
    { numRuns: 60 },
  );
});

const respacing = stepCount.chain((T) =>
  fc.oneof(
    fc.integer({ min: 2, max: T }).map((n) => ({ T, spec: String(n), endpoints: true, count: n })),
    fc
      .array(fc.integer({ min: 1, max: Math.floor(T / 4) }), { minLength: 1, maxLength: 4 })
      .map((counts) => ({ T, spec: counts.join(','), endpoints: false, count: counts.reduce((a, b) => a + b, 0) })),
    fc.constantFrom(...[2, 5, 10, 25, 50, 100].filter((n) => n <= T)).chain((n) => {
      const exists = Array.from({ length: T - 1 }, (_, i) => i + 1).some((s) => Math.ceil(T / s) === n);
      return fc.constant({ T, spec: exists ? `ddim${n}` : String(n), endpoints: !exists, count: n });
    }),
  ),
);

test('property: respaced steps are sorted, unique, in range, and keep ᾱ at the kept steps', () => {
  fc.assert(
    fc.property(respacing, ({ T, spec, endpoints, count }) => {
      const tables = respacedTables(T, spec);
      const kept = tables.timestepMap;
      assert.equal(kept.length, count, `${spec} over ${T} steps`);
      for (let k = 1; k < kept.length; k++) assert.ok(kept[k] > kept[k - 1], `${spec}: not sorted/unique at ${k}`);
      assert.ok(kept[0] >= 0 && kept[kept.length - 1] <= T - 1);
      assert.equal(kept[0], 0);
      if (endpoints) assert.equal(kept[kept.length - 1], T - 1);
      const base = respacedTables(T, '').alphasCumprod;
      // ADM's 1 − β' cancels when a kept step jumps over most of the remaining ᾱ, so the exact
      // re-derivation is only good to about ε/(1 − β') per step (the official code shares this).
      let allowed = 1e-12;
      for (let k = 0; k < kept.length; k++) {
        allowed += (4 * Number.EPSILON) / (1 - tables.betas[k]);
        const orig = base[kept[k]];
        assert.ok(Math.abs(tables.alphasCumprod[k] - orig) <= allowed * orig, `${spec}: ᾱ at step ${kept[k]}`);
        assert.ok(tables.posteriorVariance[k] >= 0);
        assert.ok(tables.betas[k] > 0 && tables.betas[k] < 1);
      }
    }),
    { numRuns: 150 },
  );
});

test('property: power-cosine weight is monotone in t, w at t = 0, 1 near t = T, within [1, w]', () => {
  const w32 = 1e-6; // float32 rounding of the official arithmetic
  fc.assert(
    fc.property(
      fc.double({ min: 1, max: 20, noNaN: true }),
      fc.double({ min: 0.01, max: 8, noNaN: true }),
      fc.integer({ min: 0, max: 999 }),
      fc.integer({ min: 0, max: 999 }),
      (scale, power, a, b) => {
        const [t1, t2] = a <= b ? [a, b] : [b, a];
        const opts = { scale, power, T: 1000 };
        const w1 = powerCosineWeight(t1, opts);
        const w2 = powerCosineWeight(t2, opts);
        assert.ok(w1 >= w2, `s=${power}, w=${scale}: w(${t1})=${w1} < w(${t2})=${w2}`);
        for (const v of [w1, w2]) assert.ok(v >= 1 && v <= scale * (1 + w32), `w_t=${v} outside [1, ${scale}]`);
        assertRel(powerCosineWeight(0, opts), scale, w32, 'w at t = 0');
        assert.equal(powerCosineWeight(1000, opts), 1);
      },
    ),
    { numRuns: 300 },
  );
  for (const scale of [1.5, 3.8, 10]) {
    assert.ok(Math.abs(powerCosineWeight(999, { scale, power: 4 }) - 1) < 1e-6);
  }
});

test('paper and constant weights; guidanceWeight dispatches on the schedule kind', () => {
  assert.equal(paperWeight(1000, { scale: 4, power: 2 }), 0);
  assertRel(paperWeight(0, { scale: 4, power: 2 }), 4, 1e-15, 'paper weight at the end of sampling');
  assertRel(paperWeight(500, { scale: 4, power: 1 }), 2, 1e-15, 'paper weight half-way (s = 1)');
  assert.equal(constantWeight({ scale: 1.5 }), 1.5);
  assert.equal(guidanceWeight({ kind: 'constant', scale: 4 }, 123, 1000), 4);
  assert.equal(
    guidanceWeight({ kind: 'power-cosine', scale: 3.8, power: 4 }, 250, 1000),
    powerCosineWeight(250, { scale: 3.8, power: 4 }),
  );
  assert.equal(guidanceWeight({ kind: 'paper', scale: 3.8, power: 4 }, 250, 1000), paperWeight(250, { scale: 3.8, power: 4 }));
  assert.throws(() => powerCosineWeight(1001, { scale: 3.8, power: 4 }), /t in \[0, 1000\], got 1001/);
  assert.throws(() => powerCosineWeight(1, { scale: 3.8, power: -1 }), /power >= 0, got -1/);
});

test('property: min-SNR weight lies in (0, 1] and is 1 exactly while SNR ≤ γ', () => {
  fc.assert(
    fc.property(fc.double({ min: 1e-6, max: 1 - 1e-6, noNaN: true }), fc.double({ min: 0.1, max: 50, noNaN: true }), (ab, gamma) => {
      const w = minSnrWeight(Math.sqrt(ab), Math.sqrt(1 - ab), gamma);
      assert.ok(w > 0 && w <= 1, `w = ${w}`);
      if (ab / (1 - ab) <= gamma * 0.999) assert.equal(w, 1);
    }),
    { numRuns: 300 },
  );
  assert.throws(() => minSnrWeight(0, 1), /> 0/);
});

// The golden schedule, cfg_weights and min_snr_weights cases run in test/parity.test.ts.
