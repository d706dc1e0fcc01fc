import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkShape, bindShape, sym, ShapeCheckError } from '../dsl/shape.ts';
import { unsafeCast } from '../dsl/tensor.ts';
import { dataInput } from '../dsl/ops.ts';
import { GraphBuilder } from '../compile/ir.ts';
import { layer, seq } from '../dsl/layer.ts';
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
