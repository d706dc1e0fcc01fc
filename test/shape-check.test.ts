import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkShape, bindShape, sym, ShapeCheckError, type Shape } from '../dsl/shape.ts';
import { unsafeCast, type Tensor } from '../dsl/tensor.ts';
import { dataInput, expandDims, reshape, split, squeeze, transpose } from '../dsl/ops.ts';
import { GraphBuilder } from '../compile/ir.ts';
import { trace } from '../compile/trace.ts';
import { layer, named, residual, seq } from '../dsl/layer.ts';
import { paramView } from '../dsl/param.ts';
import { linear } from '../layers/linear.ts';
import { adaLNBlock } from '../layers/adaln-block.ts';
import { namedConfig } from '../mdt/config.ts';

test('the build-time check names every dimension binding, like jaxtyping', () => {
  const B = sym('B'), L = sym('L');
  const b = checkShape('x', [2, 11, 64], [B, L, 64]);
  assert.deepEqual(b, { B: 2, L: 11 });
  assert.throws(() => checkShape('blocks.3 input', [2, 11, 63], [B, L, 64]), (e: Error) => e instanceof ShapeCheckError
    && e.message === 'blocks.3 input: expected shape [B, L, 64], got [2, 11, 63] (dim 2 should be 64 but is 63); bindings: B=2, L=11');
  assert.throws(() => checkShape('skip', [3, 16, 64], [B, 16, 64], { B: 2 }), /dim 0 is B, already bound to 2, but is 3\); bindings: B=2/);
  assert.throws(() => checkShape('x', [2, 16], [B, 16, 64]), /rank 2 instead of 3/);
  assert.deepEqual(bindShape([B, L, 64], { B: 2, L: 11 }), [2, 11, 64]);
  assert.throws(() => bindShape([B, L], { B: 2 }), /dim 1 \(L\) is unbound; bindings: B=2/);
});

test('unsafeCast checks at trace time', () => {
  const t = dataInput(new GraphBuilder(), 'x', [2, 3]);
  assert.deepEqual(unsafeCast(t, [sym('B'), 3] as const).shape, [2, 3]);
  assert.throws(() => unsafeCast(t, [2, 4] as const), /expected shape \[2, 4\], got \[2, 3\]/);
  assert.throws(() => unsafeCast(t, [sym('B'), 3] as const, 'x', { B: 4 }), /x: expected shape \[B, 3\], got \[2, 3\].*B=4/);
});

test('composition is re-checked once when built, for sizes the types could not prove', () => {
  const B = sym('B');
  const d = 64 as number; // a run-time size: the types see `number`
  const a = layer([B, 16] as const, [B, d] as const, {}, (_p, x) => x as never);
  const b = layer([B, 65] as const, [B, 8] as const, {}, (_p, x) => x as never);
  assert.throws(() => seq(a, b), /seq: layer 0 returns \[B, 64\] but layer 1 takes \[B, 65\]/);
});

test('configs that types cannot check fail at build time with every reason', () => {
  assert.throws(() => namedConfig('MDT-S/2', { hiddenSize: 388, inputSize: 33 }), (e: Error) =>
    /inputSize 33 is not a multiple of patchSize 2/.test(e.message) && /hiddenSize 388 is not divisible by numHeads 6/.test(e.message));
  assert.throws(() => namedConfig('MDT-Q/2'), /unknown model "MDT-Q\/2"; expected one of DiT-S\/2/);
});

test('reshape takes symbols (from the layer bindings, or inferred) and one -1', () => {
  const g = new GraphBuilder();
  const B = sym('B');
  const x: Tensor<Shape> = dataInput(g, 'x', [2, 16, 64]);
  assert.deepEqual(reshape(x, [B, 1024]).shape, [2, 1024]);
  assert.deepEqual(reshape(x, [-1, 1024]).shape, [2, 1024]);
  assert.deepEqual(reshape(x, [2, -1, 8]).shape, [2, 128, 8]);
  assert.throws(() => reshape(x, [-1, 1000] as readonly number[]), /other sizes multiply to 1000, which does not divide 2048/);
  assert.throws(() => reshape(x, [B, sym('L'), 64] as readonly number[]), /2 sizes are unknown here \(B, L\)/);
  // Inside a named layer the symbols are bound by its input, so two of them resolve.
  const L = sym('L');
  const flat = named('flatten', layer([B, L, 64] as const, [B, L, 8, 8] as const, {}, (_p, v) => reshape(v, [B, L, 8, 8])));
  assert.deepEqual(flat.apply(paramView(g, {}), x as never, undefined).shape, [2, 16, 8, 8]);
});

test('transpose, expandDims, squeeze, split check their axes when traced', () => {
  const x = dataInput(new GraphBuilder(), 'x', [2, 16, 64]);
  assert.throws(() => transpose(x, [0, 2, 5] as readonly number[]), /\[0, 2, 5\] is not a permutation of the 3 axes of \[2, 16, 64\]/);
  assert.deepEqual(expandDims(x, -1).shape, [2, 16, 64, 1]);
  assert.throws(() => squeeze(x, 1 as number), /axis 1 of \[2, 16, 64\] is not 1/);
  assert.deepEqual(split(x, [48, 16], 2).map((t) => t.shape), [[2, 16, 48], [2, 16, 16]]);
  assert.throws(() => split(x, [48, 8], 2), /sizes \[48, 8\] do not sum to axis 2/);
});

test('a named layer checks input, side inputs and output with one memo per call', () => {
  const B = sym('B');
  const block = named('blocks.0', adaLNBlock(B as never, sym('L'), 96, { heads: 4, mlpRatio: 2, grid: null, skip: false }));
  const g = new GraphBuilder();
  const p = paramView(g, block.params);
  const x = dataInput(g, 'x', [2, 16, 96]);
  // A context whose batch differs: named by layer path and symbol, before any kernel sees it.
  assert.throws(() => block.apply(p, x as never, { c: dataInput(g, 'c', [4, 96]) as never }),
    (e: Error) => e instanceof ShapeCheckError && e.message === 'blocks.0: symbol B is 2 in input dim 0 but 4 in ctx.c dim 0 (ctx.c is [4, 96], declared [B, 96])');
  assert.throws(() => block.apply(p, dataInput(g, 'x2', [2, 16, 95]) as never, { c: dataInput(g, 'c2', [2, 96]) as never }),
    /blocks\.0: input should be \[B, L, 96\], got \[2, 16, 95\] \(dim 2 should be 96 but is 95\)/);
  assert.deepEqual(block.apply(p, x as never, { c: dataInput(g, 'c3', [2, 96]) as never }).shape, [2, 16, 96]);
});

test('residual refuses a layer that changes the shape; ParamView.get checks the declared shape', () => {
  const B = sym('B');
  const widen = linear([B] as const, 64, 64);
  const cheat = { ...widen, outShape: [B, 65] as const } as unknown as typeof widen;
  assert.throws(() => residual(cheat), /residual: the layer maps \[B, 64\] to \[B, 65\]; x \+ f\(x\) needs the same shape/);
  const g = new GraphBuilder();
  const p = paramView(g, widen.params);
  assert.deepEqual(p.get('weight', [64, 64] as const).shape, [64, 64]);
  assert.throws(() => p.get('weight', [64, 63] as const), /parameter weight: expected shape \[64, 63\], got \[64, 64\]/);
  const io = { x: { shape: [2, 3], dtype: 'float32' as const } };
  assert.deepEqual(trace((t) => ({ y: t.data('x', [B, 3] as const) }), io).outputs.length, 1);
  assert.throws(() => trace((t) => ({ y: t.data('x', [B, 4] as const) }), io), /input x: expected shape \[B, 4\], got \[2, 3\]/);
});
