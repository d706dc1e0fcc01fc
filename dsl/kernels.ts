/**
 * Kernels the wasm backend lacks but our training graphs need. tfjs-backend-wasm 4.22 has no
 * UnsortedSegmentSum, which is the gradient of every gather (label embedding, kept-token
 * gather, relative-position bias). Registered once, computed in JS on the wasm heap.
 */
import * as tf from '@tensorflow/tfjs';

interface WasmBackendLike {
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

let registered = false;

export function registerMissingKernels(): void {
  if (registered) return;
  registered = true;
  if (tf.getKernel('UnsortedSegmentSum', 'wasm') === undefined) {
    tf.registerKernel({
      kernelName: 'UnsortedSegmentSum',
      backendName: 'wasm',
      kernelFunc: ({ inputs, backend, attrs }) => {
        const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
        const numSegments = (attrs as { numSegments: number }).numSegments;
        const wasm = backend as unknown as WasmBackendLike;
        if (x.dtype !== 'float32') throw new Error(`UnsortedSegmentSum (wasm): only float32 is supported, got ${x.dtype}`);
        const ids = wasm.typedArrayFromHeap(segmentIds);
        const inner = x.shape.slice(segmentIds.shape.length).reduce((a, b) => a * b, 1);
        const outShape = [numSegments, ...x.shape.slice(segmentIds.shape.length)];
        const out = wasm.makeOutput(outShape, 'float32');
        const dst = wasm.typedArrayFromHeap(out) as Float32Array;
        dst.fill(0);
        const src = wasm.typedArrayFromHeap(x) as Float32Array;
        for (let i = 0; i < ids.length; i++) {
          const s = ids[i];
          if (s < 0 || s >= numSegments) continue;
          const so = i * inner;
          const d = s * inner;
          for (let j = 0; j < inner; j++) dst[d + j] += src[so + j];
        }
        return out;
      },
    });
  }
}
