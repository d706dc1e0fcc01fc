/**
 * Sample-quality metrics (mdt/eval): FID against pytorch-fid's formula (scipy, float64) on the
 * same features and against closed forms for Gaussians; KID's unbiased MMD² against numpy and
 * against its exact expectation for Gaussians; precision/recall against a brute-force numpy
 * reference and sets whose answer is exact; statistics files read, written and refused.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import * as tf from '@tensorflow/tfjs';
import { keyFromSeed, foldIn, normal } from '../dsl/random.ts';
import { multiply, symmetricEigen, symmetricEigenvalues } from '../mdt/eval/linalg.ts';
import { featureStats, frechetDistance } from '../mdt/eval/fid.ts';
import { features, type Features } from '../mdt/eval/features.ts';
import { kernelInceptionDistance, mmd2Unbiased } from '../mdt/eval/kid.ts';
import { precisionRecall } from '../mdt/eval/precision-recall.ts';
import { checkSameNetwork, readStatsFile, writeStatsFile } from '../mdt/eval/stats-file.ts';
import { openNpz, writeNpz } from '../formats/npz.ts';

await tf.setBackend('cpu');
const FIXTURE = 'test/fixtures/eval';
const expected = JSON.parse(await readFile(join(FIXTURE, 'metrics.json'), 'utf8')) as Record<string, number>;

async function fixtureFeatures(): Promise<{ a: Features; b: Features }> {
  const npz = await openNpz(join(FIXTURE, 'features.npz'));
  try {
    const a = await npz.read('a'), b = await npz.read('b');
    return { a: features(a.data as Float32Array, a.shape[1]!), b: features(b.data as Float32Array, b.shape[1]!) };
  } finally {
    await npz.close();
  }
}

/** n samples of N(mu, diag(std²)) in d dims. */
function gaussian(key: number, n: number, mu: readonly number[], std: readonly number[]): Features {
  const d = mu.length;
  const z = normal(foldIn(keyFromSeed(7), key), n * d);
  for (let i = 0; i < z.length; i++) z[i] = mu[i % d]! + std[i % d]! * z[i]!;
  return features(z, d);
}

const close = (actual: number, want: number, tol: number, what: string) => assert.ok(Math.abs(actual - want) <= tol, `${what}: ${actual} vs ${want} (tolerance ${tol})`);

test('symmetric eigendecomposition: V diag(λ) Vᵀ = A, VᵀV = I, and the eigenvalues alone agree', () => {
  fc.assert(fc.property(fc.integer({ min: 1, max: 12 }), fc.integer({ min: 0, max: 1000 }), (n, seed) => {
    const r = normal(keyFromSeed(seed), n * n);
    const a = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) a[i * n + j] = r[i * n + j]! + r[j * n + i]!;
    const { values, vectors } = symmetricEigen(a, n);
    const scaled = vectors.map((v, idx) => v * values[idx % n]!);
    const vt = new Float64Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) vt[j * n + i] = vectors[i * n + j]!;
    const back = multiply(scaled, vt, n), gram = multiply(vt, vectors, n);
    for (let i = 0; i < n * n; i++) {
      assert.ok(Math.abs(back[i]! - a[i]!) < 1e-10);
      assert.ok(Math.abs(gram[i]! - (i % (n + 1) === 0 ? 1 : 0)) < 1e-12);
    }
    for (let k = 1; k < n; k++) assert.ok(values[k - 1]! <= values[k]!);
    symmetricEigenvalues(a, n).forEach((l, k) => assert.ok(Math.abs(l - values[k]!) < 1e-10 * (1 + Math.abs(l))));
  }), { numRuns: 40 });
});

test('FID agrees with pytorch-fid (scipy sqrtm, float64) on the same features', async () => {
  const { a, b } = await fixtureFeatures();
  const sa = featureStats(a.data, a.dim), sb = featureStats(b.data, b.dim);
  close(frechetDistance(sa, sb), expected['fid']!, 1e-8 * expected['fid']!, 'FID');
  close(frechetDistance(sb, sa), expected['fid']!, 1e-8 * expected['fid']!, 'FID (swapped)');
  // The statistics np.cov writes (savez_compressed, as pytorch-fid --save-stats does) are ours.
  const stored = await readStatsFile(join(FIXTURE, 'stats-a.npz'));
  assert.equal(stored.dim, a.dim);
  stored.sigma.forEach((v, i) => close(v, sa.sigma[i]!, 1e-12, `sigma[${i}]`));
  close(frechetDistance(stored, sb), expected['fid']!, 1e-8 * expected['fid']!, 'FID from the stats file');
});

test('FID of identical sets is 0', async () => {
  const { a } = await fixtureFeatures();
  const s = featureStats(a.data, a.dim);
  close(frechetDistance(s, s), 0, 1e-9 * expected['trace_sigma_a']!, 'FID(a, a)');
});

test('FID of 2-D Gaussians with non-commuting covariances: the closed form', () => {
  // tr √(Σ₁Σ₂) = √(tr Σ₁Σ₂ + 2 √(det Σ₁ det Σ₂)) for 2×2 matrices.
  const s1 = Float64Array.of(2, 0.7, 0.7, 1), s2 = Float64Array.of(0.5, -0.2, -0.2, 3);
  const mu1 = Float64Array.of(0.3, -1), mu2 = Float64Array.of(1, 2);
  const p = multiply(s1, s2, 2);
  const det = (m: Float64Array) => m[0]! * m[3]! - m[1]! * m[2]!;
  const trRoot = Math.sqrt(p[0]! + p[3]! + 2 * Math.sqrt(det(s1) * det(s2)));
  const want = (0.3 - 1) ** 2 + 9 + 3 + 3.5 - 2 * trRoot;
  close(frechetDistance({ dim: 2, mu: mu1, sigma: s1 }, { dim: 2, mu: mu2, sigma: s2 }), want, 1e-12, 'FID');
});

test('FID of sampled Gaussians approaches |Δμ|² + Σ(σ₁ − σ₂)²', () => {
  const a = gaussian(1, 20000, [0, 0, 0, 0], [1, 1, 2, 0.5]);
  const b = gaussian(2, 20000, [1, 0, -0.5, 0], [1.5, 1, 1, 0.5]);
  const want = 1 + 0.25 + 0.25 + 1;
  close(frechetDistance(featureStats(a.data, 4), featureStats(b.data, 4)), want, 0.06, 'FID');
});

/** E[(xᵀy/d + 1)³] for independent x ~ N(ma, diag sa²), y ~ N(mb, diag sb²), from Gaussian moments. */
function expectedKernel(ma: number[], sa: number[], mb: number[], sb: number[]): number {
  const d = ma.length;
  const second = (m: number[], s: number[]) => (i: number, j: number) => m[i]! * m[j]! + (i === j ? s[i]! ** 2 : 0);
  const third = (m: number[], s: number[]) => {
    const c = (i: number, j: number) => (i === j ? s[i]! ** 2 : 0);
    return (i: number, j: number, k: number) => m[i]! * m[j]! * m[k]! + m[i]! * c(j, k) + m[j]! * c(i, k) + m[k]! * c(i, j);
  };
  const [m2a, m2b, m3a, m3b] = [second(ma, sa), second(mb, sb), third(ma, sa), third(mb, sb)];
  let e1 = 0, e2 = 0, e3 = 0;
  for (let i = 0; i < d; i++) {
    e1 += ma[i]! * mb[i]!;
    for (let j = 0; j < d; j++) {
      e2 += m2a(i, j) * m2b(i, j);
      for (let k = 0; k < d; k++) e3 += m3a(i, j, k) * m3b(i, j, k);
    }
  }
  return 1 + (3 * e1) / d + (3 * e2) / d ** 2 + e3 / d ** 3;
}

test('KID: the unbiased MMD² matches numpy, and its mean the exact MMD² of two Gaussians', async () => {
  const { a, b } = await fixtureFeatures();
  close(mmd2Unbiased(a, b), expected['mmd2_unbiased']!, 1e-5 * Math.abs(expected['mmd2_unbiased']!), 'MMD²');
  const ma = [0, 0, 0], sa = [1, 1, 1], mb = [0.6, 0, -0.3], sb = [1.3, 0.8, 1];
  const exact = expectedKernel(ma, sa, ma, sa) + expectedKernel(mb, sb, mb, sb) - 2 * expectedKernel(ma, sa, mb, sb);
  const kid = kernelInceptionDistance(gaussian(3, 2000, ma, sa), gaussian(4, 2000, mb, sb), keyFromSeed(0), { subsets: 10, subsetSize: 500 });
  assert.equal(kid.subsetSize, 500);
  assert.ok(kid.std > 0);
  close(kid.mean, exact, 4 * kid.std / Math.sqrt(10) + 0.02 * exact, 'KID mean');
  // One distribution: MMD² = 0, and the estimator is unbiased around it.
  const same = kernelInceptionDistance(gaussian(5, 1000, ma, sa), gaussian(6, 1000, ma, sa), keyFromSeed(1), { subsets: 10, subsetSize: 500 });
  close(same.mean, 0, 4 * same.std / Math.sqrt(10) + 1e-3, 'KID of one distribution');
});

test('precision/recall (k = 3): the numpy reference, and sets whose answer is exact', async () => {
  const { a, b } = await fixtureFeatures();
  const pr = precisionRecall(a, b);
  // Float32 products against float64 distances may move a point sitting on a ball's edge.
  close(pr.precision, expected['precision']!, 2 / b.count, 'precision');
  close(pr.recall, expected['recall']!, 2 / a.count, 'recall');
  const real = gaussian(8, 400, [0, 0, 0], [1, 1, 1]);
  assert.deepEqual(precisionRecall(real, real), { precision: 1, recall: 1, k: 3 });
  // Half the generated set copies the real one, half lies far away: precision ½, recall 1.
  const far = features(real.data.map((v) => v + 1000), 3);
  const mixed = features(Float32Array.from([...real.data, ...far.data]), 3);
  assert.deepEqual(precisionRecall(real, mixed), { precision: 0.5, recall: 1, k: 3 });
  assert.deepEqual(precisionRecall(real, far), { precision: 0, recall: 0, k: 3 });
});

test('statistics files: round trip, and corrupt or mismatched files are clear errors', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'mdt-eval-'));
  const { a } = await fixtureFeatures();
  const s = featureStats(a.data, a.dim);
  const path = join(dir, 'stats.npz');
  await writeStatsFile(path, s, { network: 'classifier:test', count: s.count });
  const back = await readStatsFile(path);
  assert.deepEqual([...back.mu], [...s.mu]);
  assert.deepEqual([...back.sigma], [...s.sigma]);
  assert.deepEqual(back.meta, { network: 'classifier:test', count: s.count });

  const bytes = await readFile(path);
  const corrupt = Buffer.from(bytes);
  corrupt[200] ^= 0xff;
  await writeFile(join(dir, 'corrupt.npz'), corrupt);
  await assert.rejects(readStatsFile(join(dir, 'corrupt.npz')), /CRC check: the file is corrupt/);
  await writeFile(join(dir, 'truncated.npz'), bytes.subarray(0, bytes.length - 100));
  await assert.rejects(readStatsFile(join(dir, 'truncated.npz')), /not a zip archive|corrupt|truncated/);
  await writeFile(join(dir, 'text.npz'), 'mu,sigma\n1,2\n');
  await assert.rejects(readStatsFile(join(dir, 'text.npz')), /not a zip archive/);
  await writeNpz(join(dir, 'images.npz'), { arr_0: { dtype: '|u1', shape: [2, 2], data: new Uint8Array(4) } });
  await assert.rejects(readStatsFile(join(dir, 'images.npz')), /not an FID statistics file: it lacks mu and sigma \(it holds arr_0\)/);
  await writeNpz(join(dir, 'shapes.npz'), { mu: { dtype: '<f8', shape: [3], data: new Float64Array(3) }, sigma: { dtype: '<f8', shape: [2, 2], data: new Float64Array(4) } });
  await assert.rejects(readStatsFile(join(dir, 'shapes.npz')), /mu must be \(d,\) and sigma \(d, d\); they are \(3\) and \(2, 2\)/);

  const other = featureStats(a.data.subarray(0, 200 * 12), 12);
  assert.throws(() => frechetDistance(s, other), /different feature sizes \(24 and 12\)/);
  assert.throws(() => checkSameNetwork({ network: 'classifier:mnist' }, { network: 'classifier:fashion-mnist' }, 'mdt eval'), /different feature networks/);
});
