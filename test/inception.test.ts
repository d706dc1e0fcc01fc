/**
 * InceptionV3 (mdt/eval/inception.ts) against golden tensors from pytorch-fid's own code
 * (test/fixtures/inception/make_inception_golden.py): the full architecture with deterministic
 * pattern weights the test rebuilds from the committed 4093-value base (the real-size random
 * weights are ~95 MB), written as a torch.save archive and loaded through the strict .pt path;
 * the four output blocks of two 40×40 images resized to 299, and the bilinear resize alone.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { openNpz, type NpyArray } from '../formats/npz.ts';
import { GraphBuilder } from '../compile/ir.ts';
import { lower } from '../compile/execute.ts';
import { jit, type Program } from '../compile/trace.ts';
import { mean } from '../dsl/ops.ts';
import { INCEPTION_PARAMS, inceptionBlocks, unusedInceptionKey } from '../mdt/eval/inception.ts';
import { loadInceptionWeights } from '../mdt/eval/inception-run.ts';
import { checkpointPickle, writeTorchArchive, type TensorSpec } from './torch-pt-builder.ts';
import { useBackend } from './compile-support.ts';
import type { Maps } from '../layers/conv.ts';
import type { Tensor } from '../dsl/tensor.ts';

const golden = new Map<string, NpyArray>();
{
  const npz = await openNpz('test/fixtures/inception/golden.npz');
  for (const name of npz.names) golden.set(name, await npz.read(name));
  await npz.close();
}
const g = (name: string) => golden.get(name)!;

/** The script's pattern: key t (sorted), element i → base[(7i + 131t) mod 4093], scaled per kind. */
function patternWeights(keys: readonly string[], shapes: ReadonlyMap<string, readonly number[]>): Map<string, Float32Array | BigInt64Array> {
  const base = g('base').data as Float32Array;
  const out = new Map<string, Float32Array | BigInt64Array>();
  keys.forEach((key, t) => {
    const shape = shapes.get(key)!;
    const n = shape.reduce((a, b) => a * b, 1);
    if (key.endsWith('num_batches_tracked')) return out.set(key, new BigInt64Array(1));
    const v = Float32Array.from({ length: n }, (_, i) => base[(7 * i + 131 * t) % base.length]!);
    const f = Math.fround;
    if (key.endsWith('conv.weight')) {
      const s = f(Math.sqrt(2 / (shape[1]! * shape[2]! * shape[3]!)));
      return out.set(key, v.map((x) => f(x * s)));
    }
    if (key.endsWith('bn.weight')) return out.set(key, v.map((x) => f(1 + f(0.1 * x))));
    if (key.endsWith('bn.running_var')) return out.set(key, v.map((x) => f(1 + f(0.25 * Math.abs(x)))));
    return out.set(key, v.map((x) => f((key.startsWith('fc.') ? 0.01 : 0.1) * x)));
  });
  return out;
}

const close = (got: ArrayLike<number>, want: ArrayLike<number>, rtol: number, atol: number, what: string) => {
  assert.equal(got.length, want.length, `${what}: length`);
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!) - rtol * Math.abs(want[i]!);
    worst = Math.max(worst, err);
    assert.ok(err <= atol, `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
  return worst;
};

test('bilinear resize matches F.interpolate(mode="bilinear", align_corners=False)', async () => {
  await useBackend('cpu');
  const input = g('resize_in');
  const want = g('resize_out');
  const b = new GraphBuilder();
  const x = b.input('x', 'data', input.shape, 'float32');
  const nhwc = b.emit('transpose', [x], { perm: [0, 2, 3, 1] });
  const r = b.emit('resize_bilinear', [nhwc], { size: [want.shape[2]!, want.shape[3]!] });
  b.output('y', b.emit('transpose', [r], { perm: [0, 3, 1, 2] }));
  const exe = lower(b.finish());
  const feed = tf.tensor(input.data as Float32Array, [...input.shape]);
  const out = exe.run(new Map([['x', feed]]));
  close(out.get('y')!.dataSync(), want.data as Float32Array, 1e-6, 1e-6, 'resize');
  tf.dispose([feed, ...out.values()]);
  exe.dispose();
});

test("InceptionV3 matches pytorch-fid's on golden tensors, weights read from a .pth with strict keys", async (t) => {
  t.diagnostic(await useBackend('wasm'));
  const keys = new TextDecoder().decode(g('keys').data as Uint8Array).split('\n');
  // The .pth's keys are exactly the network's and the ones pool3 does not read.
  assert.deepEqual(keys.filter((k) => !(k in INCEPTION_PARAMS)).filter((k) => !unusedInceptionKey(k)), []);
  assert.deepEqual(Object.keys(INCEPTION_PARAMS).filter((k) => !keys.includes(k)), []);
  const shapes = new Map<string, readonly number[]>(Object.entries(INCEPTION_PARAMS).map(([k, s]) => [k, s.shape]));
  shapes.set('fc.weight', [1008, 2048]).set('fc.bias', [1008]);
  for (const k of keys) if (k.endsWith('num_batches_tracked')) shapes.set(k, []);
  const values = patternWeights(keys, shapes);

  const dir = await mkdtemp(join(tmpdir(), 'mdt-inception-'));
  try {
    const specs: TensorSpec[] = keys.map((key, i) => ({
      key, storage: key.endsWith('num_batches_tracked') ? 'LongStorage' : 'FloatStorage', storageKey: String(i),
      numel: values.get(key)!.length, offset: 0, size: shapes.get(key)!,
      stride: shapes.get(key)!.map((_, a, s) => s.slice(a + 1).reduce((x, y) => x * y, 1)), parameter: !key.includes('running') && !key.endsWith('tracked'),
    }));
    const storages = new Map(keys.map((key, i) => [String(i), new Uint8Array(values.get(key)!.buffer)]));
    const pth = join(dir, 'pt_inception-random.pth');
    await writeTorchArchive(pth, checkpointPickle(specs), storages);
    const params = await loadInceptionWeights(pth);

    const images = g('images');
    const program: Program = (io) => {
      const blocks = inceptionBlocks(io.params(INCEPTION_PARAMS), io.data('images'));
      return { b0: mean(blocks[0], [1, 2]), b1: mean(blocks[1], [1, 2]), b2: mean(blocks[2], [1, 2]), pool3: blocks[3] as unknown as Tensor<Maps> };
    };
    const exe = jit(program);
    const x = tf.tensor(images.data as Float32Array, [...images.shape]);
    const out = exe(new Map([...params, ['images', x]]));
    const worst = [
      close(out.get('b0')!.dataSync(), g('block0_mean').data as Float32Array, 1e-4, 1e-5, 'block 0 (first max pool) channel means'),
      close(out.get('b1')!.dataSync(), g('block1_mean').data as Float32Array, 1e-4, 1e-5, 'block 1 (second max pool) channel means'),
      close(out.get('b2')!.dataSync(), g('block2_mean').data as Float32Array, 3e-4, 1e-4, 'block 2 (Mixed_6e) channel means'),
      close(out.get('pool3')!.dataSync(), g('pool3').data as Float32Array, 3e-4, 1e-4, 'pool3 features'),
    ];
    t.diagnostic(`largest excess over the relative tolerance per block: ${worst.map((w) => w.toExponential(1)).join(', ')}`);
    tf.dispose([x, ...out.values()]);
    exe.dispose();

    // Strict keys: a state dict of another network is refused by name.
    const other = join(dir, 'other.pth');
    await writeTorchArchive(other, checkpointPickle([{ ...specs[0]!, key: 'features.0.weight' }, ...specs.slice(1)]), storages);
    await assert.rejects(loadInceptionWeights(other), /not pytorch-fid's InceptionV3 weights.*unexpected key\(s\): features\.0\.weight/s);
    tf.dispose([...params.values()]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
