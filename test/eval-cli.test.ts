/**
 * The evaluation commands end to end on tiny runs: `mdt classifier` (deterministic from its
 * seed), `mdt eval` of a run, of a folder and against saved statistics, clear errors for a
 * statistics file of another network, and `mdt train --eval-every` logging FID and class
 * accuracy into log.jsonl and a third panel into loss.png.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { cli } from './cli-capture.ts';
import { namedConfig, modelLabel } from '../mdt/config.ts';
import { openSafetensors } from '../formats/safetensors.ts';
import { writeStatsFile } from '../mdt/eval/stats-file.ts';
import { classifierWeightsPath } from '../mdt/eval/feature-nets.ts';

const dir = mkdtempSync(join(tmpdir(), 'mdt-eval-cli-'));
const TINY = ['--data', 'mnist', '--depth', '2', '--hidden-size', '32', '--num-heads', '2', '--patch-size', '8', '--decode-layer', '1', '--batch-size', '4', '--sample-steps', 'ddim2'];

test('run directories are named after the model they train', () => {
  assert.equal(modelLabel('MDT-S/2', namedConfig('MDT-S/2', { depth: 4, hiddenSize: 96, numHeads: 4, patchSize: 4 })), 'MDT-d4h96/4');
  assert.equal(modelLabel('MDT-S/2', namedConfig('MDT-S/2', { patchSize: 4 })), 'MDT-S/4');
  assert.equal(modelLabel('DiT-XL/2', namedConfig('DiT-XL/2')), 'DiT-XL/2');
  assert.equal(modelLabel('MDTv2-B/2', namedConfig('MDTv2-B/2', { depth: 6 })), 'MDTv2-d6h768/2');
});

test('mdt classifier: the same seed writes the same weights, with its accuracy in the metadata', async () => {
  const paths = [join(dir, 'c1.safetensors'), join(dir, 'c2.safetensors')];
  for (const p of paths) {
    const r = await cli('classifier', '--data', 'mnist', '--steps', '3', '--out', p);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /test accuracy \d+\.\d+% on 10000 images/);
  }
  assert.deepEqual(readFileSync(paths[0]!), readFileSync(paths[1]!));
  const f = await openSafetensors(paths[0]!);
  assert.equal(f.metadata?.['command'], 'mdt classifier --data mnist --steps 3 --seed 0');
  assert.match(f.metadata?.['test_accuracy'] ?? '', /^0\.\d{4}$/);
  await f.close();
});

test('mdt eval: a run, a folder of its samples, saved statistics, and a mismatched statistics file', async () => {
  const run = join(dir, 'run');
  const t = await cli('train', ...TINY, '--steps', '2', '--ckpt-every', '2', '--sample-every', '2', '--out', run);
  assert.equal(t.code, 0, t.err);
  const classifier = join(dir, 'c1.safetensors');
  const stats = join(dir, 'ref.npz');
  const e = await cli('eval', run, '--count', '40', '--kid-subsets', '3', '--classifier', classifier, '--save-ref-stats', stats);
  assert.equal(e.code, 0, e.err);
  for (const line of ['FID', 'KID', 'precision', 'recall', 'class accuracy', 'reference        mnist test split (10000 images)']) assert.ok(e.out.includes(line), `${line} in\n${e.out}`);
  assert.match(e.out, /note: 40 samples \(< 10000\): FID is biased upwards/);
  const report = JSON.parse(readFileSync(join(run, 'eval-40.json'), 'utf8'));
  assert.equal(report.samples.count, 40);
  assert.equal(report.samples.seed, 0);
  assert.equal(report.perClass.length, 10);
  assert.equal(report.perClass.reduce((a: number, p: { count: number }) => a + p.count, 0), 40);
  assert.ok(report.fid > 0 && report.kid.subsets === 3 && report.precision >= 0 && report.recall <= 1);

  // The saved reference statistics give the same FID; KID and precision/recall need samples.
  const s = await cli('eval', run, '--count', '40', '--classifier', classifier, '--ref', stats, '--json', join(dir, 's.json'));
  assert.equal(s.code, 0, s.err);
  const fromStats = JSON.parse(readFileSync(join(dir, 's.json'), 'utf8'));
  assert.ok(Math.abs(fromStats.fid - report.fid) < 1e-9 * report.fid, `${fromStats.fid} vs ${report.fid}`);
  assert.equal(fromStats.kid, null);
  assert.match(s.out, /statistics only: KID and precision\/recall need its samples/);

  // mdt sample's files carry their class in the name: a folder evaluates with class accuracy.
  const samples = join(dir, 'samples');
  assert.equal((await cli('sample', '--ckpt', run, '--count', '2', '--steps', 'ddim2', '--out', samples)).code, 0);
  assert.match((await cli('eval', samples, '--data', 'mnist', '--classifier', classifier)).err, /grid\.png: 342×70, where .*grid\.png is 342×70; the folder must hold samples of one square size only/);
  rmSync(join(samples, 'grid.png'));
  const folder = await cli('eval', samples, '--data', 'mnist', '--classifier', classifier, '--kid-subsets', '2', '--json', join(dir, 'f.json'));
  assert.equal(folder.code, 0, folder.err);
  const fromFolder = JSON.parse(readFileSync(join(dir, 'f.json'), 'utf8'));
  assert.equal(fromFolder.samples.count, 20);
  assert.deepEqual(fromFolder.perClass.map((p: { count: number }) => p.count), new Array(10).fill(2));

  const other = join(dir, 'other.npz');
  await writeStatsFile(other, { dim: 256, mu: new Float64Array(256), sigma: new Float64Array(256 * 256) }, { network: 'classifier:fashion-mnist' });
  const bad = await cli('eval', run, '--count', '10', '--classifier', classifier, '--ref', other);
  assert.equal(bad.code, 1);
  assert.match(bad.err, /different feature networks \(classifier:mnist and classifier:fashion-mnist\)/);
  const wrongDim = join(dir, 'dim.npz');
  await writeStatsFile(wrongDim, { dim: 4, mu: new Float64Array(4), sigma: new Float64Array(16) }, {});
  assert.match((await cli('eval', run, '--count', '10', '--classifier', classifier, '--ref', wrongDim)).err, /its statistics have 4 features, classifier:mnist gives 256/);
});

test('mdt train --eval-every logs FID and class accuracy of the EMA weights, and loss.png gains their panels', { skip: existsSync(classifierWeightsPath('mnist')) ? false : 'no committed MNIST classifier weights' }, async () => {
  const run = join(dir, 'eval-run');
  const t = await cli('train', ...TINY, '--steps', '4', '--log-every', '1', '--ckpt-every', '2', '--sample-every', '4', '--eval-every', '2', '--eval-samples', '20', '--out', run);
  assert.equal(t.code, 0, t.err);
  assert.match(t.out, /step 2: FID \d+\.\d+, class accuracy \d+\.\d% \(EMA, 20 samples\)/);
  const log = readFileSync(join(run, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(log.filter((r) => r.fid !== undefined).map((r) => [r.step, r.eval_samples]), [[2, 20], [4, 20]]);
  assert.ok(log.every((r) => r.fid === undefined || (r.fid > 0 && r.class_accuracy >= 0 && r.class_accuracy <= 1)));
  const png = PNG.sync.read(readFileSync(join(run, 'loss.png')));
  assert.equal(png.height, 500 + 300 + 300);
  const refused = await cli('train', '--data', 'mnist', '--image-size', '16', '--eval-every', '2', '--steps', '2', '--out', join(dir, 'refused'));
  assert.equal(refused.code, 2);
  assert.match(refused.err, /--eval-every: evaluation uses the classifier of a built-in dataset/);
});
