/**
 * The native kernels behind the wasm backend: the SGEMM (BatchMatMul) against a float64 naive
 * reference, batch broadcasting, the fused kernels against their tfjs-op forms, gradients and
 * golden parity with the kernels on. Where the
 * addon did not build (no compiler at install) every test is skipped with the reason.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import fc from 'fast-check';
import { initBackend } from '../runtime/backend.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { disableNativeKernels, enableNativeKernels, fastNormal, nativeCountNonFinite, nativeKernelsStatus, nativeMatMul } from '../runtime/native.ts';
import { NonFiniteTally } from '../compile/checkpoint.ts';
import { foldIn, keyFromSeed, normal } from '../dsl/random.ts';
import { adamwUpdate, adamwUpdateList, attention, adanUpdate, emaUpdate, emaUpdateList, FUSED, gelu, geluGrad, lnModulate, lnModulateGrad, softmaxBias, softmaxGrad } from '../runtime/fused.ts';

await initBackend({ prefer: 'wasm' });
registerMissingKernels();
const first = enableNativeKernels({ threads: 2 });
const skip = first.enabled ? false : `native kernels unavailable: ${first.reason}`;
if (skip !== false) console.log(`native.test: every test skipped: ${first.reason}`);

const SIZES = [1, 3, 17, 65, 129, 257] as const;
const size = (s: readonly number[]) => s.reduce((x, y) => x * y, 1);

/** Stored shape of an operand whose op() is rows×cols. */
function stored(batch: readonly number[], rows: number, cols: number, transposed: boolean): number[] {
  return transposed ? [...batch, cols, rows] : [...batch, rows, cols];
}

/**
 * Checks c against a float64 product, each element within a float32 summation bound of
 * Σ|a·b| over its k terms (one wrong or missing term is far outside it).
 */
function assertProduct(
  a: Float32Array, aShape: readonly number[], b: Float32Array, bShape: readonly number[],
  ta: boolean, tb: boolean, c: Float32Array, cShape: readonly number[],
): void {
  const [m, n] = cShape.slice(-2) as [number, number];
  const k = ta ? aShape.at(-2)! : aShape.at(-1)!;
  const outBatch = cShape.slice(0, -2);
  const batchOf = (shape: readonly number[], o: number) => {
    const own = shape.slice(0, -2);
    const padded = [...new Array<number>(outBatch.length - own.length).fill(1), ...own];
    let rest = o;
    let at = 0;
    let stride = 1;
    for (let d = outBatch.length - 1; d >= 0; d--) {
      const coord = rest % outBatch[d]!;
      rest = Math.floor(rest / outBatch[d]!);
      if (padded[d] !== 1) at += coord * stride;
      stride *= padded[d]!;
    }
    return at;
  };
  const bound = 2 * Math.max(k, 1) * 2 ** -24 + 1e-7;
  for (let o = 0; o < size(outBatch); o++) {
    const ao = batchOf(aShape, o) * m * k;
    const bo = batchOf(bShape, o) * k * n;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let sum = 0;
        let abs = 0;
        for (let p = 0; p < k; p++) {
          const t = a[ao + (ta ? p * m + i : i * k + p)]! * b[bo + (tb ? j * k + p : p * n + j)]!;
          sum += t;
          abs += Math.abs(t);
        }
        const got = c[o * m * n + i * n + j]!;
        if (!(Math.abs(got - sum) <= bound * abs + 1e-30)) {
          assert.fail(`batch ${o} [${i},${j}] of [${aShape}]${ta ? 'ᵀ' : ''}·[${bShape}]${tb ? 'ᵀ' : ''}: got ${got}, expected ${sum} (Σ|ab| ${abs})`);
        }
      }
    }
  }
}

function checkCase(seed: number, aBatch: number[], bBatch: number[], m: number, n: number, k: number, ta: boolean, tb: boolean): void {
  const aShape = stored(aBatch, m, k, ta);
  const bShape = stored(bBatch, k, n, tb);
  const a = normal(foldIn(keyFromSeed(seed), 0), size(aShape));
  const b = normal(foldIn(keyFromSeed(seed), 1), size(bShape));
  const { values, shape } = nativeMatMul(a, aShape, b, bShape, { transposeA: ta, transposeB: tb });
  assertProduct(a, aShape, b, bShape, ta, tb, values, shape);
}

for (const threads of [1, 2]) {
  test(`products match a naive reference: odd sizes, all transposes, ${threads} thread(s)`, { skip }, () => {
    enableNativeKernels({ threads });
    const dim = fc.constantFrom(...SIZES);
    fc.assert(
      fc.property(dim, dim, dim, fc.boolean(), fc.boolean(), fc.nat(1000), (m, n, k, ta, tb, seed) => {
        checkCase(seed, [], [], m, n, k, ta, tb);
      }),
      { numRuns: 40, seed: threads },
    );
    enableNativeKernels({ threads: 2 });
  });
}

test('products spanning several depth, row and column blocks', { skip }, () => {
  // k > every kernel's depth block, and m > its row block or n > its column block.
  for (const [ta, tb] of [[false, false], [false, true], [true, false], [true, true]] as const) {
    checkCase(11, [], [], 151, 40, 801, ta, tb);
    checkCase(12, [], [], 13, 2100, 801, ta, tb);
  }
});

test('batched products broadcast their batch dims', { skip }, () => {
  const cases: [number[], number[]][] = [
    [[1], [5]],
    [[5], []],
    [[], [4]],
    [[3], [3]],
    [[2, 1], [1, 3]],
    [[2, 3], [3]],
  ];
  let seed = 100;
  for (const [aBatch, bBatch] of cases) {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      checkCase(seed++, aBatch, bBatch, 17, 33, 65, ta, tb);
    }
  }
  // Large enough for the pool: two products shared by all threads, then six handed out whole.
  checkCase(seed++, [2], [1], 200, 96, 130, false, true);
  checkCase(seed, [6], [6], 40, 50, 300, true, false);
});

test('mismatched shapes are refused, naming both', { skip }, () => {
  const a = new Float32Array(6);
  assert.throws(() => nativeMatMul(a, [2, 3], new Float32Array(8), [4, 2]), /inner dimensions differ: \[2,3\] × \[4,2\] contracts 3 with 4/);
  assert.throws(() => nativeMatMul(new Float32Array(12), [2, 2, 3], new Float32Array(18), [3, 3, 2]), /broadcast/i);
  assert.throws(() => nativeMatMul(a, [2, 3], new Float32Array(5), [3, 2]), /b has 5 for \[3,2\]/);
});

function wasmBuiltinAndNative<T>(f: () => T): { wasm: T; native: T } {
  disableNativeKernels();
  const wasm = f();
  const s = enableNativeKernels({ threads: 2 });
  assert.ok(s.enabled, s.reason);
  const before = nativeKernelsStatus().calls;
  const native = f();
  assert.ok(nativeKernelsStatus().calls > before, 'the native BatchMatMul kernel did not run');
  return { wasm, native };
}

function assertClose(got: Float32Array, want: Float32Array, what: string): void {
  assert.equal(got.length, want.length, what);
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < got.length; i++) {
    if (!(Math.abs(got[i]! - want[i]!) <= 1e-4 * scale + 1e-6)) assert.fail(`${what}[${i}]: native ${got[i]} vs wasm ${want[i]} (scale ${scale})`);
  }
}

test('tf.matMul on wasm agrees with the kernels on and off', { skip }, () => {
  const a = tf.tensor(normal(keyFromSeed(5), 2 * 3 * 40 * 24), [2, 3, 40, 24]);
  const b = tf.tensor(normal(keyFromSeed(6), 3 * 24 * 31), [3, 24, 31]);
  const r = wasmBuiltinAndNative(() => [
    tf.matMul(a, b).dataSync() as Float32Array,
    tf.matMul(a, tf.transpose(b, [0, 2, 1]), false, true).dataSync() as Float32Array,
    tf.matMul(tf.transpose(a, [0, 1, 3, 2]), b, true, false).dataSync() as Float32Array,
  ]);
  r.native.forEach((v, i) => assertClose(v, r.wasm[i]!, `product ${i}`));
  tf.dispose([a, b]);
});

test('tf.fused.matMul with a bias (linear layers) equals the product plus the bias', { skip }, () => {
  const x = tf.tensor2d(normal(keyFromSeed(7), 300 * 70), [300, 70]);
  const w = tf.tensor2d(normal(keyFromSeed(8), 130 * 70), [130, 70]);
  const bias = tf.tensor1d(normal(keyFromSeed(9), 130));
  // The reference is unfused: tfjs-backend-wasm 4.22's own _FusedMatMul adds a 1-D bias twice.
  const r = wasmBuiltinAndNative(() => nativeKernelsStatus().enabled
    ? [tf.fused.matMul({ a: x, b: w, transposeB: true, bias }), tf.fused.matMul({ a: x, b: tf.transpose(w), bias })].map((t) => t.dataSync() as Float32Array)
    : [0, 1].map(() => tf.add(tf.matMul(x, tf.transpose(w)), bias).dataSync() as Float32Array));
  r.native.forEach((v, i) => assertClose(v, r.wasm[i]!, `fused product ${i}`));
  tf.dispose([x, w, bias]);
});

test('gradients of a two-layer network agree with the kernels on and off', { skip }, () => {
  const x = tf.tensor2d(normal(keyFromSeed(1), 64 * 20), [64, 20]);
  const w1 = tf.tensor2d(normal(keyFromSeed(2), 20 * 48), [20, 48]);
  const w2 = tf.tensor3d(normal(keyFromSeed(3), 4 * 12 * 5), [4, 12, 5]);
  // The second layer is a batched product of per-group weights, so the gradient runs the
  // transposed forms of BatchMatMul too.
  const loss = (v1: tf.Tensor, v2: tf.Tensor) => {
    const h = tf.tanh(tf.matMul(x, v1 as tf.Tensor2D));
    const g = tf.transpose(tf.reshape(h, [64, 4, 12]), [1, 0, 2]);
    return tf.sum(tf.square(tf.matMul(g, v2 as tf.Tensor3D)));
  };
  const r = wasmBuiltinAndNative(() => tf.tidy(() => tf.grads(loss)([w1, w2]).map((g) => g.dataSync() as Float32Array)));
  r.native.forEach((g, i) => assertClose(g, r.wasm[i]!, `gradient ${i}`));
  tf.dispose([x, w1, w2]);
});

test('the fused kernels (GELU, LayerNorm + modulate, softmax, Adan), row gathers and sums agree with their tfjs-op forms', { skip }, () => {
  const vec = (seed: number, n: number, scale = 1) => tf.mul(tf.tensor1d(normal(keyFromSeed(seed), n)), scale);
  const n = 5000;
  const outputs = () => tf.tidy(() => {
    const [p, g, m] = [vec(10, n), vec(11, n, 0.1), vec(12, n, 0.01)];
    const nsq = tf.square(vec(14, n, 0.02));
    const [diff, neg] = [vec(15, n, 0.01), vec(16, n, 0.1)];
    const adan = (first: 0 | 1) =>
      adanUpdate(p, g, m, nsq, diff, neg, tf.scalar(0.5), { lr: 1e-3, b1: 0.98, b2: 0.92, b3: 0.99, eps: 1e-8, wd: 0.02, bc1: 0.06, bc2: 0.23, bc3Sqrt: 0.17, first });
    // GELU over a wide range, large magnitudes included (exp overflow must give 0 or x).
    const x = tf.mul(vec(17, n), 6);
    const dy = vec(18, n);
    const [gx, gs, gsc, gdz, gres] = [tf.reshape(vec(19, 3 * 5 * 24, 3), [3, 5, 24]), tf.reshape(vec(20, 72), [3, 24]), tf.reshape(vec(21, 72, 0.5), [3, 24]), tf.reshape(vec(22, 360), [3, 5, 24]), tf.reshape(vec(23, 360), [3, 5, 24])];
    const ln = lnModulate(gx, gs, gsc, 1e-6);
    const table = tf.reshape(vec(24, 97 * 3), [97, 3]);
    const idx = tf.tensor1d(Array.from({ length: 400 }, (_, i) => (i * 37) % 97), 'int32');
    const [gathered, dTable] = [tf.gather(table, idx), tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, idx), tf.reshape(vec(25, 1200), [400, 3]))))(table)];
    // Attention's softmax: 2 samples × 3 heads of (7, 7) logits, bias shared or per sample.
    const logits = tf.reshape(vec(26, 6 * 49, 4), [6, 7, 7]) as tf.Tensor3D;
    const [shared, perSample] = [tf.reshape(vec(27, 3 * 49), [1, 3, 7, 7]) as tf.Tensor4D, tf.reshape(vec(28, 6 * 49), [2, 3, 7, 7]) as tf.Tensor4D];
    const probs = softmaxBias(logits, shared);
    const softmaxes = [probs, softmaxBias(logits, perSample), softmaxBias(logits, null), softmaxGrad(probs, tf.reshape(vec(29, 6 * 49), [6, 7, 7]) as tf.Tensor3D)];
    // Sums over leading and middle axes (the shared bias's gradient).
    const sums = [tf.sum(tf.reshape(vec(30, 8 * 6 * 50), [8, 6, 50]), 0), tf.sum(tf.reshape(vec(31, 4 * 9 * 5000), [4, 9, 5000]), 1)];
    return [...adan(0), ...adan(1), gelu(x), geluGrad(dy, x), ln.z, ...lnModulateGrad(gdz, ln.saved, gres), gathered, dTable, ...softmaxes, ...sums];
  });
  const run = () => {
    const ts = outputs();
    const values = ts.map((t) => t.dataSync() as Float32Array);
    tf.dispose(ts);
    return values;
  };
  disableNativeKernels();
  const ops = run();
  assert.ok(enableNativeKernels({ threads: 2 }).enabled);
  for (const name of Object.values(FUSED)) assert.ok(tf.getKernel(name, 'wasm') !== undefined, `${name} is not registered on wasm`);
  const fused = run();
  fused.forEach((v, i) => assertClose(v, ops[i]!, `output ${i}`));
});

test('the list forms of AdamW and EMA update each parameter as the flat forms do', { skip }, () => {
  assert.ok(enableNativeKernels({ threads: 2 }).enabled);
  const shapes = [[3, 4], [40000], [7]];
  const ps = shapes.map((sh, i) => tf.reshape(tf.tensor1d(normal(keyFromSeed(40 + i), sh.reduce((a, b) => a * b, 1))), sh));
  const gs = shapes.map((sh, i) => tf.reshape(tf.tensor1d(normal(keyFromSeed(50 + i), sh.reduce((a, b) => a * b, 1))), sh));
  const flat = (ts: tf.Tensor[]) => tf.concat(ts.map((t) => tf.reshape(t, [-1])));
  const total = ps.reduce((a, t) => a + t.size, 0);
  const [m, v] = [tf.tensor1d(normal(keyFromSeed(60), total)), tf.square(tf.tensor1d(normal(keyFromSeed(61), total)))];
  const h = { lr: 1e-2, b1: 0.9, b2: 0.999, eps: 1e-8, wd: 0.05, bc1: 0.19, bc2Sqrt: 0.044 };
  const listed = adamwUpdateList(ps, gs, m, v, h)!;
  const whole = adamwUpdate(flat(ps), flat(gs), m, v, h);
  assertClose(flat(listed.slice(0, 3)).dataSync() as Float32Array, whole[0].dataSync() as Float32Array, 'parameters');
  assertClose(listed[3]!.dataSync() as Float32Array, whole[1].dataSync() as Float32Array, 'm');
  assertClose(listed[4]!.dataSync() as Float32Array, whole[2].dataSync() as Float32Array, 'v');
  listed.slice(0, 3).forEach((t, i) => assert.deepEqual(t.shape, shapes[i]));
  const ema = emaUpdateList(ps, gs, 0.9)!;
  assertClose(flat(ema).dataSync() as Float32Array, emaUpdate(flat(ps), flat(gs), 0.9).dataSync() as Float32Array, 'ema');
  tf.dispose([...ps, ...gs, m, v, ...listed, ...whole, ...ema]);
});

/** What `run` gives with the native kernels equals what it gives on wasm's own. */
function assertSameOnAndOff(run: () => unknown): void {
  const native = run();
  disableNativeKernels();
  try {
    assert.deepEqual(native, run());
  } finally {
    enableNativeKernels({ threads: 2 });
  }
}

test('Transpose and Slice run as native strided copies and equal the wasm kernels, float32 and int32', { skip }, () => {
  const shapeArb = fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 6 });
  const perm = (rank: number) => fc.shuffledSubarray(Array.from({ length: rank }, (_, i) => i), { minLength: rank, maxLength: rank });
  const cases = shapeArb.chain((shape) => fc.record({
    shape: fc.constant(shape),
    perm: perm(shape.length),
    begin: fc.tuple(...shape.map((n) => fc.integer({ min: 0, max: n - 1 }))),
    frac: fc.tuple(...shape.map(() => fc.double({ min: 0, max: 1, noNaN: true }))),
    dtype: fc.constantFrom('float32' as const, 'int32' as const),
  }));
  const run = (c: { shape: number[]; perm: number[]; begin: number[]; frac: number[]; dtype: 'float32' | 'int32' }) => tf.tidy(() => {
    const n = c.shape.reduce((a, b) => a * b, 1);
    const x = tf.tensor(Array.from({ length: n }, (_, i) => i * 3 - 7), c.shape, c.dtype);
    const size = c.shape.map((d, i) => 1 + Math.floor(c.frac[i]! * (d - c.begin[i]! - 1)));
    return [tf.transpose(x, c.perm), tf.slice(x, c.begin, size), tf.slice(x, c.begin)].map((t) => ({ shape: t.shape, values: [...t.dataSync()] }));
  });
  const kernels = () => ['Transpose', 'Slice'].map((k) => tf.getKernel(k, 'wasm')!.kernelFunc);
  const nativeKernels = kernels();
  fc.assert(fc.property(cases, (c) => assertSameOnAndOff(() => run(c))), { numRuns: 200 });
  // Large enough for the pool: the attention layout change [B, L, H, Dh] → [B, H, L, Dh].
  assertSameOnAndOff(() => run({ shape: [64, 64, 4, 24], perm: [0, 2, 1, 3], begin: [1, 0, 0, 2], frac: [1, 1, 1, 0.5], dtype: 'float32' }));
  disableNativeKernels();
  const wasmKernels = kernels();
  enableNativeKernels({ threads: 2 });
  assert.ok(nativeKernels.every((k, i) => k !== wasmKernels[i]), 'the native kernels were the ones registered');
});

test('Add, Sub and Multiply run natively with NumPy broadcasting and equal the wasm kernels', { skip }, () => {
  // Two shapes that broadcast: a common shape, each operand dropping leading axes or setting some to 1.
  const pair = fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 5 }).chain((shape) => fc.tuple(
    ...[0, 1].map(() => fc.record({ drop: fc.integer({ min: 0, max: shape.length - 1 }), ones: fc.array(fc.boolean(), { minLength: shape.length, maxLength: shape.length }) })
      .map(({ drop, ones }) => shape.map((n, d) => (ones[d] ? 1 : n)).slice(drop))),
  ));
  const run = ([sa, sb]: number[][]) => tf.tidy(() => {
    const a = tf.tensor(Array.from({ length: sa!.reduce((x, y) => x * y, 1) }, (_, i) => i * 0.5 - 3), sa);
    const b = tf.tensor(Array.from({ length: sb!.reduce((x, y) => x * y, 1) }, (_, i) => 2 - i * 0.25), sb);
    return [tf.add(a, b), tf.sub(a, b), tf.mul(a, b), tf.add(a, 3)].map((t) => ({ shape: t.shape, values: [...t.dataSync()] }));
  });
  fc.assert(fc.property(pair, (shapes) => assertSameOnAndOff(() => run(shapes))), { numRuns: 200 });
  // The adaLN gate and residual at a size the pool splits.
  assertSameOnAndOff(() => run([[64, 64, 96], [64, 1, 96]]));
});

test('attention from qkv runs natively and equals its tfjs-op form: tiles and their tails, bias per sample or shared, or none', { skip }, () => {
  const cases = fc.record({
    b: fc.integer({ min: 1, max: 3 }), l: fc.integer({ min: 1, max: 37 }), heads: fc.integer({ min: 1, max: 3 }), hd: fc.integer({ min: 1, max: 19 }),
    bias: fc.constantFrom('none', 'shared', 'per-sample'), seed: fc.integer({ min: 0, max: 1000 }),
  });
  const run = (c: { b: number; l: number; heads: number; hd: number; bias: string; seed: number }) => tf.tidy(() => {
    const key = keyFromSeed(c.seed);
    const qkv = tf.tensor3d(normal(foldIn(key, 0), c.b * c.l * 3 * c.heads * c.hd), [c.b, c.l, 3 * c.heads * c.hd]);
    const bb = c.bias === 'per-sample' ? c.b : 1;
    const bias = c.bias === 'none' ? null : tf.tensor4d(normal(foldIn(key, 1), bb * c.heads * c.l * c.l), [bb, c.heads, c.l, c.l]);
    return attention(qkv, bias, c.heads, c.hd ** -0.5);
  });
  const check = (c: Parameters<typeof run>[0]) => {
    const native = run(c);
    disableNativeKernels();
    const reference = run(c);
    enableNativeKernels({ threads: 2 });
    assert.deepEqual(native.shape, [c.b, c.l, c.heads * c.hd]);
    const err = tf.tidy(() => tf.max(tf.abs(tf.sub(native, reference))).dataSync()[0]!);
    tf.dispose([native, reference]);
    assert.ok(err <= 2e-5, `max error ${err}`);
  };
  fc.assert(fc.property(cases, check), { numRuns: 100 });
  // The main job's shape, where the 16-column and 8-column register tiles are whole.
  check({ b: 8, l: 64, heads: 4, hd: 24, bias: 'shared', seed: 1 });
});

test('NaN and ±Inf are counted natively as value by value, and a checkpoint\'s report is the same with MDT_NATIVE=0', { skip }, () => {
  const report = (d: Float32Array) => {
    const tally = new NonFiniteTally();
    tally.add('w', { dtype: 'F32', shape: [d.length], data: d });
    return tally.report();
  };
  fc.assert(fc.property(fc.array(fc.oneof(fc.float(), fc.constantFrom(NaN, Infinity, -Infinity, -0, 3.4028234663852886e38, 1e-45)), { maxLength: 300 }), (xs) => {
    const d = Float32Array.from(xs);
    assert.equal(nativeCountNonFinite(d), xs.filter((v) => !Number.isFinite(v)).length);
    const native = report(d);
    const saved = process.env.MDT_NATIVE;
    process.env.MDT_NATIVE = '0';
    try {
      assert.equal(nativeCountNonFinite(d), null);
      assert.equal(report(d), native);
    } finally {
      if (saved === undefined) delete process.env.MDT_NATIVE;
      else process.env.MDT_NATIVE = saved;
    }
  }));
  assert.equal(report(Float32Array.of(1, NaN, -Infinity, 2, NaN)), 'non-finite values in 1 of 1 tensors: w (2 NaN, 1 ±Inf of 5)');
});

test('fastNormal draws normal(key, n, from)\'s numbers natively, on 1 and 2 threads (the same bits here; one float ulp allowed)', { skip }, () => {
  const check = (k0: number, k1: number, n: number, from = 0) => {
    const key = { k0, k1 };
    const want = normal(key, n, from);
    const got = fastNormal(key, n, from);
    assert.equal(got.length, n);
    for (let i = 0; i < n; i++) {
      const ulp = 2 ** (Math.floor(Math.log2(Math.max(Math.abs(want[i]!), 2 ** -126))) - 23);
      if (Math.abs(got[i]! - want[i]!) > ulp) assert.fail(`key ${k0},${k1} n ${n} from ${from}: value ${i} is ${got[i]}, normal gives ${want[i]}`);
    }
  };
  const words = fc.integer({ min: 0, max: 2 ** 32 - 1 });
  for (const threads of [1, 2]) {
    enableNativeKernels({ threads });
    fc.assert(fc.property(words, words, fc.integer({ min: 0, max: 3000 }), fc.integer({ min: 0, max: 3000 }), check), { numRuns: 60 });
    check(0xffffffff, 0, 40_001);
  }
  // Any part of the stream, as normal draws it: what a group of images of a batch draws.
  for (const [n, from] of [[1, 0], [7, 3], [1000, 1], [4096, 1024], [2049, 40_001]] as const) check(5, 9, n, from);
  // A bad key or count gets normal's own error, not the addon's.
  assert.throws(() => fastNormal({ k0: -1, k1: 0 }, 4), /^TypeError: normal: expected a Key \{k0, k1\} of two uint32 words/);
  assert.throws(() => fastNormal({ k0: 1, k1: 2 }, 2.5), /^RangeError: normal: expected n to be an integer in \[0, 2147483647\], got 2\.5/);
});

test('MDT_NATIVE=0 keeps the wasm kernel, other values are refused', { skip }, () => {
  const saved = process.env.MDT_NATIVE;
  try {
    process.env.MDT_NATIVE = '0';
    const s = enableNativeKernels();
    assert.equal(s.enabled, false);
    assert.match(s.reason, /MDT_NATIVE=0/);
    const before = nativeKernelsStatus().calls;
    tf.tidy(() => tf.matMul(tf.ones([4, 4]), tf.ones([4, 4])).dataSync());
    assert.equal(nativeKernelsStatus().calls, before);
    process.env.MDT_NATIVE = 'yes';
    assert.throws(() => enableNativeKernels(), /MDT_NATIVE must be 0 or 1, got "yes"/);
  } finally {
    if (saved === undefined) delete process.env.MDT_NATIVE;
    else process.env.MDT_NATIVE = saved;
  }
  assert.ok(enableNativeKernels({ threads: 2 }).enabled);
});

test('golden parity (compile/parity-cli.ts) passes every case with the kernels on', { skip }, () => {
  // The CLI's own entry point, in a child process whose wasm backend has the kernels on.
  const root = fileURLToPath(new URL('..', import.meta.url));
  const script = [
    "import { initBackend } from './runtime/backend.ts';",
    "import { enableNativeKernels, nativeKernelsStatus } from './runtime/native.ts';",
    "import { parityMain } from './compile/parity-cli.ts';",
    "await initBackend({ prefer: 'wasm' });",
    'const s = enableNativeKernels();',
    "if (!s.enabled) throw new Error('native kernels did not start: ' + s.reason);",
    "const code = await parityMain(['--backend', 'wasm']);",
    "console.log('native ' + JSON.stringify(nativeKernelsStatus()));",
    'process.exitCode = code;',
  ].join('\n');
  let out: string;
  try {
    out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '--eval', script], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, MDT_BACKEND: '', MDT_NATIVE: '1' },
    });
  } catch (e) {
    const err = e as { stdout?: string; stderr?: string };
    assert.fail(`parity with native kernels failed:\n${err.stdout ?? ''}\n${err.stderr ?? ''}`);
  }
  assert.match(out, /parity: 79 passed, 0 failed, 0 skipped/, out);
  const calls = Number(/"calls":(\d+)/.exec(out)?.[1] ?? 0);
  assert.ok(calls > 0, `no product ran natively during parity:\n${out}`);
  console.log(`parity with native kernels: 79/79, ${calls} native products`);
});
