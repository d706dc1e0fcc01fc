import type { FixtureCase } from '../compile/parity.ts';
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { openSafetensors } from '../dsl/safetensors.ts';
import { keyFromSeed, normal, split } from '../dsl/random.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import type { DiffusionTables } from '../mdt/diffusion/schedule.ts';
import { powerCosineWeight } from '../mdt/diffusion/guidance-weight.ts';
import { qSample, trainingLosses } from '../mdt/diffusion/gaussian.ts';
import type { BranchLosses, Denoiser } from '../mdt/diffusion/gaussian.ts';
import { ddimSampleLoop, ddimStep, noiseFromKey, pSampleLoop, pSampleStep } from '../mdt/diffusion/sampler.ts';
import { withGuidance } from '../mdt/diffusion/cfg.ts';

const BACKENDS = ['cpu', 'wasm'] as const;
type Backend = (typeof BACKENDS)[number];

async function useBackend(backend: Backend): Promise<void> {
  assert.ok(await tf.setBackend(backend), `backend ${backend} failed to initialise`);
  assert.equal(tf.getBackend(), backend);
}

const fr = Math.fround;
const TRAINING = respacedTables(1000, '');

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
    return this.stored((this.c.intermediates ?? {})[name]);
  }

  tensor4d(s: Stored): tf.Tensor4D {
    return tf.tensor4d(s.data as Float32Array, s.shape as [number, number, number, number]);
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
      maxDiff = Math.max(maxDiff, Math.abs(a[i] - expected.data[i]));
      maxAbs = Math.max(maxAbs, Math.abs(expected.data[i]));
    }
    const ratio = maxDiff / (tol.atol + tol.rtol * maxAbs);
    record(this.c.kind + (what === 'model input x' ? ' (network input)' : ''), this.backend, ratio, where);
    assert.ok(ratio <= 1, `${where}: max|A−E| = ${maxDiff} exceeds ${tol.atol} + ${tol.rtol}·${maxAbs} (ratio ${ratio})`);
  }

  output(name: string, actual: tf.Tensor): void {
    this.compare(name, actual, this.stored(this.c.outputs[name]));
  }

  /** A Denoiser that returns a recorded output after checking the arguments the official code passed. */
  recorded(out: Stored, t: Int32Array, y: Int32Array, x: Stored): Denoiser & { calls: number } {
    const fake = Object.assign(
      (xIn: tf.Tensor4D, tIn: Int32Array, yIn: Int32Array): tf.Tensor4D => {
        fake.calls++;
        assert.deepEqual(Array.from(tIn), Array.from(t), `${this.c.name}: the network must get the original steps`);
        assert.deepEqual(Array.from(yIn), Array.from(y));
        this.compare('model input x', xIn, x);
        return this.tensor4d(out);
      },
      { calls: 0 },
    );
    return fake;
  }
}

function runCase(fx: Fixture, c: FixtureCase, backend: Backend): void {
  const ck = new CaseChecker(fx, c, backend);
  tf.tidy(() => {
    switch (c.kind) {
      case 'q_sample': {
        const xt = qSample(TRAINING, ck.tensor4d(ck.input('x0')), ck.ints(ck.input('t')), ck.tensor4d(ck.input('noise')));
        ck.output('x_t', xt);
        break;
      }
      case 'training_losses': {
        const x0 = ck.tensor4d(ck.input('x0'));
        const t = ck.ints(ck.input('t'));
        const y = ck.ints(ck.input('y'));
        const opts = { minSnrGamma: fx.minSnrGamma };
        const branch = (out: string, xt: string, noise: string, prefix: string): BranchLosses => {
          const model = ck.recorded(ck.inter(out), t, y, ck.inter(xt));
          const r = trainingLosses(model, TRAINING, x0, t, y, ck.tensor4d(ck.input(noise)), opts);
          assert.equal(model.calls, 1);
          ck.output(`${prefix}mse`, r.mse);
          ck.output(`${prefix}vb`, r.vb);
          ck.output(`${prefix}loss`, r.loss);
          return r;
        };
        const full = branch('model_out', 'x_t', 'noise', '');
        const masked = fx.variant === 'dit' ? null : branch('model_out_masked', 'x_t_masked', 'noise_masked', 'm_');
        const total = masked === null ? tf.mean(full.loss) : tf.add(tf.mean(full.loss), tf.mean(masked.loss));
        ck.output('total', total);
        break;
      }
      case 'p_sample_step': {
        const tables = respacedTables(1000, String(c.params?.timestep_respacing ?? ''));
        const xt = ck.input('x_t');
        const y = ck.ints(ck.input('y'));
        const model = ck.recorded(ck.inter('model_output'), ck.ints(ck.inter('t_orig')), y, xt);
        const r = pSampleStep(model, tables, ck.tensor4d(xt), ck.ints(ck.input('k')), y, ck.tensor4d(ck.input('noise')));
        assert.equal(model.calls, 1);
        for (const [name, value] of [['x_prev', r.xPrev], ['mean', r.mean], ['log_variance', r.logVariance], ['pred_xstart', r.predXstart]] as const) {
          ck.output(name, value);
        }
        break;
      }
      case 'ddim_step': {
        const tables = respacedTables(1000, String(c.params?.timestep_respacing ?? ''));
        const xt = ck.input('x_t');
        const y = ck.ints(ck.input('y'));
        const model = ck.recorded(ck.inter('model_output'), ck.ints(ck.inter('t_orig')), y, xt);
        const r = ddimStep(model, tables, ck.tensor4d(xt), ck.ints(ck.input('k')), y, ck.tensor4d(ck.input('noise')), 0);
        assert.equal(model.calls, 1);
        ck.output('x_prev', r.xPrev);
        ck.output('pred_xstart', r.predXstart);
        break;
      }
      default:
        throw new Error(`unexpected case kind ${c.kind}`);
    }
  });
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

for (const backend of BACKENDS) {
  test(`withGuidance reproduces forward_with_cfg by hand on ${backend}`, async () => {
    await useBackend(backend);
    const [B, C, H, W] = [2, 4, 3, 3];
    const x = randomTensor(1, [2 * B, C, H, W]);
    const raw = randomTensor(2, [2 * B, 2 * C, H, W]);
    const t = Int32Array.from([10, 700, 10, 700]);
    const y = Int32Array.from([3, 5, 10, 10]);
    const xData = x.dataSync();
    const rawData = raw.dataSync();
    const plane = H * W;
    let seen: ArrayLike<number> = [];
    const model: Denoiser = (xIn, tIn, yIn) => {
      assert.deepEqual(Array.from(tIn), Array.from(t));
      assert.deepEqual(Array.from(yIn), Array.from(y));
      seen = xIn.dataSync();
      return raw.clone();
    };
    const cases = [
      { schedule: { kind: 'power-cosine', scale: 4, power: 4 } as const, channels: 'first3' as const, guided: 3 },
      { schedule: { kind: 'power-cosine', scale: 3.8, power: 0.01 } as const, channels: 'all' as const, guided: 4 },
      { schedule: { kind: 'constant', scale: 1.5 } as const, channels: 'first3' as const, guided: 3 },
    ];
    for (const { schedule, channels, guided } of cases) {
      const before = tf.memory().numTensors;
      const out = withGuidance(model, { schedule, channels, T: 1000, inChannels: C })(x, t, y);
      assert.equal(tf.memory().numTensors, before + 1, 'only the result stays alive');
      // The model saw the conditional half twice; x[B:] was ignored.
      const half = B * C * plane;
      assert.deepEqual(Array.from(seen), [...xData.subarray(0, half), ...xData.subarray(0, half)]);
      const expected = new Float32Array(rawData.length);
      for (let row = 0; row < 2 * B; row++) {
        const b = row % B;
        const w = schedule.kind === 'constant' ? schedule.scale : powerCosineWeight(t[b], { scale: schedule.scale, power: schedule.power, T: 1000 });
        for (let ch = 0; ch < 2 * C; ch++) {
          for (let i = 0; i < plane; i++) {
            const at = (r: number) => rawData[(r * 2 * C + ch) * plane + i];
            expected[(row * 2 * C + ch) * plane + i] = ch < guided ? guide(at(b), at(b + B), w) : at(row);
          }
        }
      }
      const got = out.dataSync();
      for (let i = 0; i < got.length; i++) {
        assert.ok(Math.abs(got[i] - expected[i]) <= 1e-6 * (1 + Math.abs(expected[i])), `${schedule.kind}/${channels}: element ${i}: ${got[i]} vs ${expected[i]}`);
      }
      out.dispose();
    }
    // MDT's w_t really depends on the row's own t: at t = 700 with s = 4 guidance is nearly off.
    assert.ok(powerCosineWeight(700, { scale: 4, power: 4 }) < 1.01 && powerCosineWeight(10, { scale: 4, power: 4 }) > 3.9);
    tf.dispose([x, raw]);
  });
}

test('withGuidance rejects inputs it cannot guide', () => {
  const id: Denoiser = (x) => tf.concat([x, x], 1);
  assert.throws(() => withGuidance(id, { schedule: { kind: 'constant', scale: 2 }, inChannels: 1 }), /'first3' needs at least 3.*got inChannels = 1/);
  const guided = withGuidance(id, { schedule: { kind: 'constant', scale: 2 }, inChannels: 4 });
  tf.tidy(() => {
    assert.throws(() => guided(tf.zeros([3, 4, 2, 2]), new Int32Array(3), new Int32Array(3)), /even number of rows.*got 3/);
    assert.throws(() => guided(tf.zeros([2, 4, 2, 2]), new Int32Array(1), new Int32Array(2)), /length 2.*got 1 and 2/);
  });
});

// ---- Gradients through trainingLosses ----

function gradWrtOutput(f: (o: tf.Tensor4D) => tf.Scalar, out: tf.Tensor4D): tf.Tensor4D {
  return tf.grad((o: tf.Tensor) => f(o as tf.Tensor4D))(out) as tf.Tensor4D;
}

for (const backend of BACKENDS) {
  test(`trainingLosses is differentiable; vb trains only v (stop-gradient on ε) on ${backend}`, async () => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const [B, C, H, W] = [3, 4, 4, 4];
    const x0 = randomTensor(10, [B, C, H, W], 0.5);
    const noise = randomTensor(11, [B, C, H, W]);
    const out = tf.tidy(() => tf.concat([randomTensor(12, [B, C, H, W]), randomTensor(13, [B, C, H, W], 0.3)], 1) as tf.Tensor4D);
    // t = 0 exercises the decoder NLL, the others the KL, all in one batch.
    const t = Int32Array.from([0, 1, 640]);
    const y = Int32Array.from([1, 2, 3]);
    for (const minSnrGamma of [undefined, 5]) {
      const gradOf = (pick: (r: BranchLosses) => tf.Tensor1D) => gradWrtOutput((o) => tf.sum(pick(trainingLosses(() => o, TRAINING, x0, t, y, noise, { minSnrGamma }))), out);
      const parts = (g: tf.Tensor4D) => {
        const maxAbs = (x: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(x)).dataSync()[0]);
        const [eps, v] = tf.split(g, 2, 1);
        const r = { eps: maxAbs(eps), v: maxAbs(v), finite: tf.tidy(() => tf.all(tf.isFinite(g)).dataSync()[0] === 1) };
        tf.dispose([g, eps, v]);
        return r;
      };
      const loss = parts(gradOf((r) => r.loss));
      assert.ok(loss.finite && loss.eps > 0 && loss.v > 0, `d loss/d output: ${JSON.stringify(loss)}`);
      const vb = parts(gradOf((r) => r.vb));
      assert.ok(vb.finite, 'd vb/d output is finite');
      assert.equal(vb.eps, 0, 'vb must not train ε (stop-gradient on the mean)');
      assert.ok(vb.v > 0, 'vb trains the variance channels');
      const mse = parts(gradOf((r) => r.mse));
      assert.ok(mse.finite && mse.eps > 0 && mse.v === 0, `d mse/d output: ${JSON.stringify(mse)}`);
    }
    // d mse/d ε̂ = −2(noise − ε̂)·w/(C·H·W), with the min-SNR weight w of each row.
    const g = gradWrtOutput((o) => tf.sum(trainingLosses(() => o, TRAINING, x0, t, y, noise, { minSnrGamma: 5 }).mse), out);
    const weights = [5.0005e-4, null, 1];
    tf.tidy(() => {
      const [gEps] = tf.split(g, 2, 1);
      const [eps] = tf.split(out, 2, 1);
      const analytic = tf.mul(tf.sub(eps, noise), 2 / (C * H * W)).dataSync();
      const got = gEps.dataSync();
      const per = C * H * W;
      for (const [b, w] of weights.entries()) {
        if (w === null) continue;
        for (let i = b * per; i < (b + 1) * per; i++) assert.ok(Math.abs(got[i] - analytic[i] * w) <= 1e-4 * Math.abs(analytic[i] * w) + 1e-9);
      }
    });
    // The v-gradient of a KL row against a central difference (vb is smooth in v for t > 0). At
    // t = 1 log β and log σ̃² differ most, so v matters most there.
    const gvb = gradWrtOutput((o) => tf.sum(trainingLosses(() => o, TRAINING, x0, t, y, noise).vb), out);
    const probe = (2 * C + C + 1) * H * W + 7; // row 1 (t = 1), channel C + 1 (a v channel), element 7
    const vbAt = (delta: number) =>
      tf.tidy(() => {
        const bumped = tf.add(out, tf.mul(tf.oneHot(tf.tensor1d([probe], 'int32'), out.size).reshape(out.shape), delta)) as tf.Tensor4D;
        return trainingLosses(() => bumped, TRAINING, x0, t, y, noise).vb.dataSync()[1];
      });
    const h = 1e-2;
    const numeric = (vbAt(h) - vbAt(-h)) / (2 * h);
    const analyticV = gvb.dataSync()[probe];
    assert.ok(Math.abs(numeric - analyticV) <= 1e-2 * Math.abs(analyticV), `d vb/d v: numeric ${numeric} vs autodiff ${analyticV}`);
    tf.dispose([x0, noise, out, g, gvb]);
    assert.equal(tf.memory().numTensors, before, 'no tensor leaks');
  });
}

// ---- Samplers: memory, determinism, and an oracle denoiser ----

/** A small denoiser that allocates a few tensors per call, like a real network. */
const toy: Denoiser = (x, t) =>
  tf.tidy(() => {
    const scale = tf.tensor4d(Float32Array.from(t, (s) => 0.5 + s / 2000), [t.length, 1, 1, 1]);
    return tf.concat([tf.mul(tf.tanh(x), scale), tf.sub(tf.mul(x, 0.1), 0.2)], 1) as tf.Tensor4D;
  });

for (const backend of BACKENDS) {
  test(`sampling loops free every intermediate (20-step DDPM, DDIM, with CFG) on ${backend}`, async () => {
    await useBackend(backend);
    const tables = respacedTables(1000, '20');
    const shape: [number, number, number, number] = [2, 4, 8, 8];
    const y = Int32Array.from([1, 2]);
    const key = keyFromSeed(7);
    const before = tf.memory().numTensors;
    const progress: Array<[number, number]> = [];
    const ddpm = pSampleLoop(toy, tables, shape, y, key, { progress: (i, K) => progress.push([i, K]) });
    assert.equal(tf.memory().numTensors, before + 1, 'DDPM: only the result stays alive');
    assert.deepEqual(progress, Array.from({ length: 20 }, (_, i) => [i + 1, 20]));
    const again = pSampleLoop(toy, tables, shape, y, key);
    assert.deepEqual(again.dataSync(), ddpm.dataSync(), 'same key, same samples');
    const other = pSampleLoop(toy, tables, shape, y, keyFromSeed(8));
    assert.notDeepEqual(other.dataSync(), ddpm.dataSync());
    tf.dispose([again, other]);
    for (const eta of [0, 1]) {
      const ddim = ddimSampleLoop(toy, tables, shape, y, key, { eta });
      assert.equal(tf.memory().numTensors, before + 2, `DDIM η=${eta}: only the result stays alive`);
      assert.ok(ddim.dataSync().every(Number.isFinite));
      ddim.dispose();
    }
    const cfg = withGuidance(toy, { schedule: { kind: 'power-cosine', scale: 4, power: 4 }, inChannels: 4 });
    const guided = pSampleLoop(cfg, tables, [4, 4, 8, 8], Int32Array.from([1, 2, 10, 10]), key);
    assert.equal(tf.memory().numTensors, before + 2, 'CFG DDPM: only the result stays alive');
    tf.dispose([guided, ddpm]);
    // A failing model mid-loop still leaves nothing behind.
    let calls = 0;
    const failing: Denoiser = (x, t, yy) => {
      if (++calls === 5) throw new Error('boom');
      return toy(x, t, yy);
    };
    assert.throws(() => pSampleLoop(failing, tables, shape, y, key), /boom/);
    assert.equal(tf.memory().numTensors, before);
  });
}

test('the key source draws x_T from split(key)[0] (whatever the respacing); a custom source drives the loop', () => {
  const key = keyFromSeed(3);
  const n = 2 * 4 * 4 * 4;
  assert.deepEqual(noiseFromKey(key).initial(n), normal(split(key)[0], n));
  const zeros = { initial: (m: number) => new Float32Array(m).fill(0.5), step: (_k: number, m: number) => new Float32Array(m) };
  const tables = respacedTables(1000, '10');
  const viaLoop = pSampleLoop(toy, tables, [2, 4, 4, 4], Int32Array.from([0, 1]), zeros);
  const manual = tf.tidy(() => {
    let x: tf.Tensor4D = tf.fill([2, 4, 4, 4], 0.5);
    for (let k = 9; k >= 0; k--) x = pSampleStep(toy, tables, x, new Int32Array(2).fill(k), Int32Array.from([0, 1]), tf.zerosLike(x)).xPrev;
    return x;
  });
  assert.deepEqual(viaLoop.dataSync(), manual.dataSync());
  tf.dispose([viaLoop, manual]);
});

/**
 * The exact ε of a point mass at x0*: ε = (x_t − √ᾱ_t·x0*)/√(1 − ᾱ_t) at the ORIGINAL step t, with
 * v = 0. A sampler lands on x0* on any respacing only if it calls the network with the original
 * steps (which the oracle also asserts) and its respaced tables are consistent.
 */
function oracle(target: tf.Tensor4D, kept: Int32Array): Denoiser {
  return (x, t) =>
    tf.tidy(() => {
      for (const s of t) assert.ok(kept.includes(s), `the network got step ${s}, not a kept original step`);
      const sa = tf.tensor4d(Float32Array.from(t, (s) => TRAINING.sqrtAlphasCumprod[s]), [t.length, 1, 1, 1]);
      const s1 = tf.tensor4d(Float32Array.from(t, (s) => TRAINING.sqrtOneMinusAlphasCumprod[s]), [t.length, 1, 1, 1]);
      const rows = tf.slice(target, [0, 0, 0, 0], [x.shape[0], -1, -1, -1]);
      const eps = tf.div(tf.sub(x, tf.mul(sa, rows)), s1);
      return tf.concat([eps, tf.zerosLike(eps)], 1) as tf.Tensor4D;
    });
}

test('property: DDPM and DDIM with the exact ε of a point mass return that point on any respacing', () => {
  fc.assert(
    fc.property(
      fc.constantFrom('250', '50', '10', 'ddim25', '13,7', '1'),
      fc.integer({ min: 0, max: 1000 }),
      fc.constantFrom(0, 0.5, 1),
      (spec, seed, eta) => {
        const tables = respacedTables(1000, spec);
        const shape: [number, number, number, number] = [2, 2, 3, 3];
        const target = randomTensor(seed, shape, 0.7);
        const model = oracle(target, tables.timestepMap);
        const key = keyFromSeed(seed + 1);
        const y = new Int32Array(2);
        for (const sample of [pSampleLoop(model, tables, shape, y, key), ddimSampleLoop(model, tables, shape, y, key, { eta })]) {
          const err = tf.tidy(() => tf.max(tf.abs(tf.sub(sample, target))).dataSync()[0]);
          assert.ok(err <= 2e-4, `${spec}, η=${eta}: max error ${err}`);
          sample.dispose();
        }
        target.dispose();
      },
    ),
    { numRuns: 12 },
  );
});

test('bad sampler and loss inputs are rejected with what was expected', () => {
  const tables: DiffusionTables = respacedTables(1000, '250');
  tf.tidy(() => {
    const x = tf.zeros([2, 4, 2, 2]) as tf.Tensor4D;
    const noise = tf.zeros([2, 4, 2, 2]) as tf.Tensor4D;
    const y = new Int32Array(2);
    assert.throws(() => pSampleStep(toy, tables, x, Int32Array.from([0, 250]), y, noise), /k in \[0, 249\].*got k\[1\] = 250/);
    assert.throws(() => pSampleStep(toy, tables, x, Int32Array.from([0]), y, noise), /k of length 2.*got length 1/);
    assert.throws(() => pSampleStep(toy, tables, x, new Int32Array(2), y, tf.zeros([2, 4, 2, 3]) as tf.Tensor4D), /noise of shape \[2, 4, 2, 2\], got \[2, 4, 2, 3\]/);
    assert.throws(() => ddimStep(toy, tables, x, Int32Array.from([3, 3]), y, null, 0.5), /noise tensor when eta > 0/);
    const narrow: Denoiser = (xi) => xi;
    assert.throws(() => pSampleStep(narrow, tables, x, new Int32Array(2), y, noise), /model output \(ε then v\) of shape \[2, 8, 2, 2\], got \[2, 4, 2, 2\]/);
    assert.throws(() => trainingLosses(toy, TRAINING, x, Int32Array.from([0, 1000]), y, noise), /t in \[0, 999\].*got t\[1\] = 1000/);
    assert.throws(() => qSample(TRAINING, x, new Int32Array(2), tf.zeros([1, 4, 2, 2]) as tf.Tensor4D), /noise of shape/);
    assert.throws(() => pSampleLoop(toy, tables, [2, 4, 0, 2], y, keyFromSeed(0)), /positive integers, got \[2, 4, 0, 2\]/);
  });
});
