// Synthetic official-layout torch.save checkpoints for the large-file benchmarks: the state dict
// keys and shapes of a named model (from the model's own declarations, which carry the official
// keys), deterministic contents, written tensor by tensor (ZIP64) so a 3 GB file never sits in memory.
import { ZipBuilder, checkpointPickle } from '../test/torch-pt-builder.ts';
import type { TensorSpec } from '../test/torch-pt-builder.ts';
import { namedConfig, type ModelConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';

export interface Planned {
  key: string;
  shape: number[];
  dtype: 'F32' | 'I64';
}

/** Every persistent tensor of the model `name` (MDT-XL/2, MDTv2-XL/2, …), as torch.save stores it (int buffers as I64). */
export function modelPlan(name: string, overrides: Partial<ModelConfig> = {}): Planned[] {
  const decls = buildModel(namedConfig(name, overrides)).params;
  return Object.entries(decls)
    .filter(([, spec]) => spec.persistent)
    .map(([key, spec]) => ({ key, shape: [...spec.shape], dtype: spec.dtype === 'int32' ? 'I64' : 'F32' }));
}

const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);
export const bytesOfPlan = (p: Planned): number => numel(p.shape) * (p.dtype === 'I64' ? 8 : 4);

/**
 * Deterministic, tensor-specific contents so the output can be spot-checked: uniform in
 * [−amplitude/2, amplitude/2). Integer buffers get `intValues` when given (a model's own index
 * buffers, which a loader checks), else a ramp.
 */
export function contents(p: Planned, index: number, amplitude = 1, intValues?: ArrayLike<number>): Float32Array | BigInt64Array {
  const n = numel(p.shape);
  if (p.dtype === 'I64') return BigInt64Array.from({ length: n }, (_, i) => BigInt(intValues === undefined ? i % 961 : intValues[i]!));
  const out = new Float32Array(n);
  let h = (index * 0x9e3779b1) >>> 0;
  for (let i = 0; i < n; i++) {
    h = (Math.imul(h, 1664525) + 1013904223) >>> 0;
    out[i] = (h / 4294967296 - 0.5) * amplitude;
  }
  return out;
}

/** Writes `plan` as a torch.save archive at `path`, each tensor's contents from `make`. */
export async function buildCheckpoint(path: string, plan: readonly Planned[], make: (p: Planned, i: number) => Float32Array | BigInt64Array = contents): Promise<void> {
  const specs: TensorSpec[] = plan.map((p, i) => ({
    key: p.key,
    storage: p.dtype === 'I64' ? 'LongStorage' : 'FloatStorage',
    storageKey: String(i),
    numel: numel(p.shape),
    offset: 0,
    size: p.shape,
    stride: p.shape.map((_, d) => numel(p.shape.slice(d + 1))),
  }));
  const zip = await ZipBuilder.create(path, true);
  await zip.add('archive/data.pkl', checkpointPickle(specs));
  for (const [i, p] of plan.entries()) {
    const data = make(p, i);
    await zip.add(`archive/data/${i}`, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  await zip.finish();
}
