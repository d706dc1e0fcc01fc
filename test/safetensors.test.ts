import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { openSafetensors, readSafetensors, writeSafetensors } from '../formats/safetensors.ts';
import type { StTensor } from '../formats/safetensors.ts';
import { withAtomicFile, writeFileAtomic } from '../formats/atomic-write.ts';

const FIXTURES = new URL('../../shared/fixtures/', import.meta.url).pathname;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'st-test-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A safetensors file from a header (object or raw text) and data bytes; `headerLen` overrides the prefix. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), headerLen?: bigint): Buffer {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLen ?? BigInt(text.byteLength));
  return Buffer.concat([len, text, data]);
}

const f32 = (shape: number[], begin: number) => ({ dtype: 'F32', shape, data_offsets: [begin, begin + 4 * shape.reduce((a, b) => a * b, 1)] });

const tensorArb: fc.Arbitrary<StTensor> = fc
  .tuple(fc.constantFrom('F32', 'F64', 'I64', 'I32' as const), fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }))
  .chain(([dtype, shape]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data: fc.Arbitrary<StTensor['data']> =
      dtype === 'F32' ? fc.float32Array({ minLength: n, maxLength: n }) :
      dtype === 'F64' ? fc.float64Array({ minLength: n, maxLength: n }) :
      dtype === 'I64' ? fc.bigInt64Array({ minLength: n, maxLength: n }) :
      fc.int32Array({ minLength: n, maxLength: n });
    return data.map((d): StTensor => ({ dtype, shape, data: d }));
  });

function assertSameBits(a: StTensor, b: StTensor, name: string): void {
  assert.equal(a.dtype, b.dtype, name);
  assert.deepEqual([...a.shape], [...b.shape], name);
  assert.equal(a.data.constructor, b.data.constructor, name);
  assert.deepEqual(
    Buffer.from(a.data.buffer, a.data.byteOffset, a.data.byteLength),
    Buffer.from(b.data.buffer, b.data.byteOffset, b.data.byteLength),
    name,
  );
}

test('round trip keeps names, dtypes, shapes, bits and metadata; layout is aligned and padded', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'rt.safetensors');
    await fc.assert(
      fc.asyncProperty(fc.dictionary(fc.string({ minLength: 1, maxLength: 8 }).filter((k) => k !== '__metadata__'), tensorArb, { maxKeys: 6 }), async (tensors) => {
        await writeSafetensors(path, tensors, { format: 'pt', note: 'ünïcode' });
        const bytes = await readFile(path);
        const n = Number(bytes.readBigUInt64LE(0));
        assert.equal((8 + n) % 8, 0);
        assert.match(bytes.subarray(8, 8 + n).toString('utf8'), /^\{.*\} *$/s);
        const file = await openSafetensors(path);
        try {
          assert.deepEqual(file.metadata, { format: 'pt', note: 'ünïcode' });
          assert.deepEqual(new Set(file.entries.keys()), new Set(Object.keys(tensors)));
          let sawFourByte = false;
          for (const e of [...file.entries.values()].sort((a, b) => a.begin - b.begin)) {
            const size = e.dtype === 'F64' || e.dtype === 'I64' ? 8 : 4;
            assert.equal((8 + n + e.begin) % size, 0, 'tensor start aligned to its item size');
            if (size === 4) sawFourByte = true;
            else assert.ok(!sawFourByte || e.begin === e.end, '8-byte dtypes come first');
          }
          for (const [name, t] of Object.entries(tensors)) assertSameBits(await file.read(name), t, name);
        } finally {
          await file.close();
        }
      }),
      { numRuns: 40 },
    );
    assert.deepEqual(await readdir(dir), ['rt.safetensors'], 'no temp files left behind');
  });
});

test('a Map keeps insertion order within a dtype size class; scalar and empty tensors work', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'm.safetensors');
    const tensors = new Map<string, StTensor>([
      ['b', { dtype: 'F32', shape: [], data: new Float32Array([1.5]) }],
      ['a', { dtype: 'I32', shape: [0, 3], data: new Int32Array(0) }],
      ['idx', { dtype: 'I64', shape: [2], data: new BigInt64Array([-1n, 2n ** 62n]) }],
      ['__proto__', { dtype: 'F32', shape: [1], data: new Float32Array([7]) }],
    ]);
    await writeSafetensors(path, tensors);
    const back = await readSafetensors(path);
    for (const [name, t] of tensors) assertSameBits(back.get(name)!, t, name);
    const file = await openSafetensors(path);
    assert.deepEqual([...file.entries].map(([k, e]) => [k, e.begin]), [['idx', 0], ['b', 16], ['a', 20], ['__proto__', 20]]);
    assert.deepEqual(file.metadata, {});
    await file.close();
  });
});

test('writing refuses half precision, mismatched data and bad names, leaving the target untouched', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'w.safetensors');
    await writeFileAtomic(path, 'previous');
    const cases: [Record<string, StTensor>, RegExp][] = [
      [{ h: { dtype: 'F16', shape: [1], data: new Float32Array(1) } }, /tensor 'h': cannot write dtype F16/],
      [{ x: { dtype: 'F32', shape: [2], data: new Float64Array(2) } }, /tensor 'x': dtype F32 does not match its data \(Float64Array\)/],
      [{ x: { dtype: 'I32', shape: [2, 2], data: new Int32Array(3) } }, /shape \[2,2\] needs 4 elements but the data has 3/],
      [{ x: { dtype: 'F32', shape: [-1], data: new Float32Array(0) } }, /shape must hold non-negative integers, got \[-1\]/],
      [{ __metadata__: { dtype: 'F32', shape: [0], data: new Float32Array(0) } }, /'__metadata__' is reserved/],
    ];
    for (const [tensors, message] of cases) {
      await assert.rejects(writeSafetensors(path, tensors), message);
      assert.equal(await readFile(path, 'utf8'), 'previous');
    }
    assert.deepEqual(await readdir(dir), ['w.safetensors']);
  });
});

test('F16 and BF16 are widened exactly to Float32 and keep their stored dtype', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'half.safetensors');
    const half = new Uint16Array([0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x7c00, 0x8000]);
    const bf = new Uint16Array([0x3f80, 0xc0a0, 0xff80]);
    const data = Buffer.concat([Buffer.from(half.buffer), Buffer.from(bf.buffer)]);
    await writeFile(path, rawFile({
      h: { dtype: 'F16', shape: [7], data_offsets: [0, 14] },
      b: { dtype: 'BF16', shape: [3], data_offsets: [14, 20] },
    }, data));
    const t = await readSafetensors(path);
    assert.equal(t.get('h')!.dtype, 'F16');
    assert.deepEqual([...t.get('h')!.data], [1, -2, 65504, 2 ** -24, 1023 * 2 ** -24, Infinity, -0]);
    assert.ok(t.get('h')!.data instanceof Float32Array);
    assert.equal(t.get('b')!.dtype, 'BF16');
    assert.deepEqual([...t.get('b')!.data], [1, -5, -Infinity]);
  });
});

test('every fixture safetensors file opens and reads completely', async () => {
  const w = await readSafetensors(join(FIXTURES, 'mdt-v1-tiny/weights.safetensors'));
  const pos = w.get('pos_embed')!;
  assert.equal(pos.dtype, 'F32');
  assert.deepEqual(pos.shape, [1, 16, 64]);
  const idx = w.get('blocks.0.attn.rel_pos_bias.relative_position_index')!;
  assert.equal(idx.dtype, 'I64');
  assert.deepEqual(idx.shape, [16, 16]);
  assert.ok(idx.data instanceof BigInt64Array);
  assert.equal(idx.data[0], 24n, 'index of (0,0) vs (0,0) is (h-1)*(2h-1)+(h-1) = 24 for h=4');
  for (const fixture of ['mdt-v1-tiny', 'mdt-v2-tiny', 'dit-tiny']) {
    for (const file of ['weights.safetensors', 'cases.safetensors']) {
      const st = await openSafetensors(join(FIXTURES, fixture, file));
      try {
        assert.ok(st.entries.size > 0);
        for (const [name, e] of st.entries) {
          const t = await st.read(name);
          assert.equal(t.data.length, e.shape.reduce((a, b) => a * b, 1), `${fixture}/${file} ${name}`);
        }
      } finally {
        await st.close();
      }
    }
  }
});

test('each kind of corrupt file is refused with an error naming the file and the problem', async () => {
  await withTempDir(async (dir) => {
    const ok = new Uint8Array(8);
    const cases: [string, Buffer, RegExp][] = [
      ['short', Buffer.from([1, 2, 3]), /file is 3 bytes, too short/],
      ['absurd header', rawFile({}, ok, 200_000_000n), /header length 200000000 exceeds the 100000000-byte limit/],
      ['header past end', rawFile({}, ok, 4096n), /header length 4096 runs past the end of the \d+-byte file/],
      ['not json', rawFile('{"a": ', ok), /header is not valid JSON/],
      ['not an object', rawFile('[1,2]'), /header must be a JSON object, got an array/],
      ['bad metadata', rawFile({ __metadata__: { k: 1 } }), /__metadata__ value for 'k' must be a string/],
      ['unknown dtype', rawFile({ a: { dtype: 'F8', shape: [2], data_offsets: [0, 2] } }, new Uint8Array(2)), /tensor 'a': unknown dtype "F8"/],
      ['size mismatch', rawFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, ok), /tensor 'a': data_offsets \[0, 8\] span 8 bytes but dtype F32 shape \[3\] needs 12 bytes/],
      ['negative dim', rawFile({ a: { dtype: 'F32', shape: [-2], data_offsets: [0, 8] } }, ok), /tensor 'a': shape must hold non-negative integers, got \[-2\]/],
      ['fractional dim', rawFile({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 6] } }, ok), /tensor 'a': shape must hold non-negative integers, got \[1.5\]/],
      ['bad offsets', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [8, 4] } }, ok), /tensor 'a': data_offsets must be \[begin, end\]/],
      ['overlap', rawFile({ a: f32([2], 0), b: f32([2], 4) }, new Uint8Array(12)), /tensor 'b' \(data bytes \[4, 12\)\) overlaps tensor 'a' which ends at 8/],
      ['gap', rawFile({ a: f32([1], 0), b: f32([1], 8) }, new Uint8Array(12)), /gap of 4 bytes before tensor 'b' at data offset 4/],
      ['truncated', rawFile({ a: f32([2], 0), b: f32([4], 8) }, new Uint8Array(16)), /tensor 'b' ends at data byte 24 but the data section holds only 16 bytes \(truncated/],
      ['out of range', rawFile({ a: f32([2], 0), b: f32([1], 1000) }, ok), /gap of 992 bytes before tensor 'b'/],
      ['trailing bytes', rawFile({ a: f32([1], 0) }, ok), /4 unexpected bytes after the last tensor/],
      ['duplicate key', rawFile(`{"a": ${JSON.stringify(f32([1], 0))}, "a": ${JSON.stringify(f32([1], 4))}}`, ok), /header has the key 'a' more than once/],
    ];
    for (const [kind, bytes, message] of cases) {
      const path = join(dir, `${kind.replaceAll(' ', '-')}.safetensors`);
      await writeFile(path, bytes);
      await assert.rejects(openSafetensors(path), (e: Error) => {
        assert.ok(e.message.startsWith(`safetensors ${path}: `), `${kind}: ${e.message}`);
        assert.match(e.message, message, kind);
        return true;
      });
    }
  });
});

test('unknown tensor names and reads after close are errors', async () => {
  const st = await openSafetensors(join(FIXTURES, 'dit-tiny/weights.safetensors'));
  await assert.rejects(st.read('nope'), /no tensor named 'nope' \(the file has \d+ tensors\)/);
  await st.close();
  await assert.rejects(st.read('pos_embed'), /read\('pos_embed'\) after close\(\)/);
});

test('atomic writes replace the file whole, and a failed write leaves it and no temp file behind', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'f.txt');
    await writeFileAtomic(path, 'one');
    await writeFileAtomic(path, [Buffer.from('tw'), Buffer.from('o')]);
    assert.equal(await readFile(path, 'utf8'), 'two');
    await assert.rejects(
      withAtomicFile(path, async (handle) => {
        await handle.write('partial');
        throw new Error('disk on fire');
      }),
      /disk on fire/,
    );
    assert.equal(await readFile(path, 'utf8'), 'two');
    assert.deepEqual(await readdir(dir), ['f.txt']);
  });
});
