/**
 * Fréchet distance between Gaussians fitted to two feature sets, in float64:
 *   FID = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½.
 * pytorch-fid and the ADM evaluator take tr (Σ₁Σ₂)^½ from scipy's general sqrtm; here it is
 * Σ √λᵢ over the eigenvalues of the symmetric PSD matrix Σ₁^½ Σ₂ Σ₁^½, which has the same
 * eigenvalues as Σ₁Σ₂ (stable, no complex parts). With Σ₁ = VΛVᵀ that matrix is similar to
 * Λ^½ (VᵀΣ₂V) Λ^½, so one full symmetric eigendecomposition, one congruence and the
 * eigenvalues of a second symmetric matrix do it.
 */
import { congruence, symmetricEigen, symmetricEigenvalues, trace } from './linalg.ts';

/** Mean and covariance (np.cov's unbiased n − 1 divisor) of a feature set. */
export interface FeatureStats {
  readonly dim: number;
  readonly count: number;
  readonly mu: Float64Array;
  /** dim × dim, row-major. */
  readonly sigma: Float64Array;
}

/** Statistics of `count` rows of `dim` features (row-major), accumulated in float64. */
export function featureStats(features: ArrayLike<number>, dim: number): FeatureStats {
  if (!Number.isInteger(dim) || dim < 1 || features.length % dim !== 0) throw new Error(`featureStats: ${features.length} values do not split into rows of ${dim} features`);
  const count = features.length / dim;
  if (count < 2) throw new Error(`featureStats: a covariance needs at least 2 samples, got ${count}`);
  const mu = new Float64Array(dim);
  for (let r = 0; r < count; r++) for (let i = 0; i < dim; i++) mu[i]! += features[r * dim + i]!;
  for (let i = 0; i < dim; i++) mu[i]! /= count;
  const sigma = new Float64Array(dim * dim);
  const x = new Float64Array(dim);
  for (let r = 0; r < count; r++) {
    for (let i = 0; i < dim; i++) x[i] = features[r * dim + i]! - mu[i]!;
    // Lower triangle only; mirrored below.
    for (let i = 0; i < dim; i++) {
      const xi = x[i]!;
      if (xi === 0) continue;
      const row = i * dim;
      for (let j = 0; j <= i; j++) sigma[row + j]! += xi * x[j]!;
    }
  }
  for (let i = 0; i < dim; i++) {
    for (let j = 0; j <= i; j++) {
      const v = sigma[i * dim + j]! / (count - 1);
      sigma[i * dim + j] = v;
      sigma[j * dim + i] = v;
    }
  }
  return { dim, count, mu, sigma };
}

/** The Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2). */
export function frechetDistance(a: Pick<FeatureStats, 'dim' | 'mu' | 'sigma'>, b: Pick<FeatureStats, 'dim' | 'mu' | 'sigma'>): number {
  const n = a.dim;
  if (b.dim !== n) throw new Error(`FID: the two statistics have different feature sizes (${a.dim} and ${b.dim}): were they computed by the same feature network?`);
  for (const [s, what] of [[a, 'first'], [b, 'second']] as const) {
    if (s.mu.length !== n || s.sigma.length !== n * n) throw new Error(`FID: the ${what} statistics hold mu of ${s.mu.length} and sigma of ${s.sigma.length} values, expected ${n} and ${n}×${n}`);
    if (!s.mu.every(Number.isFinite) || !s.sigma.every(Number.isFinite)) throw new Error(`FID: the ${what} statistics contain non-finite values`);
  }
  let meanTerm = 0;
  for (let i = 0; i < n; i++) meanTerm += (a.mu[i]! - b.mu[i]!) ** 2;
  const { values: l1, vectors } = symmetricEigen(a.sigma, n);
  const inner = congruence(b.sigma, vectors, n);
  const root = Float64Array.from(l1, (l) => Math.sqrt(Math.max(l, 0)));
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) inner[i * n + j]! *= root[i]! * root[j]!;
  const values = symmetricEigenvalues(inner, n);
  let traceRoot = 0;
  for (const l of values) traceRoot += Math.sqrt(Math.max(l, 0));
  return meanTerm + trace(a.sigma, n) + trace(b.sigma, n) - 2 * traceRoot;
}
