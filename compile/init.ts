/** Initial parameter values from declarations, each drawn from a key derived from its path. */
import * as tf from '@tensorflow/tfjs';
import { match } from 'ts-pattern';
import { foldIn, normal, uniform, type Key } from '../dsl/random.ts';
import { numel } from '../dsl/shape.ts';
import type { Init, ParamDecls } from '../dsl/param.ts';

/** FNV-1a: a stable 31-bit hash of a parameter path, so a value does not depend on declaration order. */
function pathHash(path: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < path.length; i++) h = Math.imul(h ^ path.charCodeAt(i), 0x01000193);
  return (h >>> 0) & 0x7fffffff;
}

export function initValue(init: Init, n: number, key: Key): Float32Array | Int32Array {
  return match(init)
    .with({ kind: 'zeros' }, () => new Float32Array(n))
    .with({ kind: 'normal' }, ({ std }) => normal(key, n).map((v) => v * std))
    .with({ kind: 'truncNormal' }, ({ std, lo, hi }) => {
      // Redraw out-of-range values (timm's bounds are absolute, ±2 at std 0.02: practically never).
      const out = normal(key, n).map((v) => v * std);
      let k = key;
      for (let i = 0; i < n; i++) {
        while (out[i]! < lo || out[i]! > hi) {
          k = foldIn(k, i);
          out[i] = normal(k, 1)[0]! * std;
        }
      }
      return out;
    })
    .with({ kind: 'xavierUniform' }, ({ fanIn, fanOut }) => {
      const bound = Math.sqrt(6 / (fanIn + fanOut));
      return uniform(key, n).map((u) => (2 * u - 1) * bound);
    })
    .with({ kind: 'values' }, ({ values }) => {
      const v = values();
      if (v.length !== n) throw new Error(`initialiser gave ${v.length} values, expected ${n}`);
      return v;
    })
    .exhaustive();
}

/** Fresh tensors for every declared parameter selected by `include`. */
export function initParams(decls: ParamDecls, key: Key, include: (path: string) => boolean = () => true): Map<string, tf.Tensor> {
  const out = new Map<string, tf.Tensor>();
  for (const [path, spec] of Object.entries(decls)) {
    if (!include(path)) continue;
    const v = initValue(spec.init, numel(spec.shape), foldIn(key, pathHash(path)));
    out.set(path, tf.tensor(v, spec.shape as number[], spec.dtype));
  }
  return out;
}
