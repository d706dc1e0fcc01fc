/** Type-level tests: each `@ts-expect-error` must be an error, each `Equal` must hold (checked by tsc). */
import type { Tensor } from '../dsl/tensor.ts';
import type { Div, Mul, Numel, Sym } from '../dsl/shape.ts';
import { sym } from '../dsl/shape.ts';
import { concat, concatLast, expandDims, linear, matmul, mul, patchify, reshape, split, squeeze, transpose, unpatchify, add } from '../dsl/ops.ts';
import { layer, seq } from '../dsl/layer.ts';

type Equal<X, Y> = (<T>() => T extends X ? 1 : 2) extends <T>() => T extends Y ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | void {}
declare function t<const S extends readonly number[]>(...s: S): Tensor<S>;

type B = Sym<'B'>;
const b = sym('B');
const l = sym('L');

// Matmul: inner dims must agree; the error is on the weight.
const x = t(b, 16, 64);
const y = matmul(x, t(64, 32));
assertType<Equal<typeof y, Tensor<readonly [B, 16, 32]>>>();
// @ts-expect-error inner dim 63 is not 64
matmul(x, t(63, 32));

// nn.Linear layout (out, in): the weight's in-dim must match x's last dim, bias must match out.
const z = linear(x, t(128, 64), t(128));
assertType<Equal<typeof z, Tensor<readonly [B, 16, 128]>>>();
// @ts-expect-error weight is (out=128, in=65) but x has 64 features
linear(x, t(128, 65));
// @ts-expect-error bias 127 does not match out 128
linear(x, t(128, 64), t(127));

// Two different symbols never unify.
const xl = t(l, 16, 64);
// @ts-expect-error L is not B
const bad: Tensor<readonly [B, 16, 64]> = xl;
// @ts-expect-error a literal is not a symbol
const bad2: Tensor<readonly [B, 16, 64]> = t(2, 16, 64);
void bad; void bad2;

// Broadcast, numpy's rules: right-aligned, rank-extending; a mismatch is an error at the call.
const s = add(x, t(b, 1, 64));
assertType<Equal<typeof s, Tensor<[B, 16, 64]>>>();
const biased = add(t(b, l, 384), t(384));
assertType<Equal<typeof biased, Tensor<[B, Sym<'L'>, 384]>>>();
const outer = mul(t(16, 1), t(b, 1, 8));
assertType<Equal<typeof outer, Tensor<[B, 16, 8]>>>();
// @ts-expect-error B and N are different symbols ("cannot broadcast B with N")
add(t(b, 64, 96), t(sym('N'), 64, 96));
// @ts-expect-error 96 and 95 do not broadcast
add(t(b, 64, 96), t(b, 64, 95));
// @ts-expect-error a bias of the wrong width
add(t(b, l, 384), t(383));

// Reshape: element count checked for literal shapes.
const r = reshape(t(2, 16, 64), [2, 4, 4, 64]);
assertType<Equal<typeof r, Tensor<readonly [2, 4, 4, 64]>>>();
// @ts-expect-error 2·16·64 ≠ 2·4·4·63
reshape(t(2, 16, 64), [2, 4, 4, 63]);
// Symbols count as factors: [B, 16, 64] → [B, 1024] is fine, [B, 1023] is not; -1 is inferred.
const flat = reshape(x, [b, 1024]);
assertType<Equal<typeof flat, Tensor<readonly [B, 1024]>>>();
const inferred = reshape(x, [-1, 1024]);
assertType<Equal<typeof inferred, Tensor<[B, 1024]>>>();
const rows = reshape(t(2, 16, 64), [-1, 64]);
assertType<Equal<typeof rows, Tensor<[32, 64]>>>();
// @ts-expect-error 16·64 = 1024 elements per B, not 1023
reshape(x, [b, 1023]);
// @ts-expect-error two -1s
reshape(x, [-1, -1]);
reshape(x, [b, 4, 4, 64]);

// Axis ops.
const tr = transpose(x, [0, 2, 1]);
assertType<Equal<typeof tr, Tensor<[B, 64, 16]>>>();
// @ts-expect-error axis 5 of a rank-3 tensor
transpose(x, [0, 2, 5]);
// @ts-expect-error not a permutation
transpose(x, [0, 1, 1]);
const ex = expandDims(t(b, 384), 1);
assertType<Equal<typeof ex, Tensor<[B, 1, 384]>>>();
const sq = squeeze(ex, 1);
assertType<Equal<typeof sq, Tensor<[B, 384]>>>();
// @ts-expect-error axis 1 of [B, 16, 64] is 16, not 1
squeeze(x, 1);
const joined = concat([t(b, 16, 3), t(b, 16, 5)], -1);
assertType<Equal<typeof joined, Tensor<[B, 16, 8]>>>();
// @ts-expect-error the other dims must agree (16 vs 15)
concat([t(b, 16, 3), t(b, 15, 5)], 2);
const [qa, ka] = split(t(b, 16, 96), [64, 32], 2);
assertType<Equal<typeof qa, Tensor<[B, 16, 64]>>>();
assertType<Equal<typeof ka, Tensor<[B, 16, 32]>>>();

// Products, not quotients.
assertType<Equal<Mul<16, 16>, 256>>();
assertType<Equal<Numel<[2, 16, 64]>, 2048>>();
assertType<Equal<Mul<384, 1152>, number>>(); // past the 10⁴ bound: checked at build time
assertType<Equal<Mul<1152, 4>, 4608>>(); // XL's MLP width
assertType<Equal<Mul<2, 384>, 768>>();
assertType<Equal<Div<384, 6>, 64>>();
assertType<Equal<Div<1152, 16>, 72>>();
assertType<Equal<Div<Sym<'B'>, 2>, number>>();
const p = patchify(t(b, 4, 8, 8), 4, 2);
assertType<Equal<typeof p, Tensor<readonly [B, 16, 16]>>>();
// @ts-expect-error an 8×8 latent is not a 3×2 grid of 2×2 patches
patchify(t(b, 4, 8, 8), 3, 2);
const u = unpatchify(t(b, 16, 32), 4, 2, 8);
assertType<Equal<typeof u, Tensor<readonly [B, 8, 8, 8]>>>();
const cat = concatLast(x, t(b, 16, 64));
assertType<Equal<typeof cat, Tensor<readonly [B, 16, 128]>>>();

// Composition: the error lands on the layer that does not fit.
const l1 = layer([b, 64], [b, 128], {}, (_p, v: Tensor<readonly [B, 64]>) => linear(v, t(128, 64)));
const l2 = layer([b, 128], [b, 10], {}, (_p, v: Tensor<readonly [B, 128]>) => linear(v, t(10, 128)));
const l3 = layer([b, 127], [b, 10], {}, (_p, v: Tensor<readonly [B, 127]>) => linear(v, t(10, 127)));
const net = seq(l1, l2);
assertType<Equal<typeof net.inShape, readonly [B, 64]>>();
assertType<Equal<typeof net.outShape, readonly [B, 10]>>();
// @ts-expect-error l3 takes [B, 127] but l1 returns [B, 128]
seq(l1, l3);
// @ts-expect-error concat needs equal leading dims (16 vs 15)
concatLast(x, t(b, 15, 64));
// @ts-expect-error 2·16·64 is not a multiple of 60
reshape(t(2, 16, 64), [-1, 60]);
