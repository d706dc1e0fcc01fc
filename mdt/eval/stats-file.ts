/**
 * FID statistics files: .npz with `mu` and `sigma` (pytorch-fid's --save-stats layout, ADM's
 * reference batches), plus our `meta`: the feature network's name and the sample count as
 * UTF-8 JSON bytes, so statistics of one network are never compared with another's.
 */
import { openNpz, writeNpz, type NpyArray } from '../../formats/npz.ts';
import type { FeatureStats } from './fid.ts';

export interface StatsMeta {
  /** The feature network (e.g. `classifier:fashion-mnist`, `inception-v3-pytorch-fid`). */
  readonly network?: string;
  readonly count?: number;
  readonly source?: string;
}

export interface StoredStats extends Pick<FeatureStats, 'dim' | 'mu' | 'sigma'> {
  readonly meta: StatsMeta;
}

const toFloat64 = (a: NpyArray, path: string, name: string): Float64Array => {
  if (a.data instanceof Float64Array) return a.data;
  if (a.data instanceof Float32Array) return Float64Array.from(a.data);
  throw new Error(`${path}: '${name}' must hold floats, it is ${a.dtype}`);
};

export async function readStatsFile(path: string): Promise<StoredStats> {
  const npz = await openNpz(path);
  try {
    const missing = ['mu', 'sigma'].filter((k) => !npz.names.includes(k));
    if (missing.length > 0) throw new Error(`${path}: not an FID statistics file: it lacks ${missing.join(' and ')} (it holds ${npz.names.join(', ') || 'no arrays'})`);
    const mu = await npz.read('mu');
    const sigma = await npz.read('sigma');
    const dim = mu.shape[0] ?? 0;
    if (mu.shape.length !== 1 || sigma.shape.length !== 2 || sigma.shape[0] !== dim || sigma.shape[1] !== dim) {
      throw new Error(`${path}: mu must be (d,) and sigma (d, d); they are (${mu.shape.join(', ')}) and (${sigma.shape.join(', ')})`);
    }
    let meta: StatsMeta = {};
    if (npz.names.includes('meta')) {
      const m = await npz.read('meta');
      try {
        meta = JSON.parse(new TextDecoder().decode(m.data as Uint8Array)) as StatsMeta;
      } catch {
        throw new Error(`${path}: its 'meta' array is not JSON text`);
      }
    }
    const out = { dim, mu: toFloat64(mu, path, 'mu'), sigma: toFloat64(sigma, path, 'sigma'), meta };
    if (!out.mu.every(Number.isFinite) || !out.sigma.every(Number.isFinite)) throw new Error(`${path}: mu or sigma holds non-finite values`);
    return out;
  } finally {
    await npz.close();
  }
}

export async function writeStatsFile(path: string, stats: Pick<FeatureStats, 'dim' | 'mu' | 'sigma'>, meta: StatsMeta): Promise<void> {
  const metaBytes = new TextEncoder().encode(JSON.stringify(meta));
  await writeNpz(path, {
    mu: { dtype: '<f8', shape: [stats.dim], data: stats.mu },
    sigma: { dtype: '<f8', shape: [stats.dim, stats.dim], data: stats.sigma },
    meta: { dtype: '|u1', shape: [metaBytes.length], data: metaBytes },
  });
}

/** Throws unless two statistics come from the same feature network (when both say which). */
export function checkSameNetwork(a: StatsMeta, b: StatsMeta, what: string): void {
  if (a.network !== undefined && b.network !== undefined && a.network !== b.network) {
    throw new Error(`${what}: the statistics come from different feature networks (${a.network} and ${b.network}); FID compares only features of one network`);
  }
}
