import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { configFromJson, type ModelConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { AmbiguousConfigError, configFromKeys } from '../mdt/config-from-keys.ts';
import { openSafetensors } from '../formats/safetensors.ts';

const FIXTURES = '/work/shared/fixtures';
const MANIFEST = '/work/shared/docs/state_dict_S2.json';

async function fixtureShapes(name: string): Promise<Map<string, number[]>> {
  const f = await openSafetensors(join(FIXTURES, name, 'weights.safetensors'));
  try {
    return new Map([...f.entries].map(([k, e]) => [k, e.shape]));
  } finally {
    await f.close();
  }
}

/** Everything but the two fields no state dict holds (dropout rate, mask ratio). */
const structural = (c: ModelConfig) => ({ ...c, classDropoutProb: undefined, maskRatio: undefined });

for (const name of ['dit-tiny', 'mdt-v1-tiny', 'mdt-v2-tiny']) {
  test(`${name}: the inferred config is the fixture's config.json`, async () => {
    const truth = configFromJson(JSON.parse(readFileSync(join(FIXTURES, name, 'config.json'), 'utf8')) as Record<string, unknown>);
    // The tiny DiT's 64-wide blocks have no conventional head count: it must be stated.
    const given = truth.variant === 'dit' ? { numHeads: truth.numHeads } : {};
    const { config, notes } = configFromKeys(await fixtureShapes(name), given);
    assert.deepEqual(structural(config), structural(truth));
    if (truth.variant === 'mdt-v1') assert.ok(notes.some((n) => /decode layer: 2.*--decode-layer/.test(n)), notes.join('\n'));
  });
}

test('dit-tiny without --num-heads is ambiguous and names the keys and the flag', async () => {
  const shapes = await fixtureShapes('dit-tiny');
  assert.throws(() => configFromKeys(shapes), (e: unknown) => {
    assert.ok(e instanceof AmbiguousConfigError);
    assert.deepEqual(e.flags, ['--num-heads']);
    assert.match(e.message, /blocks\.\*\.attn\.qkv\.weight \[192, 64\]/);
    assert.match(e.message, /--num-heads/);
    return true;
  });
});

test('the S/2 key manifests give MDT-S/2 (v1, dl 2) and MDTv2-S/2 (dl 6 and 4)', () => {
  const manifest = JSON.parse(readFileSync(MANIFEST, 'utf8')) as Record<string, { key: string; shape: number[] }[]>;
  const expected: Record<string, Partial<ModelConfig>> = {
    MDT_S_2_v1_dec2: { variant: 'mdt-v1', decodeLayer: 2 },
    MDTv2_S_2_dec6: { variant: 'mdt-v2', decodeLayer: 6 },
    MDTv2_S_2_dec4: { variant: 'mdt-v2', decodeLayer: 4 },
  };
  assert.deepEqual(Object.keys(manifest).sort(), Object.keys(expected).sort());
  for (const [name, entries] of Object.entries(manifest)) {
    const { config } = configFromKeys(new Map(entries.map((e) => [e.key, e.shape])));
    assert.deepEqual(
      { ...config },
      { variant: expected[name]!.variant, inputSize: 32, inChannels: 4, patchSize: 2, depth: 12, hiddenSize: 384, numHeads: 6, mlpRatio: 4, numClasses: 1000, classDropoutProb: 0.1, learnSigma: true, decodeLayer: expected[name]!.decodeLayer, maskRatio: 0.3 },
      name,
    );
  }
});

test('a flag that contradicts the keys is an error naming both', async () => {
  const shapes = await fixtureShapes('mdt-v2-tiny');
  assert.throws(() => configFromKeys(shapes, { decodeLayer: 3 }), /--decode-layer 3 but the checkpoint has 2 \(the number of de_blocks\)/);
  assert.throws(() => configFromKeys(shapes, { numHeads: 8 }), /--num-heads 8 but the checkpoint has 4/);
  // depth − dl odd loses a block: depth 7 builds the same MDTv2 as depth 6.
  assert.equal(configFromKeys(shapes, { depth: 7 }).config.depth, 7);
  assert.throws(() => configFromKeys(shapes, { depth: 8 }), /--depth 8/);
});

test('a v1 too shallow for the default decode layer says which flag fixes it', async () => {
  const shapes = new Map([...(await fixtureShapes('mdt-v1-tiny'))].filter(([k]) => !/^blocks\.[23]\./.test(k)));
  assert.throws(() => configFromKeys(shapes), (e: unknown) => {
    assert.ok(e instanceof AmbiguousConfigError);
    assert.deepEqual(e.flags, ['--decode-layer']);
    assert.match(e.message, /decodeLayer 2 must be in \[1, depth − 1 = 1\].*--decode-layer/);
    return true;
  });
  assert.equal(configFromKeys(shapes, { decodeLayer: 1 }).config.decodeLayer, 1);
});

test('property: the keys of any built model give back its config', () => {
  const arbConfig = fc
    .record({
      variant: fc.constantFrom('dit', 'mdt-v1', 'mdt-v2') as fc.Arbitrary<ModelConfig['variant']>,
      grid: fc.integer({ min: 1, max: 6 }),
      patchSize: fc.integer({ min: 1, max: 4 }),
      inChannels: fc.integer({ min: 1, max: 4 }),
      headDim: fc.constantFrom(4, 8),
      numHeads: fc.integer({ min: 1, max: 4 }),
      encoder: fc.integer({ min: 1, max: 4 }),
      decodeLayer: fc.integer({ min: 1, max: 3 }),
      mlpRatio: fc.constantFrom(2, 4),
      numClasses: fc.integer({ min: 1, max: 12 }),
      learnSigma: fc.boolean(),
    })
    .map((r): ModelConfig => ({
      variant: r.variant,
      inputSize: r.grid * r.patchSize,
      inChannels: r.inChannels,
      patchSize: r.patchSize,
      depth: r.variant === 'mdt-v2' ? 2 * r.encoder + r.decodeLayer : r.encoder + r.decodeLayer,
      hiddenSize: r.headDim * r.numHeads,
      numHeads: r.numHeads,
      mlpRatio: r.mlpRatio,
      numClasses: r.numClasses,
      classDropoutProb: 0.1,
      learnSigma: r.learnSigma,
      decodeLayer: r.variant === 'dit' ? 0 : r.decodeLayer,
      maskRatio: r.variant === 'dit' ? 0 : 0.3,
    }));
  fc.assert(
    fc.property(arbConfig, (c) => {
      const shapes = new Map(Object.entries(buildModel(c).params).filter(([, p]) => p.persistent).map(([k, p]) => [k, p.shape]));
      const given = c.variant === 'dit' ? { numHeads: c.numHeads } : c.variant === 'mdt-v1' ? { decodeLayer: c.decodeLayer } : {};
      assert.deepEqual(configFromKeys(shapes, given).config, c);
    }),
    { numRuns: 150 },
  );
});
