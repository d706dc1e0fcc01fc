/**
 * Pre-encoded latents: an image dataset run once through the VAE encoder and stored as numbered
 * safetensors shards beside a manifest (`latents.json`). Shards are written atomically, so an
 * existing shard is a finished one: an interrupted run, started again with the same settings,
 * skips those and encodes the rest. Each image's posterior noise comes from foldIn(key, index)
 * (mirrored images: foldIn(split(key)[1], index)), so the latents do not depend on batch size or
 * on where a run was interrupted.
 *
 * Shard layout: `latents` F32 (n, latentChannels, h, w) already scaled by the VAE's scaling
 * factor, `latents_flipped` (same, of the left–right mirrored images; with `flip`), `labels` and
 * `indices` (dataset positions) I64 (n).
 */
import * as tf from '@tensorflow/tfjs';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { mkdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../formats/atomic-write.ts';
import { keyToJSON, split, type Key } from '../../dsl/random.ts';
import { openSafetensors, writeSafetensors, type StFile, type StTensor } from '../../formats/safetensors.ts';
import { flipHorizontal } from '../data/batches.ts';
import type { ImageDataset } from '../data/dataset.ts';
import { sampleKeys } from './autoencoder-kl.ts';
import { latentSize, type VaeConfig } from './config.ts';

export const LATENTS_FORMAT = 'mdt-ts-latents/1';
export const MANIFEST_FILE = 'latents.json';

export interface LatentsManifest {
  readonly format: string;
  readonly dataset: string;
  readonly size: number;
  readonly shardSize: number;
  readonly shards: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly imageChannels: number;
  readonly imageHeight: number;
  readonly imageWidth: number;
  readonly classNames: readonly string[];
  readonly scalingFactor: number;
  /** Names the VAE weights used (e.g. "sd-vae-ft-mse"); a resumed run must name the same. */
  readonly vae: string;
  /** The posterior key as [k0, k1], or null for the posterior mean. */
  readonly sampleKey: readonly [number, number] | null;
  readonly flip: boolean;
}

export interface LatentsProgress {
  /** Images finished so far, counting those in skipped shards. */
  readonly done: number;
  readonly total: number;
  readonly shard: number;
  readonly shards: number;
  /** The shard was already on disk. */
  readonly skipped: boolean;
}

export interface EncodeLatentsOptions {
  readonly outDir: string;
  /** Recorded in the manifest and checked on resume. */
  readonly vaeName: string;
  /** Images per shard (default 1024). */
  readonly shardSize?: number;
  /** Images per encoder call (default 8). */
  readonly batchSize?: number;
  /** Draws z from the posterior, as the official training does; omitted, z is the posterior mean. */
  readonly key?: Key;
  /** Also store latents of the mirrored images, for flip augmentation in latent space. */
  readonly flip?: boolean;
  readonly onProgress?: (p: LatentsProgress) => void;
}

export interface EncodeLatentsResult {
  readonly manifest: LatentsManifest;
  readonly encodedShards: number;
  readonly skippedShards: number;
}

/** What encodeLatents runs: a compiled VAE encoder (compile/vae.ts's compileVae is one). */
export interface LatentEncoder {
  readonly config: VaeConfig;
  /** Images NCHW in [−1, 1] → latents NCHW (×scalingFactor): the posterior sample drawn with per-sample `keys`, or the mean. */
  encodeToLatents(images: tf.Tensor4D, keys?: readonly Key[]): tf.Tensor4D;
}

const shardName = (s: number): string => `shard-${String(s).padStart(5, '0')}.safetensors`;

function positiveInt(v: number | undefined, fallback: number, what: string): number {
  const n = v ?? fallback;
  if (!Number.isInteger(n) || n < 1) throw new Error(`encodeLatents: ${what} must be a positive integer, got ${n}`);
  return n;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** Describes differences between a manifest on disk and the one this run would write. */
function manifestDiff(found: Record<string, unknown>, want: LatentsManifest): string[] {
  const keys = new Set([...Object.keys(found), ...Object.keys(want)]);
  return [...keys]
    .filter((k) => JSON.stringify(found[k]) !== JSON.stringify((want as unknown as Record<string, unknown>)[k]))
    .map((k) => `${k}: ${JSON.stringify(found[k])} on disk, ${JSON.stringify((want as unknown as Record<string, unknown>)[k])} now`);
}

async function existing(path: string): Promise<boolean> {
  return (await stat(path).catch(() => null)) !== null;
}

/** Encodes `ds` into `opts.outDir`, skipping the shards a previous run of the same job finished. */
export async function encodeLatents(vae: LatentEncoder, ds: ImageDataset, opts: EncodeLatentsOptions): Promise<EncodeLatentsResult> {
  const c = vae.config;
  if (ds.channels !== c.inChannels && !(ds.channels === 1 && c.inChannels === 3)) {
    throw new Error(`encodeLatents: the VAE takes ${c.inChannels}-channel images, ${ds.name} has ${ds.channels} channels`);
  }
  if (ds.height !== ds.width) throw new Error(`encodeLatents: expected square images, ${ds.name} has ${ds.height}×${ds.width} (resize them first)`);
  const side = latentSize(c, ds.height);
  const shardSize = positiveInt(opts.shardSize, 1024, 'shardSize');
  const batchSize = positiveInt(opts.batchSize, 8, 'batchSize');
  if (ds.size < 1) throw new Error(`encodeLatents: ${ds.name} is empty`);
  const manifest: LatentsManifest = {
    format: LATENTS_FORMAT,
    dataset: ds.name,
    size: ds.size,
    shardSize,
    shards: Math.ceil(ds.size / shardSize),
    channels: c.latentChannels,
    height: side,
    width: side,
    imageChannels: ds.channels,
    imageHeight: ds.height,
    imageWidth: ds.width,
    classNames: [...ds.classNames],
    scalingFactor: c.scalingFactor,
    vae: opts.vaeName,
    sampleKey: opts.key ? keyToJSON(opts.key) : null,
    flip: opts.flip ?? false,
  };
  const manifestText = `${JSON.stringify(manifest, null, 2)}\n`;
  const jobId = sha256(manifestText);
  await mkdir(opts.outDir, { recursive: true });
  const manifestPath = join(opts.outDir, MANIFEST_FILE);
  if (await existing(manifestPath)) {
    const found = JSON.parse(await readFile(manifestPath, 'utf8')) as Record<string, unknown>;
    const diff = manifestDiff(found, manifest);
    if (diff.length > 0) {
      throw new Error(`encodeLatents: ${manifestPath} belongs to a different job; use another directory or delete it:\n  ${diff.join('\n  ')}`);
    }
  } else {
    await writeFileAtomic(manifestPath, manifestText);
  }

  // Mirrored images draw from their own stream, so turning `flip` on leaves the plain latents unchanged.
  const flipKey = opts.key ? split(opts.key, 2)[1] : undefined;
  const per = c.latentChannels * side * side;
  let encodedShards = 0;
  let done = 0;
  for (let s = 0; s < manifest.shards; s++) {
    const first = s * shardSize;
    const count = Math.min(shardSize, ds.size - first);
    const path = join(opts.outDir, shardName(s));
    if (await existing(path)) {
      const f = await openSafetensors(path);
      try {
        checkShard(f, path, jobId, s, count);
      } finally {
        await f.close();
      }
      done += count;
      opts.onProgress?.({ done, total: ds.size, shard: s, shards: manifest.shards, skipped: true });
      continue;
    }
    const latents = new Float32Array(count * per);
    const flipped = manifest.flip ? new Float32Array(count * per) : null;
    const labels = new BigInt64Array(count);
    const indices = new BigInt64Array(count);
    for (let b = 0; b < count; b += batchSize) {
      const idx = Int32Array.from({ length: Math.min(batchSize, count - b) }, (_, k) => first + b + k);
      const batch = ds.get(idx);
      idx.forEach((i, k) => {
        labels[b + k] = BigInt(batch.labels[k]!);
        indices[b + k] = BigInt(i);
      });
      latents.set(await encodeBatch(vae, batch.images, idx, ds, opts.key), b * per);
      if (flipped) {
        flipHorizontal(batch.images, ds.channels, ds.height, ds.width, new Uint8Array(idx.length).fill(1));
        flipped.set(await encodeBatch(vae, batch.images, idx, ds, flipKey), b * per);
      }
      done += idx.length;
      if (done < first + count) opts.onProgress?.({ done, total: ds.size, shard: s, shards: manifest.shards, skipped: false });
    }
    const shape = [count, c.latentChannels, side, side];
    const tensors: Record<string, StTensor> = {
      latents: { dtype: 'F32', shape, data: latents },
      labels: { dtype: 'I64', shape: [count], data: labels },
      indices: { dtype: 'I64', shape: [count], data: indices },
    };
    if (flipped) tensors.latents_flipped = { dtype: 'F32', shape, data: flipped };
    await writeSafetensors(path, tensors, { format: LATENTS_FORMAT, job: jobId, shard: String(s), count: String(count) });
    encodedShards++;
    opts.onProgress?.({ done, total: ds.size, shard: s, shards: manifest.shards, skipped: false });
  }
  return { manifest, encodedShards, skippedShards: manifest.shards - encodedShards };
}

async function encodeBatch(vae: LatentEncoder, images: Float32Array, idx: Int32Array, ds: ImageDataset, key: Key | undefined): Promise<Float32Array> {
  const x = tf.tidy(() => {
    const t = tf.tensor4d(images, [idx.length, ds.channels, ds.height, ds.width]);
    return ds.channels === vae.config.inChannels ? t : tf.tile(t, [1, vae.config.inChannels, 1, 1]);
  });
  try {
    const z = vae.encodeToLatents(x, key ? sampleKeys(key, idx) : undefined);
    const data = (await z.data()) as Float32Array;
    z.dispose();
    return data;
  } finally {
    x.dispose();
  }
}

function checkShard(f: StFile, path: string, jobId: string, shard: number, count: number): void {
  const m = f.metadata;
  if (m.format !== LATENTS_FORMAT || m.job !== jobId || m.shard !== String(shard) || m.count !== String(count)) {
    throw new Error(
      `${path} was not written by this job (expected shard ${shard} of ${count} images, job ${jobId.slice(0, 12)}; ` +
        `found shard ${m.shard ?? '?'} of ${m.count ?? '?'}, job ${(m.job ?? '?').slice(0, 12)}); delete it to re-encode`,
    );
  }
}

/** Pre-encoded latents, read on demand from the shard files (labels are held in memory). */
export interface LatentDataset {
  readonly name: string;
  readonly size: number;
  readonly channels: number;
  readonly height: number;
  readonly width: number;
  readonly numClasses: number;
  readonly classNames: readonly string[];
  readonly manifest: LatentsManifest;
  /** Latents (already ×scalingFactor) NCHW; with `flipped[k]` = 1, those of the mirrored image (needs a `flip` encoding). */
  get(indices: ArrayLike<number>, flipped?: ArrayLike<number>): { latents: Float32Array; labels: Int32Array };
  close(): void;
}

interface ShardView {
  readonly fd: number;
  readonly latentsAt: number;
  readonly flippedAt: number | null;
}

/** Opens a finished encoding; a missing or foreign shard is an error naming it. */
export async function openLatents(dir: string): Promise<LatentDataset> {
  const manifestPath = join(dir, MANIFEST_FILE);
  if (!(await existing(manifestPath))) throw new Error(`openLatents: expected ${manifestPath} (written by encodeLatents), found none`);
  const text = await readFile(manifestPath, 'utf8');
  const manifest = JSON.parse(text) as LatentsManifest;
  if (manifest.format !== LATENTS_FORMAT) throw new Error(`openLatents: ${manifestPath} has format ${JSON.stringify(manifest.format)}, expected ${LATENTS_FORMAT}`);
  const jobId = sha256(text);
  const per = manifest.channels * manifest.height * manifest.width;
  const missing: string[] = [];
  for (let s = 0; s < manifest.shards; s++) if (!(await existing(join(dir, shardName(s))))) missing.push(shardName(s));
  if (missing.length > 0) {
    throw new Error(`openLatents: ${dir} is incomplete, ${missing.length} of ${manifest.shards} shards missing (${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}); run encodeLatents again to finish it`);
  }
  const labels = new Int32Array(manifest.size);
  const shards: ShardView[] = [];
  try {
    for (let s = 0; s < manifest.shards; s++) {
      const path = join(dir, shardName(s));
      const count = Math.min(manifest.shardSize, manifest.size - s * manifest.shardSize);
      const fd = openSync(path, 'r');
      shards.push({ fd, latentsAt: 0, flippedAt: null });
      const f = await openSafetensors(path);
      try {
        checkShard(f, path, jobId, s, count);
        const want = [count, manifest.channels, manifest.height, manifest.width];
        const names = manifest.flip ? ['latents', 'latents_flipped'] : ['latents'];
        for (const name of names) {
          const e = f.entries.get(name);
          if (!e || e.dtype !== 'F32' || JSON.stringify(e.shape) !== JSON.stringify(want)) {
            throw new Error(`openLatents: ${path}: expected ${name} F32 [${want.join(', ')}], got ${e ? `${e.dtype} [${e.shape.join(', ')}]` : 'none'}`);
          }
        }
        const l = (await f.read('labels')).data;
        for (let k = 0; k < count; k++) labels[s * manifest.shardSize + k] = Number(l[k]!);
        // Entry offsets count from the end of the header, whose length is the file's first 8 bytes.
        const head = Buffer.alloc(8);
        readSync(fd, head, 0, 8, 0);
        const dataStart = 8 + Number(head.readBigUInt64LE(0));
        shards[s] = {
          fd,
          latentsAt: dataStart + f.entries.get('latents')!.begin,
          flippedAt: manifest.flip ? dataStart + f.entries.get('latents_flipped')!.begin : null,
        };
      } finally {
        await f.close();
      }
    }
  } catch (e) {
    for (const s of shards) closeSync(s.fd);
    throw e;
  }
  let closed = false;
  return {
    name: `${manifest.dataset}@latents`,
    size: manifest.size,
    channels: manifest.channels,
    height: manifest.height,
    width: manifest.width,
    numClasses: manifest.classNames.length,
    classNames: manifest.classNames,
    manifest,
    get(indices, flipped) {
      if (closed) throw new Error('LatentDataset.get after close()');
      if (flipped && flipped.length !== indices.length) throw new Error(`LatentDataset.get: ${indices.length} indices but ${flipped.length} flip flags`);
      const latents = new Float32Array(indices.length * per);
      const out = new Int32Array(indices.length);
      const view = new Uint8Array(latents.buffer);
      for (let k = 0; k < indices.length; k++) {
        const i = indices[k]!;
        if (!Number.isInteger(i) || i < 0 || i >= manifest.size) throw new RangeError(`LatentDataset.get: expected an integer index in [0, ${manifest.size}), got ${i}`);
        const shard = shards[Math.floor(i / manifest.shardSize)]!;
        const mirror = flipped !== undefined && flipped[k] === 1;
        if (mirror && shard.flippedAt === null) throw new Error(`LatentDataset.get: flipped latents were asked for, but ${dir} was encoded without flip`);
        const row = i % manifest.shardSize;
        const got = readSync(shard.fd, view, k * per * 4, per * 4, (mirror ? shard.flippedAt! : shard.latentsAt) + row * per * 4);
        if (got !== per * 4) throw new Error(`LatentDataset.get: short read of item ${i} (${got} of ${per * 4} bytes); the shard file was changed after opening`);
        out[k] = labels[i]!;
      }
      return { latents, labels: out };
    },
    close() {
      if (closed) return;
      closed = true;
      for (const s of shards) closeSync(s.fd);
    },
  };
}
