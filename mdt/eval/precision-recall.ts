/**
 * Improved precision and recall (Kynkäänniemi et al. 2019): each set's manifold is the union of
 * balls around its samples reaching their k-th nearest neighbour (k = 3) within the set;
 * precision is the fraction of generated samples inside the real manifold, recall the fraction
 * of real samples inside the generated one. Distances are Euclidean in feature space.
 */
import { forEachProductBlock, rowNorms2, type Features } from './features.ts';

/** Squared distance of each sample to its k-th nearest other sample in the same set. */
export function kthNeighbourRadii2(f: Features, k: number): Float64Array {
  if (f.count <= k) throw new Error(`precision/recall: k = ${k} needs more than ${k} samples per set, got ${f.count}`);
  const norms = rowNorms2(f);
  const radii = new Float64Array(f.count);
  // The k + 1 smallest distances of a row include the sample itself (0).
  const best = new Float64Array(k + 1);
  forEachProductBlock(f, f, (start, rows, block) => {
    for (let r = 0; r < rows; r++) {
      best.fill(Infinity);
      const i = start + r;
      for (let c = 0; c < f.count; c++) {
        const d = c === i ? 0 : Math.max(norms[i]! + norms[c]! - 2 * block[r * f.count + c]!, 0);
        if (d >= best[k]!) continue;
        let p = k;
        while (p > 0 && best[p - 1]! > d) {
          best[p] = best[p - 1]!;
          p--;
        }
        best[p] = d;
      }
      radii[i] = best[k]!;
    }
  });
  return radii;
}

/** The fraction of `query` samples within the k-NN manifold of `support` (whose squared radii are given). */
export function manifoldCoverage(support: Features, radii2: Float64Array, query: Features): number {
  const sn = rowNorms2(support), qn = rowNorms2(query);
  let inside = 0;
  forEachProductBlock(query, support, (start, rows, block) => {
    for (let r = 0; r < rows; r++) {
      const q = start + r;
      for (let c = 0; c < support.count; c++) {
        const d = Math.max(qn[q]! + sn[c]! - 2 * block[r * support.count + c]!, 0);
        if (d <= radii2[c]!) {
          inside++;
          break;
        }
      }
    }
  });
  return inside / query.count;
}

export function precisionRecall(real: Features, fake: Features, k = 3): { precision: number; recall: number; k: number } {
  return {
    precision: manifoldCoverage(real, kthNeighbourRadii2(real, k), fake),
    recall: manifoldCoverage(fake, kthNeighbourRadii2(fake, k), real),
    k,
  };
}
