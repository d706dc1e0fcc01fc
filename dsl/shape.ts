/**
 * Shapes in types. A static size is a number literal; a size known only at run time
 * (batch, kept tokens) is a branded symbol that unifies only with itself.
 */
declare const symBrand: unique symbol;

/** A runtime-sized dimension named `N`. Typed as a number so it can stand in shape tuples. */
export type Sym<N extends string> = number & { readonly [symBrand]: N };
export type Dim = number;
export type Shape = readonly Dim[];

/** The run-time stand-in for a symbolic dimension inside a declared shape. */
export class SymDim<N extends string = string> {
  constructor(readonly name: N) {}
  toString(): string {
    return this.name;
  }
}

/** Declares a symbolic dimension: `const B = sym('B')` has type `Sym<'B'>`. */
export function sym<const N extends string>(name: N): Sym<N> {
  return new SymDim(name) as unknown as Sym<N>;
}

export function isSymDim(d: unknown): d is SymDim {
  return d instanceof SymDim;
}

/** A compile-time shape error: the message shows in the diagnostic that names this type. */
export interface ShapeError<Msg extends string> {
  readonly __shapeError: Msg;
}

export type { Broadcast, Div, Mul, Numel } from './size-types.ts';

/** Bindings of symbolic dimension names to sizes for one build. */
export type Bindings = Readonly<Record<string, number>>;

export function formatDim(d: Dim): string {
  return isSymDim(d) ? d.name : String(d);
}

export function formatShape(s: Shape): string {
  return `[${s.map(formatDim).join(', ')}]`;
}

export function formatBindings(b: Bindings): string {
  const entries = Object.entries(b);
  return entries.length === 0 ? '(none)' : entries.map(([k, v]) => `${k}=${v}`).join(', ');
}

/** Raised once, at build time, when declared and actual sizes disagree. */
export class ShapeCheckError extends Error {
  override readonly name = 'ShapeCheckError';
}

/**
 * Checks a concrete shape against a declared one, binding symbolic names as it goes
 * (a name seen twice must agree, like jaxtyping's per-call memo). Returns the extended bindings.
 */
export function checkShape(what: string, actual: readonly number[], declared: Shape, bindings: Bindings = {}): Bindings {
  const b: Record<string, number> = { ...bindings };
  const fail = (why: string): never => {
    throw new ShapeCheckError(
      `${what}: expected shape ${formatShape(declared)}, got [${actual.join(', ')}] (${why}); bindings: ${formatBindings(b)}`,
    );
  };
  if (actual.length !== declared.length) fail(`rank ${actual.length} instead of ${declared.length}`);
  declared.forEach((d, i) => {
    const a = actual[i]!;
    if (isSymDim(d)) {
      const bound = b[d.name];
      if (bound === undefined) b[d.name] = a;
      else if (bound !== a) fail(`dim ${i} is ${d.name}, already bound to ${bound}, but is ${a}`);
    } else if (d !== a) fail(`dim ${i} should be ${d} but is ${a}`);
  });
  return b;
}

/** Substitutes bindings into a declared shape; every symbol must be bound. */
export function bindShape(declared: Shape, bindings: Bindings, what = 'shape'): number[] {
  return declared.map((d, i) => {
    if (!isSymDim(d)) return d;
    const v = bindings[d.name];
    if (v === undefined) {
      throw new ShapeCheckError(`${what} ${formatShape(declared)}: dim ${i} (${d.name}) is unbound; bindings: ${formatBindings(bindings)}`);
    }
    return v;
  });
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
