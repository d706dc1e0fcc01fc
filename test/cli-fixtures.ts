/** Files the CLI tests make: random-weight state dicts, small RGB PNGs, torch.save checkpoints of fixture weights. */
import { writeSafetensors, type StTensor } from '../formats/safetensors.ts';
import { op, pickle, stateDictOps, writeTorchArchive, type TensorSpec } from './torch-pt-builder.ts';
import { keyFromSeed } from '../dsl/random.ts';
import { initParams } from '../compile/init.ts';
import { stateDictFromParams } from '../compile/weights.ts';
import type { ParamDecls } from '../dsl/param.ts';
import { encodePng } from '../mdt/viz/png.ts';

/** Random weights of `decls` as a bare .safetensors state dict (like a converted official file). */
export async function writeRandomStateDict(path: string, decls: ParamDecls, seed: number): Promise<void> {
  const values = initParams(decls, keyFromSeed(seed));
  await writeSafetensors(path, await stateDictFromParams(decls, values), { format: 'pt' });
  for (const v of values.values()) v.dispose();
}

/** A side×side RGB PNG whose channel c at (x, y) is f(x, y, c). */
export const rgbPng = (side: number, f: (x: number, y: number, c: number) => number) =>
  encodePng({ width: side, height: side, channels: 3, data: Uint8Array.from({ length: side * side * 3 }, (_, i) => f(Math.floor(i / 3) % side, Math.floor(i / 3 / side), i % 3)) });

/** The fixture's tensors as torch.save storages, under `prefix`, one storage each (numbered from `first`). */
export function storagesOf(sd: ReadonlyMap<string, StTensor>, prefix: string, first: number): { specs: TensorSpec[]; data: Map<string, Uint8Array> } {
  const specs: TensorSpec[] = [];
  const data = new Map<string, Uint8Array>();
  let i = first;
  for (const [k, t] of sd) {
    const key = String(i++);
    const ints = t.dtype === 'I64' || t.dtype === 'I32';
    const stored = ints ? BigInt64Array.from([...(t.data as BigInt64Array | Int32Array)], (v) => BigInt(v)) : Float32Array.from(t.data as Float32Array);
    specs.push({ key: `${prefix}${k}`, storage: ints ? 'LongStorage' : 'FloatStorage', storageKey: key, numel: stored.length, offset: 0, size: t.shape, stride: t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1)) });
    data.set(key, new Uint8Array(stored.buffer));
  }
  return { specs, data };
}

/** DiT's train.py: `{"model": ..., "ema": ..., "opt": ..., "args": argparse.Namespace(...)}`. */
export async function trainPyCheckpoint(path: string, sd: ReadonlyMap<string, StTensor>): Promise<void> {
  const model = storagesOf(new Map([...sd].map(([k, t]) => [k, { ...t, data: t.dtype === 'F32' ? (t.data as Float32Array).map((v) => v + 1) : t.data }])), '', 0);
  const ema = storagesOf(sd, '', model.specs.length);
  const args = pickle(
    op.global('argparse', 'Namespace'), op.emptyTuple, op.newobj, op.emptyDict,
    op.mark, op.str('model'), op.str('MDTv2-S/2'), op.str('epochs'), op.int(1400), op.str('ckpt'), Uint8Array.of(0x4e), op.setitems, op.build,
  );
  const opt = pickle(op.emptyDict, op.mark, op.str('state'), op.emptyDict, op.str('param_groups'), op.emptyList, op.setitems);
  await writeTorchArchive(path, pickle(
    op.proto(2), op.emptyDict, op.mark,
    op.str('model'), stateDictOps(model.specs), op.str('ema'), stateDictOps(ema.specs), op.str('opt'), opt, op.str('args'), args,
    op.setitems, op.stop,
  ), new Map([...model.data, ...ema.data]));
}
