/**
 * An inference graph of the IR as an ONNX graph (an opset of ONNX_OPSETS, default domain only), with
 * the batch as a dynamic axis. The IR is traced at concrete shapes, so the caller traces the
 * same program at two batch sizes: every integer of a shape attribute (reshape targets, slice
 * boxes, broadcast shapes) is then a + b·batch, read off the pair; batch-dependent ones become
 * shape arithmetic on the runtime batch (Shape(x)[0] / rows per batch item), the rest stay
 * constants. Two traces whose node lists differ mean the program branches on the batch size,
 * and export refuses. The result is formats/onnx.ts's plain objects, which it encodes.
 */
import type { DType, Graph, Node } from './ir.ts';
import { formatShape, numel } from './ir.ts';
import { GELU_A, GELU_B } from '../runtime/fused.ts';
import type { OnnxAttribute, OnnxGraph, OnnxNode, OnnxTensor, OnnxValueInfo } from '../formats/onnx.ts';

/**
 * The opsets export writes. 23, the default, has ONNX's Attention (the compiler's fused
 * attention, one op per block) and Gelu (tanh form, opset 20). 17, for runtimes that predate
 * them: attention in its parts (MatMul, Softmax, Transpose, …), GELU written out.
 */
export const ONNX_OPSETS = [17, 23] as const;
export type OnnxOpset = (typeof ONNX_OPSETS)[number];
export const ONNX_OPSET: OnnxOpset = 23;
/** The IR version of the onnx release that introduced each opset (1.13 and 1.18). */
export const ONNX_IR_VERSION: Record<OnnxOpset, number> = { 17: 8, 23: 11 };
/** Attention in one op: from opset 23 the IR keeps its fused attention (INFERENCE_PHASES). */
export const opsetFusesAttention = (opset: number) => opset >= 23;
/** GELU in one op (Gelu, approximate = tanh): opset 20. */
const GELU_OPSET = 20;

/** TensorProto.DataType values. */
const ONNX_DTYPE = { float32: 1, int32: 6, int64: 7, bool: 9 } as const;
type OnnxDType = keyof typeof ONNX_DTYPE;

/** a + b·batch */
interface Lin {
  readonly a: number;
  readonly b: number;
}

export class OnnxExportError extends Error {
  override readonly name = 'OnnxExportError';
}

/** Values that hold the weights of `param` inputs (float32 or int32), by input name. */
export type WeightData = (name: string) => Float32Array | Int32Array;

const bytesOf = (v: ArrayBufferView) => new Uint8Array(v.buffer, v.byteOffset, v.byteLength);

function tensorBytes(dtype: OnnxDType, values: ArrayLike<number>): Uint8Array {
  switch (dtype) {
    case 'float32': return bytesOf(Float32Array.from(values));
    case 'int32': return bytesOf(Int32Array.from(values));
    case 'int64': return bytesOf(BigInt64Array.from(Array.from(values, (v) => BigInt(v))));
    case 'bool': return Uint8Array.from(values, (v) => (v ? 1 : 0));
  }
}

/**
 * Builds the ONNX graph of `g` (traced at batch `batches[0]`), using `h` (the same program at
 * `batches[1]`) to tell which sizes follow the batch; `prefix` starts the names of its inner
 * tensors, to keep them apart from another graph's. Data inputs whose leading axis follows
 * the batch get a symbolic leading dimension `rows`; `param` inputs become initializers.
 */
export function onnxGraph(g: Graph, h: Graph, batches: readonly [number, number], weights: WeightData, name: string, prefix = '', opset: number = ONNX_OPSET): OnnxGraph {
  const [b1, b2] = batches;
  if (g.nodes.length !== h.nodes.length || g.outputs.length !== h.outputs.length) {
    throw new OnnxExportError(`the program traces to ${g.nodes.length} nodes at batch ${b1} and ${h.nodes.length} at batch ${b2}: its structure depends on the batch size, so it has no dynamic batch axis`);
  }
  const lin = (v1: number, v2: number, what: string): Lin => {
    const b = (v2 - v1) / (b2 - b1);
    if (!Number.isInteger(b)) throw new OnnxExportError(`${what}: size ${v1} at batch ${b1} but ${v2} at batch ${b2} is not a whole multiple of the batch`);
    return { a: v1 - b * b1, b };
  };
  const linAll = (x: readonly number[], y: readonly number[], what: string): Lin[] => {
    if (x.length !== y.length) throw new OnnxExportError(`${what}: rank ${x.length} at batch ${b1} but ${y.length} at batch ${b2}`);
    return x.map((v, i) => lin(v, y[i]!, what));
  };

  const nodes: OnnxNode[] = [];
  const inits: OnnxTensor[] = [];
  const inputs: OnnxValueInfo[] = [];
  let fresh = 0;
  const out = (id: number) => `${prefix}n${id}`;
  const names: string[] = [];
  const tmp = (hint: string) => `${prefix}${hint}_${fresh++}`;
  const init = (hint: string, dtype: OnnxDType, dims: readonly number[], values: ArrayLike<number> | Uint8Array): string => {
    const n = tmp(hint);
    inits.push({ name: n, dims: [...dims], dataType: ONNX_DTYPE[dtype], rawData: values instanceof Uint8Array ? values : tensorBytes(dtype, values) });
    return n;
  };
  // A reshape of a reshape reshapes the first one's input (onnxruntime would run both).
  const reshapeSource: string[] = [];
  const op = (opType: string, input: readonly string[], attribute: OnnxAttribute[] = [], output = tmp(opType)): string => {
    nodes.push({ opType, input: [...input], output: [output], name: output, attribute });
    return output;
  };
  const intAttr = (n: string, i: number): OnnxAttribute => ({ name: n, type: 2, i });
  const floatAttr = (n: string, f: number): OnnxAttribute => ({ name: n, type: 1, f });
  const intsAttr = (n: string, ints: readonly number[]): OnnxAttribute => ({ name: n, type: 7, ints: [...ints] });
  const stringAttr = (n: string, str: string): OnnxAttribute => ({ name: n, type: 3, s: new TextEncoder().encode(str) });
  const scalarLike = (dtype: DType, v: number) => init('c', dtype, [], [v]);

  // The runtime batch, an int64 [1]: the leading size of the first data input that follows it, divided by its rows per item.
  let batch: string | null = null;
  let batchOf: (() => string) | null = null;
  const runtimeBatch = (): string => {
    if (batch !== null) return batch;
    if (batchOf === null) throw new OnnxExportError('a size follows the batch, but no data input has a leading batch axis');
    return (batch = batchOf());
  };
  /** An int64 [n] tensor of sizes, constant where none follows the batch. */
  const sizes = (ls: readonly Lin[], hint: string): string => {
    if (ls.every((l) => l.b === 0)) return init(hint, 'int64', [ls.length], ls.map((l) => l.a));
    const parts = ls.map((l) => {
      if (l.b === 0) return init(hint, 'int64', [1], [l.a]);
      const scaled = l.b === 1 ? runtimeBatch() : op('Mul', [runtimeBatch(), init(hint, 'int64', [1], [l.b])]);
      return l.a === 0 ? scaled : op('Add', [scaled, init(hint, 'int64', [1], [l.a])]);
    });
    return parts.length === 1 ? parts[0]! : op('Concat', parts, [intAttr('axis', 0)]);
  };
  const dims = (shape: readonly Lin[]) => ({ dim: shape.map((l) => (l.b === 0 ? { dimValue: l.a } : { dimParam: l.a === 0 && l.b === 1 ? 'batch' : `${l.b === 1 ? '' : l.b}batch${l.a === 0 ? '' : `+${l.a}`}` })) });
  const valueInfo = (n: string, dtype: DType, shape: readonly Lin[]): OnnxValueInfo => ({ name: n, type: { tensorType: { elemType: ONNX_DTYPE[dtype], shape: dims(shape) } } });

  for (const n of g.nodes) {
    const m = h.nodes[n.id]!;
    if (m.op !== n.op || m.inputs.join() !== n.inputs.join()) {
      throw new OnnxExportError(`node ${n.id} is ${n.op} at batch ${b1} but ${m.op} at batch ${b2}: the program's structure depends on the batch size`);
    }
    const shape = linAll(n.shape, m.shape, `${n.op} node ${n.id} (${n.scope || 'top'})`);
    const x = n.inputs.map((i) => names[i]!);
    const attrLin = (key: string) => linAll(n.attrs[key] as readonly number[], m.attrs[key] as readonly number[], `${n.op} node ${n.id} attribute ${key}`);
    const inShape = (k: number) => g.nodes[n.inputs[k]!]!.shape;
    const inLin = (k: number) => linAll(inShape(k), h.nodes[n.inputs[k]!]!.shape, `input ${k} of ${n.op} node ${n.id}`);
    names[n.id] = convert(n, x, shape, attrLin, inShape, inLin);
  }

  function convert(n: Node, x: string[], shape: Lin[], attrLin: (key: string) => Lin[], inShape: (k: number) => readonly number[], inLin: (k: number) => Lin[]): string {
    const o = out(n.id);
    const attr = <T>(key: string) => n.attrs[key] as T;
    switch (n.op) {
      case 'input': {
        const name = attr<string>('name');
        if (attr<string>('kind') === 'param') {
          const data = weights(name);
          if (data.length !== numel(n.shape)) throw new OnnxExportError(`weight ${name}: ${data.length} values for shape ${formatShape(n.shape)}`);
          if (shape.some((l) => l.b !== 0)) throw new OnnxExportError(`weight ${name} changes shape with the batch`);
          inits.push({ name, dims: [...n.shape], dataType: ONNX_DTYPE[n.dtype], rawData: bytesOf(data) });
          return name;
        }
        inputs.push(valueInfo(name, n.dtype, shape));
        const lead = shape[0];
        if (batchOf === null && lead !== undefined && lead.b !== 0) {
          if (lead.a !== 0) throw new OnnxExportError(`input ${name}: leading size ${lead.a} + ${lead.b}·batch is not a multiple of the batch`);
          batchOf = () => {
            const rows = op('Slice', [op('Shape', [name]), init('zero', 'int64', [1], [0]), init('one', 'int64', [1], [1])]);
            return lead.b === 1 ? rows : op('Div', [rows, init('per_item', 'int64', [1], [lead.b])]);
          };
        }
        return name;
      }
      case 'const': {
        const fill = n.attrs['fill'];
        if (typeof fill === 'number') {
          if (shape.every((l) => l.b === 0)) return init('const', n.dtype, n.shape, new Array<number>(numel(n.shape)).fill(fill));
          return op('Expand', [scalarLike(n.dtype, fill), sizes(shape, 'shape')], [], o);
        }
        if (shape.some((l) => l.b !== 0)) throw new OnnxExportError(`constant node ${n.id} holds values but changes shape with the batch`);
        return init('const', n.dtype, n.shape, attr<Float32Array | Int32Array>('value'));
      }
      case 'add': return op('Add', x, [], o);
      case 'sub': return op('Sub', x, [], o);
      case 'mul': return op('Mul', x, [], o);
      case 'div': return op('Div', x, [], o);
      case 'maximum': return op('Max', x, [], o);
      case 'minimum': return op('Min', x, [], o);
      case 'less': return op('Less', x, [], o);
      case 'greater': return op('Greater', x, [], o);
      case 'where': return op('Where', x, [], o);
      case 'neg': return op('Neg', x, [], o);
      case 'exp': return op('Exp', x, [], o);
      case 'log': return op('Log', x, [], o);
      case 'sqrt': return op('Sqrt', x, [], o);
      case 'rsqrt': return op('Reciprocal', [op('Sqrt', x)], [], o);
      case 'tanh': return op('Tanh', x, [], o);
      case 'sigmoid': return op('Sigmoid', x, [], o);
      case 'cos': return op('Cos', x, [], o);
      case 'sin': return op('Sin', x, [], o);
      case 'square': return op('Mul', [x[0]!, x[0]!], [], o);
      case 'stop_gradient': return op('Identity', x, [], o);
      case 'cast': return op('Cast', x, [intAttr('to', ONNX_DTYPE[n.dtype])], o);
      case 'sum': return op('ReduceSum', [x[0]!, init('axes', 'int64', [attr<number[]>('axes').length], attr<number[]>('axes'))], [intAttr('keepdims', attr<boolean>('keepDims') ? 1 : 0)], o);
      case 'reshape': {
        // One batch-dependent size is left for Reshape to infer (−1); more need shape arithmetic.
        const dynamic = shape.filter((l) => l.b !== 0).length;
        const target = dynamic === 1 ? init('shape', 'int64', [shape.length], shape.map((l) => (l.b === 0 ? l.a : -1))) : sizes(shape, 'shape');
        reshapeSource[n.id] = g.nodes[n.inputs[0]!]!.op === 'reshape' ? reshapeSource[n.inputs[0]!]! : x[0]!;
        return op('Reshape', [reshapeSource[n.id]!, target], [], o);
      }
      case 'transpose': return op('Transpose', x, [intsAttr('perm', attr<number[]>('perm'))], o);
      case 'broadcast_to': return op('Expand', [x[0]!, sizes(shape, 'shape')], [], o);
      case 'slice': {
        const begin = attrLin('begin');
        const size = attrLin('size');
        const whole = inLin(0);
        // Axes the box covers whole are left out (Slice keeps them), so a batch axis taken whole needs no arithmetic.
        const same = (p: Lin, q: Lin) => p.a === q.a && p.b === q.b;
        const axes = begin.map((_, i) => i).filter((i) => !(same(begin[i]!, { a: 0, b: 0 }) && same(size[i]!, whole[i]!)));
        if (axes.length === 0) return op('Identity', x, [], o);
        const ends = axes.map((i) => ({ a: begin[i]!.a + size[i]!.a, b: begin[i]!.b + size[i]!.b }));
        return op('Slice', [x[0]!, sizes(axes.map((i) => begin[i]!), 'starts'), sizes(ends, 'ends'), init('axes', 'int64', [axes.length], axes)], [], o);
      }
      case 'pad': {
        const pads = attrLin('pads');
        if (pads.some((l) => l.b !== 0)) throw new OnnxExportError(`pad node ${n.id}: padding that follows the batch is not supported`);
        const rank = pads.length / 2;
        // IR pads are (before, after) per axis; ONNX lists every axis's begin, then every end.
        const onnxPads = [...Array.from({ length: rank }, (_, i) => pads[2 * i]!.a), ...Array.from({ length: rank }, (_, i) => pads[2 * i + 1]!.a)];
        return op('Pad', [x[0]!, init('pads', 'int64', [onnxPads.length], onnxPads)], [], o);
      }
      case 'concat': return op('Concat', x, [intAttr('axis', attr<number>('axis'))], o);
      case 'gather': return op('Gather', x, [intAttr('axis', 0)], o);
      case 'matmul': {
        const rank = inShape(0).length;
        const swap = [...Array.from({ length: rank - 2 }, (_, i) => i), rank - 1, rank - 2];
        const a = attr<boolean>('transposeA') === true ? op('Transpose', [x[0]!], [intsAttr('perm', swap)]) : x[0]!;
        const b = attr<boolean>('transposeB') === true ? op('Transpose', [x[1]!], [intsAttr('perm', swap)]) : x[1]!;
        return op('MatMul', [a, b], [], o);
      }
      case 'linear': return op('Gemm', x, [intAttr('transB', 1)], o);
      case 'softmax': return op('Softmax', x, [intAttr('axis', -1)], o);
      case 'softmax_bias': return op('Softmax', [op('Add', x)], [intAttr('axis', -1)], o);
      case 'layer_norm': return layerNorm(x[0]!, inShape(0), attr<number>('eps'), o);
      case 'ln_modulate': {
        const [xs, shift, scale] = x as [string, string, string];
        const axis1 = init('axes', 'int64', [1], [1]);
        const z = layerNorm(xs, inShape(0), attr<number>('eps'));
        const factor = op('Add', [op('Unsqueeze', [scale, axis1]), scalarLike('float32', 1)]);
        return op('Add', [op('Mul', [z, factor]), op('Unsqueeze', [shift, axis1])], [], o);
      }
      case 'attention': {
        if (!opsetFusesAttention(opset)) throw new OnnxExportError(`attention node ${n.id}: one op only from opset 23 (ONNX Attention); at opset ${opset} trace the graph without the attention rule`);
        // qkv's thirds are q, k, v as (B, L, heads·hd), the layout Attention's 3-D form reads; the bias is its additive mask.
        const heads = attr<number>('heads');
        const thirds = [0, 1, 2].map((i) => tmp(`qkv${i}`));
        nodes.push({ opType: 'Split', input: [x[0]!], output: thirds, name: thirds[0]!, attribute: [intAttr('axis', 2), intAttr('num_outputs', 3)] });
        return op('Attention', [...thirds, ...x.slice(1)], [intAttr('q_num_heads', heads), intAttr('kv_num_heads', heads), floatAttr('scale', attr<number>('scale'))], o);
      }
      case 'gelu_tanh': {
        if (opset >= GELU_OPSET) return op('Gelu', x, [stringAttr('approximate', 'tanh')], o);
        // x·σ(x·(A + B·x²)): the tanh-form GELU, as runtime/fused.ts computes it.
        const v = x[0]!;
        const inner = op('Add', [op('Mul', [op('Mul', [v, v]), scalarLike('float32', GELU_B)]), scalarLike('float32', GELU_A)]);
        return op('Mul', [v, op('Sigmoid', [op('Mul', [v, inner])])], [], o);
      }
      default:
        throw new OnnxExportError(`primitive '${n.op}' (node ${n.id}, ${n.scope || 'top'}) has no ONNX export; an inference graph of MDT or DiT uses none`);
    }
  }

  function layerNorm(v: string, shape: readonly number[], eps: number, o?: string): string {
    const d = shape[shape.length - 1]!;
    return op('LayerNormalization', [v, init('ln_scale', 'float32', [d], new Array<number>(d).fill(1))], [intAttr('axis', -1), floatAttr('epsilon', eps)], o);
  }

  const outputs = g.outputs.map(({ name: outName, node }) => {
    const n = g.nodes[node]!;
    op('Identity', [names[node]!], [], outName);
    return valueInfo(outName, n.dtype, linAll(n.shape, h.nodes[node]!.shape, `output ${outName}`));
  });
  return { name, node: nodes, initializer: inits, input: inputs, output: outputs };
}
