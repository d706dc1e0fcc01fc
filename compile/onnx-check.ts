/**
 * What a file must be for the onnx engines (Node's compile/onnx-engine.ts and the page's
 * onnxruntime-web path) to sample it: a denoiser `mdt export` wrote, for one model, at an
 * operator set they were written for. Checked before a runtime is asked, so each mistake gets
 * a sentence rather than a runtime's stack; no Node module on its path, so the page runs it too.
 */
import { validateConfig, type ModelConfig } from '../mdt/config.ts';
import type { GuidanceOptions } from '../mdt/diffusion/cfg.ts';
import { MDT_ONNX_FORMAT, type MdtOnnxMeta } from './onnx-export.ts';
import { ONNX_OPSET, ONNX_OPSETS } from './onnx.ts';
import { OnnxFileError, type OnnxFileInfo, type OnnxTensorInfo } from '../formats/onnx.ts';

const ELEM = { 1: 'float32', 6: 'int32', 7: 'int64' } as Record<number, string>;
const describe = (t: OnnxTensorInfo) => `${t.name} [${t.dims.join(', ')}] ${ELEM[t.elemType] ?? `type ${t.elemType}`}`;

/** Checks that `info` is a denoiser `mdt export` wrote, for one model; returns what its metadata says. */
export function checkMdtOnnx(info: OnnxFileInfo, what: string): MdtOnnxMeta {
  if (info.opset === null || info.opset > ONNX_OPSET) {
    throw new OnnxFileError(`${what}: uses ${info.opset === null ? 'no default-domain operator set' : `operator set ${info.opset}`}; this engine runs the graphs mdt export writes, opset ${ONNX_OPSETS.join(' or ')} (re-export the checkpoint with this version)`);
  }
  const format = info.metadata.get('mdt.format');
  if (format !== MDT_ONNX_FORMAT) {
    const io = `inputs ${info.inputs.map(describe).join(', ') || 'none'}`;
    throw new OnnxFileError(`${what}: an ONNX model (${info.producer || 'unknown producer'}, ${io}) but not an MDT/DiT denoiser written by mdt export (metadata mdt.format is ${format === undefined ? 'missing' : `"${format}"`}, expected "${MDT_ONNX_FORMAT}")`);
  }
  let config: ModelConfig;
  let guidance: GuidanceOptions | null;
  try {
    config = validateConfig(JSON.parse(info.metadata.get('mdt.config') ?? '') as ModelConfig);
    guidance = JSON.parse(info.metadata.get('mdt.guidance') ?? '') as GuidanceOptions | null;
  } catch (e) {
    throw new OnnxFileError(`${what}: its mdt.config / mdt.guidance metadata do not parse (${(e as Error).message})`);
  }
  const c = config;
  const expected: Record<string, readonly (number | string)[]> = { x: ['rows', c.inChannels, c.inputSize, c.inputSize], t: ['rows'], y: ['rows'] };
  for (const [name, dims] of Object.entries(expected)) {
    const got = info.inputs.find((i) => i.name === name);
    const fits = got !== undefined && got.dims.length === dims.length && dims.every((d, i) => typeof d === 'string' || got.dims[i] === d);
    if (!fits) {
      throw new OnnxFileError(`${what}: its graph does not fit the model its metadata names (${c.variant} ${c.inputSize}×${c.inputSize}×${c.inChannels}): expected input ${name} [${dims.join(', ')}], the graph has ${got === undefined ? 'none' : describe(got)}`);
    }
  }
  return { config, guidance, which: info.metadata.get('mdt.weights') ?? '' };
}
