import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { buildProgram } from '../cli/main.ts';
import { cli } from './cli-capture.ts';
import { TRAIN_DEFAULTS } from '../cli/train.ts';
import { readSafetensors } from '../formats/safetensors.ts';
import { startBackend } from '../cli/options.ts';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { autoencoderKL } from '../mdt/vae/autoencoder-kl.ts';
import { vaeConfig } from '../mdt/vae/config.ts';
import { encodePng } from '../mdt/viz/png.ts';
import { rgbPng, writeRandomStateDict } from './cli-fixtures.ts';

const FIXTURES = '/work/shared/fixtures';


const flat = (s: string) => s.replace(/\s+/g, ' ');

test('--help of every command lists every flag with its default', async () => {
  const program = buildProgram({ write: () => {}, writeErr: () => {}, tty: false });
  const commands = program.commands.filter((c: Command) => c.name() !== 'help');
  assert.deepEqual(commands.map((c) => c.name()).sort(), ['classifier', 'convert', 'doctor', 'encode', 'eval', 'export', 'graph', 'inpaint', 'parity', 'sample', 'summary', 'train']);
  for (const cmd of commands) {
    const { code, out } = await cli(cmd.name(), '--help');
    assert.equal(code, 0, cmd.name());
    const help = cmd.createHelp();
    for (const opt of cmd.options) {
      if (opt.long === '--help') continue;
      const line = help.optionDescription(opt);
      assert.match(line, /\((default|required)\b|default: /, `${cmd.name()} ${opt.long}: "${line}" says no default`);
      assert.ok(flat(out).includes(`${opt.flags} ${flat(line)}`), `${cmd.name()} --help lacks "${opt.flags} ${line}"`);
    }
  }
});

test('the train defaults come from TRAIN_DEFAULTS', async () => {
  const { out } = await cli('train', '--help');
  const text = flat(out);
  assert.ok(text.includes(`--steps <n> total training steps (with --resume: the new target) (default: ${TRAIN_DEFAULTS.steps})`));
  assert.ok(text.includes(`(default: ${TRAIN_DEFAULTS.overrides.hiddenSize} with the default --model`));
  assert.ok(text.includes(`(default: "${TRAIN_DEFAULTS.model}")`));
});

test('a wrong flag or value exits 2 and says what is allowed', async () => {
  const cases: [string[], RegExp][] = [
    [['train', '--bogus'], /unknown option '--bogus'/],
    [['train', '--model', 'MDT-S/3'], /argument 'MDT-S\/3' is invalid\. Allowed: DiT-S\/2, .*MDTv2-XL\/2/],
    [['train', '--optimizer', 'sgd'], /Allowed choices are adamw, adan/],
    [['train', '--steps', '0'], /Expected an integer ≥ 1/],
    [['train', '--ema', '1.5'], /Expected a number in \[0, 1\]/],
    [['train', '--sample-steps', 'ddimx'], /ddimN like ddim25/],
    [['train', '--backend', 'gpu'], /Allowed choices are auto, tensorflow, wasm, cpu, webgpu/],
    [['train', '--max-grad-norm', '1'], /only adan clips/],
    [['train', '--resume'], /--resume needs the --out/],
    [['train', '--latents', '/x', '--data', 'mnist'], /cannot be used with option '--data/],
    [['sample'], /required option '--ckpt <path>' not specified/],
    [['sample', '--ckpt', 'x', '--sampler', 'foo'], /Allowed choices are ddpm, ddim/],
    [['sample', '--ckpt', 'x', '--class', 'cats'], /Expected "all" or class indices like 3,5,7/],
    [['sample', '--ckpt', '/no/such/run'], /--ckpt: no such file or directory/],
    [['inpaint', '--ckpt', 'x', '--image', 'a.png', '--mask', 'b.png', '--switch', '2'], /Expected a number in \[0, 1\]/],
    [['convert', 'a.pt'], /missing required argument 'out'/],
    [['summary', '--keep', '-3'], /Expected an integer ≥ 1/],
    [['summary', '--keep', '300'], /--keep: 300 tokens, but the model has 256/],
    [['frobnicate'], /unknown command 'frobnicate'/],
  ];
  for (const [argv, message] of cases) {
    const r = await cli(...argv);
    assert.equal(r.code, 2, `${argv.join(' ')}: exit ${r.code}, ${r.err}`);
    assert.match(r.err, message, argv.join(' '));
  }
});

test('mdt summary --model MDT-S/2 prints 35,797,208 parameters', async () => {
  const r = await cli('summary', '--model', 'MDT-S/2');
  assert.equal(r.code, 0);
  assert.match(r.out, /total\s+35,797,208/);
});

test('train, resume, sample, inpaint: the files a run promises', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mdt-cli-'));
  try {
    const run = join(dir, 'run');
    const tiny = ['--model', 'MDT-S/2', '--data', 'mnist', '--image-size', '16', '--depth', '2', '--hidden-size', '32', '--num-heads', '2', '--patch-size', '4', '--decode-layer', '1'];
    const t = await cli('train', ...tiny, '--batch-size', '4', '--steps', '4', '--log-every', '2', '--ckpt-every', '2', '--sample-every', '4', '--sample-steps', 'ddim5', '--out', run);
    assert.equal(t.code, 0, t.err);
    assert.match(t.out, /train 4\/4 steps \| loss \d\.\d{4} \| m_loss \d\.\d{4} \| [\d.]+ steps\/s \| ETA /);
    const log = readFileSync(join(run, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number });
    assert.deepEqual(log.map((r) => r.step), [2, 4]);
    for (const f of ['loss.png', 'samples/step-000004.png', 'checkpoints/000004/ema.safetensors', 'checkpoints/000004/meta.json', 'run.json', 'cli.json']) {
      assert.ok(existsSync(join(run, f)), f);
    }

    // Clashing with a run is refused before anything is written; --resume needs no flags again.
    assert.equal((await cli('train', '--out', run)).code, 2);
    const r = await cli('train', '--out', run, '--resume', '--steps', '6');
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /resuming .* at step 4/);
    assert.deepEqual(readFileSync(join(run, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { step: number }).step), [2, 4, 6]);
    // The cosine horizon is the first invocation's --steps: recorded, so the longer resume above kept it.
    assert.equal((JSON.parse(readFileSync(join(run, 'cli.json'), 'utf8')) as { lrDecaySteps: number }).lrDecaySteps, 4);
    assert.deepEqual((JSON.parse(readFileSync(join(run, 'run.json'), 'utf8')) as { optimizer: { schedule: unknown } }).optimizer.schedule, { warmupSteps: 0, decay: 'cosine', decaySteps: 4, finalRatio: 0.1 });
    const badWarmup = await cli('train', ...tiny, '--steps', '4', '--warmup', '4', '--out', join(dir, 'warm'));
    assert.equal(badWarmup.code, 2);
    assert.match(badWarmup.err, /--warmup 4: the cosine decay \(to step 4, --lr-decay-steps\) must end after the warm-up/);

    // A named model keeps its official recipe (no min-SNR for MDT v1), and a resume cannot change it.
    const runRecord = (d: string) => JSON.parse(readFileSync(join(d, 'run.json'), 'utf8')) as { model: string; minSnrGamma?: number | null };
    assert.equal(runRecord(run).minSnrGamma, undefined);
    const otherSnr = await cli('train', '--out', run, '--resume', '--min-snr', '3');
    assert.equal(otherSnr.code, 2);
    assert.match(otherSnr.err, /minSnrGamma was undefined, now 3/);
    // The default --model is the main job's DiT with min-SNR-5; --min-snr 0 turns it off. Same seed,
    // same first batch (16 timesteps, some below t ≈ 130, where SNR > 5 and the weight is < 1):
    // the first step's vb is the same, its weighted mse is not.
    const mainJob = ['--data', 'mnist', '--image-size', '16', '--depth', '2', '--hidden-size', '32', '--num-heads', '2', '--batch-size', '16', '--steps', '1', '--log-every', '1', '--sample-every', '1', '--sample-steps', 'ddim2'];
    const firstStep = async (name: string, ...extra: string[]) => {
      const r = await cli('train', ...mainJob, ...extra, '--out', join(dir, name));
      assert.equal(r.code, 0, r.err);
      assert.doesNotMatch(r.out, /m_loss/);
      return JSON.parse(readFileSync(join(dir, name, 'log.jsonl'), 'utf8').trim()) as { mse: number; vb: number };
    };
    const weighted = await firstStep('main-snr');
    const plain = await firstStep('main-plain', '--min-snr', '0');
    assert.equal(runRecord(join(dir, 'main-snr')).model, 'DiT-S/2');
    assert.equal(runRecord(join(dir, 'main-snr')).minSnrGamma, 5);
    assert.equal(runRecord(join(dir, 'main-plain')).minSnrGamma, null);
    assert.equal(weighted.vb, plain.vb);
    assert.ok(weighted.mse < plain.mse, `min-SNR weights are ≤ 1: ${weighted.mse} vs ${plain.mse}`);

    const samples = join(dir, 'samples');
    const s = await cli('sample', '--ckpt', run, '--class', '3,5,7', '--count', '2', '--steps', 'ddim5', '--out', samples);
    assert.equal(s.code, 0, s.err);
    assert.ok(existsSync(join(samples, 'grid.png')));
    assert.deepEqual(readdirSync(samples).filter((f) => f.startsWith('sample-')).sort(), ['sample-0-class3.png', 'sample-1-class5.png', 'sample-2-class7.png', 'sample-3-class3.png', 'sample-4-class5.png', 'sample-5-class7.png']);
    assert.equal((await cli('sample', '--ckpt', run, '--class', '10')).code, 2);

    // A bare state dict: an MDT v1 does not record its decode layer, so the default (2) is refused.
    const bare = join(dir, 'bare');
    mkdirSync(bare);
    copyFileSync(join(run, 'checkpoints/000006/ema.safetensors'), join(bare, 'ema.safetensors'));
    const amb = await cli('sample', '--ckpt', join(bare, 'ema.safetensors'), '--steps', 'ddim2', '--count', '1', '--out', join(dir, 'bare-out'));
    assert.equal(amb.code, 2);
    assert.match(amb.err, /decode layer; pass --decode-layer/);
    const ok = await cli('sample', '--ckpt', join(bare, 'ema.safetensors'), '--decode-layer', '1', '--steps', 'ddim2', '--count', '1', '--out', join(dir, 'bare-out'));
    assert.equal(ok.code, 0, ok.err);
    assert.ok(existsSync(join(dir, 'bare-out', 'grid.png')));

    const side = 16;
    const image = join(dir, 'image.png');
    const mask = join(dir, 'mask.png');
    writeFileSync(image, encodePng({ width: side, height: side, channels: 1, data: Uint8Array.from({ length: side * side }, (_, i) => (i % side) * 16) }));
    writeFileSync(mask, encodePng({ width: side, height: side, channels: 1, data: Uint8Array.from({ length: side * side }, (_, i) => (i >= side * side / 2 ? 255 : 0)) }));
    const out = join(dir, 'inpaint');
    const ip = await cli('inpaint', '--ckpt', run, '--image', image, '--mask', mask, '--class', '3', '--cfg-scale', '2', '--steps', '10', '--out', out);
    assert.equal(ip.code, 0, ip.err);
    assert.ok(existsSync(join(out, 'inpainted.png')) && existsSync(join(out, 'comparison.png')));
    const wrongSize = join(dir, 'big.png');
    writeFileSync(wrongSize, encodePng({ width: 32, height: 32, channels: 1, data: new Uint8Array(32 * 32) }));
    const bad = await cli('inpaint', '--ckpt', run, '--image', wrongSize, '--mask', mask);
    assert.equal(bad.code, 2);
    assert.match(bad.err, /is 32×32; the model takes 16×16 images/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('mdt convert of the dit-tiny .pt equals its .safetensors tensor by tensor', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mdt-convert-'));
  try {
    const out = join(dir, 'weights.safetensors');
    const r = await cli('convert', join(FIXTURES, 'dit-tiny/weights.pt'), out);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /wrote 42 tensors/);
    const got = await readSafetensors(out);
    const want = await readSafetensors(join(FIXTURES, 'dit-tiny/weights.safetensors'));
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
    for (const [k, w] of want) {
      const g = got.get(k)!;
      assert.equal(g.dtype, w.dtype, k);
      assert.deepEqual(g.shape, w.shape, k);
      assert.deepEqual(g.data, w.data, k);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the bin shim runs the CLI and exits 2 on a usage error', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, ['cli/mdt.mjs', ...args], { encoding: 'utf8' });
  const ok = run('summary', '--model', 'DiT-S/2');
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /total\s+32,963,360/);
  const bad = run('sample', '--which', 'best');
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /argument 'best' is invalid\. Allowed choices are ema, model/);
});

test('latent models: encode a folder, then sample and inpaint through --vae', async (t) => {
  await startBackend('auto');
  const dir = mkdtempSync(join(tmpdir(), 'mdt-vae-'));
  try {
    // A small AutoencoderKL (2 levels: 16×16 images ↔ 8×8×4 latents); --vae reads its sizes off the keys.
    const vaePath = join(dir, 'vae.safetensors');
    await writeRandomStateDict(vaePath, autoencoderKL(vaeConfig({ blockOutChannels: [32, 32], layersPerBlock: 1 })).params, 1);
    const ckpt = join(dir, 'mdt-latent.safetensors');
    await writeRandomStateDict(ckpt, buildModel(namedConfig('MDT-S/2', { inputSize: 8, inChannels: 4, numClasses: 3, depth: 2, hiddenSize: 32, numHeads: 2, decodeLayer: 1 })).params, 2);
    const model = ['--ckpt', ckpt, '--decode-layer', '1'];

    const images = join(dir, 'images');
    for (const [k, cls] of ['cat', 'dog'].entries()) {
      mkdirSync(join(images, cls), { recursive: true });
      for (let i = 0; i < 3; i++) writeFileSync(join(images, cls, `${i}.png`), rgbPng(16, (x, y, c) => (x * 16 + y * 4 + c * 60 + k * 90 + i * 7) % 256));
    }
    const cache = join(dir, 'cache');
    const enc = ['encode', images, '--vae', vaePath, '--out', cache, '--image-size', '16', '--shard-size', '4'];
    const e1 = await cli(...enc);
    assert.equal(e1.code, 0, e1.err);
    assert.match(e1.out, /2 shards encoded, 0 already there; 6 latents of 4×8×8/);
    assert.match((await cli(...enc)).out, /0 shards encoded, 2 already there/);

    const folderRun = await cli('train', '--data', images, '--image-size', '16', '--depth', '2', '--hidden-size', '32', '--num-heads', '2', '--batch-size', '2', '--steps', '2', '--sample-steps', 'ddim2', '--out', join(dir, 'folder-run'));
    assert.equal(folderRun.code, 0, folderRun.err);
    assert.match(folderRun.out, /on folder:images \(6 items\)/);
    assert.ok(existsSync(join(dir, 'folder-run', 'samples', 'step-000002.png')));

    assert.equal((await cli('sample', ...model)).code, 2, 'a latent model without --vae');
    const out = join(dir, 'samples');
    const s = await cli('sample', ...model, '--vae', vaePath, '--class', '0,2', '--count', '1', '--steps', 'ddim2', '--out', out);
    assert.equal(s.code, 0, s.err);
    assert.match(s.out, /guidance power-cosine w=3\.8 s=4 on first3 channels/);
    assert.ok(existsSync(join(out, 'grid.png')) && existsSync(join(out, 'sample-1-class2.png')));

    const image = join(dir, 'image.png');
    const mask = join(dir, 'mask.png');
    writeFileSync(image, rgbPng(16, (x, y) => x * 16 + y));
    writeFileSync(mask, rgbPng(16, (_x, y) => (y >= 8 ? 255 : 0)));
    const ip = await cli('inpaint', ...model, '--vae', vaePath, '--image', image, '--mask', mask, '--class', '1', '--steps', '4', '--out', join(dir, 'inpaint'));
    assert.equal(ip.code, 0, ip.err);
    assert.ok(existsSync(join(dir, 'inpaint', 'inpainted.png')));

    await t.test('train --latents on the cache', async () => {
      const r = await cli('train', '--latents', cache, '--depth', '2', '--hidden-size', '32', '--num-heads', '2', '--patch-size', '2', '--batch-size', '4', '--steps', '2', '--sample-steps', 'ddim2', '--out', join(dir, 'run'));
      assert.equal(r.code, 0, r.err);
      assert.match(r.out, /no sample grids: 4-channel samples need a decoder/);
      const withVae = await cli('train', '--latents', cache, '--vae', vaePath, '--depth', '2', '--hidden-size', '32', '--num-heads', '2', '--patch-size', '2', '--batch-size', '4', '--steps', '2', '--sample-steps', 'ddim2', '--out', join(dir, 'run-vae'));
      assert.equal(withVae.code, 0, withVae.err);
      assert.ok(existsSync(join(dir, 'run-vae', 'samples', 'step-000002.png')), 'a --vae run decodes its sample grids');
      assert.match(r.out, /@latents\+mirrored \(12 items\)/);
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
