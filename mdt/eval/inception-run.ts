/**
 * Running pytorch-fid's InceptionV3: its weights from the user's `pt_inception-2015-12-05-6726825d.pth`,
 * through the safe .pt reader with strict keys: every key the network reads must be there with
 * its shape, and the only others allowed are the ones pool3 does not use (the classifier, the
 * BatchNorm step counters).
 */
import * as tf from '@tensorflow/tfjs';
import { openTorchCheckpoint } from '../../formats/torch-pt.ts';
import type { StTensor } from '../../formats/safetensors.ts';
import { paramsFromStateDict } from '../../compile/weights.ts';
import { INCEPTION_DIM, INCEPTION_PARAMS, inceptionProgram, unusedInceptionKey } from './inception.ts';
import { jit } from '../../compile/trace.ts';

export async function loadInceptionWeights(path: string): Promise<Map<string, tf.Tensor>> {
  const ckpt = await openTorchCheckpoint(path);
  try {
    const unknown = ckpt.tensors.map((t) => t.key).filter((k) => !(k in INCEPTION_PARAMS) && !unusedInceptionKey(k));
    if (unknown.length > 0) {
      throw new Error(`${path}: not pytorch-fid's InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth): ${unknown.length} unexpected key(s): ${unknown.slice(0, 6).join(', ')}${unknown.length > 6 ? ', …' : ''}`);
    }
    const sd = new Map<string, StTensor>();
    for (const t of ckpt.tensors) if (t.key in INCEPTION_PARAMS) sd.set(t.key, await t.read());
    try {
      return paramsFromStateDict(INCEPTION_PARAMS, sd);
    } catch (e) {
      throw new Error(`${path}: ${(e as Error).message}`);
    }
  } finally {
    await ckpt.close();
  }
}

/** Bytes of images, NHWC, 1 or 3 channels (gray is repeated to RGB, as pytorch-fid's loader converts). */
export interface ByteImages {
  readonly pixels: Uint8Array;
  readonly count: number;
  readonly side: number;
  readonly channels: number;
}

const BATCH = 16;

/** pool3 features (count × 2048) of byte images, in batches of 16. */
export function inceptionFeatureSet(params: ReadonlyMap<string, tf.Tensor>, images: ByteImages, onProgress?: (done: number) => void): Float32Array {
  const exe = jit(inceptionProgram);
  const { side, channels } = images;
  const per = side * side * channels;
  const out = new Float32Array(images.count * INCEPTION_DIM);
  try {
    for (let start = 0; start < images.count; start += BATCH) {
      const n = Math.min(BATCH, images.count - start);
      const x = tf.tidy(() => {
        const bytes = tf.tensor4d(images.pixels.subarray(start * per, (start + n) * per), [n, side, side, channels], 'int32');
        const rgb = channels === 3 ? bytes : tf.tile(bytes, [1, 1, 1, 3]);
        return tf.transpose(tf.div(tf.cast(rgb, 'float32'), 255), [0, 3, 1, 2]);
      });
      const feats = exe(new Map([...params, ['images', x]]));
      x.dispose();
      out.set(feats.get('features')!.dataSync(), start * INCEPTION_DIM);
      tf.dispose([...feats.values()]);
      onProgress?.(start + n);
    }
  } finally {
    exe.dispose();
  }
  return out;
}
