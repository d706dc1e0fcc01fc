/**
 * The diffusion math (mdt/diffusion/gaussian.ts, cfg.ts) as the compiler runs it: each DSL
 * function is traced into a small program and run with jit, the sampling loops through
 * compile/sample.ts (compileStep, stepRunner, sampleLoop). Against the official fixtures, by
 * hand (guidance, gradients of the losses), and with an oracle denoiser (samplers).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { openSafetensors } from '../formats/safetensors.ts';
import { keyFromSeed, normal, split, type Key } from '../dsl/random.ts';
import { add, cast, concat, constant, mean, mul, reshape, scale, shift, sub, sum, tanh, div } from '../dsl/ops.ts';
import { param } from '../dsl/param.ts';
import type { Shape } from '../dsl/shape.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import type { DiffusionTables } from '../mdt/diffusion/schedule.ts';
import { powerCosineWeight } from '../mdt/diffusion/guidance-weight.ts';
import { ddimStep, lookup, pSampleStep, qSample, trainingLosses, type Denoiser, type Maps, type Steps } from '../mdt/diffusion/gaussian.ts';
import { noiseFromKey, type NoiseSource } from '../mdt/diffusion/sampler.ts';
import { withGuidance } from '../mdt/diffusion/cfg.ts';
import { namedConfig } from '../mdt/config.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import type { FixtureCase } from '../compile/parity.ts';
import { jit, trace, type InputSpec, type Jitted, type Program, type TraceIO } from '../compile/trace.ts';
import { trainingReport } from '../compile/pipeline.ts';
import { gradName } from '../compile/autodiff.ts';
import { stepProgram, type StepOptions } from '../compile/model-graph.ts';
import { compileStep, sampleLoop, stepRunner, type CompiledStep, type StepRunner } from '../compile/sample.ts';
import { useBackend } from './compile-support.ts';

const BACKENDS = ['cpu', 'wasm'] as const;
type Backend = (typeof BACKENDS)[number];

const fr = Math.fround;
const TRAINING = respacedTables(1000, '');
type Any = Tensor<Shape>;

const int32 = (v: ArrayLike<number>) => tf.tensor1d(Int32Array.from(v), 'int32');
const disposeMap = (m: ReadonlyMap<string, tf.Tensor>) => tf.dispose([...m.values()]);

// ---- Golden fixtures (FORMAT.md §5, §8, §9) ----

const FIXTURES = fileURLToPath(new URL('../../shared/fixtures/', import.meta.url));
const FIXTURE_NAMES = ['mdt-v1-tiny', 'mdt-v2-tiny', 'dit-tiny'] as const;
const KINDS = new Set(['q_sample', 'training_losses', 'p_sample_step', 'ddim_step']);


interface Stored {
  shape: number[];
  data: Float32Array | Int32Array;
}

interface Fixture {
  name: string;
  variant: string;
  minSnrGamma: number | undefined;
  cases: FixtureCase[];
  tensors: Map<string, Stored>;
}

async function loadFixture(name: string): Promise<Fixture> {
  const dir = `${FIXTURES}${name}/`;
  const config = JSON.parse(readFileSync(`${dir}config.json`, 'utf8'));
  const cases = (JSON.parse(readFileSync(`${dir}cases.json`, 'utf8')) as FixtureCase[]).filter((c) => KINDS.has(c.kind));
  const file = await openSafetensors(`${dir}cases.safetensors`);
  const tensors = new Map<string, Stored>();
  try {
    for (const c of cases) {
      for (const key of [...Object.values(c.inputs), ...Object.values(c.outputs), ...Object.values(c.intermediates ?? {})]) {
        if (typeof key !== 'string' || tensors.has(key)) continue;
        const { data, shape } = await file.read(key);
        const values = data instanceof BigInt64Array ? Int32Array.from(data, Number) : data instanceof Float32Array ? data : null;
        assert.ok(values !== null, `${name}: ${key} has an unexpected dtype`);
        tensors.set(key, { shape: [...shape], data: values });
      }
    }
  } finally {
    await file.close();
  }
  const minSnrGamma = config.diffusion.min_snr_weight ? (config.diffusion.min_snr_gamma as number) : undefined;
  return { name, variant: config.variant, minSnrGamma, cases, tensors };
}

const fixtures = new Map<string, Promise<Fixture>>();
function fixture(name: string): Promise<Fixture> {
  if (!fixtures.has(name)) fixtures.set(name, loadFixture(name));
  return fixtures.get(name) as Promise<Fixture>;
}

/** Worst error/allowed per case kind and backend, printed at the end. */
const worst = new Map<string, { ratio: number; where: string }>();

function record(kind: string, backend: Backend, ratio: number, where: string): void {
  const key = `${kind} [${backend}]`;
  const prev = worst.get(key);
  if (prev === undefined || ratio > prev.ratio) worst.set(key, { ratio, where });
}

after(() => {
  const rows = [...worst.entries()].sort(([a], [b]) => a.localeCompare(b));
  console.log('worst max|A−E| / (atol + rtol·max|E|) per case kind and backend:');
  for (const [key, { ratio, where }] of rows) console.log(`  ${key.padEnd(38)} ${ratio.toExponential(2)}  (${where})`);
});

/** What a recorded network saw in the trace, as outputs `${prefix}.x|t|y` of the program. */
interface Recorder {
  readonly model: Denoiser;
  calls(): number;
  outputs(): Record<string, Any>;
}

/** A Denoiser that returns the data input `out` (a recorded output) and reports the arguments it was called with. */
function recorder(io: TraceIO, out: string, prefix: string): Recorder {
  let seen: { x: Maps; t: Steps; y: Steps } | null = null;
  let calls = 0;
  return {
    model: (x, t, y) => {
      calls++;
      seen = { x, t, y };
      return io.data(out);
    },
    calls: () => calls,
    outputs: () => {
      assert.ok(seen !== null, 'the network was never called');
      return { [`${prefix}.x`]: seen.x, [`${prefix}.t`]: seen.t, [`${prefix}.y`]: seen.y };
    },
  };
}

class CaseChecker {
  constructor(
    private readonly fx: Fixture,
    private readonly c: FixtureCase,
    private readonly backend: Backend,
  ) {}

  stored(key: string): Stored {
    const s = this.fx.tensors.get(key);
    assert.ok(s !== undefined, `${this.fx.name}/${this.c.name}: missing tensor ${key}`);
    return s;
  }

  input(arg: string): Stored {
    return this.stored(this.c.inputs[arg] as string);
  }

  inter(name: string): Stored {
    return this.stored((this.c.intermediates ?? {})[name]!);
  }

  /** A fixture tensor as a tf tensor (int64 ones as int32). */
  tensor(s: Stored): tf.Tensor {
    return s.data instanceof Int32Array ? tf.tensor(s.data, s.shape, 'int32') : tf.tensor(s.data, s.shape);
  }

  ints(s: Stored): Int32Array {
    assert.ok(s.data instanceof Int32Array, 'expected an int64 tensor');
    return s.data;
  }

  /** FORMAT.md §5: max|A − E| ≤ atol + rtol·max|E|, recorded as a ratio (≤ 1 passes). */
  compare(what: string, actual: tf.Tensor, expected: Stored, tol = this.c.output_tolerances?.[what] ?? this.c): void {
    const where = `${this.fx.name}/${this.c.name}/${what}`;
    assert.deepEqual(actual.size, expected.data.length, `${where}: size`);
    const a = actual.dataSync();
    let maxDiff = 0;
    let maxAbs = 0;
    for (let i = 0; i < a.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(a[i]! - expected.data[i]!));
      maxAbs = Math.max(maxAbs, Math.abs(expected.data[i]!));
    }
    const ratio = maxDiff / (tol.atol + tol.rtol * maxAbs);
    record(this.c.kind + (what === 'model input x' ? ' (network input)' : ''), this.backend, ratio, where);
    assert.ok(ratio <= 1, `${where}: max|A−E| = ${maxDiff} exceeds ${tol.atol} + ${tol.rtol}·${maxAbs} (ratio ${ratio})`);
  }

  output(name: string, outs: ReadonlyMap<string, tf.Tensor>): void {
    const actual = outs.get(name);
    assert.ok(actual !== undefined, `${this.c.name}: the program has no output ${name}`);
    this.compare(name, actual, this.stored(this.c.outputs[name]!));
  }

  /** The network got the original steps `t`, the labels `y` and (within tolerance) the input `x`. */
  seen(outs: ReadonlyMap<string, tf.Tensor>, prefix: string, t: Int32Array, y: Int32Array, x: Stored): void {
    assert.deepEqual(Array.from(outs.get(`${prefix}.t`)!.dataSync()), Array.from(t), `${this.c.name}: the network must get the original steps`);
    assert.deepEqual(Array.from(outs.get(`${prefix}.y`)!.dataSync()), Array.from(y));
    this.compare('model input x', outs.get(`${prefix}.x`)!, x);
  }

  /** Traces `program` on these named fixture tensors, runs it once and hands its outputs to `check`. */
  run(program: Program, inputs: Record<string, Stored>, check: (outs: ReadonlyMap<string, tf.Tensor>) => void): void {
    const feeds = new Map(Object.entries(inputs).map(([k, s]) => [k, this.tensor(s)]));
    const exe = jit(program);
    try {
      const outs = exe(feeds);
      try {
        check(outs);
      } finally {
        disposeMap(outs);
      }
    } finally {
      exe.dispose();
      disposeMap(feeds);
    }
  }
}

function runCase(fx: Fixture, c: FixtureCase, backend: Backend): void {
  const ck = new CaseChecker(fx, c, backend);
  switch (c.kind) {
    case 'q_sample': {
      ck.run((io) => ({ x_t: qSample(TRAINING, io.data('x0'), io.data('t'), io.data('noise')) }), { x0: ck.input('x0'), t: ck.input('t'), noise: ck.input('noise') }, (outs) => ck.output('x_t', outs));
      break;
    }
    case 'training_losses': {
      const t = ck.ints(ck.input('t'));
      const y = ck.ints(ck.input('y'));
      const opts = fx.minSnrGamma === undefined ? {} : { minSnrGamma: fx.minSnrGamma };
      const masked = fx.variant !== 'dit';
      // Both branches (full; masked, with its own noise and recorded output) and the total in one program.
      const program: Program = (io) => {
        const branch = (out: string, noise: string, prefix: string) => {
          const rec = recorder(io, out, `${prefix}seen`);
          const r = trainingLosses(rec.model, TRAINING, io.data('x0'), io.data('t'), io.data('y'), io.data(noise), opts);
          assert.equal(rec.calls(), 1);
          return { [`${prefix}mse`]: r.mse, [`${prefix}vb`]: r.vb, [`${prefix}loss`]: r.loss, ...rec.outputs() } as Record<string, Any>;
        };
        const full = branch('model_out', 'noise', '');
        const m = masked ? branch('model_out_masked', 'noise_masked', 'm_') : null;
        const total = m === null ? mean(full['loss']!, [0]) : add(mean(full['loss']!, [0]), mean(m['m_loss']!, [0]));
        return { ...full, ...m, total };
      };
      const inputs: Record<string, Stored> = { x0: ck.input('x0'), t: ck.input('t'), y: ck.input('y'), noise: ck.input('noise'), model_out: ck.inter('model_out') };
      if (masked) Object.assign(inputs, { noise_masked: ck.input('noise_masked'), model_out_masked: ck.inter('model_out_masked') });
      ck.run(program, inputs, (outs) => {
        ck.seen(outs, 'seen', t, y, ck.inter('x_t'));
        for (const name of ['mse', 'vb', 'loss']) ck.output(name, outs);
        if (masked) {
          ck.seen(outs, 'm_seen', t, y, ck.inter('x_t_masked'));
          for (const name of ['m_mse', 'm_vb', 'm_loss']) ck.output(name, outs);
        }
        ck.output('total', outs);
      });
      break;
    }
    case 'p_sample_step':
    case 'ddim_step': {
      const tables = respacedTables(1000, String(c.params?.['timestep_respacing'] ?? ''));
      const ddpm = c.kind === 'p_sample_step';
      const program: Program = (io) => {
        const rec = recorder(io, 'model_output', 'seen');
        const [x, k, y, noise] = [io.data<Maps['shape']>('x_t'), io.data<Steps['shape']>('k'), io.data<Steps['shape']>('y'), io.data<Maps['shape']>('noise')];
        let outs: Record<string, Any>;
        if (ddpm) {
          const r = pSampleStep(rec.model, tables, x, k, y, noise);
          outs = { x_prev: r.xPrev, pred_xstart: r.predXstart, mean: r.mean, log_variance: r.logVariance };
        } else {
          const r = ddimStep(rec.model, tables, x, k, y, noise, 0);
          outs = { x_prev: r.xPrev, pred_xstart: r.predXstart };
        }
        assert.equal(rec.calls(), 1);
        return { ...outs, ...rec.outputs() };
      };
      const inputs = { x_t: ck.input('x_t'), k: ck.input('k'), y: ck.input('y'), noise: ck.input('noise'), model_output: ck.inter('model_output') };
      ck.run(program, inputs, (outs) => {
        ck.seen(outs, 'seen', ck.ints(ck.inter('t_orig')), ck.ints(ck.input('y')), ck.input('x_t'));
        for (const name of ddpm ? ['x_prev', 'mean', 'log_variance', 'pred_xstart'] : ['x_prev', 'pred_xstart']) ck.output(name, outs);
      });
      break;
    }
    default:
      throw new Error(`unexpected case kind ${c.kind}`);
  }
}

for (const backend of BACKENDS) {
  for (const name of FIXTURE_NAMES) {
    test(`${name} q_sample, training_losses, p_sample_step, ddim_step cases on ${backend}`, async () => {
      const fx = await fixture(name);
      await useBackend(backend);
      const kinds = new Set(fx.cases.map((c) => c.kind));
      assert.deepEqual([...kinds].sort(), [...KINDS].sort(), `${name}: every kind has cases`);
      for (const c of fx.cases) runCase(fx, c, backend);
    });
  }
}

// ---- Classifier-free guidance wrapper (FORMAT.md §7.3), against a hand computation ----

function randomTensor(seed: number, shape: [number, number, number, number], scale = 1): tf.Tensor4D {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor4d(normal(keyFromSeed(seed), n).map((v) => v * scale), shape);
}

/** Float32 emulation of g = e_u + w·(e_c − e_u), per element, in the official order. */
function guide(c: number, u: number, w: number): number {
  return fr(u + fr(fr(w) * fr(c - u)));
}

const spec = (shape: readonly number[], dtype: InputSpec['dtype'] = 'float32'): InputSpec => ({ shape, dtype });

for (const backend of BACKENDS) {
  test(`withGuidance reproduces forward_with_cfg by hand on ${backend}`, async () => {
    await useBackend(backend);
    const [B, C, H, W] = [2, 4, 3, 3];
    const t = Int32Array.from([10, 700, 10, 700]);
    const y = Int32Array.from([3, 5, 10, 10]);
    const feeds = new Map<string, tf.Tensor>([['x', randomTensor(1, [2 * B, C, H, W])], ['raw', randomTensor(2, [2 * B, 2 * C, H, W])], ['t', int32(t)], ['y', int32(y)]]);
    const xData = feeds.get('x')!.dataSync();
    const rawData = feeds.get('raw')!.dataSync();
    const plane = H * W;
    const cases = [
      { schedule: { kind: 'power-cosine', scale: 4, power: 4 } as const, channels: 'first3' as const, guided: 3 },
      { schedule: { kind: 'power-cosine', scale: 3.8, power: 0.01 } as const, channels: 'all' as const, guided: 4 },
      { schedule: { kind: 'constant', scale: 1.5 } as const, channels: 'first3' as const, guided: 3 },
    ];
    for (const { schedule, channels, guided } of cases) {
      // The network returns `raw` and reports what it was called with.
      const guidedNet = jit((io) => {
        const rec = recorder(io, 'raw', 'seen');
        const out = withGuidance(rec.model, { schedule, channels, T: 1000, inChannels: C })(io.data('x'), io.data('t'), io.data('y'));
        assert.equal(rec.calls(), 1, 'the network runs once on 2B rows');
        return { out, ...rec.outputs() };
      });
      guidedNet.executable(feeds);
      const before = tf.memory().numTensors;
      const outs = guidedNet(feeds);
      assert.equal(tf.memory().numTensors, before + outs.size, 'only the outputs stay alive');
      assert.deepEqual(Array.from(outs.get('seen.t')!.dataSync()), Array.from(t));
      assert.deepEqual(Array.from(outs.get('seen.y')!.dataSync()), Array.from(y));
      // The model saw the conditional half twice; x[B:] was ignored.
      const half = B * C * plane;
      assert.deepEqual(Array.from(outs.get('seen.x')!.dataSync()), [...xData.subarray(0, half), ...xData.subarray(0, half)]);
      const expected = new Float32Array(rawData.length);
      for (let row = 0; row < 2 * B; row++) {
        const b = row % B;
        const w = schedule.kind === 'constant' ? schedule.scale : powerCosineWeight(t[b]!, { scale: schedule.scale, power: schedule.power, T: 1000 });
        for (let ch = 0; ch < 2 * C; ch++) {
          for (let i = 0; i < plane; i++) {
            const at = (r: number) => rawData[(r * 2 * C + ch) * plane + i]!;
            expected[(row * 2 * C + ch) * plane + i] = ch < guided ? guide(at(b), at(b + B), w) : at(row);
          }
        }
      }
      const got = outs.get('out')!.dataSync();
      for (let i = 0; i < got.length; i++) {
        assert.ok(Math.abs(got[i]! - expected[i]!) <= 1e-6 * (1 + Math.abs(expected[i]!)), `${schedule.kind}/${channels}: element ${i}: ${got[i]} vs ${expected[i]}`);
      }
      disposeMap(outs);
      guidedNet.dispose();
    }
    // MDT's w_t really depends on the row's own t: at t = 700 with s = 4 guidance is nearly off.
    assert.ok(powerCosineWeight(700, { scale: 4, power: 4 }) < 1.01 && powerCosineWeight(10, { scale: 4, power: 4 }) > 3.9);
    disposeMap(feeds);
  });
}

test('withGuidance rejects inputs it cannot guide (when built, and when traced)', () => {
  const id: Denoiser = (x) => concat([x, x], 1) as Maps;
  assert.throws(() => withGuidance(id, { schedule: { kind: 'constant', scale: 2 }, inChannels: 0 }), /inChannels to be a positive integer, got 0/);
  assert.throws(() => withGuidance(id, { schedule: { kind: 'constant', scale: 2 }, inChannels: 1 }), /'first3' needs at least 3.*got inChannels = 1/);
  const guided = withGuidance(id, { schedule: { kind: 'constant', scale: 2 }, inChannels: 4 });
  const program: Program = (io) => ({ out: guided(io.data('x'), io.data('t'), io.data('y')) });
  assert.throws(() => trace(program, { x: spec([3, 4, 2, 2]), t: spec([3], 'int32'), y: spec([3], 'int32') }), /even number of rows.*got 3/);
  assert.throws(() => trace(program, { x: spec([2, 4, 2, 2]), t: spec([1], 'int32'), y: spec([2], 'int32') }), /length 2.*got 1 and 2/);
  assert.throws(() => trace(program, { x: spec([2, 3, 2, 2]), t: spec([2], 'int32'), y: spec([2], 'int32') }), /expected x with 4 channels/);
});

// ---- Gradients through trainingLosses (autodiff on the IR) ----

type LossName = 'loss' | 'vb' | 'mse';

/** d Σ_b losses[pick] / d(model output), the network returning the data input `out`; also outputs the losses. */
function lossGradient(pick: LossName, minSnrGamma?: number): Jitted {
  return jit(
    (io) => {
      const r = trainingLosses(() => io.data('out'), TRAINING, io.data('x0'), io.data('t'), io.data('y'), io.data('noise'), minSnrGamma === undefined ? {} : { minSnrGamma });
      return { objective: sum(r[pick], [0]), loss: r.loss, mse: r.mse, vb: r.vb };
    },
    (g) => trainingReport(g, 'objective', ['out']).graph,
  );
}

for (const backend of BACKENDS) {
  test(`trainingLosses is differentiable; vb trains only v (stop-gradient on ε) on ${backend}`, async () => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const [B, C, H, W] = [3, 4, 4, 4];
    const out = tf.tidy(() => tf.concat([randomTensor(12, [B, C, H, W]), randomTensor(13, [B, C, H, W], 0.3)], 1) as tf.Tensor4D);
    // t = 0 exercises the decoder NLL, the others the KL, all in one batch.
    const feeds = new Map<string, tf.Tensor>([
      ['x0', randomTensor(10, [B, C, H, W], 0.5)],
      ['noise', randomTensor(11, [B, C, H, W])],
      ['out', out],
      ['t', int32([0, 1, 640])],
      ['y', int32([1, 2, 3])],
    ]);
    const jits: Jitted[] = [];
    /** The gradient of Σ losses[pick] w.r.t. the model output for `feeds` (with `out` replaced by `o`). */
    const gradOf = (pick: LossName, minSnrGamma?: number, o: tf.Tensor = out) => {
      const j = lossGradient(pick, minSnrGamma);
      jits.push(j);
      const outs = j(new Map([...feeds, ['out', o]]));
      const g = outs.get(gradName('out'))!;
      outs.delete(gradName('out'));
      return { g, outs };
    };
    const parts = (g: tf.Tensor) => {
      const maxAbs = (x: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(x)).dataSync()[0]!);
      const [eps, v] = tf.split(g, 2, 1);
      const r = { eps: maxAbs(eps!), v: maxAbs(v!), finite: tf.tidy(() => tf.all(tf.isFinite(g)).dataSync()[0] === 1) };
      tf.dispose([g, eps!, v!]);
      return r;
    };
    for (const minSnrGamma of [undefined, 5]) {
      const grad = (pick: LossName) => {
        const { g, outs } = gradOf(pick, minSnrGamma);
        disposeMap(outs);
        return parts(g);
      };
      const loss = grad('loss');
      assert.ok(loss.finite && loss.eps > 0 && loss.v > 0, `d loss/d output: ${JSON.stringify(loss)}`);
      const vb = grad('vb');
      assert.ok(vb.finite, 'd vb/d output is finite');
      assert.equal(vb.eps, 0, 'vb must not train ε (stop-gradient on the mean)');
      assert.ok(vb.v > 0, 'vb trains the variance channels');
      const mse = grad('mse');
      assert.ok(mse.finite && mse.eps > 0 && mse.v === 0, `d mse/d output: ${JSON.stringify(mse)}`);
    }
    // d mse/d ε̂ = −2(noise − ε̂)·w/(C·H·W), with the min-SNR weight w of each row.
    const { g, outs } = gradOf('mse', 5);
    disposeMap(outs);
    const weights = [5.0005e-4, null, 1];
    tf.tidy(() => {
      const [gEps] = tf.split(g, 2, 1);
      const [eps] = tf.split(out, 2, 1);
      const analytic = tf.mul(tf.sub(eps!, feeds.get('noise')!), 2 / (C * H * W)).dataSync();
      const got = gEps!.dataSync();
      const per = C * H * W;
      for (const [b, w] of weights.entries()) {
        if (w === null) continue;
        for (let i = b * per; i < (b + 1) * per; i++) assert.ok(Math.abs(got[i]! - analytic[i]! * w) <= 1e-4 * Math.abs(analytic[i]! * w) + 1e-9);
      }
    });
    // The v-gradient of a KL row against a central difference (vb is smooth in v for t > 0). At
    // t = 1 log β and log σ̃² differ most, so v matters most there.
    const gvb = gradOf('vb');
    disposeMap(gvb.outs);
    const probe = (2 * C + C + 1) * H * W + 7; // row 1 (t = 1), channel C + 1 (a v channel), element 7
    const vbAt = (delta: number) => {
      const bumped = tf.tidy(() => tf.add(out, tf.mul(tf.oneHot(tf.tensor1d([probe], 'int32'), out.size).reshape(out.shape), delta)));
      const r = gradOf('vb', undefined, bumped);
      const v = r.outs.get('vb')!.dataSync()[1]!;
      tf.dispose([bumped, r.g]);
      disposeMap(r.outs);
      return v;
    };
    const h = 1e-2;
    const numeric = (vbAt(h) - vbAt(-h)) / (2 * h);
    const analyticV = gvb.g.dataSync()[probe]!;
    assert.ok(Math.abs(numeric - analyticV) <= 1e-2 * Math.abs(analyticV), `d vb/d v: numeric ${numeric} vs autodiff ${analyticV}`);
    tf.dispose([g, gvb.g]);
    disposeMap(feeds);
    for (const j of jits) j.dispose();
    assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
  });
}

// ---- Samplers (compile/sample.ts): memory, determinism, and an oracle denoiser ----

/** A parameter-free DiffusionModel around a DSL denoiser (the config is never read by a step). */
function toyModel(f: Denoiser, params: DiffusionModel['params'] = {}, forward?: DiffusionModel['forward']): DiffusionModel {
  return {
    config: namedConfig('MDT-S/2', { inChannels: 4, inputSize: 8, numClasses: 3 }),
    params,
    forward: forward ?? ((_p, x, t, y) => f(x as unknown as Maps, t as unknown as Steps, y as unknown as Steps) as never),
  };
}

/** A small denoiser like a network's output: ε̂ = tanh(x)·(0.5 + t/2000), v = 0.1·x − 0.2. */
const toy: Denoiser = (x, t) => {
  const s = shift(scale(reshape(cast(t, 'float32'), [t.shape[0], 1, 1, 1] as const), 1 / 2000), 0.5);
  return concat([mul(tanh(x), s), shift(scale(x, 0.1), -0.2)], 1) as Maps;
};
const TOY = toyModel(toy);

/** x_0 from the compiled step: x_T and step noise from `source`, progress reported. */
function sampleWith(compiled: CompiledStep, tables: DiffusionTables, shape: [number, number, number, number], y: Int32Array, source: Key | NoiseSource, progress?: (done: number, total: number) => void): tf.Tensor4D {
  const noise = 'initial' in source ? source : noiseFromKey(source);
  const runner = stepRunner(compiled, y, noise);
  try {
    return sampleLoop(runner.run, tables, shape, noise, progress);
  } finally {
    runner.dispose();
  }
}

for (const backend of BACKENDS) {
  test(`sampling loops free every intermediate (20-step DDPM, DDIM, with CFG) on ${backend}`, async () => {
    await useBackend(backend);
    const tables = respacedTables(1000, '20');
    const shape: [number, number, number, number] = [2, 4, 8, 8];
    const y = Int32Array.from([1, 2]);
    const key = keyFromSeed(7);
    const start = tf.memory().numTensors;
    const ddpm = compileStep(TOY, new Map(), tables, { sampler: 'ddpm', guidance: null });
    const ddim = [0, 1].map((eta) => compileStep(TOY, new Map(), tables, { sampler: 'ddim', eta, guidance: null }));
    const cfg = compileStep(TOY, new Map(), tables, { sampler: 'ddpm', guidance: { schedule: { kind: 'power-cosine', scale: 4, power: 4 }, inChannels: 4 } });
    const cfgShape: [number, number, number, number] = [4, 4, 8, 8];
    const cfgY = Int32Array.from([1, 2, 3, 3]);
    // Compiled once (the executables keep their folded constants until disposed).
    for (const c of [ddpm, ...ddim]) sampleWith(c, tables, shape, y, key).dispose();
    sampleWith(cfg, tables, cfgShape, cfgY, key).dispose();
    const before = tf.memory().numTensors;
    const progress: Array<[number, number]> = [];
    const first = sampleWith(ddpm, tables, shape, y, key, (i, K) => progress.push([i, K]));
    assert.equal(tf.memory().numTensors, before + 1, 'DDPM: only the result stays alive');
    assert.deepEqual(progress, Array.from({ length: 20 }, (_, i) => [i + 1, 20]));
    const again = sampleWith(ddpm, tables, shape, y, key);
    assert.deepEqual(again.dataSync(), first.dataSync(), 'same key, same samples');
    const other = sampleWith(ddpm, tables, shape, y, keyFromSeed(8));
    assert.notDeepEqual(other.dataSync(), first.dataSync());
    tf.dispose([again, other]);
    for (const [eta, c] of ddim.entries()) {
      const x = sampleWith(c, tables, shape, y, key);
      assert.equal(tf.memory().numTensors, before + 2, `DDIM η=${eta}: only the result stays alive`);
      assert.ok(x.dataSync().every(Number.isFinite));
      x.dispose();
    }
    const guided = sampleWith(cfg, tables, cfgShape, cfgY, key);
    assert.equal(tf.memory().numTensors, before + 2, 'CFG DDPM: only the result stays alive');
    tf.dispose([guided, first]);
    // A step failing mid-loop still leaves nothing behind.
    const runner = stepRunner(ddpm, y, noiseFromKey(key));
    let calls = 0;
    const failing: StepRunner = (x, k) => {
      if (++calls === 5) throw new Error('boom');
      return runner.run(x, k);
    };
    assert.throws(() => sampleLoop(failing, tables, shape, noiseFromKey(key)), /boom/);
    runner.dispose();
    assert.equal(tf.memory().numTensors, before);
    for (const c of [ddpm, ...ddim, cfg]) c.step.dispose();
    assert.equal(tf.memory().numTensors, start, 'disposing the steps frees their constants');
  });
}

test('the key source draws x_T from split(key)[0] (whatever the respacing); a custom source drives the loop', () => {
  const key = keyFromSeed(3);
  const n = 2 * 4 * 4 * 4;
  assert.deepEqual(noiseFromKey(key).initial(n), normal(split(key)[0]!, n));
  const zeros: NoiseSource = { initial: (m) => new Float32Array(m).fill(0.5), step: (_k, m) => new Float32Array(m) };
  const tables = respacedTables(1000, '10');
  const compiled = compileStep(TOY, new Map(), tables, { sampler: 'ddpm', guidance: null });
  const viaLoop = sampleWith(compiled, tables, [2, 4, 4, 4], Int32Array.from([0, 1]), zeros);
  // By hand: the ten steps unrolled in one program, k constant, zero noise, from x_T = 0.5.
  const unrolled = jit((io) => {
    let x = io.data<Maps['shape']>('x');
    const y = io.data<Steps['shape']>('y');
    for (let k = 9; k >= 0; k--) x = pSampleStep(toy, tables, x, constant(x, new Int32Array(2).fill(k), [2] as const, 'int32') as unknown as Steps, y, constant(x, 0, x.shape)).xPrev;
    return { x };
  });
  const feeds = new Map<string, tf.Tensor>([['x', tf.fill([2, 4, 4, 4], 0.5)], ['y', int32([0, 1])]]);
  const manual = unrolled(feeds).get('x')!;
  const [a, b] = [viaLoop.dataSync(), manual.dataSync()];
  assert.deepEqual(a, b);
  tf.dispose([viaLoop, manual]);
  disposeMap(feeds);
  unrolled.dispose();
  compiled.step.dispose();
});

/**
 * A step whose network is the exact ε of a point mass at `target` (a parameter): ε = (x_t −
 * √ᾱ_t·target)/√(1 − ᾱ_t) at the ORIGINAL step t, with v = 0. A sampler lands on the target on
 * any respacing only if it calls the network with the original steps (which `onSteps` also
 * receives, from an extra output of the step) and its respaced tables are consistent.
 */
function oracleStep(target: tf.Tensor4D, tables: DiffusionTables, o: StepOptions, onSteps: (t: Int32Array) => void): CompiledStep {
  let seen: Any | null = null;
  const model = toyModel(toy, { target: param(target.shape, { kind: 'zeros' }, { trainable: false }) }, (p, x, t) => {
    seen = t;
    const sa = lookup(TRAINING.sqrtAlphasCumprod, t as unknown as Steps);
    const s1 = lookup(TRAINING.sqrtOneMinusAlphasCumprod, t as unknown as Steps);
    const eps = div(sub(x, mul(sa, p.get<Maps['shape']>('target'))), s1);
    return concat([eps, constant(eps, 0, eps.shape)], 1) as never;
  });
  const inner = jit((io) => ({ ...stepProgram(model, tables, o)(io), t: seen! }));
  const step = Object.assign(
    (inputs: ReadonlyMap<string, tf.Tensor>) => {
      const outs = inner(inputs);
      const t = outs.get('t')!;
      onSteps(t.dataSync() as Int32Array);
      t.dispose();
      outs.delete('t');
      return outs;
    },
    { executable: inner.executable, graph: inner.graph, dispose: inner.dispose },
  );
  return { step, options: o, weights: new Map([['target', target]]) };
}

test('property: DDPM and DDIM with the exact ε of a point mass return that point on any respacing', async () => {
  await useBackend('wasm');
  const before = tf.memory().numTensors;
  fc.assert(
    fc.property(
      fc.constantFrom('250', '50', '10', 'ddim25', '13,7', '1'),
      fc.integer({ min: 0, max: 1000 }),
      fc.constantFrom(0, 0.5, 1),
      (respacing, seed, eta) => {
        const tables = respacedTables(1000, respacing);
        const shape: [number, number, number, number] = [2, 2, 3, 3];
        const target = randomTensor(seed, shape, 0.7);
        const kept = (t: Int32Array) => {
          for (const s of t) assert.ok(tables.timestepMap.includes(s), `the network got step ${s}, not a kept original step`);
        };
        const key = keyFromSeed(seed + 1);
        const y = new Int32Array(2);
        for (const o of [{ sampler: 'ddpm', guidance: null }, { sampler: 'ddim', eta, guidance: null }] as const) {
          const compiled = oracleStep(target, tables, o, kept);
          const sample = sampleWith(compiled, tables, shape, y, key);
          const err = tf.tidy(() => tf.max(tf.abs(tf.sub(sample, target))).dataSync()[0]!);
          assert.ok(err <= 2e-4, `${respacing}, ${o.sampler} η=${eta}: max error ${err}`);
          sample.dispose();
          compiled.step.dispose();
        }
        target.dispose();
      },
    ),
    { numRuns: 12 },
  );
  assert.equal(tf.memory().numTensors, before);
});

test('bad sampler and loss inputs are rejected when traced, with what was expected', () => {
  const tables: DiffusionTables = respacedTables(1000, '250');
  const x = spec([2, 4, 2, 2]);
  const k2 = spec([2], 'int32');
  const step = (body: (io: TraceIO) => Any, specs: Record<string, InputSpec>) => () => trace((io) => ({ out: body(io) }), specs);
  const ddpm = (model: Denoiser) => (io: TraceIO) => pSampleStep(model, tables, io.data('x'), io.data('k'), io.data('y'), io.data('noise')).xPrev;
  assert.throws(step(ddpm(toy), { x, k: spec([1], 'int32'), y: k2, noise: x }), /expected k as int32 of shape \[2\] \(one per batch row\), got int32 \[1\]/);
  assert.throws(step(ddpm(toy), { x, k: spec([2]), y: k2, noise: x }), /expected k as int32 of shape \[2\].*got float32 \[2\]/);
  assert.throws(step(ddpm(toy), { x, k: k2, y: spec([3], 'int32'), noise: x }), /expected y as int32 of shape \[2\]/);
  assert.throws(step(ddpm(toy), { x, k: k2, y: k2, noise: spec([2, 4, 2, 3]) }), /noise of shape \[2, 4, 2, 2\], got \[2, 4, 2, 3\]/);
  assert.throws(step(ddpm(toy), { x: spec([2, 16]), k: k2, y: k2, noise: spec([2, 16]) }), /expected x of rank 4/);
  const narrow: Denoiser = (xi) => xi;
  assert.throws(step(ddpm(narrow), { x, k: k2, y: k2, noise: x }), /model output \(ε then v\) of shape \[2, 8, 2, 2\], got \[2, 4, 2, 2\]/);
  const ddim = (eta: number) => (io: TraceIO) => ddimStep(toy, tables, io.data('x'), io.data('k'), io.data('y'), null, eta).xPrev;
  assert.throws(step(ddim(0.5), { x, k: k2, y: k2 }), /noise tensor when eta > 0/);
  assert.throws(step(ddim(-1), { x, k: k2, y: k2 }), /finite eta >= 0, got -1/);
  const losses = (io: TraceIO) => trainingLosses(toy, TRAINING, io.data('x'), io.data('t'), io.data('y'), io.data('noise')).loss;
  assert.throws(step(losses, { x, t: spec([2]), y: k2, noise: x }), /trainingLosses: expected t as int32 of shape \[2\].*got float32 \[2\]/);
  assert.throws(step(losses, { x, t: k2, y: k2, noise: spec([1, 4, 2, 2]) }), /trainingLosses: expected noise of shape/);
  const q = (io: TraceIO) => qSample(TRAINING, io.data('x'), io.data('t'), io.data('noise'));
  assert.throws(step(q, { x, t: k2, noise: spec([1, 4, 2, 2]) }), /qSample: expected noise of shape \[2, 4, 2, 2\], got \[1, 4, 2, 2\]/);
  // The well-formed programs trace.
  step(ddpm(toy), { x, k: k2, y: k2, noise: x })();
  step(ddim(0), { x, k: k2, y: k2 })();
});
