/**
 * The rewrite rules of compile/fusion.ts and the clean-up passes of compile/passes.ts. Each rule
 * gets its reference pattern written with the DSL's ops and traced: fuse() must fire it (the
 * applied count), the pattern's nodes must be gone, and the fused graph must give the unfused
 * graph's values and, through trainingReport (fusion before autodiff), its gradients (autodiff
 * of the unfused graph), within float32 tolerance — on cpu, on wasm with the native kernels
 * where they are built, and on wasm's own kernels. Patterns that must not fuse (an inner node
 * with another reader, a bias that does not fit) stay as they are. CSE merges what is equal and
 * DCE drops what no output reads; neither changes a result.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import type { Shape } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { add, batchMatmul, chunk, constant, exp, expandDims, geluTanh, layerNorm, linear, mul, reshape, scale, shift, softmax, sum, tanh, transpose } from '../dsl/ops.ts';
import { trace, type InputSpec, type Program, type TraceIO } from '../compile/trace.ts';
import { graphInputs, type Graph } from '../compile/ir.ts';
import { FUSION_RULES, INFERENCE_PHASES, fuse, type Rule } from '../compile/fusion.ts';
import { cse, dce } from '../compile/passes.ts';
import { differentiate, gradName } from '../compile/autodiff.ts';
import { optimize, optimizeReport, trainingReport } from '../compile/pipeline.ts';
import { lower } from '../compile/execute.ts';
import { disposeAll, maxDiff, randomTensor, useBackend, type Variant } from './compile-support.ts';

type T = Tensor<Shape>;
const f32 = (...shape: number[]): InputSpec => ({ shape, dtype: 'float32' });

/** Σ y·wy with wy a data input of y's shape: a non-uniform cotangent. */
function weighted(io: TraceIO, y: T): T {
  return sum(mul(y, io.data<Shape>('wy')), y.shape.map((_, i) => i));
}

interface Pattern {
  readonly label: string;
  readonly specs: Readonly<Record<string, InputSpec>>;
  /** The traced body: its result y (the loss Σ y·wy is added). */
  readonly body: (io: TraceIO) => T;
  /** What fuse() must report. */
  readonly applied: Readonly<Record<string, number>>;
  /** Op counts the fused graph must have (0: the pattern's nodes are gone). */
  readonly counts: Readonly<Record<string, number>>;
}

const programOf = (p: Pattern): Program => (io) => {
  const y = p.body(io);
  return { y, loss: weighted(io, y) };
};

function traced(p: Pattern): Graph {
  const g0 = trace((io) => ({ y: p.body(io) }), p.specs);
  const yShape = g0.nodes[g0.outputs[0]!.node]!.shape;
  return trace(programOf(p), { ...p.specs, wy: f32(...yShape) });
}

const opCount = (g: Graph, op: string) => g.nodes.filter((n) => n.op === op).length;

const GELU_C = Math.sqrt(2 / Math.PI);
const FUSED_OPS = ['linear', 'gelu_tanh', 'ln_modulate', 'softmax_bias'] as const;

const PATTERNS: readonly Pattern[] = [
  {
    label: 'linear: add(matmul(x, wᵀ), b) on (2, 3, 5) rows',
    specs: { x: f32(2, 3, 5), w: f32(4, 5), b: f32(4) },
    body: (io) => linear(io.data<readonly [2, 3, 5]>('x'), io.data<readonly [4, 5]>('w'), io.data<readonly [4]>('b')),
    applied: { linear: 1 },
    counts: { linear: 1, matmul: 0, add: 0 },
  },
  {
    label: 'gelu: ½x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))',
    specs: { x: f32(3, 7) },
    body: (io) => geluTanh(io.data<readonly [3, 7]>('x')),
    applied: { gelu: 1 },
    counts: { gelu_tanh: 1, tanh: 0, add: 0, mul: 1 },
  },
  {
    label: 'ln_modulate: LN(x)·(1 + scale) + shift',
    specs: { x: f32(2, 3, 8), sc: f32(2, 8), sh: f32(2, 8) },
    body: (io) => {
      const x = io.data<readonly [2, 3, 8]>('x');
      return add(mul(layerNorm(x, 1e-6), shift(expandDims(io.data<readonly [2, 8]>('sc'), 1), 1)), expandDims(io.data<readonly [2, 8]>('sh'), 1));
    },
    applied: { ln_modulate: 1 },
    counts: { ln_modulate: 1, layer_norm: 0, add: 0, reshape: 0, mul: 1 },
  },
  {
    label: 'softmax_bias: softmax(q·kᵀ + bias), bias shared by the batch',
    specs: { q: f32(2, 3, 4, 5), k: f32(2, 3, 4, 5), bias: f32(1, 3, 4, 4) },
    body: (io) => softmax(add(batchMatmul(io.data<readonly [2, 3, 4, 5]>('q'), io.data<readonly [2, 3, 4, 5]>('k'), true), io.data<readonly [1, 3, 4, 4]>('bias'))),
    applied: { softmax_bias: 1 },
    counts: { softmax_bias: 1, softmax: 0, add: 0, matmul: 1 },
  },
  {
    label: 'softmax_bias: bias per sample',
    specs: { q: f32(2, 2, 3, 4), k: f32(2, 2, 3, 4), bias: f32(2, 2, 3, 3) },
    body: (io) => softmax(add(batchMatmul(io.data<readonly [2, 2, 3, 4]>('q'), io.data<readonly [2, 2, 3, 4]>('k'), true), io.data<readonly [2, 2, 3, 3]>('bias'))),
    applied: { softmax_bias: 1 },
    counts: { softmax_bias: 1, softmax: 0, add: 0 },
  },
  {
    label: 'all four in one block: linear → gelu → ln_modulate → attention with a bias',
    specs: { x: f32(2, 4, 8), w: f32(8, 8), b: f32(8), sc: f32(2, 8), sh: f32(2, 8), bias: f32(1, 1, 4, 4) },
    body: (io) => {
      const h = geluTanh(linear(io.data<readonly [2, 4, 8]>('x'), io.data<readonly [8, 8]>('w'), io.data<readonly [8]>('b')));
      const m = add(mul(layerNorm(h, 1e-6), shift(expandDims(io.data<readonly [2, 8]>('sc'), 1), 1)), expandDims(io.data<readonly [2, 8]>('sh'), 1));
      const q = reshape(m as Tensor<readonly [2, 4, 8]>, [2, 1, 4, 8] as const);
      return softmax(add(batchMatmul(q, q, true), io.data<readonly [1, 1, 4, 4]>('bias')));
    },
    applied: { linear: 1, gelu: 1, ln_modulate: 1, softmax_bias: 1 },
    counts: { linear: 1, gelu_tanh: 1, ln_modulate: 1, softmax_bias: 1, tanh: 0, layer_norm: 0, softmax: 0 },
  },
];

/** Patterns that must not fuse (or whose rule must leave them alone), and still compute the same. */
const NEGATIVE: ReadonlyArray<Pattern & { readonly why: string }> = [
  {
    label: 'linear: the product is also read elsewhere',
    why: 'the matmul has a second reader',
    specs: { x: f32(6, 5), w: f32(4, 5), b: f32(4) },
    body: (io) => {
      const mm = batchMatmul(io.data<readonly [6, 5]>('x'), io.data<readonly [4, 5]>('w'), true);
      return add(add(mm, io.data<readonly [4]>('b')), tanh(mm));
    },
    applied: {},
    counts: { linear: 0, matmul: 1 },
  },
  {
    label: 'linear: a bias of shape (1, O) is not a linear bias',
    why: 'the bias is not (O)',
    specs: { x: f32(6, 5), w: f32(4, 5), b: f32(1, 4) },
    body: (io) => add(batchMatmul(io.data<readonly [6, 5]>('x'), io.data<readonly [4, 5]>('w'), true), io.data<readonly [1, 4]>('b')),
    applied: {},
    counts: { linear: 0, matmul: 1 },
  },
  {
    label: 'softmax_bias: a bias with one head for several',
    why: 'the bias does not have the logits’ head axis',
    specs: { q: f32(2, 3, 4, 5), k: f32(2, 3, 4, 5), bias: f32(2, 1, 4, 4) },
    body: (io) => softmax(add(batchMatmul(io.data<readonly [2, 3, 4, 5]>('q'), io.data<readonly [2, 3, 4, 5]>('k'), true), io.data<readonly [2, 1, 4, 4]>('bias'))),
    applied: {},
    counts: { softmax_bias: 0, softmax: 1 },
  },
  {
    label: 'softmax_bias: a bias over the keys only',
    why: 'the bias is (L), not (1|B, H, L, L)',
    specs: { q: f32(2, 3, 4, 5), k: f32(2, 3, 4, 5), bias: f32(4) },
    body: (io) => softmax(add(batchMatmul(io.data<readonly [2, 3, 4, 5]>('q'), io.data<readonly [2, 3, 4, 5]>('k'), true) as T, io.data<readonly [4]>('bias'))),
    applied: {},
    counts: { softmax_bias: 0, softmax: 1 },
  },
  {
    label: 'softmax_bias: logits that are not square (cross-attention)',
    why: 'L ≠ M',
    specs: { q: f32(1, 2, 3, 4), k: f32(1, 2, 5, 4), bias: f32(1, 2, 3, 5) },
    body: (io) => softmax(add(batchMatmul(io.data<readonly [1, 2, 3, 4]>('q'), io.data<readonly [1, 2, 5, 4]>('k'), true), io.data<readonly [1, 2, 3, 5]>('bias'))),
    applied: {},
    counts: { softmax_bias: 0, softmax: 1 },
  },
  {
    label: 'softmax_bias: the biased logits are also read elsewhere',
    why: 'the add has a second reader',
    specs: { q: f32(1, 2, 3, 4), k: f32(1, 2, 3, 4), bias: f32(1, 2, 3, 3) },
    body: (io) => {
      const logits = add(batchMatmul(io.data<readonly [1, 2, 3, 4]>('q'), io.data<readonly [1, 2, 3, 4]>('k'), true), io.data<readonly [1, 2, 3, 3]>('bias'));
      return add(softmax(logits), tanh(logits));
    },
    applied: {},
    counts: { softmax_bias: 0, softmax: 1 },
  },
  {
    label: 'ln_modulate: the normalised x is also read elsewhere',
    why: 'the layer_norm has a second reader',
    specs: { x: f32(2, 3, 8), sc: f32(2, 8), sh: f32(2, 8) },
    body: (io) => {
      const ln = layerNorm(io.data<readonly [2, 3, 8]>('x'), 1e-6);
      return add(add(mul(ln, shift(expandDims(io.data<readonly [2, 8]>('sc'), 1), 1)), expandDims(io.data<readonly [2, 8]>('sh'), 1)), tanh(ln));
    },
    applied: {},
    counts: { ln_modulate: 0, layer_norm: 1 },
  },
  {
    label: 'ln_modulate: shift and scale shared by every sample (1, D)',
    why: 'ln_modulate takes shift and scale (G, D)',
    specs: { x: f32(2, 3, 8), sc: f32(1, 8), sh: f32(1, 8) },
    body: (io) => add(mul(layerNorm(io.data<readonly [2, 3, 8]>('x'), 1e-6), shift(expandDims(io.data<readonly [1, 8]>('sc'), 1), 1)), expandDims(io.data<readonly [1, 8]>('sh'), 1)),
    applied: {},
    counts: { ln_modulate: 0, layer_norm: 1 },
  },
  {
    label: 'ln_modulate: (2 + scale), not (1 + scale)',
    why: 'the factor is not 1 + scale',
    specs: { x: f32(2, 3, 8), sc: f32(2, 8), sh: f32(2, 8) },
    body: (io) => add(mul(layerNorm(io.data<readonly [2, 3, 8]>('x'), 1e-6), shift(expandDims(io.data<readonly [2, 8]>('sc'), 1), 2)), expandDims(io.data<readonly [2, 8]>('sh'), 1)),
    applied: {},
    counts: { ln_modulate: 0, layer_norm: 1 },
  },
  {
    label: 'gelu: a different cubic coefficient',
    why: '0.05 is not 0.044715',
    specs: { x: f32(3, 7) },
    body: (io) => {
      const x = io.data<readonly [3, 7]>('x');
      return mul(scale(x, 0.5), shift(tanh(scale(add(x, scale(mul(x, mul(x, x)), 0.05)), GELU_C)), 1));
    },
    applied: {},
    counts: { gelu_tanh: 0, tanh: 1 },
  },
  {
    label: 'gelu: ½x·(1 − tanh(…))',
    why: 'the gate is not 1 + tanh',
    specs: { x: f32(3, 7) },
    body: (io) => {
      const x = io.data<readonly [3, 7]>('x');
      return mul(scale(x, 0.5), shift(scale(tanh(scale(add(x, scale(mul(x, mul(x, x)), 0.044715)), GELU_C)), -1), 1));
    },
    applied: {},
    counts: { gelu_tanh: 0, tanh: 1 },
  },
];

function feedsFor(g: Graph, seed: number): Map<string, tf.Tensor> {
  return new Map(graphInputs(g).map(({ name, node }, i) => [name, randomTensor(seed + i, node.shape)]));
}

const wrtOf = (g: Graph) => graphInputs(g).map((i) => i.name).filter((n) => n !== 'wy');

function assertClose(a: tf.Tensor, b: tf.Tensor, what: string, rtol = 1e-4): void {
  assert.deepEqual(a.shape, b.shape, `${what}: shapes`);
  const { diff, scale: s } = maxDiff(a, b);
  assert.ok(diff <= rtol * (1 + s), `${what}: max |fused − unfused| = ${diff} (values up to ${s})`);
}

/** Values of g and g2, and the gradients trainingReport and plain autodiff give, agree on random inputs. */
function assertSameResults(g: Graph, fusedForward: Graph, label: string, seed: number): void {
  const wrt = wrtOf(g);
  const feeds = feedsFor(g, seed);
  const ref = lower(g), fused = lower(fusedForward);
  const train = trainingReport(g, 'loss', wrt);
  const refTrain = lower(differentiate(g, 'loss', wrt)), fusedTrain = lower(train.graph);
  const outs: Map<string, tf.Tensor>[] = [];
  const run = (e: ReturnType<typeof lower>) => {
    const o = e.run(feeds);
    outs.push(o);
    return o;
  };
  try {
    const a = run(ref), b = run(fused);
    for (const k of ['y', 'loss']) assertClose(b.get(k)!, a.get(k)!, `${label}: ${k}`);
    const ga = run(refTrain), gb = run(fusedTrain);
    for (const name of wrt) assertClose(gb.get(gradName(name))!, ga.get(gradName(name))!, `${label}: gradient of ${name}`);
    assertClose(gb.get('loss')!, ga.get('loss')!, `${label}: loss in the training graph`);
  } finally {
    for (const o of outs) disposeAll(o);
    for (const e of [ref, fused, refTrain, fusedTrain]) e.dispose();
    disposeAll(feeds);
  }
}

async function fusionTests(t: TestContext, variant: Variant): Promise<void> {
  t.diagnostic(await useBackend(variant));
  const tensors = tf.memory().numTensors;
  for (const p of PATTERNS) {
    await t.test(p.label, () => {
      const g = traced(p);
      const { graph, applied } = fuse(g);
      assert.deepEqual(applied, p.applied, 'rules fired');
      for (const [op, n] of Object.entries(p.counts)) assert.equal(opCount(graph, op), n, `${op} nodes after fusion`);
      assert.ok(graph.nodes.length < g.nodes.length, `fusion shrinks the graph (${g.nodes.length} → ${graph.nodes.length})`);
      // The same through the pipelines.
      assert.deepEqual(optimizeReport(g).applied, p.applied);
      const train = trainingReport(g, 'loss', wrtOf(g));
      assert.deepEqual(train.applied, p.applied);
      for (const op of FUSED_OPS) assert.equal(opCount(train.graph, op), p.counts[op] ?? 0, `${op} nodes in the training graph`);
      for (const seed of [1, 2]) assertSameResults(g, graph, p.label, 100 * seed);
    });
  }
  for (const p of NEGATIVE) {
    await t.test(`not fused: ${p.label}`, () => {
      const g = traced(p);
      const { graph, applied } = fuse(g);
      assert.deepEqual(applied, p.applied, `no rule fires: ${p.why}`);
      for (const [op, n] of Object.entries(p.counts)) assert.equal(opCount(graph, op), n, `${op} nodes`);
      assertSameResults(g, graph, p.label, 7);
    });
  }
  assert.equal(tf.memory().numTensors, tensors, 'no tensors left behind');
}

test('fusion rules on cpu', (t) => fusionTests(t, 'cpu'));
test('fusion rules on wasm (native kernels where built)', (t) => fusionTests(t, 'wasm'));
test("fusion rules on wasm's own kernels", (t) => fusionTests(t, 'wasm-plain'));

test('gelu whose inner tanh has another reader still computes the same', async () => {
  await useBackend('cpu');
  const p: Pattern = {
    label: 'gelu with tanh read twice',
    specs: { x: f32(3, 5) },
    body: (io) => {
      const x = io.data<readonly [3, 5]>('x');
      const th = tanh(scale(add(x, scale(mul(x, mul(x, x)), 0.044715)), GELU_C));
      return add(mul(scale(x, 0.5), shift(th, 1)), th);
    },
    applied: {},
    counts: {},
  };
  const g = traced(p);
  const { graph, applied } = fuse(g);
  // Whether the rule fires here is the rule's choice (the tanh stays for its other reader either way).
  assert.equal(opCount(graph, 'tanh'), 1);
  assert.ok((applied['gelu'] ?? 0) <= 1);
  assertSameResults(g, graph, p.label, 3);
});

test('negative control: a rule whose replacement computes something else is caught', async () => {
  await useBackend('cpu');
  const tensors = tf.memory().numTensors;
  const rule = (name: string) => FUSION_RULES.find((r) => r.name === name)!;
  const wrong: ReadonlyArray<[Pattern, Rule]> = [
    // gelu_tanh(x) replaced by tanh(x).
    [PATTERNS[1]!, { name: 'gelu', apply: (n, c) => { const r = rule('gelu').apply(n, c); return r && { op: 'tanh', inputs: r.inputs }; } }],
    // shift and scale swapped.
    [PATTERNS[2]!, { name: 'ln_modulate', apply: (n, c) => { const r = rule('ln_modulate').apply(n, c); return r && { ...r, inputs: [r.inputs[0]!, r.inputs[2]!, r.inputs[1]!] }; } }],
  ];
  for (const [p, bad] of wrong) {
    const g = traced(p);
    const { graph, applied } = fuse(g, [bad]);
    assert.deepEqual(applied, p.applied);
    assert.throws(() => assertSameResults(g, graph, p.label, 1), /max \|fused − unfused\|/, `${p.label}: the wrong replacement is detected`);
  }
  assert.equal(tf.memory().numTensors, tensors);
});

// ---------------------------------------------------------------------------------------------
// CSE and DCE.

function sameOutputs(g1: Graph, g2: Graph, seed: number): void {
  const feeds = feedsFor(g1, seed);
  const e1 = lower(g1), e2 = lower(g2);
  const a = e1.run(feeds);
  const b = e2.run(new Map([...feeds].filter(([k]) => e2.inputs.some((i) => i.name === k))));
  try {
    assert.deepEqual([...b.keys()].sort(), [...a.keys()].sort());
    for (const [k, t] of a) assertClose(b.get(k)!, t, k, 1e-6);
  } finally {
    disposeAll(a), disposeAll(b), disposeAll(feeds);
    e1.dispose(), e2.dispose();
  }
}

test('cse merges duplicate subexpressions and equal constants, and nothing else', async () => {
  await useBackend('cpu');
  const g = trace((io) => {
    const x = io.data<readonly [3, 4]>('x');
    const z = io.data<readonly [3, 4]>('z');
    const a = add(exp(x), exp(x)); // exp(x) twice
    const b = add(scale(x, 2), scale(x, 2)); // two constants 2, two muls
    const c = add(sum(x, [0], true), sum(x, [1], true)); // different attrs: not merged
    const d = add(exp(z), constant(x, new Float32Array(12).fill(1), [3, 4] as const)); // exp of another input
    const e = add(d, constant(x, new Float32Array(12).fill(1), [3, 4] as const)); // equal contents, another array
    return { a, b, c, e };
  }, { x: f32(3, 4), z: f32(3, 4) });
  const merged = cse(g);
  const count = (gr: Graph, op: string) => opCount(gr, op);
  assert.equal(count(g, 'exp'), 3);
  assert.equal(count(merged, 'exp'), 2, 'exp(x) once, exp(z) kept');
  assert.equal(count(merged, 'mul'), 1, 'x·2 once');
  assert.equal(merged.nodes.filter((n) => n.op === 'const' && n.attrs['fill'] === 2).length, 1, 'one constant 2');
  assert.equal(count(merged, 'sum'), 2, 'sums over different axes stay apart');
  assert.equal(merged.nodes.filter((n) => n.op === 'const' && n.attrs['value'] !== undefined).length, 2, 'value constants compare by identity');
  assert.equal(count(merged, 'input'), 2);
  assert.equal(g.nodes.length - merged.nodes.length, 3, 'exp(x), the constant 2 and x·2: three nodes merged');
  sameOutputs(g, merged, 5);
  // Idempotent.
  assert.equal(cse(merged).nodes.length, merged.nodes.length);
});

test('dce removes what no output reads, unread inputs included, and keeps the rest', async () => {
  await useBackend('cpu');
  const g = trace((io) => {
    const x = io.data<readonly [3, 4]>('x');
    io.data<readonly [2]>('unused');
    const dead = tanh(exp(x));
    void add(dead, dead);
    return { y: scale(x, 3), z: exp(x) };
  }, { x: f32(3, 4), unused: f32(2) });
  const live = dce(g);
  assert.equal(opCount(live, 'tanh'), 0);
  assert.equal(opCount(live, 'add'), 0);
  assert.equal(opCount(live, 'exp'), 1, 'the exp an output reads stays, the dead one goes');
  assert.deepEqual(graphInputs(live).map((i) => i.name), ['x']);
  assert.ok(live.nodes.length < g.nodes.length);
  sameOutputs(g, live, 9);
  assert.equal(dce(live).nodes.length, live.nodes.length, 'idempotent');
  assert.deepEqual(graphInputs(dce(cse(g))).map((i) => i.name), ['x']);
  assert.equal(opCount(dce(cse(g)), 'exp'), 1);
});

test('cse and dce on a differentiated graph shrink it and keep every output', async () => {
  await useBackend('cpu');
  const p = PATTERNS[PATTERNS.length - 1]!;
  const g = differentiate(traced(p), 'loss', wrtOf(traced(p)));
  const clean = dce(cse(g));
  assert.ok(clean.nodes.length < g.nodes.length, `${g.nodes.length} → ${clean.nodes.length}`);
  sameOutputs(g, clean, 21);
});

/** layers/attention.ts's computation on a given qkv: heads split, scaled logits (+ bias), softmax, heads merged. */
function attentionBody(bias: boolean) {
  return (io: TraceIO): T => {
    const qkv = io.data<readonly [2, 7, 24]>('qkv');
    const [q, k, v] = chunk(qkv, 3, 2).map((t) => transpose(reshape(t, [2, 7, 2, 4] as const), [0, 2, 1, 3] as const));
    let logits = batchMatmul(scale(q!, 0.5), k!, true);
    if (bias) logits = add(logits, io.data<readonly [1, 2, 7, 7]>('bias')) as typeof logits;
    return reshape(transpose(batchMatmul(softmax(logits), v!), [0, 2, 1, 3] as const), [2, 7, 8] as const) as unknown as T;
  };
}

test('attention fuses into one op in inference graphs only, and computes what its parts do', async (t) => {
  for (const variant of ['cpu', 'wasm', 'wasm-plain'] as const) {
    t.diagnostic(await useBackend(variant));
    const tensors = tf.memory().numTensors;
    for (const bias of [false, true]) {
      const g = trace((io) => ({ y: attentionBody(bias)(io) }), { qkv: f32(2, 7, 24), ...(bias ? { bias: f32(1, 2, 7, 7) } : {}) });
      const inference = optimizeReport(g);
      assert.deepEqual(inference.applied, { attention: 1 }, 'the rule fires, and the softmax it absorbs is not fused on its own');
      for (const op of ['attention', 'softmax', 'softmax_bias', 'matmul', 'transpose', 'slice']) assert.equal(opCount(inference.graph, op), op === 'attention' ? 1 : 0, `${op} nodes`);
      const parts = optimize(g, [FUSION_RULES]);
      assert.equal(opCount(parts, 'attention'), 0, 'the training rules leave attention in its parts');
      const feeds = feedsFor(g, 11);
      const [fused, unfused] = [lower(inference.graph), lower(parts)];
      const [a, b] = [fused.run(feeds), unfused.run(feeds)];
      assertClose(a.get('y')!, b.get('y')!, `attention${bias ? ' with a bias' : ''} on ${variant}`);
      for (const o of [a, b]) disposeAll(o);
      for (const e of [fused, unfused]) e.dispose();
      disposeAll(feeds);
    }
    assert.equal(tf.memory().numTensors, tensors, 'no tensors left behind');
  }
  // A training graph keeps the parts (the fused op has no VJP); inference runs attention first, then the training rules.
  const g = traced({ label: 'attention', specs: { qkv: f32(2, 7, 24) }, body: attentionBody(false), applied: {}, counts: {} });
  assert.equal(trainingReport(g, 'loss', ['qkv']).applied['attention'], undefined);
  assert.deepEqual(INFERENCE_PHASES.map((rules) => rules.map((r) => r.name)), [['attention'], FUSION_RULES.map((r) => r.name)]);
});
