/**
 * Every differentiable primitive's VJP rule (compile/primitives.ts), through the whole path a
 * model's gradient takes: a graph built with GraphBuilder (inputs → the primitive → a loss
 * Σ y·W with fixed random W, so the cotangent is not uniform), reverse-mode autodiff
 * (compile/autodiff.ts), lowering and the executor (compile/execute.ts). Each gradient element
 * is compared with a central finite difference of the same lowered forward graph, its output y
 * read back and the loss summed in float64 (the forward graph runs in float32, so h = 1e-2 and
 * the tolerance is |g − fd| ≤ 5e-4 + 3e-3·max(|g|, |fd|), some 4× the largest
 * error seen over thousands of samples). Shapes (broadcasting pairs for the
 * binary ops, every matmul transpose-flag combination at ranks 2 to 4) and values come from
 * fast-check. Negative controls show the check fails for wrong rules and for a gradient off by
 * a few percent in one element.
 *
 * All primitives on the cpu backend; the nn and product primitives also on wasm with the native
 * kernels (where they are built) and on wasm's own kernels.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import fc from 'fast-check';
import { GraphBuilder, numel, formatShape, type Attrs, type DType, type Graph } from '../compile/ir.ts';
import { PRIMS, type Prim, type Vjp } from '../compile/primitives.ts';
import { differentiate, gradName } from '../compile/autodiff.ts';
import { lower, type Executable } from '../compile/execute.ts';
import { nativeKernelsStatus } from '../runtime/native.ts';
import { gaussian, uniform, useBackend, type Variant } from './compile-support.ts';

// ---------------------------------------------------------------------------------------------
// Cases: a primitive applied to inputs drawn from safe domains.

/**
 * normal N(0, 1)·1.5; positive [0.5, 2]; nonzero ±[0.5, 1.5]; rows: each last-axis row
 * standardised to spread ≥ 0.5 (LayerNorm's derivatives grow as 1/σ³); hi and lo: values at
 * k + ½ ± 0.2 and k ± 0.2 for small integers k, so max/min of a hi and a lo value are never
 * within 0.1 of a tie; bool; int: indices in [0, n).
 */
type Domain = 'normal' | 'positive' | 'nonzero' | 'rows' | 'hi' | 'lo' | 'bool' | { readonly int: number };

interface InputSpec {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly domain: Domain;
}

interface Case {
  readonly label: string;
  readonly inputs: readonly InputSpec[];
  readonly wrt: readonly string[];
  build(b: GraphBuilder, ids: Readonly<Record<string, number>>): number;
  /** The exact gradient, for a rule that is meant to differ from the forward graph's derivative (stop_gradient). */
  expected?(values: ReadonlyMap<string, Float32Array>, w: Float32Array): Map<string, Float64Array>;
}

const f32 = (name: string, shape: readonly number[], domain: Domain = 'normal'): InputSpec => ({ name, shape, dtype: 'float32', domain });

function values(spec: InputSpec, seed: number): Float32Array | Int32Array | boolean[] {
  const u = uniform(seed);
  const g = gaussian(u);
  const n = numel(spec.shape);
  const d = spec.domain;
  if (d === 'bool') return Array.from({ length: n }, () => u() < 0.5);
  if (typeof d === 'object') return Int32Array.from({ length: n }, () => Math.floor(u() * d.int));
  const k = () => Math.floor(u() * 3) - 1;
  const out = Float32Array.from({ length: n }, () => {
    switch (d) {
      case 'normal': return 1.5 * g();
      case 'positive': return 0.5 + 1.5 * u();
      case 'nonzero': return (u() < 0.5 ? -1 : 1) * (0.5 + u());
      case 'hi': return k() + 0.5 + 0.4 * (u() - 0.5);
      case 'lo': return k() + 0.4 * (u() - 0.5);
      default: return g();
    }
  });
  if (d === 'rows') {
    const width = spec.shape[spec.shape.length - 1]!;
    for (let r = 0; r < n / width; r++) {
      const row = out.subarray(r * width, (r + 1) * width);
      const mean = row.reduce((a, b) => a + b, 0) / width;
      const std = Math.sqrt(row.reduce((a, b) => a + (b - mean) ** 2, 0) / width) || 1;
      const spread = 0.5 + u(), offset = g();
      for (let i = 0; i < width; i++) row[i] = ((row[i]! - mean) / std) * spread + offset;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The check.

const H = 1e-2;
const ATOL = 5e-4;
const RTOL = 3e-3;

/** The largest |g − fd| / tolerance seen since it was last reset (reported per case). */
let worst = 0;

interface CheckOptions {
  /** Changes the gradients autodiff produced before they are compared (negative control). */
  readonly tamper?: (name: string, grad: Float32Array) => void;
}

interface Built {
  readonly forward: Graph;
  readonly training: Graph;
  readonly w: Float32Array;
}

function buildGraphs(c: Case, seed: number): Built {
  const b = new GraphBuilder();
  const ids = Object.fromEntries(c.inputs.map((s) => [s.name, b.input(s.name, 'data', s.shape, s.dtype)]));
  const y = c.build(b, ids);
  const yShape = b.node(y).shape;
  const g = gaussian(uniform(seed ^ 0x5bd1e995));
  const w = Float32Array.from({ length: numel(yShape) }, () => g());
  const weighted = b.emit('mul', [y, b.constant(w, yShape)]);
  const loss = yShape.length === 0 ? weighted : b.emit('sum', [weighted], { axes: yShape.map((_, i) => i), keepDims: false });
  b.output('y', y);
  b.output('loss', loss);
  const forward = b.finish();
  return { forward, training: differentiate(forward, 'loss', c.wrt), w };
}

/** Σ y·w in float64 from one forward run. */
function lossOf(fwd: Executable, feeds: ReadonlyMap<string, tf.Tensor>, w: Float32Array): number {
  const out = fwd.run(feeds);
  const y = out.get('y')!.dataSync();
  for (const t of out.values()) t.dispose();
  let s = 0;
  for (let i = 0; i < y.length; i++) s += Number(y[i]) * w[i]!;
  return s;
}

/** Mismatches between autodiff's gradients and finite differences ([] when the rule is right). */
function check(c: Case, seed: number, opts: CheckOptions = {}): string[] {
  const { forward, training, w } = buildGraphs(c, seed);
  const ops = new Set(forward.nodes.map((n) => n.op));
  const bad: string[] = [];
  const vals = new Map(c.inputs.map((s, i) => [s.name, values(s, seed + 7919 * (i + 1))]));
  const feeds = new Map(c.inputs.map((s) => [s.name, tf.tensor(vals.get(s.name)! as Float32Array, [...s.shape], s.dtype)]));
  const fwd = lower(forward);
  const exe = lower(training);
  try {
    const out = exe.run(feeds);
    const grads = new Map(c.wrt.map((name) => {
      const t = out.get(gradName(name))!;
      const spec = c.inputs.find((s) => s.name === name)!;
      if (formatShape(t.shape) !== formatShape(spec.shape)) bad.push(`${name}: gradient shape ${formatShape(t.shape)}, input ${formatShape(spec.shape)}`);
      return [name, Float32Array.from(t.dataSync() as Float32Array)];
    }));
    for (const t of out.values()) t.dispose();
    for (const [name, gr] of grads) opts.tamper?.(name, gr);
    const exact = c.expected?.(vals as Map<string, Float32Array>, w);
    for (const name of c.wrt) {
      const gr = grads.get(name)!;
      const x = vals.get(name) as Float32Array;
      for (let j = 0; j < x.length; j++) {
        let ref: number;
        if (exact !== undefined) ref = exact.get(name)![j]!;
        else {
          const at = (v: number) => {
            const xs = Float32Array.from(x);
            xs[j] = v;
            const t = tf.tensor(xs, [...c.inputs.find((s) => s.name === name)!.shape]);
            try {
              return lossOf(fwd, new Map([...feeds, [name, t]]), w);
            } finally {
              t.dispose();
            }
          };
          const hi = Math.fround(x[j]! + H), lo = Math.fround(x[j]! - H);
          ref = (at(hi) - at(lo)) / (hi - lo);
        }
        const an = gr[j]!;
        const tol = ATOL + RTOL * Math.max(Math.abs(an), Math.abs(ref));
        if (opts.tamper === undefined) worst = Math.max(worst, Math.abs(an - ref) / tol);
        if (!Number.isFinite(an) || Math.abs(an - ref) > tol) {
          bad.push(`${name}[${j}]: gradient ${an}, ${exact ? 'exact' : 'finite difference'} ${ref}`);
        }
      }
    }
  } finally {
    fwd.dispose();
    exe.dispose();
    for (const t of feeds.values()) t.dispose();
  }
  if (bad.length > 0) bad.unshift(`${c.label} (ops: ${[...ops].join(' ')}; seed ${seed})`);
  return bad;
}

function holds(arb: fc.Arbitrary<Case>, numRuns: number): void {
  fc.assert(
    fc.property(arb, fc.integer({ min: 0, max: 2 ** 31 - 1 }), (c, seed) => {
      const bad = check(c, seed);
      if (bad.length > 0) throw new Error(bad.slice(0, 8).join('\n'));
    }),
    { numRuns },
  );
}

// ---------------------------------------------------------------------------------------------
// Shapes.

const dim = (max = 4) => fc.integer({ min: 1, max });
const shapeOf = (minRank: number, maxRank: number, max = 4) => fc.array(dim(max), { minLength: minRank, maxLength: maxRank });

/** The suffix of `out` of `rank` axes, with the axes `ones` marks set to 1: a shape that broadcasts to `out`. */
const broadcastable = (out: readonly number[], rank: number, ones: readonly boolean[]) => out.slice(out.length - rank).map((d, i) => (ones[i] ? 1 : d));

/** Operand shapes that broadcast together: fixed examples and random ones. */
const broadcastShapes = (k: number): fc.Arbitrary<number[][]> =>
  fc.oneof(
    fc.constantFrom<number[][]>(
      ...(k === 2
        ? [[[2, 3], [3]], [[2, 1, 4], [3, 1]], [[3], [2, 3]], [[4, 1], [1, 3]], [[1], [2, 2]], [[2, 3], [2, 3]]]
        : [[[2, 3], [3], [2, 1]], [[1, 4], [3, 1], [4]], [[2, 1, 3], [3], [2, 2, 1]]]),
    ),
    shapeOf(1, 3).chain((out) =>
      fc.array(fc.tuple(fc.integer({ min: 1, max: out.length }), fc.array(fc.boolean(), { minLength: 3, maxLength: 3 })), { minLength: k, maxLength: k })
        .map((ops) => ops.map(([rank, ones]) => broadcastable(out, rank, ones))),
    ),
  );

const emit = (op: string, attrs: Attrs = {}) => (b: GraphBuilder, ids: Readonly<Record<string, number>>, names: readonly string[]) => b.emit(op, names.map((n) => ids[n]!), attrs);

function binaryCase(op: string, da: Domain = 'normal', db: Domain = 'normal'): fc.Arbitrary<Case> {
  return broadcastShapes(2).map(([sa, sb]) => ({
    label: `${op} ${formatShape(sa!)} ${formatShape(sb!)}`,
    inputs: [f32('a', sa!, da), f32('b', sb!, db)],
    wrt: ['a', 'b'],
    build: (b, ids) => emit(op)(b, ids, ['a', 'b']),
  }));
}

function unaryCase(op: string, domain: Domain = 'normal', attrs: Attrs = {}): fc.Arbitrary<Case> {
  return shapeOf(1, 3).map((s) => ({
    label: `${op} ${formatShape(s)}`,
    inputs: [f32('x', s, domain)],
    wrt: ['x'],
    build: (b, ids) => emit(op, attrs)(b, ids, ['x']),
  }));
}

/** Splits n into a random factorisation (a reshape target). */
const reshapeTarget = (n: number) =>
  fc.integer({ min: 0, max: 1000 }).map((r) => {
    const divisors = Array.from({ length: n }, (_, i) => i + 1).filter((d) => n % d === 0);
    const d = divisors[r % divisors.length]!;
    return [[n], [d, n / d], [n / d, 1, d], [1, n]][r % 4]!;
  });

const matmulCase = (rank: 2 | 3 | 4) =>
  fc.record({ ta: fc.boolean(), tb: fc.boolean(), batch: shapeOf(rank - 2, rank - 2, 3), m: dim(), k: dim(), n: dim() }).map(({ ta, tb, batch, m, k, n }): Case => {
    const a = [...batch, ...(ta ? [k, m] : [m, k])], w = [...batch, ...(tb ? [n, k] : [k, n])];
    return {
      label: `matmul ${formatShape(a)}${ta ? 'ᵀ' : ''} · ${formatShape(w)}${tb ? 'ᵀ' : ''}`,
      inputs: [f32('a', a), f32('w', w)],
      wrt: ['a', 'w'],
      build: (b, ids) => b.emit('matmul', [ids['a']!, ids['w']!], { transposeA: ta, transposeB: tb }),
    };
  });

/** Every case, by the primitives it covers. */
const CASES: Record<string, fc.Arbitrary<Case>> = {
  add: binaryCase('add'),
  sub: binaryCase('sub'),
  mul: binaryCase('mul'),
  div: binaryCase('div', 'normal', 'nonzero'),
  maximum: fc.boolean().chain((flip) => binaryCase('maximum', flip ? 'hi' : 'lo', flip ? 'lo' : 'hi')),
  minimum: fc.boolean().chain((flip) => binaryCase('minimum', flip ? 'hi' : 'lo', flip ? 'lo' : 'hi')),
  where: broadcastShapes(3).map(([sc, sa, sb]) => ({
    label: `where ${formatShape(sc!)} ${formatShape(sa!)} ${formatShape(sb!)}`,
    inputs: [{ name: 'c', shape: sc!, dtype: 'bool', domain: 'bool' }, f32('a', sa!), f32('b', sb!)],
    wrt: ['a', 'b'],
    build: (b, ids) => b.emit('where', [ids['c']!, ids['a']!, ids['b']!]),
  })),
  neg: unaryCase('neg'),
  exp: unaryCase('exp'),
  log: unaryCase('log', 'positive'),
  sqrt: unaryCase('sqrt', 'positive'),
  rsqrt: unaryCase('rsqrt', 'positive'),
  tanh: unaryCase('tanh'),
  sigmoid: unaryCase('sigmoid'),
  cos: unaryCase('cos'),
  sin: unaryCase('sin'),
  square: unaryCase('square'),
  cast: unaryCase('cast', 'normal', { dtype: 'float32' }),
  sum: shapeOf(1, 4).chain((s) =>
    fc.record({ axes: fc.subarray(s.map((_, i) => i), { minLength: 1 }), negative: fc.boolean(), keepDims: fc.boolean() }).map(({ axes, negative, keepDims }) => {
      const ax = negative ? axes.map((a) => a - s.length) : axes;
      return {
        label: `sum ${formatShape(s)} axes [${ax.join(', ')}]${keepDims ? ' keepDims' : ''}`,
        inputs: [f32('x', s)],
        wrt: ['x'],
        build: (b, ids) => b.emit('sum', [ids['x']!], { axes: ax, keepDims }),
      };
    }),
  ),
  reshape: shapeOf(1, 3).chain((s) =>
    reshapeTarget(numel(s)).map((to) => ({
      label: `reshape ${formatShape(s)} → ${formatShape(to)}`,
      inputs: [f32('x', s)],
      wrt: ['x'],
      build: (b, ids) => b.emit('reshape', [ids['x']!], { shape: to }),
    })),
  ),
  transpose: shapeOf(1, 4).chain((s) =>
    fc.shuffledSubarray(s.map((_, i) => i), { minLength: s.length, maxLength: s.length }).map((perm) => ({
      label: `transpose ${formatShape(s)} [${perm.join(', ')}]`,
      inputs: [f32('x', s)],
      wrt: ['x'],
      build: (b, ids) => b.emit('transpose', [ids['x']!], { perm }),
    })),
  ),
  broadcast_to: shapeOf(1, 3).chain((out) =>
    fc.tuple(fc.integer({ min: 1, max: out.length }), fc.array(fc.boolean(), { minLength: 3, maxLength: 3 })).map(([rank, ones]) => {
      const s = broadcastable(out, rank, ones);
      return {
        label: `broadcast_to ${formatShape(s)} → ${formatShape(out)}`,
        inputs: [f32('x', s)],
        wrt: ['x'],
        build: (b, ids) => b.emit('broadcast_to', [ids['x']!], { shape: out }),
      };
    }),
  ),
  slice: shapeOf(1, 3).chain((s) =>
    fc.array(fc.tuple(fc.nat(), fc.nat()), { minLength: s.length, maxLength: s.length }).map((r) => {
      const begin = s.map((d, i) => r[i]![0] % d);
      const size = s.map((d, i) => 1 + (r[i]![1] % (d - begin[i]!)));
      return {
        label: `slice ${formatShape(s)} begin [${begin.join(', ')}] size [${size.join(', ')}]`,
        inputs: [f32('x', s)],
        wrt: ['x'],
        build: (b, ids) => b.emit('slice', [ids['x']!], { begin, size }),
      };
    }),
  ),
  pad: shapeOf(1, 3).chain((s) =>
    fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 2 * s.length, maxLength: 2 * s.length }).map((pads) => ({
      label: `pad ${formatShape(s)} [${pads.join(', ')}]`,
      inputs: [f32('x', s)],
      wrt: ['x'],
      build: (b, ids) => b.emit('pad', [ids['x']!], { pads }),
    })),
  ),
  concat: shapeOf(1, 3).chain((s) =>
    fc.record({ axis: fc.nat({ max: s.length - 1 }), sizes: fc.array(dim(3), { minLength: 1, maxLength: 3 }) }).map(({ axis, sizes }) => {
      const shapes = sizes.map((k) => s.map((d, i) => (i === axis ? k : d)));
      const names = shapes.map((_, i) => `x${i}`);
      return {
        label: `concat axis ${axis} ${shapes.map(formatShape).join(' ')}`,
        inputs: shapes.map((sh, i) => f32(names[i]!, sh)),
        wrt: names,
        build: (b, ids) => b.emit('concat', names.map((n) => ids[n]!), { axis }),
      };
    }),
  ),
  gather: fc.record({ rows: dim(5), width: dim(3), idx: shapeOf(1, 2) }).map(({ rows, width, idx }) => ({
    label: `gather [${rows}, ${width}] by ${formatShape(idx)}`,
    inputs: [f32('table', [rows, width]), { name: 'idx', shape: idx, dtype: 'int32', domain: { int: rows } }],
    wrt: ['table'],
    build: (b, ids) => b.emit('gather', [ids['table']!, ids['idx']!]),
  })),
  segment_sum: fc.record({ n: dim(6), width: dim(3), segments: dim(4) }).map(({ n, width, segments }) => ({
    label: `segment_sum [${n}, ${width}] into ${segments}`,
    inputs: [f32('x', [n, width]), { name: 'ids', shape: [n], dtype: 'int32', domain: { int: segments } }],
    wrt: ['x'],
    build: (b, ids) => b.emit('segment_sum', [ids['x']!, ids['ids']!], { segments }),
  })),
  'matmul rank 2': matmulCase(2),
  'matmul rank 3': matmulCase(3),
  'matmul rank 4': matmulCase(4),
  softmax: fc.tuple(shapeOf(0, 2), dim(5)).map(([lead, d]) => ({
    label: `softmax ${formatShape([...lead, d])}`,
    inputs: [f32('x', [...lead, d])],
    wrt: ['x'],
    build: (b, ids) => b.emit('softmax', [ids['x']!]),
  })),
  layer_norm: fc.tuple(shapeOf(0, 2), fc.integer({ min: 3, max: 6 })).map(([lead, d]) => ({
    label: `layer_norm ${formatShape([...lead, d])}`,
    inputs: [f32('x', [...lead, d], 'rows')],
    wrt: ['x'],
    build: (b, ids) => b.emit('layer_norm', [ids['x']!], { eps: 1e-5 }),
  })),
  gelu_tanh: unaryCase('gelu_tanh'),
  linear: fc.record({ m: dim(), i: dim(), o: dim(), bias: fc.boolean() }).map(({ m, i, o, bias }) => ({
    label: `linear [${m}, ${i}]·[${o}, ${i}]ᵀ${bias ? ` + [${o}]` : ''}`,
    inputs: [f32('x', [m, i]), f32('w', [o, i]), ...(bias ? [f32('bias', [o])] : [])],
    wrt: bias ? ['x', 'w', 'bias'] : ['x', 'w'],
    build: (b, ids) => b.emit('linear', bias ? [ids['x']!, ids['w']!, ids['bias']!] : [ids['x']!, ids['w']!]),
  })),
  ln_modulate: fc.record({ g: dim(3), l: dim(3), d: fc.integer({ min: 3, max: 5 }) }).map(({ g, l, d }) => ({
    label: `ln_modulate [${g}, ${l}, ${d}]`,
    inputs: [f32('x', [g, l, d], 'rows'), f32('shift', [g, d]), f32('scale', [g, d])],
    wrt: ['x', 'shift', 'scale'],
    build: (b, ids) => b.emit('ln_modulate', [ids['x']!, ids['shift']!, ids['scale']!], { eps: 1e-6 }),
  })),
  softmax_bias: fc.record({ b: dim(2), h: dim(2), l: dim(4), sharedBias: fc.boolean() }).map(({ b: bs, h, l, sharedBias }) => ({
    label: `softmax_bias [${bs}, ${h}, ${l}, ${l}] + [${sharedBias ? 1 : bs}, ${h}, ${l}, ${l}]`,
    inputs: [f32('x', [bs, h, l, l]), f32('bias', [sharedBias ? 1 : bs, h, l, l])],
    wrt: ['x', 'bias'],
    build: (b, ids) => b.emit('softmax_bias', [ids['x']!, ids['bias']!]),
  })),
  conv2d: fc.record({ n: dim(2), h: fc.integer({ min: 2, max: 6 }), w: fc.integer({ min: 2, max: 6 }), ci: dim(3), co: dim(3), k: dim(3), s: dim(2), pads: fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 4, maxLength: 4 }) })
    .filter(({ h, w, k, pads }) => h + pads[0]! + pads[1]! >= k && w + pads[2]! + pads[3]! >= k)
    .map(({ n, h, w, ci, co, k, s, pads }) => ({
      label: `conv2d [${n}, ${h}, ${w}, ${ci}] * [${k}, ${k}, ${ci}, ${co}] stride ${s} pads [${pads.join(', ')}]`,
      inputs: [f32('x', [n, h, w, ci]), f32('f', [k, k, ci, co])],
      wrt: ['x', 'f'],
      build: (b, ids) => b.emit('conv2d', [ids['x']!, ids['f']!], { stride: s, pads }),
    })),
  // y = x·stop_gradient(x): the rule must give dL/dx = w·x (not the forward graph's 2·w·x).
  stop_gradient: shapeOf(1, 3).map((s) => ({
    label: `x·stop_gradient(x) ${formatShape(s)}`,
    inputs: [f32('x', s)],
    wrt: ['x'],
    build: (b, ids) => b.emit('mul', [ids['x']!, b.emit('stop_gradient', [ids['x']!])]),
    expected: (vals, w) => new Map([['x', Float64Array.from(vals.get('x')!, (v, i) => v * w[i]!)]]),
  })),
  // y = x·float(int(x)): no gradient flows through the int32 cast, so dL/dx = w·float(int(x)).
  'cast through int32': shapeOf(1, 3).map((s) => ({
    label: `x·cast(cast(x, int32), float32) ${formatShape(s)}`,
    inputs: [f32('x', s)],
    wrt: ['x'],
    build: (b, ids) => b.emit('mul', [ids['x']!, b.emit('cast', [b.emit('cast', [ids['x']!], { dtype: 'int32' })], { dtype: 'float32' })]),
    expected: (vals, w) => new Map([['x', Float64Array.from(vals.get('x')!, (v, i) => Math.trunc(v) * w[i]!)]]),
  })),
};

/** The primitive a case key names ('matmul rank 3' → matmul). */
const primOf = (key: string) => key.split(' ')[0]!;

/** The subset run on wasm, where native kernels replace products, gathers and the nn primitives. */
const WASM_CASES = ['conv2d', 'matmul rank 2', 'matmul rank 3', 'matmul rank 4', 'linear', 'softmax_bias', 'ln_modulate', 'gelu_tanh', 'layer_norm', 'softmax', 'gather', 'segment_sum', 'sum'];

const CPU_RUNS = Number(process.env.VJP_RUNS ?? 8);
const WASM_RUNS = Number(process.env.VJP_RUNS ?? 5);

// ---------------------------------------------------------------------------------------------

test('every primitive with a VJP rule has a case here (and every case names a primitive)', () => {
  const covered = new Set(Object.keys(CASES).map(primOf));
  const differentiable = Object.entries(PRIMS).filter(([, p]) => p.vjp !== undefined).map(([op]) => op);
  assert.deepEqual(differentiable.filter((op) => !covered.has(op)), [], 'primitives with a VJP rule but no property');
  assert.deepEqual([...covered].filter((op) => PRIMS[op]?.vjp === undefined), [], 'cases for primitives without a VJP rule');
});

async function runCases(t: TestContext, variant: Variant, keys: readonly string[], numRuns: number): Promise<void> {
  t.diagnostic(await useBackend(variant));
  const before = nativeKernelsStatus().calls;
  const tensors = tf.memory().numTensors;
  for (const key of keys) {
    await t.test(key, (st) => {
      // Each sample's graph really contains the primitive under test.
      fc.assert(fc.property(CASES[key]!, (c) => buildGraphs(c, 1).forward.nodes.some((n) => n.op === primOf(key))), { numRuns: 3 });
      worst = 0;
      holds(CASES[key]!, numRuns);
      st.diagnostic(`largest |gradient − reference| / tolerance: ${worst.toFixed(3)}`);
    });
  }
  assert.equal(tf.memory().numTensors, tensors, 'the checks leave no tensors behind');
  if (variant === 'wasm' && nativeKernelsStatus().enabled) assert.ok(nativeKernelsStatus().calls > before, 'the native kernels ran');
}

test('cpu: each VJP matches central finite differences', (t) => runCases(t, 'cpu', Object.keys(CASES), CPU_RUNS));

test('wasm (native kernels where built): products, gathers and nn VJPs match finite differences', (t) => runCases(t, 'wasm', WASM_CASES, WASM_RUNS));

test("wasm on its own kernels: products (transposes made explicit) match finite differences", (t) =>
  runCases(t, 'wasm-plain', ['matmul rank 2', 'matmul rank 3', 'linear', 'softmax_bias', 'ln_modulate', 'gelu_tanh'], WASM_RUNS));

test('autodiff: zeros for an input the loss does not reach or reaches only through stop_gradient; a rule-less primitive is named', async () => {
  await useBackend('cpu');
  const b = new GraphBuilder();
  const x = b.input('x', 'data', [2, 3], 'float32');
  const unused = b.input('unused', 'data', [4], 'float32');
  const stopped = b.input('stopped', 'data', [2, 3], 'float32');
  void unused;
  const y = b.emit('mul', [x, b.emit('stop_gradient', [stopped])]);
  b.output('loss', b.emit('sum', [y], { axes: [0, 1], keepDims: false }));
  const g = differentiate(b.finish(), 'loss', ['x', 'unused', 'stopped']);
  const exe = lower(g);
  const feeds = new Map([['x', tf.ones([2, 3])], ['unused', tf.ones([4])], ['stopped', tf.fill([2, 3], 3)]]);
  const out = exe.run(feeds);
  assert.deepEqual([...out.get('grad:x')!.dataSync()], [3, 3, 3, 3, 3, 3]);
  assert.deepEqual([...out.get('grad:unused')!.dataSync()], [0, 0, 0, 0]);
  assert.deepEqual([...out.get('grad:stopped')!.dataSync()], [0, 0, 0, 0, 0, 0]);
  for (const t of [...out.values(), ...feeds.values()]) t.dispose();
  exe.dispose();

  const c = new GraphBuilder();
  const p = c.input('p', 'data', [2, 3], 'float32');
  const up = c.input('up', 'data', [2, 3], 'float32');
  // A companion op that only ever appears in gradient graphs has no rule of its own.
  const second = c.scoped('stem', () => c.emit('softmax_grad', [p, up]));
  c.output('loss', c.emit('sum', [second], { axes: [0, 1], keepDims: false }));
  assert.throws(() => differentiate(c.finish(), 'loss', ['up']), { message: "differentiate: primitive 'softmax_grad' (in stem) has no gradient rule" });
  assert.throws(() => differentiate(c.finish(), 'second', ['up']), /no output 'second'/);
});

// ---------------------------------------------------------------------------------------------
// Negative controls: the check is able to fail.

/** Runs `f` with PRIMS[op] replaced by a copy whose VJP is `vjp`, restoring the table after. */
function withVjp<T>(op: string, vjp: Vjp, f: () => T): T {
  const table = PRIMS as Record<string, Prim>;
  const saved = table[op]!;
  table[op] = { ...saved, vjp };
  try {
    return f();
  } finally {
    table[op] = saved;
  }
}

/** A fixed sample of a case arbitrary (seeded, so the negative controls are deterministic). */
const sample = (key: string, seed: number) => fc.sample(CASES[key]!, { numRuns: 1, seed })[0]!;

const WRONG: ReadonlyArray<{ readonly key: string; readonly what: string; readonly vjp: Vjp }> = [
  { key: 'tanh', what: "tanh' = 1 − y (the square forgotten)", vjp: (b, n, dy) => [b.emit('mul', [dy, b.emit('sub', [b.constant(1, []), n.id])])] },
  { key: 'sigmoid', what: "σ' = y", vjp: (b, n, dy) => [b.emit('mul', [dy, n.id])] },
  { key: 'softmax', what: 'softmax backward as p·dy (the row sum dropped)', vjp: (b, n, dy) => [b.emit('mul', [dy, n.id])] },
  { key: 'rsqrt', what: "rsqrt' = −½·y (y² missing)", vjp: (b, n, dy) => [b.emit('mul', [dy, b.emit('mul', [b.constant(-0.5, []), n.id])])] },
  {
    key: 'layer_norm',
    what: 'layer_norm backward with eps ×100',
    vjp: (b, n, dy) => [b.emit('layer_norm_grad', [dy, n.inputs[0]!], { eps: (n.attrs['eps'] as number) * 100 + 0.05 })],
  },
  {
    key: 'matmul rank 2',
    what: 'matmul with the plain rule whatever the flags',
    vjp: (b, n, dy) => {
      const [a, w] = n.inputs as [number, number];
      const ta = n.attrs['transposeA'] === true, tb = n.attrs['transposeB'] === true;
      // Right shapes, wrong values: for square operands, the flags are ignored in the gradient.
      return [b.emit('matmul', [dy, w], { transposeA: false, transposeB: !tb }), b.emit('matmul', [a, dy], { transposeA: !ta, transposeB: false })];
    },
  },
];

test('negative control: a wrong VJP rule in the primitive table is detected', async (t) => {
  await useBackend('cpu');
  for (const { key, what, vjp } of WRONG) {
    const op = primOf(key);
    let c = sample(key, 42);
    if (key.startsWith('matmul')) {
      // A square, transposed product, where the wrong rule still has the right shapes.
      c = fc.sample(matmulCase(2).filter((m) => m.inputs[0]!.shape[0] === m.inputs[0]!.shape[1] && m.inputs[1]!.shape[0] === m.inputs[1]!.shape[1] && m.inputs[0]!.shape[0]! > 1 && m.label.includes('ᵀ')), { numRuns: 1, seed: 7 })[0]!;
    }
    assert.deepEqual(check(c, 3), [], `${c.label}: the right rule passes`);
    const bad = withVjp(op, vjp, () => check(c, 3));
    assert.ok(bad.length > 0, `${what}: not detected on ${c.label}`);
    t.diagnostic(`${what}: ${bad.length - 1} element(s) flagged on ${c.label}`);
    assert.deepEqual(check(c, 3), [], `${c.label}: the table is restored`);
  }
});

test('negative control: a gradient 1% off in a single element is detected', async () => {
  await useBackend('cpu');
  for (const key of ['mul', 'matmul rank 3', 'layer_norm', 'ln_modulate', 'softmax_bias']) {
    const c = sample(key, 11);
    const name = c.wrt[0]!;
    let target = -1;
    const bad = check(c, 5, {
      tamper: (n, g) => {
        if (n !== name) return;
        // The largest element, so the change is above the absolute tolerance.
        target = g.reduce((best, v, i) => (Math.abs(v) > Math.abs(g[best]!) ? i : best), 0);
        g[target] = g[target]! * 1.01 + Math.sign(g[target]!) * 1e-3;
      },
    });
    assert.equal(bad.length, 2, `${c.label}: exactly the tampered element is flagged: ${bad.join('; ')}`);
    assert.match(bad[1]!, new RegExp(`^${name}\\[${target}\\]`));
  }
});

test('negative control: a property over a wrong rule fails under fast-check', async () => {
  await useBackend('cpu');
  const wrongSquare: Vjp = (b, n, dy) => [b.emit('mul', [dy, n.inputs[0]!])];
  assert.throws(
    () => withVjp('square', wrongSquare, () => holds(CASES['square']!, 5)),
    (e: Error) => /Property failed/.test(e.message) && /finite difference/.test(String((e.cause as Error | undefined)?.message ?? e.message)),
  );
});
