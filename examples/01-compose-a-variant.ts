/**
 * Notebook 01 — compose a variant in code, print its summary, and see what the compiler says
 * about a wrong shape.   npx tsx examples/01-compose-a-variant.ts
 */
import { noMoreArgs } from './notebook.ts';
import { formatShape, ShapeCheckError, sym, type Sym } from '../dsl/shape.ts';
import { named, residual, seq } from '../dsl/layer.ts';
import { linear } from '../layers/linear.ts';
import { gelu } from '../layers/activations.ts';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { mdtV1 } from '../mdt/mdt-v1.ts';
import { formatSummary, summary } from '../compile/summary.ts';

noMoreArgs(0, '');

// 1. Variants of the paper's model are configs: a deeper decoder, a higher mask ratio, one more block.
const base = namedConfig('MDT-S/2');
const variants = {
  'MDT-S/2 (paper: dl=2, r=0.3)': base,
  'MDT-S/2, decoder depth 4': namedConfig('MDT-S/2', { decodeLayer: 4 }),
  'MDT-S/2, mask ratio 0.5': namedConfig('MDT-S/2', { maskRatio: 0.5 }),
  'MDT-S/2, one more encoder block': namedConfig('MDT-S/2', { depth: base.depth + 1 }),
};
for (const [name, config] of Object.entries(variants)) {
  const s = summary(buildModel(config), { name });
  console.log(`${name.padEnd(34)} ${s.totalParams.toLocaleString('en-US').padStart(12)} params, ${(s.macs / 1e9).toFixed(2)} GMAC inference, ${(s.maskedMacs / 1e9).toFixed(2)} GMAC masked (keep ${s.lenKeep})`);
}
console.log();
console.log(formatSummary(summary(buildModel(namedConfig('MDT-S/2', { decodeLayer: 4 })), { name: 'MDT-S/2, decoder depth 4' })));

// 2. New layers compose from typed pieces; parameter paths come from the composition.
const B = sym('B');
const head = residual(seq(named('fc1', linear([B, 256] as const, 384, 1536)), gelu([B, 256, 1536] as const), named('fc2', linear([B, 256] as const, 1536, 384))));
console.log('\nA residual MLP block declares:', Object.entries(head.params).map(([k, v]) => `${k} [${v.shape.join(', ')}]`).join(', '));

// 3. A wrong shape is a compile error at the layer that does not fit, and (for code that got
// past the types with a cast) the same composition is refused when built:
try {
  // @ts-expect-error — "Type '383' is not assignable to type '384'": fc2 returns [B, 256, 384], the next layer takes 383.
  seq(named('fc2', linear([B, 256] as const, 1536, 384)), named('out', linear([B, 256] as const, 383, 10)));
  throw new Error('seq accepted layers whose shapes do not chain');
} catch (e) {
  if (!(e instanceof ShapeCheckError)) throw e;
  console.log(`\nThe wrong composition, built anyway: ${e.message}`);
}

// 4. A named config's sizes are in the types: MDT-S/2's blocks take [B, 256, 384] (16×16 tokens of
// width 384), their MLP is 384·4 = 1536 wide, and the masked encoder runs on the L kept tokens.
const typed = mdtV1(namedConfig('MDT-S/2'));
const blockIn: readonly [Sym<'B'>, 256, 384] = typed.blocks[0]!.inShape;
console.log(`\nMDT-S/2 in types: block input ${formatShape(blockIn)}, MLP hidden ${formatShape(typed.blocks[0]!.mlpHidden)}, masked encoder input ${formatShape(typed.maskedEncoder[0]!.inShape)}`);
try {
  // @ts-expect-error — a width of 383 is not divisible by 6 heads: the error is on the config argument.
  mdtV1(namedConfig('MDT-S/2', { hiddenSize: 383 }));
  throw new Error('a config whose width the heads do not divide was accepted');
} catch (e) {
  if (!(e instanceof Error) || !/not divisible by numHeads/.test(e.message)) throw e;
  console.log(`The same config, built anyway: ${e.message}`);
}
