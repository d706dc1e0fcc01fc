/**
 * The graph IR: a program is a list of nodes in topological order, each one primitive op
 * applied to earlier nodes, with its attributes, static shape and dtype. Parameters and data
 * (x, t, y, noise, mask-plan indices) are named `input` nodes; results are named outputs.
 * Shapes are concrete: a graph is traced at one shape signature (batch, kept tokens), and
 * sizes that types leave symbolic are numbers here. Like a jaxpr, but mutable while built.
 *
 * The primitives (what `op` may be) and their rules live in compile/primitives.ts.
 */
import { PRIMS } from './primitives.ts';

export type DType = 'float32' | 'int32' | 'bool';
export type Attr = number | string | boolean | readonly number[] | Float32Array | Int32Array;
export type Attrs = Readonly<Record<string, Attr>>;

export interface Node {
  readonly id: number;
  readonly op: string;
  readonly inputs: readonly number[];
  readonly attrs: Attrs;
  readonly shape: readonly number[];
  readonly dtype: DType;
  /** The module path the node was traced in (`blocks.3.attn`), for per-module counts. */
  readonly scope: string;
}

export type InputKind = 'param' | 'data';

export interface Graph {
  readonly nodes: readonly Node[];
  readonly outputs: ReadonlyArray<{ readonly name: string; readonly node: number }>;
}

export interface GraphInput {
  readonly name: string;
  readonly kind: InputKind;
  readonly node: Node;
}

/** The graph's `input` nodes, in order. */
export function graphInputs(g: Graph): GraphInput[] {
  return g.nodes.filter((n) => n.op === 'input').map((n) => ({ name: n.attrs['name'] as string, kind: n.attrs['kind'] as InputKind, node: n }));
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/**
 * Records nodes. Each `emit` infers the output's shape and dtype from the primitive's rule,
 * so a malformed op fails at trace time, with the op and the input shapes named.
 */
export class GraphBuilder {
  readonly nodes: Node[] = [];
  readonly outputs: { name: string; node: number }[] = [];
  private readonly inputIds = new Map<string, number>();
  private readonly scopes: string[] = [];

  /** Continues an existing graph (autodiff and passes append to a copy). */
  static from(g: Graph): GraphBuilder {
    const b = new GraphBuilder();
    for (const n of g.nodes) {
      b.nodes.push(n);
      if (n.op === 'input') b.inputIds.set(n.attrs['name'] as string, n.id);
    }
    b.outputs.push(...g.outputs);
    return b;
  }

  node(id: number): Node {
    const n = this.nodes[id];
    if (n === undefined) throw new Error(`graph: no node ${id}`);
    return n;
  }

  /** A named input; asking twice for one name returns the same node (shapes must agree). */
  input(name: string, kind: InputKind, shape: readonly number[], dtype: DType): number {
    const seen = this.inputIds.get(name);
    if (seen !== undefined) {
      const n = this.node(seen);
      if (formatShape(n.shape) !== formatShape(shape) || n.dtype !== dtype) {
        throw new Error(`graph input ${name}: declared ${formatShape(n.shape)} ${n.dtype}, now ${formatShape(shape)} ${dtype}`);
      }
      return seen;
    }
    const id = this.push('input', [], { name, kind }, [...shape], dtype);
    this.inputIds.set(name, id);
    return id;
  }

  inputId(name: string): number | undefined {
    return this.inputIds.get(name);
  }

  emit(op: string, inputs: readonly number[], attrs: Attrs = {}): number {
    const prim = PRIMS[op];
    if (prim === undefined) throw new Error(`graph: unknown primitive '${op}'`);
    const ins = inputs.map((i) => this.node(i));
    const { shape, dtype } = prim.infer(ins, attrs);
    return this.push(op, inputs, attrs, shape, dtype);
  }

  /** A constant tensor (filled with one value when `values` is a number). */
  constant(values: number | Float32Array | Int32Array, shape: readonly number[], dtype: DType = 'float32'): number {
    if (typeof values !== 'number' && values.length !== numel(shape)) {
      throw new Error(`graph constant: ${values.length} values for shape ${formatShape(shape)}`);
    }
    return this.push('const', [], typeof values === 'number' ? { fill: values } : { value: values }, [...shape], dtype);
  }

  /** Runs `f` with `name` appended to the current module path. */
  scoped<T>(name: string, f: () => T): T {
    this.scopes.push(name);
    try {
      return f();
    } finally {
      this.scopes.pop();
    }
  }

  /** Runs `f` with the module path set to `path` (gradients are recorded in their forward node's module). */
  atScope<T>(path: string, f: () => T): T {
    const saved = this.scopes.splice(0);
    if (path !== '') this.scopes.push(path);
    try {
      return f();
    } finally {
      this.scopes.splice(0, this.scopes.length, ...saved);
    }
  }

  output(name: string, id: number): void {
    if (this.outputs.some((o) => o.name === name)) throw new Error(`graph output ${name} declared twice`);
    this.outputs.push({ name, node: id });
  }

  finish(): Graph {
    return { nodes: [...this.nodes], outputs: [...this.outputs] };
  }

  private push(op: string, inputs: readonly number[], attrs: Attrs, shape: readonly number[], dtype: DType): number {
    const id = this.nodes.length;
    this.nodes.push({ id, op, inputs: [...inputs], attrs, shape, dtype, scope: this.scopes.join('.') });
    return id;
  }
}

/**
 * Rebuilds a graph keeping the nodes `keep` says, renumbered densely, with each node's inputs
 * redirected through `replace` first (a node id → the id that stands for it).
 */
export function rebuild(g: Graph, keep: (n: Node) => boolean, replace: ReadonlyMap<number, number> = new Map()): Graph {
  const resolve = (id: number): number => {
    let r = id;
    for (let next = replace.get(r); next !== undefined && next !== r; next = replace.get(r)) r = next;
    return r;
  };
  const newId = new Map<number, number>();
  const nodes: Node[] = [];
  for (const n of g.nodes) {
    if (!keep(n)) continue;
    const inputs = n.inputs.map((i) => {
      const m = newId.get(resolve(i));
      if (m === undefined) throw new Error(`graph rebuild: node ${n.id} (${n.op}) reads ${i}, which was removed`);
      return m;
    });
    newId.set(n.id, nodes.length);
    nodes.push({ ...n, id: nodes.length, inputs });
  }
  const outputs = g.outputs.map((o) => {
    const m = newId.get(resolve(o.node));
    if (m === undefined) throw new Error(`graph rebuild: output ${o.name} was removed`);
    return { name: o.name, node: m };
  });
  return { nodes, outputs };
}
