/**
 * What survives what: a NaN, a torn log line, a full disk, kill -9 at any moment, a corrupt
 * checkpoint, a resume with other flags, and the leftovers of interrupted writes. Tiny model
 * (depth 2, width 32, batch 4, 16×16 MNIST or 8×8 noise), a few steps per run.
 */
import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statfsSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensors, writeSafetensors, type StTensor } from '../formats/safetensors.ts';
import { verifyCheckpoint } from '../compile/checkpoint.ts';
import { startBackend } from '../cli/options.ts';
import { trainRun, type TrainRunHooks, type TrainRunOptions } from '../compile/train-run.ts';
import type { ImageDataset } from '../mdt/data/dataset.ts';
import { cli } from './cli-capture.ts';
import { syntheticDataset } from './synthetic-dataset.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const TINY = ['--model', 'MDT-S/2', '--data', 'mnist', '--image-size', '16', '--depth', '2', '--hidden-size', '32', '--num-heads', '2', '--patch-size', '4', '--decode-layer', '1', '--batch-size', '4', '--log-every', '1', '--sample-every', '1000', '--sample-steps', 'ddim2'];
const train = (out: string, ...more: string[]) => cli('train', ...TINY, '--out', out, ...more);

function withDir(name: string, body: (dir: string, t: TestContext) => Promise<void>): (t: TestContext) => Promise<void> {
  return async (t) => {
    const dir = mkdtempSync(join(tmpdir(), `mdt-${name}-`));
    try {
      await body(dir, t);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

const checkpointsOf = (run: string) => readdirSync(join(run, 'checkpoints')).sort();
const logSteps = (run: string) => readFileSync(join(run, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** Temporary names anywhere a run writes. */
function leftovers(run: string): string[] {
  return ['', 'checkpoints', 'samples'].flatMap((d) => (existsSync(join(run, d)) ? readdirSync(join(run, d)).filter((n) => n.includes('.tmp-')).map((n) => join(d, n)) : []));
}

/** `latest` names a checkpoint whose files all match its meta.json and hold finite values. */
async function assertLatestValid(run: string): Promise<string> {
  const name = readFileSync(join(run, 'latest'), 'utf8').trim();
  await verifyCheckpoint(join(run, 'checkpoints', name));
  return name;
}

function assertSameTensors(a: string, b: string, what: string): Promise<void> {
  return Promise.all([readSafetensors(a), readSafetensors(b)]).then(([x, y]) => {
    assert.deepEqual([...x.keys()], [...y.keys()], what);
    for (const [k, t] of x) assert.deepEqual(t.data, y.get(k)!.data, `${what}: ${k}`);
  });
}

/** A PID that is certainly not running: one of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '0']);
  return r.pid!;
}

/** Mounts a tmpfs at `dir` (root only); the reason when this machine does not allow it. */
function mountTmpfs(dir: string, options: string): string | null {
  mkdirSync(dir, { recursive: true });
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir], { encoding: 'utf8' });
  return r.status === 0 ? null : `cannot mount a tmpfs here (${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}); needs root in a container that allows mount`;
}
const unmount = (dir: string) => spawnSync('umount', [dir]);

test('a NaN stops the run at its step, writes no checkpoint of it and keeps the good ones', withDir('nan', async (dir) => {
  // lr 10: the losses are finite up to step 4, whose update turns the weights to NaN.
  const a = join(dir, 'a');
  const r = await train(a, '--steps', '8', '--ckpt-every', '1', '--lr', '10');
  assert.equal(r.code, 1, r.err);
  // Which state goes non-finite first (weights, EMA or the optimizer's moments) depends on the
  // backend's rounding (native kernels or plain wasm); the message names it either way.
  assert.match(r.err, /step 4: its update made the weights non-finite \(not saving checkpoint .*000004: (model|ema|opt)\.safetensors of step 4: non-finite values in \d+ of \d+ tensors: \S+ \(\d+ (NaN|±Inf) of \d+\)/);
  assert.match(r.err, /Training stopped; .*the newest is .*000003 \(step 3\)\)\. Lower --lr, or pass --on-nan skip/);
  assert.deepEqual(checkpointsOf(a), ['000002', '000003']);
  assert.equal(await assertLatestValid(a), '000003');
  assert.deepEqual(leftovers(a), []);

  // Checkpoints every 3 steps: the NaN loss of step 5 is what stops it.
  const b = join(dir, 'b');
  const s = await train(b, '--steps', '8', '--ckpt-every', '3', '--lr', '10');
  assert.equal(s.code, 1);
  assert.match(s.err, /step 5: loss NaN, m_loss NaN\. Training stopped; nothing of this step was saved \(of the checkpoints, the newest is .*000003 \(step 3\)\)/);
  assert.deepEqual(logSteps(b), [1, 2, 3, 4], 'no line for the NaN step');

  // A state dict of NaN weights is refused with the tensors named, not sampled into a black grid.
  const sd = await readSafetensors(join(a, 'checkpoints', '000003', 'ema.safetensors'));
  const nan = new Map<string, StTensor>([...sd].map(([k, t]) => [k, t.data instanceof Float32Array ? { ...t, data: t.data.map(() => NaN) } : t]));
  await writeSafetensors(join(dir, 'nan.safetensors'), nan, { format: 'pt' });
  const smp = await cli('sample', '--ckpt', join(dir, 'nan.safetensors'), '--decode-layer', '1', '--steps', 'ddim2', '--count', '1', '--out', join(dir, 'samples'));
  assert.equal(smp.code, 1);
  assert.match(smp.err, /nan\.safetensors: non-finite values in \d+ of \d+ tensors: .*x_embedder\.proj\.weight \(512 NaN of 512\)/);
  assert.ok(!existsSync(join(dir, 'samples')));
}));

/** `data`, with the batch first drawn as the `nth` get() made NaN from then on (in replays and resumed runs too). */
function poisoned(data: ImageDataset, nth: number): ImageDataset {
  let calls = 0;
  let bad: string | null = null;
  return {
    ...data,
    get(idx) {
      const key = Array.from(idx).join(',');
      if (++calls === nth && bad === null) bad = key;
      const r = data.get(idx);
      return key === bad ? { ...r, images: r.images.map(() => NaN) } : r;
    },
  };
}

function tinyRun(out: string, steps: number, more: Partial<TrainRunOptions> = {}): TrainRunOptions {
  return {
    model: 'MDT-S/2', overrides: { depth: 2, hiddenSize: 32, numHeads: 2, patchSize: 2, decodeLayer: 1 },
    batchSize: 4, steps, optimizer: { kind: 'adamw', lr: 1e-3 }, emaDecay: 0.9, seed: 3, outDir: out, resume: false,
    logEvery: 1, sampleEvery: 1000, checkpointEvery: 1, sampleSteps: 'ddim2', cfgScale: 1, flip: false, ...more,
  };
}

test('--on-nan skip undoes the step: the state after it is the state before it, and a resumed run skips it too', withDir('skip', async (dir) => {
  await startBackend('auto');
  const data = { name: 'synthetic', train: poisoned(syntheticDataset(200), 5) };
  const messages: string[] = [];
  const a = join(dir, 'a');
  const whole = await trainRun(tinyRun(a, 8, { onNonFinite: 'skip', keep: 100 }), data, { onMessage: (m) => messages.push(m) });
  assert.match(messages.join('\n'), /step 5: loss NaN, m_loss NaN: skipped step\(s\) 5 \(back to checkpoint .*000004, 0 step\(s\) replayed\); going on with step 6's batch/);
  assert.equal(whole.losses.length, 7);
  for (const f of ['model', 'ema', 'opt']) await assertSameTensors(join(a, 'checkpoints/000004', `${f}.safetensors`), join(a, 'checkpoints/000005', `${f}.safetensors`), `${f} after the skipped step 5`);
  for (const c of checkpointsOf(a)) await verifyCheckpoint(join(a, 'checkpoints', c));

  const b = join(dir, 'b');
  await trainRun(tinyRun(b, 3, { onNonFinite: 'skip' }), data);
  await trainRun(tinyRun(b, 8, { onNonFinite: 'skip', resume: true }), data);
  assert.equal(readFileSync(join(b, 'log.jsonl'), 'utf8'), readFileSync(join(a, 'log.jsonl'), 'utf8'));
  assert.deepEqual(readFileSync(join(b, 'checkpoints/000008/model.safetensors')), readFileSync(join(a, 'checkpoints/000008/model.safetensors')));

  // lr 10 diverges: step 4's update makes the state non-finite although its loss is finite (the
  // checkpoint check finds it); skips do not help, and 5 in a row stop the run. Which later
  // losses come out NaN or ±Inf depends on the backend's rounding.
  const c = join(dir, 'c');
  const r = await train(c, '--steps', '12', '--ckpt-every', '2', '--lr', '10', '--on-nan', 'skip');
  assert.equal(r.code, 1);
  assert.match(r.out, /step 4: its update made the weights non-finite \(not saving checkpoint .*\): skipped step\(s\) 4 \(back to checkpoint .*000002, 1 step\(s\) replayed\)/);
  assert.match(r.err, /step 8: .*: 5 steps in a row \(4 to 8\) had to be skipped: the model has diverged/);
  for (const k of checkpointsOf(c)) await verifyCheckpoint(join(c, 'checkpoints', k));
}));

test('--keep and --milestone-every; resume falls back past corrupt checkpoints, bit for bit', withDir('keep', async (dir) => {
  const run = join(dir, 'run');
  const t = await train(run, '--steps', '10', '--ckpt-every', '1', '--keep', '2', '--milestone-every', '4');
  assert.equal(t.code, 0, t.err);
  assert.deepEqual(checkpointsOf(run), ['000004', '000008', '000009', '000010']);

  // 64 flipped bytes in the newest, an unreadable meta.json in the one before.
  const ema = join(run, 'checkpoints/000010/ema.safetensors');
  const bytes = readFileSync(ema);
  for (let i = 0; i < 64; i++) bytes[bytes.length - 1000 + i] ^= 0xff;
  writeFileSync(ema, bytes);
  writeFileSync(join(run, 'checkpoints/000009/meta.json'), '{"step": 9, "conf');
  const s = await cli('sample', '--ckpt', run, '--steps', 'ddim2', '--count', '1', '--out', join(dir, 's'));
  assert.equal(s.code, 1);
  assert.match(s.err, /000010\/ema\.safetensors does not match the SHA-256 in meta\.json \(the file is corrupt\)/);

  writeFileSync(join(run, 'cli.json'), '{"steps": 1');
  const badCli = await cli('train', '--out', run, '--resume', '--steps', '12');
  assert.equal(badCli.code, 1);
  assert.match(badCli.err, /cli\.json: not valid JSON \(.*\); expected the flags of the run/);
  assert.ok(existsSync(join(run, 'checkpoints/000010')), 'a refused start moves nothing');

  writeFileSync(join(run, 'cli.json'), JSON.stringify({ steps: 10 }));
  const r = await cli('train', ...TINY, '--out', run, '--resume', '--steps', '12', '--ckpt-every', '1', '--keep', '2', '--milestone-every', '4');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /skipped checkpoint 000010: .*000010\/ema\.safetensors does not match the SHA-256 in meta\.json \(the file is corrupt\); moved it to .*000010\.invalid/);
  assert.match(r.out, /skipped checkpoint 000009: .*000009\/meta\.json: not valid JSON .*; moved it to .*000009\.invalid/);
  assert.match(r.out, /resuming .* at step 8/);
  assert.deepEqual(checkpointsOf(run), ['000004', '000008', '000009.invalid', '000010.invalid', '000011', '000012']);

  // The resume kept the run's learning-rate schedule (its horizon, 10 steps, from run.json, since
  // the cli.json above does not record it): the same as 12 uninterrupted steps on that schedule.
  const ref = join(dir, 'ref');
  assert.equal((await train(ref, '--steps', '12', '--lr-decay-steps', '10', '--ckpt-every', '100')).code, 0);
  assert.equal(readFileSync(join(run, 'log.jsonl'), 'utf8'), readFileSync(join(ref, 'log.jsonl'), 'utf8'));
  for (const f of ['model', 'ema', 'opt']) assert.deepEqual(readFileSync(join(run, `checkpoints/000012/${f}.safetensors`)), readFileSync(join(ref, `checkpoints/000012/${f}.safetensors`)), f);
}));

test('a torn last log line is dropped on resume with a message', withDir('torn', async (dir) => {
  const run = join(dir, 'run');
  assert.equal((await train(run, '--steps', '4', '--ckpt-every', '2')).code, 0);
  writeFileSync(join(run, 'log.jsonl'), '{"step":5,"loss":0.98', { flag: 'a' });
  const r = await train(run, '--resume', '--steps', '6');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /log\.jsonl: dropped a torn last line \(21 characters without a newline/);
  assert.deepEqual(logSteps(run), range(1, 6));
}));

test('a run made before learning-rate schedules (constant rate, nothing recorded) resumes on its constant rate', withDir('old-run', async (dir) => {
  const run = join(dir, 'run');
  assert.equal((await train(run, '--steps', '3', '--lr-schedule', 'constant', '--warmup', '0', '--ckpt-every', '3')).code, 0);
  const runJson = JSON.parse(readFileSync(join(run, 'run.json'), 'utf8')) as { optimizer: Record<string, unknown> };
  assert.equal(runJson.optimizer['schedule'], undefined, 'the constant rate without warm-up records no schedule, as runs before schedules did');
  // What an older cli.json holds: no schedule flags, so today's defaults (cosine, warm-up) would apply.
  const recorded = JSON.parse(readFileSync(join(run, 'cli.json'), 'utf8')) as Record<string, unknown>;
  for (const k of ['lrSchedule', 'warmup', 'lrDecaySteps']) delete recorded[k];
  writeFileSync(join(run, 'cli.json'), JSON.stringify(recorded));
  const r = await cli('train', '--out', run, '--resume', '--steps', '5');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /resuming .* at step 3/);
  const ref = join(dir, 'ref');
  assert.equal((await train(ref, '--steps', '5', '--lr-schedule', 'constant', '--warmup', '0', '--ckpt-every', '100')).code, 0);
  assert.equal(readFileSync(join(run, 'log.jsonl'), 'utf8'), readFileSync(join(ref, 'log.jsonl'), 'utf8'));
}));

test('run.json is the contract: a resume with other flags is refused before any checkpoint exists', withDir('identity', async (dir) => {
  const run = join(dir, 'run');
  assert.equal((await train(run, '--steps', '2', '--ckpt-every', '1')).code, 0);
  // As if killed after run.json was written but before the first checkpoint.
  rmSync(join(run, 'checkpoints'), { recursive: true });
  rmSync(join(run, 'latest'));
  const runJson = readFileSync(join(run, 'run.json'), 'utf8');

  const other = await train(run, '--resume', '--hidden-size', '64');
  assert.equal(other.code, 2);
  assert.match(other.err, /cannot resume .*: config was \{.*"hiddenSize":32.*\}, now \{.*"hiddenSize":64.*\} \(run\.json records the run; drop the flags that change it\)/);
  const fresh = await cli('train', '--out', run);
  assert.equal(fresh.code, 2);
  assert.match(fresh.err, /already holds a run \(run\.json\); pass --resume/);
  const cliJson = readFileSync(join(run, 'cli.json'));
  rmSync(join(run, 'cli.json'));
  const defaults = await cli('train', '--out', run, '--resume');
  assert.equal(defaults.code, 2, 'without cli.json the defaults are not this run');
  assert.match(defaults.err, /cannot resume .*: model was "MDT-S\/2", now "DiT-S\/2"; config was/);
  assert.equal(readFileSync(join(run, 'run.json'), 'utf8'), runJson, 'refusals leave run.json alone');

  writeFileSync(join(run, 'cli.json'), cliJson);
  const ok = await cli('train', '--out', run, '--resume', '--steps', '3');
  assert.equal(ok.code, 0, ok.err);
  assert.match(ok.out, /it has no valid checkpoint yet, so it starts from step 0 with the settings of its run\.json/);
  assert.deepEqual(logSteps(run), [1, 2, 3]);

  const back = await cli('train', '--out', run, '--resume', '--steps', '2');
  assert.equal(back.code, 2);
  assert.match(back.err, /--steps 2: .* is already at step 3; a run cannot go back/);
  const same = await cli('train', '--out', run, '--resume', '--steps', '3');
  assert.equal(same.code, 0);
  assert.match(same.out, /nothing to train: the run is already at step 3/);
}));

test('leftovers of dead writers are removed at the start of a run, live ones kept', withDir('stale', async (dir) => {
  const run = join(dir, 'run');
  assert.equal((await train(run, '--steps', '2', '--ckpt-every', '1')).code, 0);
  const dead = deadPid();
  const live = process.ppid;
  mkdirSync(join(run, 'checkpoints', `000003.tmp-${dead}-0123456789ab`));
  writeFileSync(join(run, 'checkpoints', `000003.tmp-${dead}-0123456789ab`, 'model.safetensors'), 'half');
  mkdirSync(join(run, 'checkpoints', `000002.tmp-${dead}`));
  writeFileSync(join(run, `log.jsonl.tmp-${dead}-aaaaaaaaaaaa`), '{');
  writeFileSync(join(run, `run.json.tmp-${live}-bbbbbbbbbbbb`), '{');
  writeFileSync(join(run, `notes.tmp-${dead}`), 'not a temporary name of ours');
  const r = await train(run, '--resume', '--steps', '3');
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /removed 1 leftover\(s\) of interrupted writes in .*run: log\.jsonl\.tmp-/);
  assert.match(r.out, /removed 2 leftover\(s\) of interrupted writes in .*checkpoints: /);
  assert.deepEqual(leftovers(run), [`notes.tmp-${dead}`, `run.json.tmp-${live}-bbbbbbbbbbbb`]);
}));

test('a full disk: a checkpoint or log line that does not fit fails naming the file, and nothing half-written stays', async (t) => {
  const mnt = mkdtempSync(join(tmpdir(), 'mdt-full-'));
  const why = mountTmpfs(mnt, 'size=4m');
  if (why !== null) {
    rmSync(mnt, { recursive: true, force: true });
    t.skip(why);
    return;
  }
  try {
    await startBackend('auto');
    const data = { name: 'synthetic', train: syntheticDataset(200) };
    const filler = join(mnt, 'filler');
    /** Fills the file system up to `leave` bytes (0: to the last byte). */
    const fill = (leave: number) => {
      const free = () => {
        const s = statfsSync(mnt);
        return s.bavail * s.bsize;
      };
      const fd = openSync(filler, 'a');
      try {
        // Page-sized writes: at the end no page is free, so any file that grows needs one it cannot get.
        for (const chunk of [65536, 4096]) while (free() - chunk >= leave) writeSync(fd, Buffer.alloc(chunk));
      } finally {
        closeSync(fd);
      }
    };

    // A checkpoint that does not fit.
    const a = join(mnt, 'a');
    await trainRun(tinyRun(a, 2, { checkpointEvery: 2 }), data);
    fill(100_000);
    await assert.rejects(trainRun(tinyRun(a, 4, { checkpointEvery: 2, resume: true }), data),
      /saving checkpoint .*a\/checkpoints\/000004: writing .*000004\.tmp-\d+-[0-9a-f]+\/\w+\.safetensors: ENOSPC: no space left on device/);
    assert.equal(await assertLatestValid(a), '000002');
    assert.deepEqual(leftovers(a), []);
    rmSync(filler);
    await trainRun(tinyRun(a, 4, { checkpointEvery: 2, resume: true }), data);
    assert.deepEqual(logSteps(a), range(1, 4));
    rmSync(a, { recursive: true });

    // A log line that does not fit: the disk is filled just before an append crosses into a new page.
    const b = join(mnt, 'b');
    const log = join(b, 'log.jsonl');
    let filled = false;
    const hooks: TrainRunHooks = {
      onStep() {
        if (!filled && statSync(log).size % 4096 > 4096 - 300) {
          fill(0);
          filled = true;
        }
      },
    };
    await assert.rejects(trainRun(tinyRun(b, 200, { checkpointEvery: 1000 }), data, hooks), /appending to .*b\/log\.jsonl: ENOSPC: no space left on device/);
    const text = readFileSync(log, 'utf8');
    assert.ok(text.endsWith('}\n'), `log.jsonl ends in a whole line: …${JSON.stringify(text.slice(-40))}`);
    const steps = text.trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step);
    assert.deepEqual(steps, range(1, steps.length));
    rmSync(filler);
    await trainRun(tinyRun(b, steps.length + 2, { checkpointEvery: 1000, resume: true }), data);
    assert.deepEqual(logSteps(b), range(1, steps.length + 2));
  } finally {
    unmount(mnt);
    rmSync(mnt, { recursive: true, force: true });
  }
});

test('kill -9 at random moments, 20 times: `latest` always names a valid checkpoint, and the resumed run equals an uninterrupted one', withDir('kill', async (dir, t) => {
  const run = join(dir, 'run');
  const args = [...TINY, '--steps', '60', '--ckpt-every', '1', '--out', run];
  let seed = 12345;
  const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
  const outcomes: string[] = [];
  const repairs = { leftovers: 0, tornLines: 0 };
  for (let i = 0; i < 20; i++) {
    const resume = existsSync(join(run, 'run.json'));
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', 'train', ...args, ...(resume ? ['--resume'] : [])], { stdio: ['ignore', 'pipe', 'pipe'], cwd: REPO });
    const exited = once(child, 'exit');
    // Start-up takes most of a process's life: every fourth kill lands anywhere in it, the others
    // once the run starts (writing run.json, training, checkpointing, appending to the log).
    const early = i % 4 === 0;
    const delay = early ? random() * 2000 : random() * 700;
    let timer = early ? setTimeout(() => child.kill('SIGKILL'), delay) : undefined;
    let seen = '';
    let errors = '';
    child.stderr.on('data', (d: Buffer) => void (errors += d.toString()));
    child.stdout.on('data', (d: Buffer) => {
      seen += d.toString();
      if (timer === undefined && seen.includes('training ')) timer = setTimeout(() => child.kill('SIGKILL'), delay);
    });
    const [code, signal] = await exited as [number | null, string | null];
    clearTimeout(timer);
    if (seen.includes('leftover(s) of interrupted writes')) repairs.leftovers++;
    if (seen.includes('dropped a torn last line')) repairs.tornLines++;
    const latest = existsSync(join(run, 'latest')) ? await assertLatestValid(run) : 'none';
    outcomes.push(`${Math.round(delay)} ms after ${early ? 'spawn' : 'start'}: ${signal ?? `exit ${code}`}, latest ${latest}`);
    assert.ok(signal === 'SIGKILL' || code === 0, `${outcomes.join('\n')}\n${errors}`);
  }
  t.diagnostic(`${outcomes.filter((o) => o.includes('SIGKILL')).length} kills, ${repairs.leftovers} starts cleared leftovers of killed writes, ${repairs.tornLines} dropped a torn log line; the last: ${outcomes.at(-1)}`);
  assert.ok(outcomes.filter((o) => o.includes('SIGKILL')).length >= 18, outcomes.join('\n'));
  // Checkpoints are only how often state is saved: the rest of the run needs none but the last.
  const r = await cli('train', ...args, '--ckpt-every', '1000', ...(existsSync(join(run, 'run.json')) ? ['--resume'] : []));
  assert.equal(r.code, 0, `${r.err}\n${outcomes.join('\n')}`);
  assert.deepEqual(leftovers(run), []);
  const ref = join(dir, 'ref');
  assert.equal((await cli('train', ...TINY, '--steps', '60', '--ckpt-every', '1000', '--out', ref)).code, 0);
  assert.equal(readFileSync(join(run, 'log.jsonl'), 'utf8'), readFileSync(join(ref, 'log.jsonl'), 'utf8'), outcomes.join('\n'));
  for (const f of ['model', 'ema', 'opt']) assert.deepEqual(readFileSync(join(run, `checkpoints/000060/${f}.safetensors`)), readFileSync(join(ref, `checkpoints/000060/${f}.safetensors`)), f);
}));

test('output folders are checked before sampling; a state dict of another model family says so', withDir('out', async (dir) => {
  const run = join(dir, 'run');
  assert.equal((await train(run, '--steps', '1')).code, 0);
  const file = join(dir, 'file');
  writeFileSync(file, 'mine');
  const common = ['--ckpt', run, '--steps', 'ddim2', '--count', '1'];
  const cases: [string[], RegExp][] = [
    [['sample', ...common, '--out', file], /--out: .*file is a file; expected a folder/],
    [['sample', ...common, '--out', join(file, 'sub')], /--out: cannot create .*file\/sub: .*file is a file, not a folder/],
    [['inpaint', '--ckpt', run, '--image', file, '--mask', file, '--out', file], /--out: .*file is a file; expected a folder/],
  ];
  for (const [argv, message] of cases) {
    const r = await cli(...argv);
    assert.equal(r.code, 2, argv.join(' '));
    assert.match(r.err, message);
    assert.doesNotMatch(r.out, /sampling|inpainting/);
  }
  assert.equal(readFileSync(file, 'utf8'), 'mine');

  const ro = join(dir, 'ro');
  if (mountTmpfs(ro, 'size=64k,ro') === null) {
    try {
      const r = await cli('sample', ...common, '--out', join(ro, 'samples'));
      assert.equal(r.code, 2);
      assert.match(r.err, /--out: cannot create .*ro\/samples: .*ro is not writable \(a read-only file system\)/);
    } finally {
      unmount(ro);
    }
  }

  const bare = join(dir, 'bare.safetensors');
  writeFileSync(bare, readFileSync(join(run, 'checkpoints/000001/ema.safetensors')));
  const wrong = await cli('sample', '--ckpt', bare, '--model', 'DiT-S/2', ...common.slice(2));
  assert.equal(wrong.code, 2);
  assert.match(wrong.err, /--model DiT-S\/2 names a DiT model, but the keys of .*bare\.safetensors are an MDT \(v1\) state dict; drop --model or name an MDT \(v1\) model/);
}));
