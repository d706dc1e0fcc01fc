// Every `npx mdt …` line of README.md's shell blocks, run in README order with the flags as
// written, in a scratch folder (so `runs/a` made by one line is what the next one reads). Two
// explicit tables adapt them to a test, and nothing else does:
//   * STAND_INS: arguments naming files a test cannot have (an official XL/2 checkpoint, the SD
//     VAE, your images) and the tiny fixture that stands in for each, with the flags the fixture
//     needs (a bare state dict's heads, which its keys do not record);
//   * FAST: per subcommand, the values that make a line run in seconds (2 training steps, 2
//     sampler steps, …), replaced where the line has the flag and added where it has not.
// A README line whose subcommand or file is in neither table runs as written; if it needs a file
// no test has, it fails here naming the line, and the fix is one row of STAND_INS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { autoencoderKL } from '../mdt/vae/autoencoder-kl.ts';
import { vaeConfig } from '../mdt/vae/config.ts';
import { encodePng } from '../mdt/viz/png.ts';
import { cli } from './cli-capture.ts';
import { rgbPng, trainPyCheckpoint, writeRandomStateDict } from './cli-fixtures.ts';
import { readSafetensors } from '../formats/safetensors.ts';

const ROOT = join(import.meta.dirname, '..');
const FIXTURES = join(ROOT, '..', 'shared', 'fixtures');

/** The argv of every `npx mdt` line in README.md's sh code blocks (comments cut), in order. */
export function readmeCommands(readme: string): { line: number; argv: string[] }[] {
  const out: { line: number; argv: string[] }[] = [];
  let shell = false;
  for (const [i, raw] of readme.split('\n').entries()) {
    const fence = /^```(\w*)/.exec(raw);
    if (fence !== null) {
      shell = !shell && (fence[1] === 'sh' || fence[1] === 'bash');
      continue;
    }
    if (!shell || !raw.startsWith('npx mdt ')) continue;
    const words = raw.replace(/\s#.*$/, '').trim().match(/'[^']*'|"[^"]*"|\S+/g) ?? [];
    out.push({ line: i + 1, argv: words.slice(2).map((w) => w.replace(/^(['"])(.*)\1$/, '$2')) });
  }
  return out;
}

interface StandIn {
  /** Made in the scratch folder `dir`; returns the path to use. */
  readonly make: (dir: string) => Promise<string> | string;
  /** Flags the stand-in needs that the real file would not. */
  readonly flags?: readonly string[];
}

const tinyVae = async (dir: string) => {
  const path = join(dir, 'tiny-vae.safetensors');
  // 2 levels: 16×16 images ↔ 8×8×4 latents, the size of the tiny MDTv2 fixture's input.
  await writeRandomStateDict(path, autoencoderKL(vaeConfig({ blockOutChannels: [32, 32], layersPerBlock: 1 })).params, 1);
  return path;
};
const grayPng = (dir: string, name: string, value: (i: number) => number) => {
  const path = join(dir, name);
  writeFileSync(path, encodePng({ width: 32, height: 32, channels: 1, data: Uint8Array.from({ length: 32 * 32 }, (_, i) => value(i)) }));
  return path;
};

/** README file arguments → what a test uses instead. */
const STAND_INS: Readonly<Record<string, StandIn>> = {
  // ImageNet's 1000 classes (the README samples classes 88 and 207) on an 8×8×4 latent, random weights.
  'mdt_xl2_v2_ckpt.pt': {
    make: async (dir) => {
      const path = join(dir, 'mdtv2-tiny-1000.safetensors');
      await writeRandomStateDict(path, buildModel(namedConfig('MDTv2-S/2', { inputSize: 8, depth: 4, hiddenSize: 32, numHeads: 2, decodeLayer: 2 })).params, 3);
      return path;
    },
    flags: ['--num-heads', '2', '--decode-layer', '2'],
  },
  // train.py's {model, ema, opt, args} around the tiny MDTv2 fixture's weights.
  '0400000.pt': {
    make: async (dir) => {
      const path = join(dir, '0400000.pt');
      await trainPyCheckpoint(path, await readSafetensors(join(FIXTURES, 'mdt-v2-tiny', 'weights.safetensors')));
      return path;
    },
    flags: ['--num-heads', '4', '--decode-layer', '2'],
  },
  'mdt_xl2_v1_ckpt.pt': { make: () => join(FIXTURES, 'mdt-v1-tiny', 'weights.pt') },
  'sd-vae-ft-mse.safetensors': { make: tinyVae },
  'diffusion_pytorch_model.safetensors': { make: tinyVae },
  'x.png': { make: (dir) => grayPng(dir, 'x.png', (i) => (i % 32) * 8) },
  'm.png': { make: (dir) => grayPng(dir, 'm.png', (i) => (i >= 512 ? 255 : 0)) },
  './imagenet-subset': {
    make: (dir) => {
      const root = join(dir, 'imagenet-subset');
      for (const [k, cls] of ['n01440764', 'n01443537'].entries()) {
        mkdirSync(join(root, cls), { recursive: true });
        for (let i = 0; i < 2; i++) writeFileSync(join(root, cls, `${i}.png`), rgbPng(16, (x, y, c) => (x * 16 + y * 4 + c * 60 + k * 90 + i * 7) % 256));
      }
      return root;
    },
    flags: ['--image-size', '16'],
  },
};

/** Per subcommand: flag → value (given the README's value, if any) that keeps a line to seconds. */
const FAST: Readonly<Record<string, Readonly<Record<string, (given: string | undefined) => string>>>> = {
  // Steps scaled by 1/1000 keep a --resume line's target above the first run's.
  train: { '--steps': (v) => String(Math.max(2, Math.round(Number(v ?? 800) / 1000))), '--batch-size': () => '4', '--sample-steps': () => 'ddim2', '--sample-every': () => '1000' },
  sample: { '--steps': () => '2', '--count': () => '1' },
  inpaint: { '--steps': () => '2' },
};

function adapt(argv: readonly string[], files: ReadonlyMap<string, string>): string[] {
  const out: string[] = [];
  for (const a of argv) {
    out.push(files.get(a) ?? a);
    out.push(...(STAND_INS[a]?.flags ?? []));
  }
  for (const [flag, value] of Object.entries(FAST[argv[0]!] ?? {})) {
    const at = out.indexOf(flag);
    if (at >= 0) out[at + 1] = value(out[at + 1]);
    else out.push(flag, value(undefined));
  }
  return out;
}

test('README: every stand-in names a file the README uses', () => {
  const used = new Set(readmeCommands(readFileSync(join(ROOT, 'README.md'), 'utf8')).flatMap((c) => c.argv));
  for (const name of Object.keys(STAND_INS)) assert.ok(used.has(name), `STAND_INS has ${name}, which no README command names any more`);
});

test('README: every `npx mdt` example runs as written on the tiny fixtures', async (t) => {
  const commands = readmeCommands(readFileSync(join(ROOT, 'README.md'), 'utf8'));
  assert.ok(commands.length >= 10, `found ${commands.length} commands`);
  const dir = mkdtempSync(join(tmpdir(), 'mdt-readme-'));
  const cwd = process.cwd();
  try {
    process.chdir(dir);
    const files = new Map<string, string>();
    for (const [name, s] of Object.entries(STAND_INS)) files.set(name, await s.make(dir));
    for (const { line, argv } of commands) {
      const args = adapt(argv, files);
      const r = await cli(...args);
      t.diagnostic(`README.md:${line}: mdt ${args.join(' ')} → exit ${r.code}`);
      assert.equal(r.code, 0, `README.md:${line}: mdt ${argv.join(' ')}\n(run as: mdt ${args.join(' ')})\n${r.err}${r.out.slice(-2000)}`);
    }
  } finally {
    process.chdir(cwd);
    rmSync(dir, { recursive: true, force: true });
  }
});
