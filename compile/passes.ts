/**
 * Graph clean-up passes: dead-code elimination and common-subexpression elimination. Constant
 * folding happens when a graph is lowered (compile/execute.ts: every node computed from
 * constants alone is evaluated once per executable); fusion rules are in compile/fusion.ts.
 */
import { rebuild, type Attr, type Graph, type Node } from './ir.ts';

/** Keeps what the outputs read (inputs included: an unread input is not asked for). */
export function dce(g: Graph): Graph {
  const live = new Set(g.outputs.map((o) => o.node));
  for (let i = g.nodes.length - 1; i >= 0; i--) if (live.has(i)) for (const j of g.nodes[i]!.inputs) live.add(j);
  return rebuild(g, (n) => live.has(n.id));
}

const arrayIds = new WeakMap<object, number>();
let nextArrayId = 0;

function attrKey(v: Attr): string {
  if (v instanceof Float32Array || v instanceof Int32Array) {
    // Large constant buffers compare by identity: equal contents from two places stay two nodes.
    let id = arrayIds.get(v);
    if (id === undefined) arrayIds.set(v, (id = nextArrayId++));
    return `#${id}`;
  }
  return JSON.stringify(v);
}

function nodeKey(n: Node): string {
  const attrs = Object.keys(n.attrs).sort().map((k) => `${k}=${attrKey(n.attrs[k]!)}`).join(',');
  return `${n.op}|${n.inputs.join(',')}|${attrs}|${n.shape.join('x')}|${n.dtype}`;
}

/** Merges nodes that apply the same op to the same inputs with the same attributes (inputs never merge). */
export function cse(g: Graph): Graph {
  const seen = new Map<string, number>();
  const replace = new Map<number, number>();
  const canon = (i: number) => replace.get(i) ?? i;
  for (const n of g.nodes) {
    if (n.op === 'input') continue;
    const key = nodeKey({ ...n, inputs: n.inputs.map(canon) });
    const prev = seen.get(key);
    if (prev === undefined) seen.set(key, n.id);
    else replace.set(n.id, prev);
  }
  return rebuild(g, (n) => !replace.has(n.id), replace);
}
