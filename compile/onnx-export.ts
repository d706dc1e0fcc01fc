/**
 * The sampling network of a model as an ONNX model: the denoiser (x, t, y) → out, wrapped in
 * classifier-free guidance with its schedule (the official `forward_with_cfg`: 2B rows, the
 * last B with the null label) unless exported plain. The sampler's update stays outside, so one
 * file serves DDPM and DDIM at any respacing, as a PyTorch DiT/MDT checkpoint does. The graph
 * is the optimised inference graph compile/ runs; weights are initializers; the config and
 * guidance travel as metadata so a runtime can check the file before it samples.
 */
import type * as tf from '@tensorflow/tfjs';
import type { DiffusionModel } from '../mdt/trunk.ts';
import type { ModelConfig } from '../mdt/config.ts';
import { withGuidance, type GuidanceOptions } from '../mdt/diffusion/cfg.ts';
import { traceDenoiser } from './model-graph.ts';
import { trace, type Program } from './trace.ts';
import { optimize } from './pipeline.ts';
import { FUSION_RULES, INFERENCE_PHASES } from './fusion.ts';
import { ONNX_IR_VERSION, ONNX_OPSET, onnxGraph, opsetFusesAttention, type OnnxOpset } from './onnx.ts';
import type { OnnxModel } from '../formats/onnx.ts';

/** metadata `mdt.format` of the files this module writes. */
export const MDT_ONNX_FORMAT = 'mdt-ts denoiser v1';

/**
 * Two batch sizes to trace at: distinct primes, so no batch-dependent size equals a fixed one
 * at both (CSE would then merge different nodes at each and the structures would differ).
 */
export const TRACE_BATCHES = [13, 17] as const;

/** The guided (or plain) network on inputs x, t (original steps), y: output `out`. */
export function denoiserProgram(model: DiffusionModel, guidance: GuidanceOptions | null): Program {
  return (io) => {
    const plain = traceDenoiser(model, io, false);
    const den = guidance === null ? plain : withGuidance(plain, guidance);
    return { out: den(io.data('x'), io.data('t'), io.data('y')) };
  };
}

/** Rows the network runs per sampled image: 2 with guidance (conditional, then null label). */
export const rowsPerImage = (guidance: GuidanceOptions | null) => (guidance === null ? 1 : 2);

export interface OnnxExportOptions {
  readonly guidance: GuidanceOptions | null;
  /** Which weights of the checkpoint (recorded in the metadata). */
  readonly which: string;
  readonly producerVersion: string;
  /** ONNX_OPSET unless given. */
  readonly opset?: OnnxOpset;
}

export function exportOnnx(model: DiffusionModel, values: ReadonlyMap<string, tf.Tensor>, o: OnnxExportOptions): OnnxModel {
  const c = model.config;
  const opset = o.opset ?? ONNX_OPSET;
  const graphAt = (batch: number) => {
    const rows = batch * rowsPerImage(o.guidance);
    return optimize(trace(denoiserProgram(model, o.guidance), {
      x: { shape: [rows, c.inChannels, c.inputSize, c.inputSize], dtype: 'float32' },
      t: { shape: [rows], dtype: 'int32' },
      y: { shape: [rows], dtype: 'int32' },
      // Below opset 23 attention stays in its parts, all of them standard ops there.
    }), opsetFusesAttention(opset) ? INFERENCE_PHASES : [FUSION_RULES]);
  };
  const weight = (name: string) => {
    const t = values.get(name);
    if (t === undefined) throw new Error(`export: no weight ${name} among the checkpoint's ${values.size}`);
    return t.dataSync() as Float32Array | Int32Array;
  };
  const graph = onnxGraph(graphAt(TRACE_BATCHES[0]), graphAt(TRACE_BATCHES[1]), TRACE_BATCHES, weight, `${c.variant} denoiser`, '', opset);
  const meta: Record<string, string> = {
    'mdt.format': MDT_ONNX_FORMAT,
    'mdt.config': JSON.stringify(c),
    'mdt.guidance': JSON.stringify(o.guidance),
    'mdt.weights': o.which,
  };
  return {
    irVersion: ONNX_IR_VERSION[opset],
    producerName: 'mdt-ts',
    producerVersion: o.producerVersion,
    opsetImport: [{ domain: '', version: opset }],
    metadataProps: Object.entries(meta).map(([key, value]) => ({ key, value })),
    graph,
  };
}

/** What a file's metadata promises: the model's config and its guidance (null: plain). */
export interface MdtOnnxMeta {
  readonly config: ModelConfig;
  readonly guidance: GuidanceOptions | null;
  readonly which: string;
}
