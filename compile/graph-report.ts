/**
 * Looking at a compiled graph without running it. A model is traced (no parameter is ever
 * allocated: parameters are graph inputs, known by shape), put through the same passes the
 * trainer and the sampler use, and described: nodes per op, multiply-accumulates per module
 * (forward and backward apart), parameter and data bytes, the activation peak under the
 * executor's memory plan, folded constants and what fusion did.
 *
 *   mode 'train'    each training branch the trainer compiles (full; masked at a fixed kept
 *                   count with a fixed plan), through trainingReport: fusion, autodiff, CSE, DCE
 *   mode 'sample'   one DDPM sampling step (optionally with classifier-free guidance), optimized
 *   mode 'forward'  the plain denoiser forward (masked when `lenKeep` is given), optimized
 *
 * Counts are for the whole graph at its batch: a CFG sampling step runs 2·batch rows.
 */
import { keyFromSeed } from '../dsl/random.ts';
import { formatBytes } from '../runtime/bytes.ts';
import { gridSize } from '../mdt/config.ts';
import { lenKeepV1, planShapes, randomMasking } from '../mdt/masking.ts';
import { respacedTables } from '../mdt/diffusion/respace.ts';
import type { GuidanceOptions } from '../mdt/diffusion/cfg.ts';
import type { DiffusionModel } from '../mdt/trunk.ts';
import { gradName } from './autodiff.ts';
import { constantNodes } from './execute.ts';
import { formatShape, graphInputs, numel, type DType, type Graph, type Node } from './ir.ts';
import { branchProgram, stepProgram, traceDenoiser } from './model-graph.ts';
import { optimizeReport, trainingReport, type Compiled } from './pipeline.ts';
import { PRIMS } from './primitives.ts';
import { trace, type InputSpec } from './trace.ts';

export type ReportMode = 'train' | 'sample' | 'forward';

/** The module of nodes traced outside every named layer (the diffusion arithmetic, the loss). */
export const TOP_LEVEL = '(top level)';

/** The top-level module of a scope or parameter path: `blocks.3.attn.qkv` → `blocks.3`, `t_embedder.mlp.0` → `t_embedder`. */
export function moduleOf(path: string): string {
  if (path === '') return TOP_LEVEL;
  const parts = path.split('.');
  return /^\d+$/.test(parts[1] ?? '') ? `${parts[0]}.${parts[1]}` : parts[0]!;
}

/** Whether node scope `scope` lies in module `name` (a top-level module, or any deeper path like `blocks.0.attn`). */
export function inModule(scope: string, name: string): boolean {
  if (name === TOP_LEVEL) return scope === '';
  return scope === name || scope.startsWith(`${name}.`);
}

export function bytesOf(shape: readonly number[], dtype: DType): number {
  // tfjs keeps bool tensors as one byte per element, float32 and int32 as four.
  return numel(shape) * (dtype === 'bool' ? 1 : 4);
}

/** Multiply-accumulates of one execution of node `n` (products only, primitives' `macs` rules). */
export function nodeMacs(g: Graph, n: Node): number {
  return PRIMS[n.op]?.macs?.(n, n.inputs.map((i) => g.nodes[i]!)) ?? 0;
}

/**
 * The nodes of the forward pass. Autodiff appends gradient nodes after the forward ones and
 * records each in its forward node's scope, so the scope cannot tell them apart; the passes that
 * follow renumber the graph and may merge a gradient node into an equal forward one, so an id
 * threshold is not reliable either. What is sound: the forward outputs (every output not named
 * `grad:…`: loss, mse, vb) read only forward values, so the forward pass is exactly what they
 * transitively read, and every other node exists only to compute gradients. A gradient node
 * CSE merged into an equal forward value runs once, in the forward pass, and is counted there;
 * a forward value a VJP recomputes (ln_modulate's layer_norm) is backward work, as it runs in
 * the backward pass. A graph without gradient outputs is all forward.
 */
export function forwardNodes(g: Graph): Set<number> {
  const grad = gradName('');
  const live = new Set(g.outputs.filter((o) => !o.name.startsWith(grad)).map((o) => o.node));
  for (let i = g.nodes.length - 1; i >= 0; i--) if (live.has(i)) for (const j of g.nodes[i]!.inputs) live.add(j);
  return live;
}

export interface ModuleMacs {
  readonly module: string;
  readonly forward: number;
  readonly backward: number;
}

/**
 * MACs per top-level module (by node scope), forward and backward apart, in order of first
 * appearance. Folded nodes are left out: a product of constants runs once when the executable
 * is made, not per run.
 */
export function macsByModule(g: Graph): ModuleMacs[] {
  const fwd = forwardNodes(g);
  const folded = constantNodes(g);
  const acc = new Map<string, { forward: number; backward: number }>();
  for (const n of g.nodes) {
    const m = folded.has(n.id) ? 0 : nodeMacs(g, n);
    if (m === 0) continue;
    const key = moduleOf(n.scope);
    const row = acc.get(key) ?? { forward: 0, backward: 0 };
    if (fwd.has(n.id)) row.forward += m;
    else row.backward += m;
    acc.set(key, row);
  }
  return [...acc].map(([module, r]) => ({ module, ...r }));
}

/** Ops whose tfjs lowering returns a view of its input's buffer (reference-counted, no copy). */
const VIEW_OPS = new Set(['reshape', 'stop_gradient']);

export interface MemoryPlan {
  /** The most bytes of intermediates alive at once during a run (outputs count from when they are made). */
  readonly peak: number;
  /** The node whose result makes the peak. */
  readonly peakNode: number;
  /** Bytes of every intermediate one run makes: what it would hold if nothing were freed. */
  readonly total: number;
  /** Folded nodes (evaluated once per executable). */
  readonly folded: number;
  /** Folded values the executable keeps for its runs, and their bytes. */
  readonly foldedKept: number;
  readonly foldedBytes: number;
}

/**
 * Simulates the executor's memory plan (compile/execute.ts `lower`) over the node list: folded
 * constants are evaluated once and only those a run still reads are kept; a run makes each
 * remaining node's result in order and frees every intermediate right after its last reader
 * (one nothing reads, right after it is made); outputs are never freed (they are the caller's),
 * and inputs are the caller's. Reshapes share their input's buffer in tfjs, so they add no
 * bytes and the buffer goes when its last view does. Kernel-internal temporaries are not seen.
 * With `viewsShareBuffers: false` a view counts as a copy, which is how tf.memory().numBytes
 * counts (per tensor handle): the executor's measured numBytes peak equals that figure.
 */
export function memoryPlan(g: Graph, opts: { readonly viewsShareBuffers?: boolean } = {}): MemoryPlan {
  const views = opts.viewsShareBuffers ?? true;
  const consts = constantNodes(g);
  const outputIds = new Set(g.outputs.map((o) => o.node));
  const lastUse = new Array<number>(g.nodes.length).fill(-1);
  for (const n of g.nodes) for (const i of n.inputs) lastUse[i] = n.id;
  const root = new Array<number>(g.nodes.length);
  for (const n of g.nodes) root[n.id] = views && VIEW_OPS.has(n.op) ? root[n.inputs[0]!]! : n.id;
  const bytes = (id: number) => bytesOf(g.nodes[id]!.shape, g.nodes[id]!.dtype);

  // What the executable keeps of its folded constants: those a run or an output reads.
  const readByRun = new Set<number>();
  for (const n of g.nodes) if (!consts.has(n.id)) for (const i of n.inputs) if (consts.has(i)) readByRun.add(i);
  for (const o of outputIds) if (consts.has(o)) readByRun.add(o);
  const keptRoots = new Set([...readByRun].map((i) => root[i]!));
  const foldedBytes = [...keptRoots].reduce((a, r) => a + bytes(r), 0);

  const freeAfter: number[][] = g.nodes.map(() => []);
  for (const n of g.nodes) {
    if (consts.has(n.id) || n.op === 'input' || outputIds.has(n.id)) continue;
    freeAfter[lastUse[n.id]! < 0 ? n.id : lastUse[n.id]!]!.push(n.id);
  }
  // Live views per buffer made by this run (inputs and folded constants are not the run's).
  const refs = new Map<number, number>();
  let live = 0, peak = 0, peakNode = -1, total = 0;
  for (const n of g.nodes) {
    if (n.op === 'input' || consts.has(n.id)) continue;
    const r = root[n.id]!;
    if (r === n.id) {
      refs.set(r, 1);
      live += bytes(r);
      total += bytes(r);
    } else if (refs.has(r)) refs.set(r, refs.get(r)! + 1);
    if (live > peak) {
      peak = live;
      peakNode = n.id;
    }
    for (const i of freeAfter[n.id]!) {
      const ri = root[i]!;
      const left = refs.get(ri);
      if (left === undefined) continue;
      if (left > 1) refs.set(ri, left - 1);
      else {
        refs.delete(ri);
        live -= bytes(ri);
      }
    }
  }
  return { peak, peakNode, total, folded: consts.size, foldedKept: readByRun.size, foldedBytes };
}

export interface GraphPart {
  /** 'full branch', 'masked branch', 'sampling step', 'denoiser forward'. */
  readonly name: string;
  /** The graph after the passes. */
  readonly graph: Graph;
  /** Node count as traced, before any pass. */
  readonly traced: number;
  /** Fusion rule → times it fired. */
  readonly applied: Readonly<Record<string, number>>;
  /** Nodes per op after the passes, most frequent first. */
  readonly ops: ReadonlyArray<readonly [string, number]>;
  readonly modules: readonly ModuleMacs[];
  readonly forwardMacs: number;
  readonly backwardMacs: number;
  readonly params: { readonly count: number; readonly elements: number; readonly bytes: number };
  readonly dataBytes: number;
  readonly memory: MemoryPlan;
}

/** Describes one compiled graph. */
export function describeGraph(name: string, c: Compiled): GraphPart {
  const g = c.graph;
  const ops = new Map<string, number>();
  for (const n of g.nodes) ops.set(n.op, (ops.get(n.op) ?? 0) + 1);
  const inputs = graphInputs(g);
  const params = inputs.filter((i) => i.kind === 'param');
  const modules = macsByModule(g);
  return {
    name,
    graph: g,
    traced: c.traced,
    applied: c.applied,
    ops: [...ops].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])),
    modules,
    forwardMacs: modules.reduce((a, m) => a + m.forward, 0),
    backwardMacs: modules.reduce((a, m) => a + m.backward, 0),
    params: {
      count: params.length,
      elements: params.reduce((a, p) => a + numel(p.node.shape), 0),
      bytes: params.reduce((a, p) => a + bytesOf(p.node.shape, p.node.dtype), 0),
    },
    dataBytes: inputs.filter((i) => i.kind === 'data').reduce((a, p) => a + bytesOf(p.node.shape, p.node.dtype), 0),
    memory: memoryPlan(g),
  };
}

export interface GraphReportOptions {
  /** Images per graph (default 1). */
  readonly batch?: number;
  /** train and forward: tokens the masked encoder keeps (train default ⌊N·(1 − mask ratio)⌋; forward: unmasked when absent). */
  readonly lenKeep?: number;
  /** sample: classifier-free guidance scale; absent or 1: none. */
  readonly cfgScale?: number;
}

export interface GraphReport {
  readonly model: DiffusionModel;
  readonly mode: ReportMode;
  readonly batch: number;
  /** Rows the graphs run (2·batch for a CFG step). */
  readonly rows: number;
  readonly tokens: number;
  /** Kept tokens of the masked graph, or null if none is traced. */
  readonly lenKeep: number | null;
  /** A one-line description of what was traced. */
  readonly title: string;
  readonly parts: readonly GraphPart[];
}

const f32 = (shape: readonly number[]): InputSpec => ({ shape, dtype: 'float32' });
const i32 = (shape: readonly number[]): InputSpec => ({ shape, dtype: 'int32' });

function checkCount(what: string, v: number, lo: number, hi: number): void {
  if (!Number.isInteger(v) || v < lo || v > hi) throw new Error(`graph report: ${what} must be an integer in [${lo}, ${hi}], got ${v}`);
}

/** The mask-plan inputs of a masked graph, at the shapes of a fixed plan (the graph sees only shapes). */
function maskSpecs(batch: number, tokens: number, lenKeep: number): Record<string, InputSpec> {
  const shapes = planShapes(randomMasking(keyFromSeed(0), batch, tokens, lenKeep));
  return { 'mask.keep': i32(shapes.keep), 'mask.restore': i32(shapes.restore), 'mask.removed': f32(shapes.removed), 'mask.biasIndex': i32(shapes.biasIndex) };
}

/**
 * The denoiser forward as traced (no passes): x (B, C, H, W), t (B) int32 original steps, y (B)
 * int32 → `out`; masked at `lenKeep` kept tokens when given (the training graph's network).
 */
export function traceForward(model: DiffusionModel, batch = 1, lenKeep: number | null = null): Graph {
  const c = model.config;
  const tokens = gridSize(c) ** 2;
  checkCount('batch', batch, 1, 1_000_000);
  if (lenKeep !== null) {
    if (c.variant === 'dit') throw new Error('graph report: DiT has no masked forward');
    checkCount('lenKeep', lenKeep, 1, tokens);
  }
  const x = [batch, c.inChannels, c.inputSize, c.inputSize];
  return trace((io) => ({ out: traceDenoiser(model, io, lenKeep !== null)(io.data('x'), io.data('t'), io.data('y')) }), {
    x: f32(x), t: i32([batch]), y: i32([batch]),
    ...(lenKeep === null ? {} : maskSpecs(batch, tokens, lenKeep)),
  });
}

/** Guidance as `mdt sample` sets it up by default: DiT constant, MDT power-cosine (s = 4); first 3 channels of 4-channel latents. */
function guidanceFor(model: DiffusionModel, scale: number): GuidanceOptions {
  const c = model.config;
  const schedule = c.variant === 'dit' ? { kind: 'constant' as const, scale } : { kind: 'power-cosine' as const, scale, power: 4 };
  return { schedule, channels: c.inChannels === 4 ? 'first3' : 'all', T: 1000, inChannels: c.inChannels };
}

/** Traces and compiles the graphs of `mode` for `model` and describes them; no tensor is made. */
export function graphReport(model: DiffusionModel, mode: ReportMode, opts: GraphReportOptions = {}): GraphReport {
  const c = model.config;
  const batch = opts.batch ?? 1;
  checkCount('batch', batch, 1, 1_000_000);
  const tokens = gridSize(c) ** 2;
  const x = [batch, c.inChannels, c.inputSize, c.inputSize];
  const size = `${c.inputSize}×${c.inputSize}×${c.inChannels}, ${tokens} tokens`;
  if (mode === 'train') {
    const tables = respacedTables(1000, '');
    const minSnr = c.variant === 'mdt-v2' ? { minSnrGamma: 5 } : {};
    const wrt = Object.entries(model.params).filter(([, s]) => s.trainable).map(([k]) => k);
    const data = { x0: f32(x), t: i32([batch]), y: i32([batch]), noise: f32(x) };
    const full = trainingReport(trace(branchProgram(model, tables, { masked: false, ...minSnr }), data), 'loss', wrt);
    const parts = [describeGraph('full branch', full)];
    let lenKeep: number | null = null;
    if (c.variant !== 'dit') {
      lenKeep = opts.lenKeep ?? lenKeepV1(tokens, c.maskRatio);
      checkCount('lenKeep', lenKeep, 1, tokens);
      const masked = trainingReport(trace(branchProgram(model, tables, { masked: true, ...minSnr }), { ...data, ...maskSpecs(batch, tokens, lenKeep) }), 'loss', wrt);
      parts.push(describeGraph('masked branch', masked));
    }
    const title = `training step, batch ${batch}, ${size}: ${lenKeep === null ? 'one branch' : `full branch + masked branch keeping ${lenKeep}`}; fusion, autodiff, CSE, DCE`;
    return { model, mode, batch, rows: batch, tokens, lenKeep, title, parts };
  }
  if (mode === 'sample') {
    const scale = opts.cfgScale ?? 1;
    const guidance = scale === 1 ? null : guidanceFor(model, scale);
    const rows = guidance === null ? batch : 2 * batch;
    const xs = [rows, c.inChannels, c.inputSize, c.inputSize];
    const g = trace(stepProgram(model, respacedTables(1000, '250'), { sampler: 'ddpm', guidance }), { x: f32(xs), k: i32([rows]), y: i32([rows]), noise: f32(xs) });
    const title = `one DDPM sampling step, batch ${batch}${guidance === null ? '' : ` with CFG w=${scale} (${rows} rows)`}, ${size}; fusion, CSE, DCE`;
    return { model, mode, batch, rows, tokens, lenKeep: null, title, parts: [describeGraph('sampling step', optimizeReport(g))] };
  }
  const lenKeep = opts.lenKeep ?? null;
  const g = traceForward(model, batch, lenKeep);
  const title = `denoiser forward, batch ${batch}, ${size}${lenKeep === null ? '' : `, masked keeping ${lenKeep}`}; fusion, CSE, DCE`;
  return { model, mode, batch, rows: batch, tokens, lenKeep, title, parts: [describeGraph('denoiser forward', optimizeReport(g))] };
}

// ---- text ----

const num = (v: number) => v.toLocaleString('en-US');

/** Rows as columns: the first left-aligned, the others right-aligned; a rule after the header and before `footer`. */
export function table(head: readonly string[], body: readonly (readonly string[])[], footer: readonly (readonly string[])[] = []): string {
  const all = [head, ...body, ...footer];
  const widths = head.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (r: readonly string[]) => r.map((v, i) => (i === 0 ? v.padEnd(widths[i]!) : v.padStart(widths[i]!))).join('  ').trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(head), rule, ...body.map(line), ...(footer.length > 0 ? [rule, ...footer.map(line)] : [])].join('\n');
}

/** The report as aligned tables: overview, MACs per module, nodes per op; one column per graph. */
export function formatGraphReport(r: GraphReport, name = `${r.model.config.variant} depth ${r.model.config.depth} D ${r.model.config.hiddenSize} p ${r.model.config.patchSize}`): string {
  const parts = r.parts;
  const head = ['', ...parts.map((p) => p.name)];
  const rules = [...new Set(parts.flatMap((p) => Object.keys(p.applied)))].sort();
  const overview = table(head, [
    ['nodes traced', ...parts.map((p) => num(p.traced))],
    ['nodes after passes', ...parts.map((p) => num(p.graph.nodes.length))],
    ...rules.map((k) => [`fused ${k}`, ...parts.map((p) => num(p.applied[k] ?? 0))]),
    ['folded constants (kept)', ...parts.map((p) => `${num(p.memory.folded)} (${num(p.memory.foldedKept)})`)],
    ['folded constant bytes', ...parts.map((p) => formatBytes(p.memory.foldedBytes))],
    ['parameter inputs', ...parts.map((p) => `${num(p.params.count)}: ${num(p.params.elements)}`)],
    ['parameter bytes', ...parts.map((p) => formatBytes(p.params.bytes))],
    ['data input bytes', ...parts.map((p) => formatBytes(p.dataBytes))],
    ['activations peak', ...parts.map((p) => formatBytes(p.memory.peak))],
    ['activations total', ...parts.map((p) => formatBytes(p.memory.total))],
    ['GMAC forward', ...parts.map((p) => (p.forwardMacs / 1e9).toFixed(3))],
    ...(parts.some((p) => p.backwardMacs > 0) ? [['GMAC backward', ...parts.map((p) => (p.backwardMacs / 1e9).toFixed(3))]] : []),
  ]);
  const withBackward = parts.some((p) => p.backwardMacs > 0);
  const modules: string[] = [];
  for (const p of parts) for (const m of p.modules) if (!modules.includes(m.module)) modules.push(m.module);
  const cols = (m: ModuleMacs | undefined) => (withBackward ? [num(m?.forward ?? 0), num(m?.backward ?? 0)] : [num(m?.forward ?? 0)]);
  const macHead = ['MACs per module', ...parts.flatMap((p) => (withBackward ? [`${p.name} fwd`, `${p.name} bwd`] : [p.name]))];
  const macBody = modules.map((mod) => [mod, ...parts.flatMap((p) => cols(p.modules.find((m) => m.module === mod)))]);
  const macTotal = ['total', ...parts.flatMap((p) => (withBackward ? [num(p.forwardMacs), num(p.backwardMacs)] : [num(p.forwardMacs)]))];
  const opNames: string[] = [];
  for (const p of parts) for (const [op] of p.ops) if (!opNames.includes(op)) opNames.push(op);
  const opBody = opNames.map((op) => [op, ...parts.map((p) => num(p.ops.find(([o]) => o === op)?.[1] ?? 0))]);
  const opTotal = ['total', ...parts.map((p) => num(p.graph.nodes.length))];
  return [
    `${name}: ${r.title}`,
    '',
    overview,
    '',
    table(macHead, macBody, [macTotal]),
    '',
    table(['nodes per op', ...parts.map((p) => p.name)], opBody, [opTotal]),
    '',
    'Activations: bytes of intermediates alive at once under the executor\'s free-after-last-use plan (outputs, gradients included, stay);',
    'parameters and data are inputs, not counted there. Backward: nodes only the gradient outputs read.',
  ].join('\n');
}

const DTYPE_SHORT: Record<DType, string> = { float32: 'f32', int32: 'i32', bool: 'bool' };

function formatAttr(v: unknown): string {
  if (v instanceof Float32Array || v instanceof Int32Array) return `<${v.constructor.name} ${v.length}>`;
  if (Array.isArray(v)) return `[${v.join(', ')}]`;
  if (typeof v === 'number') return String(Number.isInteger(v) ? v : Number(v.toPrecision(6)));
  return String(v);
}

/** One node as a line of IR: `%12 = linear(%5, %7, %8) [256, 1152] f32`, and the comment part. */
export function formatNode(n: Node): { code: string; comment: string } {
  const type = `${formatShape(n.shape)} ${DTYPE_SHORT[n.dtype]}`;
  if (n.op === 'input') return { code: `%${n.id} = ${n.attrs['kind'] as string} "${n.attrs['name'] as string}" ${type}`, comment: '' };
  if (n.op === 'const') return { code: `%${n.id} = const(${formatAttr(n.attrs['value'] ?? n.attrs['fill'])}) ${type}`, comment: n.scope };
  // The output shape says what `shape` attributes say.
  const attrs = Object.entries(n.attrs).filter(([k]) => !(k === 'shape' && (n.op === 'reshape' || n.op === 'broadcast_to')));
  const shown = attrs.length === 0 ? '' : ` {${attrs.map(([k, v]) => `${k}: ${formatAttr(v)}`).join(', ')}}`;
  return { code: `%${n.id} = ${n.op}(${n.inputs.map((i) => `%${i}`).join(', ')})${shown} ${type}`, comment: n.scope };
}

/**
 * The nodes of module `name` (or any deeper scope: `blocks.0.attn`) in one graph, one per line,
 * after the values it reads from elsewhere (parameters, constants, other modules' results).
 * Comments say the node's scope, `backward` for gradient nodes, `folded` for folded ones.
 */
export function formatModuleListing(part: GraphPart, name: string): string {
  const g = part.graph;
  const mine = g.nodes.filter((n) => n.op !== 'input' && inModule(n.scope, name));
  if (mine.length === 0) return '';
  const ids = new Set(mine.map((n) => n.id));
  const outside = [...new Set(mine.flatMap((n) => n.inputs.filter((i) => !ids.has(i))))].sort((a, b) => a - b).map((i) => g.nodes[i]!);
  const fwd = forwardNodes(g);
  const folded = constantNodes(g);
  const backward = mine.filter((n) => !fwd.has(n.id)).length;
  const macs = mine.reduce((a, n) => a + (folded.has(n.id) ? 0 : nodeMacs(g, n)), 0);
  const lines = (nodes: readonly Node[]) => {
    const fmt = nodes.map((n) => {
      const { code, comment } = formatNode(n);
      const notes = [comment, fwd.has(n.id) || n.op === 'input' ? '' : 'backward', folded.has(n.id) && n.op !== 'const' ? 'folded' : ''].filter((s) => s !== '');
      return { code, notes: notes.join(' ') };
    });
    const width = Math.min(96, Math.max(0, ...fmt.map((f) => f.code.length)));
    return fmt.map((f) => (f.notes === '' ? f.code : `${f.code.padEnd(width)}  # ${f.notes}`));
  };
  const hasGradients = g.outputs.some((o) => o.name.startsWith(gradName('')));
  const split = hasGradients ? ` (${num(mine.length - backward)} forward, ${num(backward)} backward)` : '';
  return [
    `# ${part.name}: module ${name}, ${num(mine.length)} nodes${split}, ${num(macs)} MACs`,
    ...(outside.length > 0 ? ['# reads', ...lines(outside), '# nodes'] : []),
    ...lines(mine),
  ].join('\n');
}

/** Module names of a graph's nodes, in order of first appearance. */
export function graphModules(g: Graph): string[] {
  const out: string[] = [];
  for (const n of g.nodes) if (n.op !== 'input') {
    const m = moduleOf(n.scope);
    if (!out.includes(m)) out.push(m);
  }
  return out;
}
