/**
 * Trace-time shape checks of named layers, with a binding memo per layer call (jaxtyping's
 * per-call memo): a layer's input, declared side inputs and output are checked against its
 * declared shapes, and a symbol bound to two sizes is an error naming the layer's path, the
 * symbol, both sizes and where each came from. A trace runs once per shape signature (a
 * compiled graph is reused for every call with those shapes), so the checks cost a few
 * comparisons per layer per compilation and nothing per step.
 */
import { checkShape, formatShape, isSymDim, ShapeCheckError, type Bindings, type Shape } from './shape.ts';

export class ShapeMemo {
  private readonly bound = new Map<string, { size: number; where: string }>();

  constructor(readonly path: string) {}

  /** Checks `actual` against `declared`, binding its symbols; `what` names the value in errors. */
  check(what: string, actual: readonly number[], declared: Shape): void {
    const fail = (why: string): never => {
      throw new ShapeCheckError(`${this.path}: ${what} should be ${formatShape(declared)}, got [${actual.join(', ')}] (${why})`);
    };
    if (actual.length !== declared.length) fail(`rank ${actual.length} instead of ${declared.length}`);
    declared.forEach((d, i) => {
      const a = actual[i]!;
      if (!isSymDim(d)) {
        if (d !== a) fail(`dim ${i} should be ${d} but is ${a}`);
        return;
      }
      const prior = this.bound.get(d.name);
      if (prior === undefined) this.bound.set(d.name, { size: a, where: `${what} dim ${i}` });
      else if (prior.size !== a) {
        throw new ShapeCheckError(`${this.path}: symbol ${d.name} is ${prior.size} in ${prior.where} but ${a} in ${what} dim ${i} (${what} is [${actual.join(', ')}], declared ${formatShape(declared)})`);
      }
    });
  }

  get bindings(): Bindings {
    return Object.fromEntries([...this.bound].map(([k, v]) => [k, v.size]));
  }
}

const stacks = new WeakMap<object, ShapeMemo[]>();

/** Runs `f` with a fresh memo for layer `name` on top of `graph`'s stack (the path extends the enclosing layer's). */
export function withMemo<T>(graph: object, name: string, f: (memo: ShapeMemo) => T): T {
  let stack = stacks.get(graph);
  if (stack === undefined) stacks.set(graph, (stack = []));
  const parent = stack.at(-1);
  const memo = new ShapeMemo(parent ? `${parent.path}.${name}` : name);
  stack.push(memo);
  try {
    return f(memo);
  } finally {
    stack.pop();
  }
}

/** Checks a value read as `declared` (a parameter, a data input) in the innermost layer's memo, or on its own outside any layer. */
export function checkRead(graph: object, what: string, actual: readonly number[], declared: Shape): void {
  const memo = currentMemo(graph);
  if (memo) memo.check(what, actual, declared);
  else checkShape(what, actual, declared);
}

/** The memo of the innermost named layer being traced on `graph`, if any. */
export function currentMemo(graph: object): ShapeMemo | undefined {
  return stacks.get(graph)?.at(-1);
}
