/**
 * Type-level tests of the shipped models (checked by tsc): a named config's sizes flow into
 * every block's type, and sizes that do not fit are compile errors at the argument.
 */
import type { Tensor } from '../dsl/tensor.ts';
import type { Sym } from '../dsl/shape.ts';
import { sym } from '../dsl/shape.ts';
import { named, seq } from '../dsl/layer.ts';
import { namedConfig, type TokensOf } from '../mdt/config.ts';
import { mdtV1 } from '../mdt/mdt-v1.ts';
import { mdtV2 } from '../mdt/mdt-v2.ts';
import { dit } from '../mdt/dit.ts';
import { adaLNBlock } from '../layers/adaln-block.ts';
import { linear } from '../layers/linear.ts';
import { gelu } from '../layers/activations.ts';

type Equal<X, Y> = (<T>() => T extends X ? 1 : 2) extends <T>() => T extends Y ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | void {}
type B = Sym<'B'>;
type L = Sym<'L'>;
type InOf<T extends { apply: (...args: never[]) => unknown }> = Parameters<T['apply']>[1];

// MDT-S/2: 32/2 = 16, 16² = 256 tokens of width 384; MLP 384·4 = 1536; the masked encoder runs on L.
const s2 = namedConfig('MDT-S/2');
assertType<Equal<typeof s2.hiddenSize, 384>>();
assertType<Equal<TokensOf<typeof s2>, 256>>();
const mdtS2 = mdtV1(s2);
assertType<Equal<InOf<(typeof mdtS2.blocks)[number]>, Tensor<readonly [B, 256, 384]>>>();
assertType<Equal<(typeof mdtS2.blocks)[number]['outShape'], readonly [B, 256, 384]>>();
assertType<Equal<(typeof mdtS2.blocks)[number]['mlpHidden'], readonly [B, 256, 1536]>>();
assertType<Equal<InOf<(typeof mdtS2.maskedEncoder)[number]>, Tensor<readonly [B, L, 384]>>>();
assertType<Equal<(typeof mdtS2.maskedEncoder)[number]['mlpHidden'], readonly [B, L, 1536]>>();

// XL/2: 1152 wide, MLP 4608 (still exact: below the 10⁴ bound).
const xl = mdtV1(namedConfig('MDT-XL/2'));
assertType<Equal<InOf<(typeof xl.blocks)[number]>, Tensor<readonly [B, 256, 1152]>>>();
assertType<Equal<(typeof xl.blocks)[number]['mlpHidden'], readonly [B, 256, 4608]>>();

// MDTv2-S/2: the encoder halves on L, the decoder on all 256 tokens.
const v2 = mdtV2(namedConfig('MDTv2-S/2'));
assertType<Equal<InOf<(typeof v2.enIn)[number]>, Tensor<readonly [B, L, 384]>>>();
assertType<Equal<InOf<(typeof v2.enOut)[number]>, Tensor<readonly [B, L, 384]>>>();
assertType<Equal<InOf<(typeof v2.de)[number]>, Tensor<readonly [B, 256, 384]>>>();

// DiT-B/4: 32/4 = 8, 64 tokens of 768; a custom size from literal overrides.
const ditB4 = dit(namedConfig('DiT-B/4'));
assertType<Equal<InOf<(typeof ditB4.blocks)[number]>, Tensor<readonly [B, 64, 768]>>>();
const small = mdtV1(namedConfig('MDT-S/2', { hiddenSize: 64, numHeads: 4, inputSize: 16, mlpRatio: 2 }));
assertType<Equal<(typeof small.blocks)[number]['mlpHidden'], readonly [B, 64, 128]>>();

// A config read at run time keeps `number` widths and type-checks as before.
const runtime = mdtV1(namedConfig(String('MDT-S/2')));
assertType<Equal<InOf<(typeof runtime.blocks)[number]>, Tensor<readonly [B, number, number]>>>();

// Failures, each reported at the argument that does not fit.
// @ts-expect-error hiddenSize 383 is not divisible by numHeads 6
mdtV1(namedConfig('MDT-S/2', { hiddenSize: 383 }));
// @ts-expect-error inputSize 33 is not a multiple of patchSize 2
dit(namedConfig('DiT-S/2', { inputSize: 33 }));
const b = sym('B');
// @ts-expect-error a 383-wide block cannot have 6 heads (error on `heads`)
adaLNBlock(b, 256, 383, { heads: 6, mlpRatio: 4, grid: 16, skip: false });
adaLNBlock(b, 256, 384, { heads: 6, mlpRatio: 4, grid: 16, skip: false });
// An MLP whose widths do not chain: fc2 takes 1535 but GELU gives 1536 (error on the fc2 argument).
// @ts-expect-error Type '1536' is not assignable to type '1535'
seq(named('fc1', linear([b, 256] as const, 384, 1536)), gelu([b, 256, 1536] as const), named('fc2', linear([b, 256] as const, 1535, 384)));
