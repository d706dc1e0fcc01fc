/** Type-level tests: each `@ts-expect-error` must be an error, each `Equal` must hold (checked by tsc). */
import type { Tensor } from '../dsl/tensor.ts';
import type { Mul, Numel, Sym } from '../dsl/shape.ts';
import { sym } from '../dsl/shape.ts';
import { concatLast, linear, matmul, patchify, reshape, unpatchify, add } from '../dsl/ops.ts';
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

// Broadcast: equal dims or 1.
const s = add(x, t(b, 1, 64));
assertType<Equal<typeof s, Tensor<[B, 16, 64]>>>();

// Reshape: element count checked for literal shapes.
const r = reshape(t(2, 16, 64), [2, 4, 4, 64]);
assertType<Equal<typeof r, Tensor<readonly [2, 4, 4, 64]>>>();
// @ts-expect-error 2·16·64 ≠ 2·4·4·63
reshape(t(2, 16, 64), [2, 4, 4, 63]);
// symbolic shapes fall back to the run-time check
reshape(x, [b, 4, 4, 64]);

// Products, not quotients.
assertType<Equal<Mul<16, 16>, 256>>();
assertType<Equal<Numel<[2, 16, 64]>, 2048>>();
assertType<Equal<Mul<384, 1152>, number>>(); // too large for tuple arithmetic: checked at build time
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
