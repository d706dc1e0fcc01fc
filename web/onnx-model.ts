/**
 * An exported `.onnx` on the page: checked as `mdt sample --engine onnx` checks it
 * (compile/onnx-check.ts) and sampled with onnxruntime-web's wasm backend through the Node
 * engine's own plan and loop (compile/onnx-plan.ts, compile/onnx-group.ts): the same step graph,
 * the same noise from the same key, one group of images on one session.
 */
import * as ort from 'onnxruntime-web/wasm';
import type { Key } from '../dsl/random.ts';
import { describeGuidanceOptions } from '../mdt/diffusion/cfg.ts';
import { checkMdtOnnx } from '../compile/onnx-check.ts';
import type { MdtOnnxMeta } from '../compile/onnx-export.ts';
import { runGroup } from '../compile/onnx-group.ts';
import { samplingPlan, type OnnxSamplerOptions } from '../compile/onnx-plan.ts';
import { readOnnxInfo } from '../formats/onnx.ts';

export interface PageOnnx {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly meta: MdtOnnxMeta;
  /** The file's guidance in words; its scale (1: none), which the page's field cannot change. */
  readonly guidance: string;
  readonly scale: number;
}

/** The file's bytes checked; a file that is not an exported denoiser is an error that says what it is. */
export function onnxFromBytes(bytes: Uint8Array, name: string): PageOnnx {
  const meta = checkMdtOnnx(readOnnxInfo(bytes, name), name);
  return { name, bytes, meta, guidance: describeGuidanceOptions(meta.guidance), scale: meta.guidance?.schedule.scale ?? 1 };
}

/**
 * Samples `labels` (NCHW in [-1, 1]) from `key`. onnxruntime-web fetches its wasm binary from
 * `wasmBase` (web/build.ts copies it beside the page).
 */
export async function sampleOnnx(m: PageOnnx, labels: Int32Array, opts: OnnxSamplerOptions, key: Key, wasmBase: string, progress: (done: number, total: number) => void): Promise<Float32Array> {
  // The binary only: a prefix would have onnxruntime-web fetch its loader too, which its bundle holds.
  ort.env.wasm.wasmPaths = { wasm: new URL('ort-wasm-simd-threaded.wasm', wasmBase).href };
  const plan = samplingPlan(m.bytes, m.meta, opts);
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(plan.model, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
  } catch (e) {
    throw new Error(`${m.name}: onnxruntime-web ${ort.env.versions.web ?? ''} cannot load its graph with the ${opts.sampler} update appended: ${(e as Error).message}`);
  }
  try {
    const [job] = plan.jobs(labels, key, 1);
    return await runGroup(ort, session, job!, (done) => progress(done, job!.steps));
  } finally {
    await session.release();
  }
}
