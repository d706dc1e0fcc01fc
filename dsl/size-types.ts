/**
 * Size arithmetic and shape algebra in types. Sizes are exact while they stay below 10⁴
 * (TypeScript represents them as tuple lengths, built digit by digit, so
 * checking stays cheap); a product or quotient past it, or of a size only known at run time
 * (`number`, a symbol), widens to `number` and is checked when traced instead. Every model
 * size this project uses is below it (XL: D·4 = 4608, 3·D = 3456, 256 tokens).
 */
import type { Dim, Shape, ShapeError, Sym } from './shape.ts';

type IsLiteral<N> = N extends number ? (number extends N ? false : N extends Sym<string> ? false : true) : false;
type IsSym<N> = [N] extends [Sym<string>] ? true : false;
type SymName<N> = N extends Sym<infer S> ? S : never;
/** How a dim prints in a type error. */
type DimText<N> = IsSym<N> extends true ? SymName<N> : IsLiteral<N> extends true ? `${N & number}` : 'number';

type DigitTuples = { '0': []; '1': [0]; '2': [0, 0]; '3': [0, 0, 0]; '4': [0, 0, 0, 0]; '5': [0, 0, 0, 0, 0]; '6': [0, 0, 0, 0, 0, 0]; '7': [0, 0, 0, 0, 0, 0, 0]; '8': [0, 0, 0, 0, 0, 0, 0, 0]; '9': [0, 0, 0, 0, 0, 0, 0, 0, 0] };
type Ten<T extends unknown[]> = [...T, ...T, ...T, ...T, ...T, ...T, ...T, ...T, ...T, ...T];
type Times<T extends unknown[], D extends keyof DigitTuples, Acc extends unknown[] = [], I extends unknown[] = DigitTuples[D]> =
  I extends [0, ...infer R] ? Times<T, D, [...Acc, ...T], R> : Acc;
/** A natural number literal below the bound (no sign, no fraction, at most 4 digits). */
type Natural<N> = IsLiteral<N> extends true ? (`${N & number}` extends `${string}.${string}` | `-${string}` | `${string}e${string}` ? false : `${N & number}` extends `${infer _A}${infer _B}${infer _C}${infer _D}${infer _E}${infer _F}` ? (_E extends '' ? true : false) : true) : false;
/** `[0, …]` of length N (N natural, below the bound), built in one step per decimal digit. */
type TupleOf<N extends number, S extends string = `${N}`, Acc extends unknown[] = []> =
  S extends `${infer D extends keyof DigitTuples}${infer R}` ? TupleOf<N, R, [...Ten<Acc>, ...DigitTuples[D]]> : Acc;
/** T repeated N times (N natural), one step per digit of N. */
type RepeatT<T extends unknown[], S extends string, Acc extends unknown[] = []> =
  S extends `${infer D extends keyof DigitTuples}${infer R}` ? RepeatT<T, R, [...Ten<Acc>, ...Times<T, D>]> : Acc;
type Len<T extends unknown[]> = T['length'] & number;
type DigitCount<S extends string, Acc extends unknown[] = []> = S extends `${string}${infer R}` ? DigitCount<R, [...Acc, 0]> : Acc['length'];
type Lead<N extends number> = `${N}` extends `${infer L}${string}` ? L : never;
/**
 * Whether a·b is below the bound, decided from digits alone: at most 4 digits in all, or 5
 * with leading digits l, m where (l+1)(m+1) ≤ 10 (so 1152·4 = 4608 stays exact).
 */
type ProductFits<A extends number, B extends number> = [DigitCount<`${A}`>, DigitCount<`${B}`>] extends [infer DA extends number, infer DB extends number]
  ? [...TupleOf<DA>, ...TupleOf<DB>]['length'] extends 0 | 1 | 2 | 3 | 4 ? true
    : [...TupleOf<DA>, ...TupleOf<DB>]['length'] extends 5 ? (`${Lead<A>}${Lead<B>}` extends '11' | '12' | '13' | '14' | '21' | '22' | '31' | '41' ? true : false) : false
  : false;
/** Whether a + b is below the bound: both under 10³, or leading digits summing to at most 8. */
type SumFits<A extends number, B extends number> = [DigitCount<`${A}`>, DigitCount<`${B}`>] extends [1 | 2 | 3, 1 | 2 | 3] ? true
  : [DigitCount<`${A}`>, DigitCount<`${B}`>] extends [1 | 2 | 3 | 4, 1 | 2 | 3] | [1 | 2 | 3, 4] ? (Lead<A> extends '9' ? false : Lead<B> extends '9' ? false : true)
    : [DigitCount<`${A}`>, DigitCount<`${B}`>] extends [4, 4] ? (`${Lead<A>}${Lead<B>}` extends `${'1' | '2' | '3' | '4'}${'1' | '2' | '3' | '4'}` ? true : false) : false;

/** a·b: exact below the bound, `number` past it or for run-time sizes. */
export type Mul<A extends number, B extends number> =
  A extends 1 ? B : B extends 1 ? A : A extends 0 ? 0 : B extends 0 ? 0
    : [Natural<A>, Natural<B>] extends [true, true] ? (ProductFits<A, B> extends true ? Len<RepeatT<TupleOf<A>, `${B}`>> : number) : number;

/**
 * a/b: exact for natural a, b below the bound with b < 1000 (long division, one step per digit
 * of a, on tuples shorter than 10·b) when b divides a; a `ShapeError` when it does not;
 * `number` for run-time sizes.
 */
export type Div<A extends number, B extends number> =
  B extends 1 ? A : [Natural<A>, Natural<B>] extends [true, true]
    ? [A] extends [B] ? 1
      : B extends 0 ? ShapeError<`division of ${A} by 0`> : DigitCount<`${B}`> extends 1 | 2 | 3 ? LongDiv<`${A}`, TupleOf<B>, A, B> : number
      : number;
type LongDiv<Ds extends string, Bt extends unknown[], A extends number, B extends number, R extends unknown[] = [], Q extends string = ''> =
  Ds extends `${infer D extends keyof DigitTuples}${infer Rest}`
    ? FitCount<[...Ten<R>, ...DigitTuples[D]], Bt> extends [infer QD extends string, infer Rem extends unknown[]] ? LongDiv<Rest, Bt, A, B, Rem, `${Q}${QD}`> : never
    : R extends [] ? ParseNat<Q> : ShapeError<`${A} is not divisible by ${B}`>;
type FitCount<Cur extends unknown[], Bt extends unknown[], N extends unknown[] = []> = Cur extends [...Bt, ...infer Rest] ? FitCount<Rest, Bt, [...N, 0]> : [`${N['length']}`, Cur];
type ParseNat<S extends string> = S extends `0${infer R}` ? (R extends '' ? 0 : ParseNat<R>) : S extends `${infer N extends number}` ? N : never;

/** a + b, exact below the bound. */
export type Add<A extends number, B extends number> = ([Natural<A>, Natural<B>] extends [true, true] ? (SumFits<A, B> extends true ? Len<[...TupleOf<A>, ...TupleOf<B>]> : number) : number) extends infer R extends number ? R : number;

/** Product of a shape's sizes (exact while every partial product stays below the bound). */
export type Numel<S extends Shape, Acc extends number = 1> = number extends S['length'] ? number
  : S extends readonly [infer H extends number, ...infer R extends Shape] ? (Acc extends number ? (number extends Acc ? number : Numel<R, Mul<Acc, H>>) : number) : Acc;

// ---------------------------------------------------------------------------------------------
// Broadcasting (numpy: right-aligned, rank-extending; each pair equal or one of them 1).

type BroadcastDim<X, Y> =
  [X] extends [1] ? Y : [Y] extends [1] ? X
    // The more specific of the two when one contains the other (a literal or symbol over `number`).
    : [X] extends [Y] ? X : [Y] extends [X] ? Y
      : Mismatch<X, Y>;
type Mismatch<X, Y> = ShapeError<`cannot broadcast ${DimText<X>} with ${DimText<Y>}`>;
type BroadcastTuples<A extends Shape, B extends Shape, Acc extends Dim[] = []> =
  A extends readonly [...infer AR extends Shape, infer AL]
    ? B extends readonly [...infer BR extends Shape, infer BL]
      ? BroadcastDim<AL, BL> extends infer R ? (R extends ShapeError<string> ? R : BroadcastTuples<AR, BR, [R & Dim, ...Acc]>) : never
      : [...AR, AL & Dim, ...Acc]
    : [...B, ...Acc];
/** The broadcast shape of A and B, or a `ShapeError` naming the pair that does not broadcast. */
export type Broadcast<A extends Shape, B extends Shape> = number extends A['length'] | B['length'] ? Shape : BroadcastTuples<A, B>;
/** The broadcast shape, for result types (a mismatch is reported at the argument instead). */
export type BroadcastShape<A extends Shape, B extends Shape> = Broadcast<A, B> extends infer R extends Shape ? R : Shape;
/**
 * `unknown` when A and B broadcast, else the error: intersected into an argument's type, it
 * fails there. Written as a conditional without `infer` whose true branch is the error, so
 * that inside generic code (sizes still type parameters) TypeScript accepts the argument.
 */
export type BroadcastCheck<A extends Shape, B extends Shape> = Checked<Broadcast<A, B>>;
/** The error in E, or `unknown`: the form every argument check takes (see BroadcastCheck). */
export type Checked<E> = [E] extends [ShapeError<string>] ? E : unknown;

// ---------------------------------------------------------------------------------------------
// Reshape: element counts compared as (symbols, product of literals); one -1 is inferred.

type Literals<S extends Shape, Acc extends number[] = []> = S extends readonly [infer H, ...infer R extends Shape] ? (IsLiteral<H> extends true ? (H extends -1 ? Literals<R, Acc> : Literals<R, [...Acc, H & number]>) : Literals<R, Acc>) : Acc;
type Syms<S extends Shape, Acc extends string[] = []> = S extends readonly [infer H, ...infer R extends Shape] ? (IsSym<H> extends true ? Syms<R, [...Acc, SymName<H>]> : Syms<R, Acc>) : Acc;
type HasWide<S extends Shape> = true extends { [K in keyof S]: IsLiteral<S[K]> extends true ? false : IsSym<S[K]> extends true ? false : true }[number] ? true : false;
type CountNeg<S extends Shape, Acc extends unknown[] = []> = S extends readonly [infer H, ...infer R extends Shape] ? CountNeg<R, [H] extends [-1] ? [...Acc, 0] : Acc> : Len<Acc>;
/** Removes one occurrence of each of Ys from Xs; `false` when some Y is not in Xs. */
type RemoveAll<Xs extends string[], Ys extends string[]> = Ys extends [infer Y extends string, ...infer YR extends string[]] ? (RemoveOne<Xs, Y> extends infer Z extends string[] ? RemoveAll<Z, YR> : false) : Xs;
type RemoveOne<Xs extends string[], Y extends string, Pre extends string[] = []> = Xs extends [infer X extends string, ...infer XR extends string[]] ? (X extends Y ? [...Pre, ...XR] : RemoveOne<XR, Y, [...Pre, X]>) : false;
type LitProduct<S extends Shape> = Numel<Literals<S>>;

/** What a reshape of S to T gives (T with its -1 resolved), or a `ShapeError`. */
export type Reshaped<S extends Shape, T extends Shape> =
  number extends S['length'] | T['length'] ? T
    : CountNeg<T> extends 0 ? ReshapeCount<S, T>
      : CountNeg<T> extends 1 ? { -readonly [K in keyof T]: [T[K]] extends [-1] ? Inferred<S, T> : T[K] }
        : ShapeError<'reshape: at most one -1'>;
type ReshapeCount<S extends Shape, T extends Shape> =
  true extends HasWide<S> | HasWide<T> ? T
    : RemoveAll<Syms<S>, Syms<T>> extends [] ? (RemoveAll<Syms<T>, Syms<S>> extends [] ? SameCount<S, T> : CountError<S, T>) : CountError<S, T>;
type SameCount<S extends Shape, T extends Shape> = number extends LitProduct<S> | LitProduct<T> ? T : LitProduct<S> extends LitProduct<T> ? T : CountError<S, T>;
type CountError<S extends Shape, T extends Shape> = ShapeError<`reshape changes the element count: ${ShapeText<S>} to ${ShapeText<T>}`>;
/** The -1 of T: the literal quotient when the symbols match, the one symbol left over, else `number`. */
type Inferred<S extends Shape, T extends Shape> =
  true extends HasWide<S> | HasWide<T> ? number
    : RemoveAll<Syms<S>, Syms<T>> extends infer Left
      ? Left extends [] ? (Div<LitProduct<S>, LitProduct<T>> extends infer Q ? (Q extends ShapeError<string> ? CountError<S, T> : Q) : never)
        : Left extends [infer One extends string] ? (Div<LitProduct<S>, LitProduct<T>> extends 1 ? Sym<One> : number)
          : Left extends false ? CountError<S, T> : number
      : never;
type ShapeText<S extends Shape> = `[${JoinDims<S>}]`;
type JoinDims<S extends Shape> = S extends readonly [infer H] ? DimText<H> : S extends readonly [infer H, ...infer R extends Shape] ? `${DimText<H>}, ${JoinDims<R>}` : '';
/** `unknown` when the reshape is valid, else its error. */
export type ReshapeCheck<S extends Shape, T extends Shape> = Checked<ReshapeError<S, T>>;
type ReshapeError<S extends Shape, T extends Shape> = number extends S['length'] | T['length'] ? 'ok' : ErrorOf<Reshaped<S, T>>;
type ErrorOf<R> = R extends ShapeError<string> ? R : R extends readonly unknown[] ? OkIfNone<Extract<R[number], ShapeError<string>>> : 'ok';
type OkIfNone<E> = [E] extends [never] ? 'ok' : E;

// ---------------------------------------------------------------------------------------------
// Axis manipulations.

type Indices<S extends Shape> = { [K in keyof S]: K extends `${infer I extends number}` ? I : never }[number];
/** Output axis i is input axis P[i]; P must be a permutation of S's axes. */
export type Permute<S extends Shape, P extends readonly number[]> = { -readonly [K in keyof P]: S[P[K] & number] };
export type PermCheck<S extends Shape, P extends readonly number[]> = Checked<PermError<S, P>>;
type PermError<S extends Shape, P extends readonly number[]> =
  number extends S['length'] | P['length'] ? 'ok'
    : P['length'] extends S['length'] ? PermCovers<Indices<S>, P[number], P, S['length']>
      : ShapeError<`transpose: ${ShapeText<P>} has ${P['length']} axes, the tensor ${S['length'] & number}`>;
type PermCovers<I, U, P extends readonly number[], R> = [I] extends [U] ? ([U] extends [I] ? 'ok' : NotAxes<P, R>) : NotAxes<P, R>;
type NotAxes<P extends readonly number[], R> = ShapeError<`transpose: ${ShapeText<P>} is not a permutation of the ${R & number} axes`>;

type Take<S extends Shape, N extends number, Acc extends Dim[] = []> = Acc['length'] extends N ? Acc : S extends readonly [infer H extends Dim, ...infer R extends Shape] ? Take<R, N, [...Acc, H]> : Acc;
type Drop<S extends Shape, N extends number, I extends unknown[] = []> = I['length'] extends N ? S : S extends readonly [Dim, ...infer R extends Shape] ? Drop<R, N, [...I, 0]> : [];
/** Axis A counted from the end when negative (-1 = the last; for insertion, -1 = after the last). */
type Axis<S extends Shape, A extends number, Insert extends boolean = false> = `${A}` extends `-${infer K extends number}` ? (Insert extends true ? (K extends 1 ? S['length'] : SubFrom<[...S, 0], K>) : SubFrom<S, K>) : A;
type SubFrom<S extends readonly unknown[], K extends number> = TupleOf<S['length']> extends [...infer Pre, ...TupleOf<K>] ? Pre['length'] : never;

/** S with a size-1 axis inserted at A. */
export type ExpandDims<S extends Shape, A extends number> = number extends S['length'] | A ? Shape : Axis<S, A, true> extends infer I extends number ? [...Take<S, I>, 1, ...Drop<S, I>] : Shape;
/** S without its size-1 axis A (an error when that axis is not 1). */
export type Squeeze<S extends Shape, A extends number> = number extends S['length'] | A ? Shape
  : Axis<S, A> extends infer I extends number ? ([S[I]] extends [1] ? [...Take<S, I>, ...Drop<S, Add<I, 1>>] : ShapeError<`squeeze: axis ${A} of ${ShapeText<S>} is not 1`>) : Shape;
/** S with axis A replaced by N. */
export type WithAxis<S extends Shape, A extends number, N extends Dim> = number extends S['length'] | A ? Shape : Axis<S, A> extends infer I extends number ? [...Take<S, I>, N, ...Drop<S, Add<I, 1>>] : Shape;
/** Σ of the dims at axis A of each shape. */
export type SumAxis<Ss extends readonly Shape[], A extends number, Acc extends number = 0> = Ss extends readonly [infer H extends Shape, ...infer R extends readonly Shape[]] ? SumAxis<R, A, Add<Acc, H[Axis<H, A> & number] & number>> : Acc;
/** Every shape equal to the first except at axis A. */
export type ConcatCheck<Ss extends readonly Shape[], A extends number> = Checked<ConcatError<Ss, A>>;
type ConcatError<Ss extends readonly Shape[], A extends number> = number extends Ss['length'] | A ? 'ok'
  : Ss extends readonly [infer F extends Shape, ...infer R extends readonly Shape[]] ? OkIfNone<{ [K in keyof R]: SameExcept<F, R[K], Axis<F, A> & number> }[number]> : 'ok';
// `never` where the shapes agree, so a tuple of results collapses to its errors.
type SameExcept<F extends Shape, G, I extends number> = G extends Shape
  ? (number extends F['length'] | G['length'] ? never : G['length'] extends F['length'] ? { [K in keyof F]: K extends `${I}` ? never : EqDim<F[K], G[K & keyof G]> }[number] : ShapeError<`concat: ranks ${F['length'] & number} and ${G['length'] & number} differ`>)
  : never;
type EqDim<X, Y> = [X] extends [Y] ? ([Y] extends [X] ? never : Loose<X, Y>) : Loose<X, Y>;
type Loose<X, Y> = (IsLiteral<X> | IsSym<X>) extends false ? never : (IsLiteral<Y> | IsSym<Y>) extends false ? never : ShapeError<`concat: sizes ${DimText<X>} and ${DimText<Y>} differ`>;
