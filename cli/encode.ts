/**
 * `mdt encode`: an image folder through the SD VAE encoder into a latent cache for
 * `mdt train --latents`. Finished shards are kept: running the same command again resumes.
 */
import { basename } from 'node:path';
import type { Command } from 'commander';
import { keyFromSeed } from '../dsl/random.ts';
import { loadImageFolder, type LabelSource } from '../mdt/data/image-folder.ts';
import { encodeLatents } from '../mdt/vae/latents.ts';
import { say, type CliIO } from './io.ts';
import { backendOption, intArg, option, startBackend, type BackendChoice } from './options.ts';
import { startProgress, type Progress } from './progress.ts';
import { openVae } from './vae-file.ts';

interface EncodeFlags {
  readonly vae: string;
  readonly out: string;
  readonly imageSize: number;
  readonly labels: LabelSource;
  readonly batchSize: number;
  readonly shardSize: number;
  readonly seed: number;
  readonly flip: boolean;
  readonly backend: BackendChoice;
}

export function encodeCommand(program: Command, io: CliIO): Command {
  return program
    .command('encode')
    .description('VAE-encode an image folder into a latent cache (resumable) for `mdt train --latents`')
    .argument('<dir>', 'folder of PNG/JPEG images (searched recursively)')
    .addOption(option('--vae <file>', 'SD VAE weights (diffusers .safetensors: sd-vae-ft-mse or -ema)', { required: true }))
    .addOption(option('--out <dir>', 'the latent cache directory', { required: true }))
    .addOption(option('--image-size <n>', 'images are center-cropped to this side (a multiple of 8)', { default: 256, parse: intArg(8, 8192) }))
    .addOption(option('--labels <source>', 'classes: sub-folder names, file-name prefix before "_", or one class', { default: 'folder', choices: ['folder', 'prefix', 'none'] }))
    .addOption(option('--batch-size <n>', 'images per encoder call', { default: 8, parse: intArg(1, 10_000) }))
    .addOption(option('--shard-size <n>', 'images per shard file (the unit of resuming)', { default: 1024, parse: intArg(1) }))
    .addOption(option('--seed <n>', 'seed of the posterior samples (each image draws its own from it)', { default: 0, parse: intArg(0) }))
    .addOption(option('--no-flip', 'do not also encode the mirrored images (training then runs without flips)', { default: true, defaultText: 'mirrored images encoded too' }))
    .addOption(backendOption())
    .action(async (dir: string, f: EncodeFlags) => {
      await startBackend(f.backend);
      const ds = loadImageFolder(dir, { size: f.imageSize, labels: f.labels });
      const vae = await openVae(f.vae);
      say(io, `encoding ${ds.size} images of ${ds.numClasses} classes (${f.imageSize}×${f.imageSize}${f.flip ? ', and their mirror images' : ''}) → ${f.out}`);
      const progress: { bar?: Progress } = {};
      try {
        const r = await encodeLatents(vae.compiled, ds, {
          outDir: f.out,
          vaeName: basename(f.vae),
          shardSize: f.shardSize,
          batchSize: f.batchSize,
          key: keyFromSeed(f.seed),
          flip: f.flip,
          onProgress(p) {
            progress.bar ??= startProgress(io, { label: 'encoding', total: p.total, start: p.skipped ? p.done : 0, unit: 'images', every: f.shardSize });
            progress.bar.update(p.done);
          },
        });
        progress.bar?.stop();
        say(io, `done: ${r.encodedShards} shards encoded, ${r.skippedShards} already there; ${r.manifest.size} latents of ${r.manifest.channels}×${r.manifest.height}×${r.manifest.width}`);
        say(io, `train on them with: mdt train --latents ${f.out}`);
      } finally {
        vae.dispose();
      }
    });
}
