/**
 * One sampling step as one ONNX graph: an exported denoiser with the sampler's update appended
 * (the update traced from the same mdt/diffusion code as the tfjs engine's step, via
 * updateProgram), so that onnxruntime runs a whole step per call. Inputs x, k (respaced step
 * index), y and, where the step draws it, noise; output x_prev. The denoiser's t is
 * timestepMap[k], a Gather in the graph.
 */
import type { GuidanceOptions } from '../mdt/diffusion/cfg.ts';
import type { DiffusionTables } from '../mdt/diffusion/schedule.ts';
import type { ModelConfig } from '../mdt/config.ts';
import type { OnnxModel, OnnxTensor } from '../formats/onnx.ts';
import { needsStepNoise, updateProgram, type StepOptions } from './model-graph.ts';
import { optimize } from './pipeline.ts';
import { trace } from './trace.ts';
import { onnxGraph } from './onnx.ts';
import { rowsPerImage, TRACE_BATCHES } from './onnx-export.ts';

export type UpdateOptions = Omit<StepOptions, 'guidance' | 'masked'>;

export function stepModel(denoiser: OnnxModel, c: ModelConfig, guidance: GuidanceOptions | null, tables: DiffusionTables, o: UpdateOptions): OnnxModel {
  const noise = needsStepNoise(o);
  const graphAt = (batch: number) => {
    const rows = batch * rowsPerImage(guidance);
    const maps = (ch: number) => ({ shape: [rows, ch, c.inputSize, c.inputSize], dtype: 'float32' as const });
    const ints = { shape: [rows], dtype: 'int32' as const };
    return optimize(trace(updateProgram(tables, o), { x: maps(c.inChannels), k: ints, y: ints, out: maps(2 * c.inChannels), ...(noise ? { noise: maps(c.inChannels) } : {}) }));
  };
  const opset = denoiser.opsetImport.find((d) => (d.domain ?? '') === '')?.version;
  const update = onnxGraph(graphAt(TRACE_BATCHES[0]), graphAt(TRACE_BATCHES[1]), TRACE_BATCHES, (name) => {
    throw new Error(`the sampler's update has no weights, but asks for ${name}`);
  }, 'update', 'update/', opset);
  const den = denoiser.graph;
  const k = update.input.find((i) => i.name === 'k');
  if (k === undefined) throw new Error('the update graph reads no step index k');
  const map: OnnxTensor = { name: 'update/timestep_map', dims: [tables.T], dataType: 6, rawData: new Uint8Array(Int32Array.from(tables.timestepMap).buffer) };
  const names = new Set(den.input.map((i) => i.name));
  return {
    ...denoiser,
    graph: {
      name: `${den.name} + ${o.sampler} update`,
      node: [
        { opType: 'Gather', input: [map.name, 'k'], output: ['t'], name: 'update/t', attribute: [{ name: 'axis', type: 2, i: 0 }] },
        ...den.node,
        // The update's result is x_{k−1}: named apart from the input x.
        ...update.node.map((n) => ({ ...n, output: n.output.map((out) => (out === 'x' ? 'x_prev' : out)) })),
      ],
      initializer: [...den.initializer, ...update.initializer, map],
      input: [...den.input.filter((i) => i.name !== 't'), ...update.input.filter((i) => !names.has(i.name) && i.name !== 'out')],
      output: update.output.map((v) => ({ ...v, name: 'x_prev' })),
    },
  };
}
