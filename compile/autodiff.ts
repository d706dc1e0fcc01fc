/**
 * Reverse-mode autodiff as IR → IR: walks the graph backwards from a scalar output and asks
 * each primitive's VJP rule (compile/primitives.ts) for its inputs' gradients, written as new
 * nodes and summed where a value has several readers. The result is one graph holding the
 * forward pass and the gradients, so the passes and the memory plan see both at once.
 */
import { GraphBuilder, formatShape, type Graph } from './ir.ts';
import { PRIMS } from './primitives.ts';

export const gradName = (input: string) => `grad:${input}`;

/**
 * Adds an output `grad:NAME` for each input NAME in `wrt` that the graph has: the gradient of
 * output `loss` (a scalar); zeros where the loss does not depend on it. A name the graph never
 * read (a parameter of a module this graph does not run) gets no output, as PyTorch leaves
 * such a parameter's .grad unset.
 */
export function differentiate(g: Graph, loss: string, wrt: readonly string[]): Graph {
  const b = GraphBuilder.from(g);
  const out = g.outputs.find((o) => o.name === loss);
  if (out === undefined) throw new Error(`differentiate: the graph has no output '${loss}' (outputs: ${g.outputs.map((o) => o.name).join(', ')})`);
  const lossNode = b.node(out.node);
  if (lossNode.shape.length !== 0) throw new Error(`differentiate: '${loss}' must be a scalar, it is ${formatShape(lossNode.shape)}`);
  const present = wrt.filter((name) => b.inputId(name) !== undefined);
  const wrtIds = present.map((name) => b.inputId(name)!);
  // Only values that depend on a differentiated input carry a gradient.
  const live = new Set<number>(wrtIds);
  for (const n of g.nodes) if (n.op !== 'stop_gradient' && n.inputs.some((i) => live.has(i))) live.add(n.id);
  const adjoint = new Map<number, number>([[out.node, b.constant(1, [])]]);
  for (let id = out.node; id >= 0; id--) {
    const dy = adjoint.get(id);
    const n = g.nodes[id]!;
    if (dy === undefined || !live.has(id) || n.op === 'input') continue;
    const vjp = PRIMS[n.op]?.vjp;
    if (vjp === undefined) throw new Error(`differentiate: primitive '${n.op}' (in ${n.scope || 'the top level'}) has no gradient rule`);
    const grads = b.atScope(n.scope, () => vjp(b, n, dy));
    n.inputs.forEach((input, k) => {
      const gi = grads[k];
      if (gi === null || gi === undefined || !live.has(input)) return;
      const prev = adjoint.get(input);
      adjoint.set(input, prev === undefined ? gi : b.atScope(n.scope, () => b.emit('add', [prev, gi])));
    });
  }
  present.forEach((name, k) => {
    const id = wrtIds[k]!;
    b.output(gradName(name), adjoint.get(id) ?? b.constant(0, b.node(id).shape));
  });
  return b.finish();
}
