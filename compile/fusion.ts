/**
 * Fusion as rewrite rules: each rule recognises a reference-form pattern rooted at one node
 * and replaces the root by a fused primitive whose lowering runs one kernel (native where the
 * addon is loaded). Rules run before autodiff, so the fused ops' own VJPs (compile/primitives.ts)
 * shape the backward pass too. The inner nodes of a pattern are absorbed only when nothing else
 * reads them; dead ones go with the next dce.
 *
 *   linear        add(matmul(x, w, transposeB), bias[O])                     → linear(x, w, bias)
 *   gelu          ½x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))                     → gelu_tanh(x)
 *   ln_modulate   layer_norm(x)·(reshape(scale) + 1) + reshape(shift)         → ln_modulate(x, shift, scale)
 *   softmax_bias  softmax(logits (B,H,L,L) + bias (1|B, H, L, L))             → softmax_bias(logits, bias)
 *
 * and for inference graphs only (the fused op has no VJP), INFERENCE_PHASES add, first,
 *
 *   attention     merge(softmax(heads(q)·c·heads(k)ᵀ [+ bias])·heads(v)), with q, k, v the
 *                 thirds of one qkv (B, L, 3D), heads(t) = transpose(reshape(t, [B, L, H, D/H]),
 *                 [0, 2, 1, 3]) and merge its inverse                         → attention(qkv[, bias])
 */
import { match, P } from 'ts-pattern';
import { GraphBuilder, formatShape, type Attrs, type Graph, type Node } from './ir.ts';
import { dce } from './passes.ts';

/** What a rule may look at: the original graph and how many nodes read each value. */
interface RuleContext {
  node(id: number): Node;
  uses(id: number): number;
}

/** A rule's replacement: a primitive applied to nodes of the original graph. */
interface Replacement {
  readonly op: string;
  readonly inputs: readonly number[];
  readonly attrs?: Attrs;
}

export interface Rule {
  readonly name: string;
  apply(n: Node, c: RuleContext): Replacement | null;
}

const isConst = (n: Node, value: number) => n.op === 'const' && n.attrs['fill'] !== undefined && Math.abs((n.attrs['fill'] as number) - value) <= 1e-6 * Math.max(1, Math.abs(value));

/** The operands of a commutative binary node as [the one satisfying `first`, the other], or null. */
function operands(n: Node, c: RuleContext, first: (m: Node) => boolean): [Node, Node] | null {
  const [a, b] = n.inputs.map((i) => c.node(i)) as [Node, Node];
  if (first(a)) return [a, b];
  if (first(b)) return [b, a];
  return null;
}

/** A node read only by the pattern being fused. */
const private1 = (m: Node, c: RuleContext) => c.uses(m.id) === 1;

const linearRule: Rule = {
  name: 'linear',
  apply: (n, c) => {
    if (n.op !== 'add') return null;
    const pair = operands(n, c, (m) => m.op === 'matmul' && m.shape.length === 2 && m.attrs['transposeB'] === true && m.attrs['transposeA'] !== true && private1(m, c));
    if (pair === null) return null;
    const [mm, bias] = pair;
    if (formatShape(bias.shape) !== formatShape([mm.shape[1]!]) || bias.dtype !== 'float32') return null;
    return { op: 'linear', inputs: [...mm.inputs, bias.id] };
  },
};

/** x such that n = x·k for the constant k, or null. */
function scaledBy(n: Node, k: number, c: RuleContext): Node | null {
  if (n.op !== 'mul') return null;
  const pair = operands(n, c, (m) => isConst(m, k));
  return pair === null ? null : pair[1];
}

const geluRule: Rule = {
  name: 'gelu',
  apply: (n, c) => {
    if (n.op !== 'mul') return null;
    // mul(half, add(tanh(inner), 1)) with half = x·½
    const pair = operands(n, c, (m) => scaledBy(m, 0.5, c) !== null);
    if (pair === null) return null;
    const x = scaledBy(pair[0], 0.5, c)!;
    const onePlus = pair[1];
    const tanhAndOne = onePlus.op === 'add' ? operands(onePlus, c, (m) => m.op === 'tanh') : null;
    if (tanhAndOne === null || !isConst(tanhAndOne[1], 1)) return null;
    const tanhNode = tanhAndOne[0];
    const inner = scaledBy(c.node(tanhNode.inputs[0]!), Math.sqrt(2 / Math.PI), c);
    if (inner === null || inner.op !== 'add') return null;
    // x + x³·0.044715, x³ = x·(x·x)
    const cubic = operands(inner, c, (m) => m.id === x.id)?.[1];
    const cube = cubic === undefined ? null : scaledBy(cubic, 0.044715, c);
    const isCube = cube !== null && cube.op === 'mul' && match(cube.inputs.map((i) => c.node(i)))
      .with([{ id: x.id }, { op: 'mul', inputs: [x.id, x.id] }], () => true)
      .with([{ op: 'mul', inputs: [x.id, x.id] }, { id: x.id }], () => true)
      .otherwise(() => false);
    return isCube ? { op: 'gelu_tanh', inputs: [x.id] } : null;
  },
};

/** The (G, D) tensor t with n = reshape(t, [G, 1, D]), or null. */
function unsqueezed1(n: Node, c: RuleContext): Node | null {
  if (n.op !== 'reshape' || n.shape.length !== 3 || n.shape[1] !== 1) return null;
  const t = c.node(n.inputs[0]!);
  return t.shape.length === 2 && t.shape[0] === n.shape[0] && t.shape[1] === n.shape[2] ? t : null;
}

const lnModulateRule: Rule = {
  name: 'ln_modulate',
  apply: (n, c) => {
    if (n.op !== 'add' || n.shape.length !== 3) return null;
    const pair = operands(n, c, (m) => m.op === 'mul' && private1(m, c));
    if (pair === null) return null;
    const [scaled, shiftView] = pair;
    const shiftT = unsqueezed1(shiftView, c);
    const inner = operands(scaled, c, (m) => m.op === 'layer_norm' && private1(m, c));
    if (shiftT === null || inner === null) return null;
    const [ln, factor] = inner;
    const scaleView = factor.op === 'add' ? operands(factor, c, (m) => isConst(m, 1)) : null;
    const scaleT = scaleView === null ? null : unsqueezed1(scaleView[1], c);
    if (scaleT === null || formatShape(ln.shape) !== formatShape(n.shape)) return null;
    // shift and scale shared by every sample ((1, D) broadcast over G) are not ln_modulate's (G, D).
    const gd = formatShape([n.shape[0]!, n.shape[2]!]);
    if (formatShape(shiftT.shape) !== gd || formatShape(scaleT.shape) !== gd) return null;
    return { op: 'ln_modulate', inputs: [ln.inputs[0]!, shiftT.id, scaleT.id], attrs: ln.attrs };
  },
};

const softmaxBiasRule: Rule = {
  name: 'softmax_bias',
  apply: (n, c) =>
    match(n)
      .with({ op: 'softmax', shape: P.when((s) => s.length === 4) }, (sm) => {
        const sum = c.node(sm.inputs[0]!);
        if (sum.op !== 'add' || !private1(sum, c)) return null;
        const [logits, bias] = sum.inputs.map((i) => c.node(i)) as [Node, Node];
        const [b, h, l, m] = sm.shape as [number, number, number, number];
        const fits = formatShape(logits.shape) === formatShape(sm.shape) && bias.shape.length === 4 && (bias.shape[0] === 1 || bias.shape[0] === b) && bias.shape[1] === h && bias.shape[2] === l && bias.shape[3] === m && l === m;
        return fits ? { op: 'softmax_bias', inputs: [logits.id, bias.id] } : null;
      })
      .otherwise(() => null),
};

const HEADS_PERM = '0,2,1,3';
const isHeadsPerm = (n: Node) => n.op === 'transpose' && (n.attrs['perm'] as number[]).join() === HEADS_PERM;

/** qkv and the third `n` reads, where n = heads(slice(qkv)) and nothing else reads the steps; else null. */
function headsOfThird(n: Node, c: RuleContext): { qkv: Node; third: number } | null {
  if (!isHeadsPerm(n) || !private1(n, c)) return null;
  const split = c.node(n.inputs[0]!);
  if (split.op !== 'reshape' || split.shape.length !== 4 || !private1(split, c)) return null;
  const slice = c.node(split.inputs[0]!);
  if (slice.op !== 'slice' || !private1(slice, c)) return null;
  const qkv = c.node(slice.inputs[0]!);
  const [b, l, d] = slice.shape as [number, number, number];
  const begin = slice.attrs['begin'] as number[];
  const fits = qkv.shape.length === 3 && qkv.dtype === 'float32' && qkv.shape[0] === b && qkv.shape[1] === l && qkv.shape[2] === 3 * d &&
    begin[0] === 0 && begin[1] === 0 && begin[2]! % d === 0 && split.shape[0] === b && split.shape[1] === l;
  return fits ? { qkv, third: begin[2]! / d } : null;
}

const attentionRule: Rule = {
  name: 'attention',
  apply: (n, c) => {
    if (n.op !== 'reshape' || n.shape.length !== 3) return null;
    const merge = c.node(n.inputs[0]!);
    if (!isHeadsPerm(merge) || !private1(merge, c)) return null;
    const pv = c.node(merge.inputs[0]!);
    if (pv.op !== 'matmul' || pv.attrs['transposeA'] === true || pv.attrs['transposeB'] === true || !private1(pv, c)) return null;
    const [probs, vHeads] = pv.inputs.map((i) => c.node(i)) as [Node, Node];
    if (probs.op !== 'softmax' || !private1(probs, c)) return null;
    let logits = c.node(probs.inputs[0]!);
    let bias: Node | null = null;
    if (logits.op === 'add' && private1(logits, c)) {
      const pair = operands(logits, c, (m) => m.op === 'matmul');
      if (pair === null) return null;
      [logits, bias] = pair;
    }
    if (logits.op !== 'matmul' || logits.attrs['transposeA'] === true || logits.attrs['transposeB'] !== true || !private1(logits, c)) return null;
    const [qScaled, kHeads] = logits.inputs.map((i) => c.node(i)) as [Node, Node];
    const qc = qScaled.op === 'mul' && private1(qScaled, c) ? operands(qScaled, c, (m) => m.op === 'const' && m.shape.length === 0 && m.attrs['fill'] !== undefined) : null;
    if (qc === null) return null;
    const [scale, qHeads] = qc;
    const [q, k, v] = [qHeads, kHeads, vHeads].map((t) => headsOfThird(t, c));
    if (q == null || k == null || v == null || q.qkv.id !== k.qkv.id || k.qkv.id !== v.qkv.id || q.third !== 0 || k.third !== 1 || v.third !== 2) return null;
    const [b, heads, l] = probs.shape as [number, number, number];
    if (formatShape(n.shape) !== formatShape([b, l, q.qkv.shape[2]! / 3])) return null;
    if (bias !== null && !(bias.shape.length === 4 && (bias.shape[0] === 1 || bias.shape[0] === b) && formatShape(bias.shape.slice(1)) === formatShape([heads, l, l]) && bias.dtype === 'float32')) return null;
    return { op: 'attention', inputs: bias === null ? [q.qkv.id] : [q.qkv.id, bias.id], attrs: { heads, scale: scale.attrs['fill'] as number } };
  },
};

export const FUSION_RULES: readonly Rule[] = [linearRule, geluRule, lnModulateRule, softmaxBiasRule];
/**
 * The rule phases of an inference graph: attention first (so that the softmax it absorbs is not
 * fused, and counted, on its own), then the training rules.
 */
export const INFERENCE_PHASES: readonly (readonly Rule[])[] = [[attentionRule], FUSION_RULES];

export interface FusionReport {
  readonly graph: Graph;
  /** How many times each rule fired. */
  readonly applied: Readonly<Record<string, number>>;
}

/** Applies `rules` once over the graph (each root tried in order), then removes what they absorbed. */
export function fuse(g: Graph, rules: readonly Rule[] = FUSION_RULES): FusionReport {
  const uses = new Array<number>(g.nodes.length).fill(0);
  for (const n of g.nodes) for (const i of n.inputs) uses[i]!++;
  for (const o of g.outputs) uses[o.node]!++;
  const ctx: RuleContext = { node: (id) => g.nodes[id]!, uses: (id) => uses[id]! };
  const b = new GraphBuilder();
  const map = new Array<number>(g.nodes.length);
  const applied: Record<string, number> = {};
  for (const n of g.nodes) {
    if (n.op === 'input') {
      map[n.id] = b.input(n.attrs['name'] as string, n.attrs['kind'] as 'param' | 'data', n.shape, n.dtype);
      continue;
    }
    if (n.op === 'const') {
      const v = n.attrs['value'] as Float32Array | Int32Array | undefined;
      map[n.id] = b.atScope(n.scope, () => b.constant(v ?? (n.attrs['fill'] as number), n.shape, n.dtype));
      continue;
    }
    let rep: Replacement = n;
    for (const rule of rules) {
      const r = rule.apply(n, ctx);
      if (r !== null) {
        rep = r;
        applied[rule.name] = (applied[rule.name] ?? 0) + 1;
        break;
      }
    }
    map[n.id] = b.atScope(n.scope, () => b.emit(rep.op, rep.inputs.map((i) => map[i]!), rep.attrs ?? {}));
  }
  for (const o of g.outputs) b.output(o.name, map[o.node]!);
  return { graph: dce(b.finish()), applied };
}
