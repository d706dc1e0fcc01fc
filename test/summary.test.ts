import { test } from 'node:test';
import assert from 'node:assert/strict';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { summary, formatSummary } from '../compile/summary.ts';

const sum = (name: string, over = {}) => summary(buildModel(namedConfig(name, over)), { name });

// Figures of MDT-SPEC §5 (DiT's numbers are the official ones).
test('parameter counts match the spec for every size', () => {
  const cases: Array<[string, object, number, number]> = [
    ['DiT-S/2', {}, 32_963_360, 32_963_360],
    ['DiT-B/2', {}, 130_512_416, 130_512_416],
    ['DiT-L/2', {}, 458_102_816, 458_102_816],
    ['DiT-XL/2', {}, 675_129_632, 675_129_632],
    ['MDT-S/2', {}, 35_797_208, 33_131_072],
    ['MDT-B/2', {}, 141_488_528, 130_847_840],
    ['MDT-L/2', {}, 477_641_312, 458_735_136],
    ['MDT-XL/2', {}, 699_778_144, 675_856_416],
    ['MDTv2-S/2', { decodeLayer: 6 }, 38_454_872, 35_788_736],
    ['MDTv2-S/2', { decodeLayer: 4 }, 38_159_576, 35_493_440],
    ['MDTv2-B/2', { decodeLayer: 4 }, 150_931_856, 140_291_168],
    ['MDTv2-L/2', { decodeLayer: 4 }, 507_015_776, 488_109_600],
    ['MDTv2-XL/2', { decodeLayer: 4 }, 742_263_904, 718_342_176],
  ];
  for (const [name, over, total, used] of cases) {
    const s = sum(name, over);
    assert.equal(s.totalParams, total, `${name} ${JSON.stringify(over)} total`);
    assert.equal(s.inferenceParams, used, `${name} ${JSON.stringify(over)} used at inference`);
  }
});

test('forward GMACs match the spec', () => {
  const g = (v: number) => Number((v / 1e9).toFixed(2));
  assert.equal(g(sum('DiT-S/2').macs), 6.06);
  assert.equal(g(sum('DiT-B/2').macs), 23.01);
  assert.equal(g(sum('DiT-XL/2').macs), 118.62);
  assert.equal(g(sum('MDT-S/2').macs), 6.06);
  assert.equal(g(sum('MDT-S/2').maskedMacs), 4.94);
  assert.equal(g(sum('MDT-XL/2').maskedMacs), 88.97);
  assert.equal(g(sum('MDTv2-S/2', { decodeLayer: 6 }).macs), 6.74);
  assert.equal(g(sum('MDTv2-XL/2', { decodeLayer: 4 }).macs), 129.49);
  const v2 = buildModel(namedConfig('MDTv2-XL/2', { decodeLayer: 4 }));
  assert.deepEqual([179, 153, 128].map((k) => g(summary(v2, { lenKeep: k }).maskedMacs)), [99.99, 88.75, 78.01]);
});

test('the table names modules and marks train-only ones', () => {
  const text = formatSummary(sum('MDT-S/2'));
  assert.match(text, /sideblocks\.0 \(train only\)/);
  assert.match(text, /blocks\.11/);
  assert.match(text, /35,797,208/);
});
