import * as tf from '@tensorflow/tfjs';

/**
 * A rank-2 product whose gradient uses explicit transposes. tfjs's own BatchMatMul gradient
 * passes transposeA/transposeB flags, which the wasm backend runs ~10–20× slower than a
 * transpose followed by a plain product (XNNPACK's fast path takes only the plain form).
 */
export const matmul2d = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sa, sb] = saved as [tf.Tensor2D, tf.Tensor2D];
      const dy2 = dy as tf.Tensor2D;
      return [tf.matMul(dy2, tf.transpose(sb)), tf.matMul(tf.transpose(sa), dy2)];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (a: tf.Tensor2D, b: tf.Tensor2D) => tf.Tensor2D;
