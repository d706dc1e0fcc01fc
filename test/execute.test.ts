/**
 * The executor (compile/execute.ts) and jit (compile/trace.ts): no tensor leaks across runs of
 * a differentiated graph (with and without the clean-up passes), outputs that belong to the
 * caller (copies where an output is an input or a folded constant), the memory plan (each
 * intermediate freed after its last reader), constant folding (what depends only on constants
 * runs once, when lowering), errors that name a missing or mis-shaped input, and jit's cache
 * of one executable per shape signature. On cpu and on wasm (native kernels where built).
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import type { Shape } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { add, batchMatmul, expandDims, geluTanh, layerNorm, linear, mean, mul, shift, softmax, square, tanh } from '../dsl/ops.ts';
import { jit, trace } from '../compile/trace.ts';
import { GraphBuilder, type Graph } from '../compile/ir.ts';
import { constantNodes, lower } from '../compile/execute.ts';
import { differentiate } from '../compile/autodiff.ts';
import { trainingReport } from '../compile/pipeline.ts';
import { disposeAll, maxDiff, randomTensor, useBackend, type Variant } from './compile-support.ts';

type T = Tensor<Shape>;

/** A block like the models' (linear, GELU, adaLN modulate, attention with a bias), with a scalar loss. */
function block(): Graph {
  return trace(
    (io) => {
      const h = geluTanh(linear(io.data<readonly [2, 4, 8]>('x'), io.data<readonly [8, 8]>('w'), io.data<readonly [8]>('b')));
      const m = add(mul(layerNorm(h, 1e-6), shift(expandDims(io.data<readonly [2, 8]>('sc'), 1), 1)), expandDims(io.data<readonly [2, 8]>('sh'), 1)) as T;
      const q = m as Tensor<readonly [2, 4, 8]>;
      const att = softmax(batchMatmul(q, q, true));
      return { att, loss: mean(square(att), [0, 1, 2]) };
    },
    { x: { shape: [2, 4, 8], dtype: 'float32' }, w: { shape: [8, 8], dtype: 'float32' }, b: { shape: [8], dtype: 'float32' }, sc: { shape: [2, 8], dtype: 'float32' }, sh: { shape: [2, 8], dtype: 'float32' } },
  );
}

const WRT = ['x', 'w', 'b', 'sc', 'sh'];

function feedsOf(g: Graph, seed = 1): Map<string, tf.Tensor> {
  return new Map(g.nodes.filter((n) => n.op === 'input').map((n, i) => [n.attrs['name'] as string, randomTensor(seed + i, n.shape)]));
}

async function onEach(t: TestContext, body: (variant: Variant) => void | Promise<void>): Promise<void> {
  for (const variant of ['cpu', 'wasm'] as const) {
    await t.test(variant, async (st) => {
      st.diagnostic(await useBackend(variant));
      await body(variant);
    });
  }
}

test('50 runs of a differentiated graph leave the tensor count where it was', (t) =>
  onEach(t, () => {
    const g = block();
    const graphs: Record<string, Graph> = {
      'trainingReport (fused, cse, dce)': trainingReport(g, 'loss', WRT).graph,
      // No dce: autodiff leaves gradients of nothing (the constants' own) and dead folded constants.
      'differentiate alone': differentiate(g, 'loss', WRT),
    };
    const feeds = feedsOf(g);
    for (const [what, graph] of Object.entries(graphs)) {
      const before = tf.memory().numTensors;
      const exe = lower(graph);
      const folded = tf.memory().numTensors - before;
      let first: Float32Array | undefined;
      for (let i = 0; i < 50; i++) {
        const out = exe.run(feeds);
        assert.equal(out.size, graph.outputs.length);
        assert.equal(tf.memory().numTensors, before + folded + out.size, `${what}: run ${i} holds only the folded constants and its outputs`);
        const grad = out.get('grad:w')!.dataSync() as Float32Array;
        if (first === undefined) first = Float32Array.from(grad);
        else assert.deepEqual(grad, first, `${what}: run ${i} gives the first run's gradient`);
        disposeAll(out);
      }
      exe.dispose();
      assert.equal(tf.memory().numTensors, before, `${what}: dispose() frees the folded constants`);
      for (const x of feeds.values()) assert.equal(x.isDisposed, false, 'inputs are never disposed');
    }
    disposeAll(feeds);
  }));

test('outputs belong to the caller: disposing them leaks nothing and breaks no later run', (t) =>
  onEach(t, () => {
    const g = trainingReport(block(), 'loss', WRT).graph;
    const feeds = feedsOf(g, 5);
    const exe = lower(g);
    const base = tf.memory().numTensors;
    const kept = exe.run(feeds); // not disposed until later: the caller may hold outputs across runs
    const again = exe.run(feeds);
    assert.equal(tf.memory().numTensors, base + kept.size + again.size);
    for (const [k, v] of kept) {
      assert.notEqual(v, again.get(k), `${k}: each run hands out its own tensor`);
      assert.deepEqual(v.dataSync(), again.get(k)!.dataSync(), `${k}: the same values`);
    }
    disposeAll(again);
    const third = exe.run(feeds);
    for (const [k, v] of kept) assert.deepEqual(third.get(k)!.dataSync(), v.dataSync(), `${k}: a run after its predecessor's outputs were disposed`);
    disposeAll(kept), disposeAll(third);
    assert.equal(tf.memory().numTensors, base);
    exe.dispose(), disposeAll(feeds);
  }));

test('an output that is an input, a folded constant, or a second name for one value is a copy', (t) =>
  onEach(t, () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'data', [2, 3], 'float32');
    const c = b.constant(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    const y = b.emit('add', [x, c]);
    b.output('x', x);
    b.output('c', c);
    b.output('exp(c)', b.emit('exp', [c]));
    b.output('y', y);
    b.output('y again', y);
    const exe = lower(b.finish());
    const xs = tf.tensor([[1, 1, 1], [2, 2, 2]]);
    const base = tf.memory().numTensors;
    for (let round = 0; round < 3; round++) {
      const out = exe.run(new Map([['x', xs]]));
      assert.notEqual(out.get('x'), xs, 'the input is not handed out itself');
      assert.notEqual(out.get('y'), out.get('y again'), 'two names, two tensors');
      assert.equal(new Set(out.values()).size, out.size);
      assert.deepEqual([...out.get('c')!.dataSync()], [1, 2, 3, 4, 5, 6]);
      const expC = out.get('exp(c)')!.dataSync();
      [1, 2, 3, 4, 5, 6].forEach((v, i) => assert.ok(Math.abs(expC[i]! - Math.exp(v)) < 1e-5 * Math.exp(v), `exp(${v})`));
      assert.deepEqual([...out.get('y again')!.dataSync()], [2, 3, 4, 6, 7, 8]);
      disposeAll(out);
      assert.equal(xs.isDisposed, false, 'disposing the outputs leaves the input alone');
      assert.deepEqual([...xs.dataSync()], [1, 1, 1, 2, 2, 2]);
      assert.equal(tf.memory().numTensors, base, `round ${round}: nothing left behind`);
    }
    exe.dispose(), xs.dispose();
  }));

/** x + (exp(c)·exp(c) + sin(c)) with c constant; the parenthesis is folded. */
function folding(): { graph: Graph; folded: number[] } {
  const b = new GraphBuilder();
  const x = b.input('x', 'data', [4], 'float32');
  const c = b.constant(new Float32Array([0.1, 0.2, 0.3, 0.4]), [4]);
  const e = b.emit('exp', [c]);
  const sq = b.emit('mul', [e, e]); // reads the same folded value twice
  const k = b.emit('add', [sq, b.emit('sin', [c])]);
  b.output('y', b.emit('add', [x, k]));
  return { graph: b.finish(), folded: [c, e, sq, k] };
}

test('constant folding: a subgraph of constants runs once, at lower(), and only its result is kept', (t) =>
  onEach(t, async () => {
    const { graph, folded } = folding();
    const consts = constantNodes(graph);
    for (const id of folded) assert.ok(consts.has(id), `node ${id} (${graph.nodes[id]!.op}) is folded`);
    assert.equal(consts.size, folded.length + 1, 'and the sin and the constants, nothing that reads x');
    const before = tf.memory().numTensors;
    let exe!: ReturnType<typeof lower>;
    const atLower = await tf.profile(() => {
      exe = lower(graph);
    });
    const loweredKernels = atLower.kernels.map((k) => k.name);
    assert.ok(loweredKernels.includes('Exp') && loweredKernels.includes('Sin'), `lower() evaluates the constants (${loweredKernels.join(' ')})`);
    assert.equal(tf.memory().numTensors - before, 1, 'the pool keeps what a run reads (k), not c, exp(c), exp(c)²');
    const xs = tf.tensor([1, 2, 3, 4]);
    for (let i = 0; i < 3; i++) {
      let out!: Map<string, tf.Tensor>;
      const atRun = await tf.profile(() => {
        out = exe.run(new Map([['x', xs]]));
      });
      assert.deepEqual(atRun.kernels.map((k) => k.name), ['Add'], 'a run dispatches one kernel: x + k');
      const c = [0.1, 0.2, 0.3, 0.4];
      const want = tf.tensor(c.map((v, j) => j + 1 + Math.exp(v) ** 2 + Math.sin(v)));
      assert.ok(maxDiff(out.get('y')!, want).diff < 1e-5);
      want.dispose(), disposeAll(out);
    }
    exe.dispose(), xs.dispose();
    assert.equal(tf.memory().numTensors, before);
  }));

test('the memory plan frees each intermediate after its last reader', (t) =>
  onEach(t, async () => {
    const n = 4096;
    const b = new GraphBuilder();
    let h = b.input('x', 'data', [n], 'float32');
    for (let i = 0; i < 20; i++) h = b.emit('tanh', [h]);
    b.output('y', h);
    const exe = lower(b.finish());
    const xs = randomTensor(3, [n]);
    const start = tf.memory().numBytes;
    let out!: Map<string, tf.Tensor>;
    const info = await tf.profile(() => {
      out = exe.run(new Map([['x', xs]]));
    });
    assert.equal(info.kernels.length, 20);
    // Live at once: the input, the value being read and the one being made (20 without a plan).
    assert.ok(info.peakBytes - start <= 2 * 4 * n, `peak ${(info.peakBytes - start) / (4 * n)} intermediates above the input`);
    disposeAll(out), exe.dispose(), xs.dispose();
  }));

test('a missing, mis-shaped or mistyped input is an error naming it and what was expected', (t) =>
  onEach(t, () => {
    const b = new GraphBuilder();
    const x = b.input('x', 'data', [2, 3], 'float32');
    const idx = b.input('idx', 'data', [4], 'int32');
    b.output('y', b.emit('gather', [b.emit('transpose', [x], { perm: [1, 0] }), idx]));
    const exe = lower(b.finish());
    assert.deepEqual(exe.inputs, [{ name: 'x', shape: [2, 3], dtype: 'float32' }, { name: 'idx', shape: [4], dtype: 'int32' }]);
    const xs = tf.zeros([2, 3]), wrong = tf.zeros([3, 2]), ids = tf.tensor([0, 1, 2, 0], [4], 'int32'), floatIds = tf.zeros([4]);
    const base = tf.memory().numTensors;
    assert.throws(() => exe.run(new Map([['x', xs]])), { message: "graph input 'idx' was not given (expected [4] int32)" });
    assert.throws(() => exe.run(new Map<string, tf.Tensor>([['x', wrong], ['idx', ids]])), { message: "graph input 'x': expected [2, 3] float32, got [3, 2] float32" });
    assert.throws(() => exe.run(new Map<string, tf.Tensor>([['x', xs], ['idx', floatIds]])), { message: "graph input 'idx': expected [4] int32, got [4] float32" });
    assert.equal(tf.memory().numTensors, base, 'a refused run allocates nothing');
    const out = exe.run(new Map<string, tf.Tensor>([['x', xs], ['idx', ids]]));
    assert.deepEqual(out.get('y')!.shape, [4, 2]);
    disposeAll(out);
    for (const v of [xs, wrong, ids, floatIds]) v.dispose();
    exe.dispose();
  }));

test('a kernel that fails mid-run frees what the run had made', async () => {
  await useBackend('cpu');
  const b = new GraphBuilder();
  const x = b.input('x', 'data', [3, 2], 'float32');
  const idx = b.input('idx', 'data', [2], 'int32');
  const h = b.emit('tanh', [b.emit('exp', [x])]);
  b.output('y', b.emit('gather', [h, idx]));
  b.output('z', b.emit('neg', [x]));
  const exe = lower(b.finish());
  const xs = tf.zeros([3, 2]), bad = tf.tensor([0, 7], [2], 'int32');
  const base = tf.memory().numTensors;
  assert.throws(() => exe.run(new Map<string, tf.Tensor>([['x', xs], ['idx', bad]])), /index|7/i);
  assert.equal(tf.memory().numTensors, base);
  exe.dispose(), xs.dispose(), bad.dispose();
});

test('jit traces and lowers once per shape signature and reuses the executable', (t) =>
  onEach(t, () => {
    let traces = 0;
    const f = jit((io) => {
      traces++;
      const x = io.data<readonly [number, 5]>('x');
      return { y: tanh(linear(x, io.data<readonly [3, 5]>('w'), io.data<readonly [3]>('b'))) };
    });
    const w = randomTensor(1, [3, 5]), bias = randomTensor(2, [3]);
    const call = (batch: number) => {
      const x = randomTensor(10 + batch, [batch, 5]);
      const inputs = new Map([['x', x], ['w', w], ['b', bias]]);
      const out = f(inputs);
      const want = tf.tidy(() => tf.tanh(tf.add(tf.matMul(x, w, false, true), bias)));
      assert.deepEqual(out.get('y')!.shape, [batch, 3]);
      assert.ok(maxDiff(out.get('y')!, want).diff < 1e-5, `batch ${batch}: the values`);
      const exe = f.executable(inputs);
      want.dispose(), x.dispose(), disposeAll(out);
      return exe;
    };
    const base = tf.memory().numTensors;
    const a = call(2);
    const b = call(3);
    assert.equal(traces, 2, 'two batch sizes, two traces');
    assert.notEqual(a, b, 'two executables');
    assert.equal(call(2), a, 'batch 2 again: the first executable');
    assert.equal(call(3), b);
    assert.equal(traces, 2, 'no more traces');
    assert.deepEqual(a.inputs.find((i) => i.name === 'x')!.shape, [2, 5]);
    assert.deepEqual(b.inputs.find((i) => i.name === 'x')!.shape, [3, 5]);
    // The signature is by names, shapes and dtypes, not by the order of the map.
    const x2 = randomTensor(4, [2, 5]);
    assert.equal(f.executable(new Map([['b', bias], ['x', x2], ['w', w]])), a);
    x2.dispose();
    f.dispose();
    assert.equal(tf.memory().numTensors, base, 'dispose() frees every executable');
    const again = call(2);
    assert.notEqual(again, a, 'after dispose() the cache starts empty');
    assert.equal(traces, 3);
    f.dispose(), w.dispose(), bias.dispose();
  }));
