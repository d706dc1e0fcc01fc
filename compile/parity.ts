/**
 * Golden parity: runs every case of a fixture directory (FORMAT.md) against this
 * implementation and reports, per case, the worst error relative to its allowance
 * (max|A − E| ≤ atol + rtol·max|E|). Works for any fixture of this format, any size.
 */
import * as tf from '@tensorflow/tfjs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openSafetensors, readSafetensors, type StFile, type StTensor } from '../formats/safetensors.ts';
import { configFromJson, type ModelConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { paramsFromStateDict } from './weights.ts';
import { caseHandlers } from './parity-cases.ts';
import { specsOf, trace, type Program } from './trace.ts';
import { optimize } from './pipeline.ts';
import { lower } from './execute.ts';

export interface FixtureCase {
  readonly name: string;
  readonly kind: string;
  readonly inputs: Readonly<Record<string, string | number>>;
  readonly params?: Readonly<Record<string, string | number>>;
  readonly outputs: Readonly<Record<string, string>>;
  /** Extra official activations, for debugging. */
  readonly intermediates?: Readonly<Record<string, string>>;
  readonly rtol: number;
  readonly atol: number;
  readonly output_tolerances?: Readonly<Record<string, { rtol: number; atol: number }>>;
}

export type Values = Float32Array | Float64Array | Int32Array | BigInt64Array;

/** What a case handler gets: the fixture's model, weights and typed input access. */
export interface FixtureContext {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly json: Record<string, unknown>;
  readonly model: DiffusionModel;
  readonly weights: ReadonlyMap<string, tf.Tensor>;
  /** Compiles `program` (the optimised pipeline) and runs it on the weights plus `data`, which it disposes. */
  run(program: Program, data: ReadonlyMap<string, tf.Tensor>): Record<string, tf.Tensor>;
  tensor(c: FixtureCase, arg: string): Promise<StTensor>;
  float(c: FixtureCase, arg: string): Promise<tf.Tensor>;
  ints(c: FixtureCase, arg: string): Promise<Int32Array>;
  scalar(c: FixtureCase, arg: string): number;
}

export type CaseHandler = (ctx: FixtureContext, c: FixtureCase) => Promise<Record<string, Values | tf.Tensor>>;

export interface CaseResult {
  readonly fixture: string;
  readonly name: string;
  readonly kind: string;
  readonly status: 'PASS' | 'FAIL' | 'SKIP';
  /** Worst error/allowed over the case's outputs (≤ 1 passes). */
  readonly ratio: number;
  readonly detail: string;
}

function asInt32(t: StTensor, what: string): Int32Array {
  if (t.data instanceof Int32Array) return t.data;
  if (t.data instanceof BigInt64Array) return Int32Array.from(t.data, (v) => Number(v));
  throw new Error(`${what}: expected an integer tensor, got ${t.dtype}`);
}

/** error/allowed for one output; integer outputs must match exactly (0 or Infinity). */
export function compare(actual: Values, expected: StTensor, rtol: number, atol: number): { ratio: number; maxErr: number } {
  const e = expected.data;
  if (actual.length !== e.length) throw new Error(`output has ${actual.length} elements, expected ${e.length}`);
  if (e instanceof BigInt64Array || e instanceof Int32Array) {
    for (let i = 0; i < e.length; i++) if (Number(actual[i]!) !== Number(e[i]!)) return { ratio: Infinity, maxErr: Math.abs(Number(actual[i]!) - Number(e[i]!)) };
    return { ratio: 0, maxErr: 0 };
  }
  let maxErr = 0;
  let maxAbs = 0;
  for (let i = 0; i < e.length; i++) {
    const a = Number(actual[i]!);
    const d = Math.abs(a - e[i]!);
    if (!(d <= maxErr)) maxErr = Number.isNaN(d) ? Infinity : d;
    maxAbs = Math.max(maxAbs, Math.abs(e[i]!));
  }
  const allowed = atol + rtol * maxAbs;
  return { ratio: allowed === 0 ? (maxErr === 0 ? 0 : Infinity) : maxErr / allowed, maxErr };
}

export async function loadContext(dir: string, cases: StFile): Promise<FixtureContext> {
  const json = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  const config = configFromJson(json);
  const model = buildModel(config);
  const weights = paramsFromStateDict(model.params, await readSafetensors(join(dir, 'weights.safetensors')));
  const key = (c: FixtureCase, arg: string): string => {
    const k = c.inputs[arg];
    if (typeof k !== 'string') throw new Error(`case ${c.name}: input "${arg}" is not a tensor key`);
    return k;
  };
  const ctx: FixtureContext = {
    dir, config, json, model, weights,
    run(program, data) {
      const exe = lower(optimize(trace(program, specsOf(data))));
      try {
        return Object.fromEntries(exe.run(new Map([...weights, ...data])));
      } finally {
        exe.dispose();
        tf.dispose([...data.values()]);
      }
    },
    tensor: (c, arg) => cases.read(key(c, arg)),
    async float(c, arg) {
      const t = await ctx.tensor(c, arg);
      return tf.tensor(t.data instanceof Float64Array ? Float32Array.from(t.data) : (t.data as Float32Array), t.shape as number[], 'float32');
    },
    async ints(c, arg) {
      return asInt32(await ctx.tensor(c, arg), `case ${c.name} input ${arg}`);
    },
    scalar(c, arg) {
      const v = c.inputs[arg];
      if (typeof v !== 'number') throw new Error(`case ${c.name}: input "${arg}" is not a number`);
      return v;
    },
  };
  return ctx;
}

/** Runs the cases of one fixture directory (optionally only names matching `filter`). */
export async function runFixture(dir: string, filter?: RegExp): Promise<CaseResult[]> {
  const fixture = dir.replace(/\/+$/, '').split('/').pop()!;
  const list = JSON.parse(await readFile(join(dir, 'cases.json'), 'utf8')) as FixtureCase[];
  const file = await openSafetensors(join(dir, 'cases.safetensors'));
  const results: CaseResult[] = [];
  try {
    const ctx = await loadContext(dir, file);
    for (const c of list) {
      if (filter && !filter.test(c.name)) continue;
      const handler = caseHandlers[c.kind];
      if (handler === undefined) {
        results.push({ fixture, name: c.name, kind: c.kind, status: 'SKIP', ratio: 0, detail: `kind "${c.kind}" not implemented` });
        continue;
      }
      results.push(await runCase(fixture, ctx, file, c, handler));
    }
  } finally {
    await file.close();
  }
  return results;
}

async function runCase(fixture: string, ctx: FixtureContext, file: StFile, c: FixtureCase, handler: CaseHandler): Promise<CaseResult> {
  try {
    const before = tf.memory().numTensors;
    const got = await handler(ctx, c);
    let worst = 0;
    let worstName = '';
    for (const [name, key] of Object.entries(c.outputs)) {
      const v = got[name];
      if (v === undefined) throw new Error(`handler produced no "${name}"`);
      const values = v instanceof tf.Tensor ? ((await v.data()) as Float32Array | Int32Array) : v;
      const tol = c.output_tolerances?.[name] ?? { rtol: c.rtol, atol: c.atol };
      const { ratio } = compare(values, await file.read(key), tol.rtol, tol.atol);
      if (ratio >= worst) { worst = ratio; worstName = name; }
    }
    for (const v of Object.values(got)) if (v instanceof tf.Tensor) v.dispose();
    const leaked = tf.memory().numTensors - before;
    if (leaked !== 0) throw new Error(`case leaked ${leaked} tensors`);
    return { fixture, name: c.name, kind: c.kind, status: worst <= 1 ? 'PASS' : 'FAIL', ratio: worst, detail: `worst output ${worstName}` };
  } catch (err) {
    return { fixture, name: c.name, kind: c.kind, status: 'FAIL', ratio: Infinity, detail: (err as Error).message };
  }
}
