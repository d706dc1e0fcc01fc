/**
 * The body of a pool worker (compile/onnx-pool.ts): its own onnxruntime session on the step
 * graph (workerData.model, .options), then one group of images per message, start to finish,
 * storing its steps done in workerData.done (shared memory) as it goes. Messages back: { ready }
 * or { error } once; per job { images } or { error }.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as ort from 'onnxruntime-node';
import { runGroup, type GroupJob } from './onnx-group.ts';

const port = parentPort!;
const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
let session: ort.InferenceSession | null = null;
try {
  session = await ort.InferenceSession.create(workerData.model as Uint8Array, workerData.options as ort.InferenceSession.SessionOptions);
  port.postMessage({ ready: true });
} catch (e) {
  port.postMessage({ error: message(e) });
}

port.on('message', async (job: GroupJob) => {
  try {
    const done = workerData.done as Int32Array;
    const images = await runGroup(ort, session!, job, (step) => Atomics.store(done, 0, step));
    port.postMessage({ images }, [images.buffer as ArrayBuffer]);
  } catch (e) {
    port.postMessage({ error: message(e) });
  }
});
