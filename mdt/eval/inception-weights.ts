/**
 * pytorch-fid's InceptionV3 weights from the user's `pt_inception-2015-12-05-6726825d.pth`,
 * through the safe .pt reader with strict keys: every key the network reads must be there with
 * its shape, and the only others allowed are the ones pool3 does not use (the classifier, the
 * BatchNorm step counters).
 */
import type * as tf from '@tensorflow/tfjs';
import { openTorchCheckpoint } from '../../formats/torch-pt.ts';
import type { StTensor } from '../../formats/safetensors.ts';
import { paramsFromStateDict } from '../../compile/weights.ts';
import { INCEPTION_PARAMS, unusedInceptionKey } from './inception.ts';

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
