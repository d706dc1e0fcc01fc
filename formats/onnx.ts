/**
 * ONNX model files: encoded and decoded by protobufjs from the official schema,
 * formats/onnx/onnx.proto (onnx v1.22.0, verbatim). A maintained codec reading the schema
 * itself, rather than a hand-written writer, means every field number and wire type is the
 * standard's, and the same schema decodes a file to check it before a runtime is asked to.
 */
import protobuf from 'protobufjs';
import { ONNX_PROTO } from './onnx-proto.ts';

const root = protobuf.parse(ONNX_PROTO).root;
const ModelProto = root.lookupType('onnx.ModelProto');

/** ONNX messages as plain objects, in onnx.proto's field names (camelCase), as far as this project writes them. */
export interface OnnxTensor {
  name: string;
  dims: number[];
  dataType: number;
  rawData: Uint8Array;
}
export interface OnnxAttribute {
  name: string;
  type: number;
  i?: number;
  f?: number;
  ints?: number[];
  s?: Uint8Array;
}
export interface OnnxNode {
  opType: string;
  input: string[];
  output: string[];
  name: string;
  attribute: OnnxAttribute[];
}
export interface OnnxValueInfo {
  name: string;
  type: { tensorType: { elemType: number; shape: { dim: ({ dimValue: number } | { dimParam: string })[] } } };
}
export interface OnnxGraph {
  name: string;
  node: OnnxNode[];
  initializer: OnnxTensor[];
  input: OnnxValueInfo[];
  output: OnnxValueInfo[];
}

export interface OnnxModel {
  irVersion: number;
  producerName: string;
  producerVersion: string;
  opsetImport: { domain: string; version: number }[];
  metadataProps: { key: string; value: string }[];
  graph: OnnxGraph;
}

export function encodeOnnx(model: OnnxModel): Uint8Array {
  const problem = ModelProto.verify(model);
  if (problem !== null) throw new Error(`onnx: the model does not fit onnx.proto: ${problem}`);
  return ModelProto.encode(ModelProto.fromObject(model)).finish();
}

/** The whole model as plain objects (tensor bytes are views of `bytes`); check it with readOnnxInfo first. */
export function decodeOnnx(bytes: Uint8Array): OnnxModel {
  return ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, defaults: false, arrays: true }) as OnnxModel;
}

export class OnnxFileError extends Error {
  override readonly name = 'OnnxFileError';
}

export interface OnnxTensorInfo {
  readonly name: string;
  readonly elemType: number;
  /** A number, or the name of a symbolic size. */
  readonly dims: readonly (number | string)[];
}

/** What a file says about itself: versions, metadata, inputs and outputs (no weights are copied). */
export interface OnnxFileInfo {
  readonly irVersion: number;
  /** The version of the default (ai.onnx) operator set it imports. */
  readonly opset: number | null;
  readonly producer: string;
  readonly metadata: ReadonlyMap<string, string>;
  readonly inputs: readonly OnnxTensorInfo[];
  readonly outputs: readonly OnnxTensorInfo[];
  readonly nodes: number;
}

interface DecodedValueInfo {
  name?: string;
  type?: { tensorType?: { elemType?: number; shape?: { dim?: { dimValue?: number; dimParam?: string }[] } } };
}

const tensorInfo = (v: DecodedValueInfo): OnnxTensorInfo => ({
  name: v.name ?? '',
  elemType: v.type?.tensorType?.elemType ?? 0,
  dims: (v.type?.tensorType?.shape?.dim ?? []).map((d) => d.dimParam || Number(d.dimValue ?? 0)),
});

/** Decodes `bytes` (named `what` in errors); a file that is not an ONNX model fails here, saying so. */
export function readOnnxInfo(bytes: Uint8Array, what: string): OnnxFileInfo {
  let m: Record<string, unknown>;
  try {
    m = ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, defaults: false });
  } catch (e) {
    throw new OnnxFileError(`${what}: not a readable ONNX model (${bytes.length} bytes; protobuf: ${(e as Error).message}); the file is truncated or of another kind`);
  }
  const graph = m['graph'] as { node?: unknown[]; input?: DecodedValueInfo[]; output?: DecodedValueInfo[] } | undefined;
  const irVersion = Number(m['irVersion'] ?? 0);
  if (graph === undefined || irVersion <= 0 || !Array.isArray(graph.node) || graph.node.length === 0) {
    throw new OnnxFileError(`${what}: not an ONNX model (${bytes.length} bytes decode to no graph${irVersion > 0 ? '' : ' and no IR version'}); expected a file written by \`mdt export --format onnx\``);
  }
  const opsets = (m['opsetImport'] as { domain?: string; version?: number }[] | undefined) ?? [];
  const main = opsets.find((o) => (o.domain ?? '') === '' || o.domain === 'ai.onnx');
  const props = (m['metadataProps'] as { key?: string; value?: string }[] | undefined) ?? [];
  return {
    irVersion,
    opset: main === undefined ? null : Number(main.version ?? 0),
    producer: `${String(m['producerName'] ?? '')} ${String(m['producerVersion'] ?? '')}`.trim(),
    metadata: new Map(props.map((p) => [p.key ?? '', p.value ?? ''])),
    inputs: (graph.input ?? []).map(tensorInfo),
    outputs: (graph.output ?? []).map(tensorInfo),
    nodes: graph.node.length,
  };
}
