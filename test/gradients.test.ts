/**
 * Hand-written gradients (dsl/ops.ts, dsl/matmul.ts, the attention layer) and the wasm kernel
 * replacements (dsl/kernels.ts) against central finite differences, on wasm, on cpu, and on wasm
 * with the native product kernels when they are built (each product layout is covered). Each
 * check compares the directional derivative along random directions: ⟨∇f, u⟩ against
 * (f(x + h·u) − f(x − h·u)) / 2h for f = Σ out·w with a fixed random w.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../dsl/backend.ts';
import { disableNativeKernels, enableNativeKernels } from '../dsl/native.ts';
import { registerMissingKernels } from '../dsl/kernels.ts';
import { customOp, linear2d, matmul2d } from '../dsl/matmul.ts';
import { adaLNResidual, gatherRows, geluTanh, layerNorm, layerNormModulate, linear, mlpPiece, patchify, silu, softmax, unpatchify } from '../dsl/ops.ts';
import { paramView } from '../dsl/param.ts';
import { wrap } from '../dsl/tensor.ts';
import { foldIn, keyFromSeed, normal, permutation, type Key } from '../dsl/random.ts';
import { attention } from '../layers/attention.ts';
import { adaLNBlock } from '../layers/adaln-block.ts';
import { biasPlan } from '../layers/relpos.ts';
import { initParams } from '../compile/init.ts';
import { compileTraining } from '../compile/train.ts';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { keepTokens, sideInterpolater } from '../mdt/side-interpolater.ts';
import { B, L } from '../mdt/trunk.ts';
import { planFromShuffle } from '../mdt/masking.ts';

const VARIANTS = ['wasm', 'cpu', 'wasm+native'] as const;
type Variant = (typeof VARIANTS)[number];

/** Starts the variant's backend; false (and the test skipped) when the native kernels are not built. */
async function on(variant: Variant, t: TestContext): Promise<boolean> {
  await initBackend({ prefer: variant === 'cpu' ? 'cpu' : 'wasm' });
  registerMissingKernels();
  if (variant !== 'wasm+native') {
    disableNativeKernels();
    return true;
  }
  const status = enableNativeKernels();
  if (!status.enabled) t.skip(status.reason);
  return status.enabled;
}

const H = 1e-2;
const DIRECTIONS = 3;

function randn(key: Key, shape: number[], scale = 1): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(normal(key, n).map((v) => v * scale), shape);
}

/**
 * Checks the gradient of `f` with respect to every input in `inputs` (the rest of the graph is
 * fixed) along DIRECTIONS random unit directions each.
 */
function checkGradients(what: string, f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], key: Key, tol = 1e-2): void {
  tf.tidy(() => {
    const out = f(...inputs);
    const w = randn(foldIn(key, 999), out.shape);
    const scalar = (...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), w));
    const grads = tf.grads(scalar)(inputs);
    inputs.forEach((x, i) => {
      assert.deepEqual(grads[i]!.shape, x.shape, `${what}: gradient ${i} has the input's shape`);
      for (let d = 0; d < DIRECTIONS; d++) {
        const u0 = randn(foldIn(key, 10 * i + d), x.shape);
        const u = tf.div(u0, tf.norm(u0));
        const at = (s: number) => scalar(...inputs.map((y, j) => (j === i ? tf.add(y, tf.mul(u, s)) : y))).dataSync()[0]!;
        const fd = (at(H) - at(-H)) / (2 * H);
        const an = tf.sum(tf.mul(grads[i]!, u)).dataSync()[0]!;
        assert.ok(Number.isFinite(an), `${what}: gradient ${i} is finite`);
        assert.ok(Math.abs(fd - an) <= tol * Math.max(1, Math.abs(fd), Math.abs(an)), `${what}: input ${i}, direction ${d}: finite difference ${fd} vs gradient ${an}`);
      }
    });
  });
}


for (const backend of VARIANTS) {
  test(`${backend}: matmul, linear`, async (t) => {
    if (!(await on(backend, t))) return;
    const k = keyFromSeed(1);
    // Both orders of the weight-gradient transpose: I < O and I > O.
    checkGradients('matmul2d', (a, b) => matmul2d(a as tf.Tensor2D, b as tf.Tensor2D), [randn(foldIn(k, 0), [6, 5]), randn(foldIn(k, 1), [5, 7])], foldIn(k, 2));
    checkGradients('matmul (rank 3)', (x, w) => matmulRank3(x, w), [randn(foldIn(k, 3), [2, 3, 5]), randn(foldIn(k, 4), [5, 4])], foldIn(k, 5));
    for (const [i, o] of [[5, 9], [9, 5]] as const) {
      checkGradients(`linear ${i}→${o}`, (x, w, b) => linear(wrap<readonly [number, number, number]>(x), wrap<readonly [number, number]>(w), wrap<readonly [number]>(b)).raw, [randn(foldIn(k, 6), [2, 4, i]), randn(foldIn(k, 7), [o, i]), randn(foldIn(k, 8), [o])], foldIn(k, 9));
      checkGradients(`linear2d ${i}→${o} without bias`, (x, w) => linear2d(x as tf.Tensor2D, w as tf.Tensor2D), [randn(foldIn(k, 10), [7, i]), randn(foldIn(k, 11), [o, i])], foldIn(k, 12));
    }
  });

  test(`${backend}: layerNorm, layerNormModulate, gelu, silu, softmax`, async (t) => {
    if (!(await on(backend, t))) return;
    const k = keyFromSeed(2);
    checkGradients('layerNorm', (x) => layerNorm(wrap(x), 1e-6).raw, [randn(foldIn(k, 0), [3, 4, 8])], foldIn(k, 1));
    checkGradients('layerNormModulate', (x, shift, scale) => layerNormModulate(wrap<readonly [number, number, number]>(x), wrap<readonly [number, number]>(shift), wrap<readonly [number, number]>(scale), 1e-6).raw,
      [randn(foldIn(k, 2), [3, 4, 8]), randn(foldIn(k, 3), [3, 8]), randn(foldIn(k, 4), [3, 8], 0.5)], foldIn(k, 5));
    checkGradients('geluTanh', (x) => geluTanh(wrap(x)).raw, [randn(foldIn(k, 6), [4, 16], 2)], foldIn(k, 7));
    checkGradients('silu', (x) => silu(wrap(x)).raw, [randn(foldIn(k, 8), [4, 16], 2)], foldIn(k, 9));
    const mlpWeights = [randn(foldIn(k, 13), [10, 6], 0.5), randn(foldIn(k, 14), [10]), randn(foldIn(k, 15), [6, 10], 0.5), randn(foldIn(k, 16), [6])];
    checkGradients('mlpPiece', customOp<(...xs: tf.Tensor[]) => tf.Tensor>(mlpPiece), [randn(foldIn(k, 12), [2, 3, 6]), ...mlpWeights], foldIn(k, 17));
    checkGradients('adaLNResidual(mlpPiece)', customOp<(...xs: tf.Tensor[]) => tf.Tensor>(adaLNResidual(mlpPiece, 1e-6)),
      [randn(foldIn(k, 18), [2, 3, 6]), randn(foldIn(k, 19), [2, 6]), randn(foldIn(k, 20), [2, 6], 0.5), randn(foldIn(k, 21), [2, 6]), ...mlpWeights], foldIn(k, 22));
    checkGradients('softmax', (x) => softmax(wrap(x)).raw, [randn(foldIn(k, 10), [3, 5, 7])], foldIn(k, 11));
  });

  test(`${backend}: gathers, patchify and unpatchify, sums and transposes`, async (t) => {
    if (!(await on(backend, t))) return;
    const k = keyFromSeed(3);
    const idx = tf.tensor1d([3, 0, 3, 5, 1], 'int32');
    checkGradients('gatherRows', (t) => gatherRows(wrap<readonly [number, number]>(t), wrap<readonly [number]>(idx)).raw, [randn(foldIn(k, 0), [6, 4])], foldIn(k, 1));
    const plan = planFromShuffle(Int32Array.from([...permutation(foldIn(k, 2), 9), ...permutation(foldIn(k, 3), 9)]), 2, 9, 4);
    checkGradients('keepTokens', (x) => keepTokens(wrap(x), plan).raw, [randn(foldIn(k, 4), [2, 9, 3])], foldIn(k, 5));
    checkGradients('patchify', (x) => patchify(wrap<readonly [number, number, 6, 6]>(x), 3, 2).raw, [randn(foldIn(k, 6), [2, 3, 6, 6])], foldIn(k, 7));
    checkGradients('unpatchify', (x) => unpatchify(wrap<readonly [number, 9, 8]>(x), 3, 2, 2).raw, [randn(foldIn(k, 8), [2, 9, 8])], foldIn(k, 9));
    checkGradients('sum over leading axes', (x) => tf.sum(x, [0, 1]), [randn(foldIn(k, 10), [3, 4, 5])], foldIn(k, 11));
    checkGradients('sum over a middle axis', (x) => tf.sum(x, 1, true), [randn(foldIn(k, 14), [3, 4, 5])], foldIn(k, 15));
    checkGradients('2-D, batched and row-moving transposes', (x) => tf.mul(
      tf.add(tf.transpose(tf.reshape(x, [12, 16])), tf.reshape(tf.transpose(x, [0, 2, 1]), [16, 12])),
      tf.reshape(tf.transpose(x, [1, 0, 2]), [16, 12]),
    ), [randn(foldIn(k, 12), [3, 4, 16])], foldIn(k, 13));
    idx.dispose();
  });

  test(`${backend}: attention with the relative position bias, full and masked plans`, async (t) => {
    if (!(await on(backend, t))) return;
    const k = keyFromSeed(4);
    const [grid, dim, heads, batch] = [3, 8, 2, 2];
    const layer = attention(B, 9, dim, heads, grid);
    const init = initParams(layer.params, foldIn(k, 0));
    const names = ['qkv.weight', 'qkv.bias', 'proj.weight', 'proj.bias', 'rel_pos_bias.relative_position_bias_table'];
    // Larger bias-table entries than the 0.02 init, so the bias visibly shapes the softmax.
    const values = names.map((n, i) => (n.includes('table') ? randn(foldIn(k, 1 + i), init.get(n)!.shape) : init.get(n)!));
    const index = init.get('rel_pos_bias.relative_position_index')!;
    const masked = biasPlan(grid, { ids: Int32Array.from([4, 0, 8, 2, 1, 7, 3, 5]), batch, len: 4 });
    for (const [what, plan, len] of [['full', biasPlan(grid, null), 9], ['masked', masked, 4]] as const) {
      checkGradients(`attention (${what})`, (x, ...ps) => {
        const p = paramView(new Map([...names.map((n, i) => [n, ps[i]!] as const), ['rel_pos_bias.relative_position_index', index]]));
        return layer.apply(p, wrap(x), { bias: plan }).raw;
      }, [randn(foldIn(k, 10), [batch, len, dim]), ...values], foldIn(k, 11));
    }
    tf.dispose([...init.values(), ...values]);
  });
}

for (const backend of VARIANTS) {
  test(`${backend}: adaLN blocks (with MDTv2's skip) and the side-interpolater`, async (t) => {
    if (!(await on(backend, t))) return;
    const k = keyFromSeed(6);
    const [grid, dim, batch] = [2, 8, 2];
    const opts = { heads: 2, mlpRatio: 2, grid, skip: true };
    const blk = adaLNBlock(B, 4, dim, opts);
    const init = initParams(blk.params, foldIn(k, 0));
    // adaLN-Zero starts with zero modulation, which would hide the attention and MLP paths.
    const values = new Map([...init].map(([n, t]) => [n, n.includes('adaLN') || n.includes('table') ? randn(foldIn(k, n.length), t.shape, 0.5) : t]));
    const p = paramView(values);
    const x = randn(foldIn(k, 1), [batch, 4, dim]);
    const c = randn(foldIn(k, 2), [batch, dim]);
    const skip = randn(foldIn(k, 3), [batch, 4, dim]);
    checkGradients('adaLN block', (xx, cc, ss) => blk.apply(p, wrap(xx), { c: wrap(cc), bias: biasPlan(grid, null), skip: wrap(ss) }).raw, [x, c, skip], foldIn(k, 4));
    const trainable = [...values].filter(([n]) => !n.includes('index'));
    checkGradients('adaLN block parameters', (...ws) => {
      const view = paramView(new Map([...values, ...trainable.map(([n], i) => [n, ws[i]!] as const)]));
      return blk.apply(view, wrap(x), { c: wrap(c), bias: biasPlan(grid, null), skip: wrap(skip) }).raw;
    }, trainable.map(([, t]) => t), foldIn(k, 5));

    const side = sideInterpolater(adaLNBlock(B, L, dim, { ...opts, skip: false }));
    const sideInit = initParams(side.params, foldIn(k, 6));
    const sideValues = new Map([...sideInit].map(([n, t]) => [n, n.includes('adaLN') ? randn(foldIn(k, 7 + n.length), t.shape, 0.5) : t]));
    const plan = planFromShuffle(Int32Array.from([3, 1, 0, 2, 2, 0, 3, 1]), batch, 4, 2);
    checkGradients('side-interpolater (kept tokens, mask_token, decoder_pos_embed)', (kept, token, pos) => {
      const view = paramView(new Map([...sideValues, ['mask_token', token!], ['decoder_pos_embed', pos!]]));
      return side.apply(view, wrap(kept), plan, { c: wrap(c), bias: biasPlan(grid, null) }).raw;
    }, [randn(foldIn(k, 8), [batch, 2, dim]), randn(foldIn(k, 9), [1, 1, dim]), randn(foldIn(k, 10), [1, 4, dim])], foldIn(k, 11));
    tf.dispose([...init.values(), ...values.values(), ...sideInit.values(), ...sideValues.values(), x, c, skip]);
  });
}

function matmulRank3(x: tf.Tensor, w: tf.Tensor): tf.Tensor {
  return tf.reshape(matmul2d(tf.reshape(x, [-1, x.shape[2]!]) as tf.Tensor2D, w as tf.Tensor2D), [x.shape[0]!, x.shape[1]!, w.shape[1]!]);
}

test('wasm: a tiny training run holds as many live tensors at step 60 as at step 10', async (t) => {
  await on('wasm', t);
  const model = buildModel(namedConfig('MDT-S/2', { inputSize: 8, depth: 3, hiddenSize: 32, numHeads: 2, numClasses: 3, decodeLayer: 1 }));
  const init = initParams(model.params, keyFromSeed(5));
  const trainer = compileTraining(model, init, { optimizer: { kind: 'adamw', lr: 1e-3 }, emaDecay: 0.99 });
  tf.dispose([...init.values()]);
  const x0 = tf.tensor4d(normal(keyFromSeed(6), 4 * 4 * 64), [4, 4, 8, 8]);
  const y = Int32Array.from([0, 1, 2, 0]);
  let at10 = 0;
  for (let s = 1; s <= 60; s++) {
    await trainer.step(x0, y, foldIn(keyFromSeed(7), s));
    if (s === 10) at10 = tf.memory().numTensors;
  }
  assert.equal(tf.memory().numTensors, at10);
  trainer.dispose();
  x0.dispose();
});
