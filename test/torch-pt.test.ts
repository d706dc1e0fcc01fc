import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { convertTorchToSafetensors, openTorchCheckpoint } from '../formats/torch-pt.ts';
import { openSafetensors, readSafetensors } from '../formats/safetensors.ts';
import type { StTensor } from '../formats/safetensors.ts';
import { unpickle } from '../formats/torch-pt/pickle.ts';
import type { PyValue } from '../formats/torch-pt/pickle.ts';
import { checkpointPickle, op, pickle, sharedListChain, stateDictOps, writeTorchArchive } from './torch-pt-builder.ts';
import type { TensorSpec } from './torch-pt-builder.ts';

const FIXTURES = new URL('../../shared/fixtures/', import.meta.url).pathname;

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'pt-test-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const bytesOf = (a: ArrayBufferView): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const iota = (n: number): Float32Array => Float32Array.from({ length: n }, (_, i) => i);
const f32 = (key: string, storageKey: string, numel: number, offset: number, size: number[], stride: number[]): TensorSpec =>
  ({ key, storage: 'FloatStorage', storageKey, numel, offset, size, stride });

function assertSameTensor(actual: StTensor, expected: StTensor, name: string): void {
  assert.equal(actual.dtype, expected.dtype, name);
  assert.deepEqual([...actual.shape], [...expected.shape], name);
  assert.equal(actual.data.constructor, expected.data.constructor, name);
  assert.ok(Buffer.from(bytesOf(actual.data)).equals(bytesOf(expected.data)), `${name}: data differs`);
}

/** Runs `fn`, with the wall time it took and how far it grew the resident set. */
async function measured<T>(fn: () => Promise<T>): Promise<{ result: T; ms: number; rssGrowthMB: number }> {
  const rss = process.memoryUsage().rss;
  const start = performance.now();
  const result = await fn();
  return { result, ms: performance.now() - start, rssGrowthMB: (process.memoryUsage().rss - rss) / 2 ** 20 };
}

/** Expects `promise` to reject with a message starting with `prefix` and matching `pattern`. */
async function rejectsWith(promise: Promise<unknown>, prefix: string, pattern: RegExp): Promise<void> {
  await assert.rejects(promise, (e: Error) => {
    assert.ok(e.message.startsWith(prefix), `expected the message to start with ${prefix}: ${e.message}`);
    assert.match(e.message, pattern);
    return true;
  });
}

for (const [fixture, wrapperKey, extra] of [
  ['mdt-v1-tiny', null, {}],
  ['mdt-v2-tiny', 'ema', { step: 1000 }],
  ['dit-tiny', null, {}],
] as const) {
  test(`${fixture}/weights.pt converts to exactly the tensors of weights.safetensors`, async () => {
    await withTempDir(async (dir) => {
      const pt = join(FIXTURES, fixture, 'weights.pt');
      const ckpt = await openTorchCheckpoint(pt);
      assert.equal(ckpt.wrapperKey, wrapperKey);
      assert.deepEqual(ckpt.extra, extra);
      await ckpt.close();

      const out = join(dir, 'w.safetensors');
      const progress: number[] = [];
      const { count, bytes } = await convertTorchToSafetensors(pt, out, { onProgress: (done, total) => progress.push(done / total) });
      const expected = await readSafetensors(join(FIXTURES, fixture, 'weights.safetensors'));
      const actual = await readSafetensors(out);
      assert.equal(count, expected.size);
      assert.equal(bytes, (await readFile(out)).byteLength);
      assert.deepEqual([...actual.keys()].sort(), [...expected.keys()].sort());
      for (const [name, t] of expected) assertSameTensor(actual.get(name)!, t, name);
      assert.equal(progress.at(-1), 1);
      const st = await openSafetensors(out);
      assert.equal(st.metadata.format, 'pt');
      assert.equal(st.metadata.state_dict_key, wrapperKey ?? undefined);
      await st.close();
      assert.deepEqual(await readdir(dir), ['w.safetensors']);
    });
  });
}

test('non-contiguous views, storage offsets, size-1 dims and shared storages come out in C order', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'views.pt');
    const specs: TensorSpec[] = [
      f32('transposed', '0', 6, 0, [3, 2], [1, 3]),
      f32('strided', '1', 12, 1, [2, 2], [6, 2]),
      f32('cube', '1', 12, 0, [2, 3, 2], [1, 4, 2]),
      f32('first', '2', 8, 0, [2, 2], [2, 1]),
      f32('second', '2', 8, 4, [4], [1]),
      f32('odd_unit_stride', '2', 8, 3, [1, 2, 1], [99, 1, 7]),
      f32('scalar', '2', 8, 7, [], []),
      f32('empty', '2', 8, 8, [0, 5], [5, 1]),
      { ...f32('param', '0', 6, 0, [6], [1]), parameter: true },
    ];
    await writeTorchArchive(path, checkpointPickle(specs), new Map([
      ['0', bytesOf(iota(6))], ['1', bytesOf(iota(12))], ['2', bytesOf(iota(8))],
    ]));
    const ckpt = await openTorchCheckpoint(path);
    const got = Object.fromEntries(await Promise.all(ckpt.tensors.map(async (t) => [t.key, await t.read()] as const)));
    await ckpt.close();
    const expect: Record<string, [number[], number[]]> = {
      transposed: [[3, 2], [0, 3, 1, 4, 2, 5]],
      strided: [[2, 2], [1, 3, 7, 9]],
      cube: [[2, 3, 2], [0, 2, 4, 6, 8, 10, 1, 3, 5, 7, 9, 11]],
      first: [[2, 2], [0, 1, 2, 3]],
      second: [[4], [4, 5, 6, 7]],
      odd_unit_stride: [[1, 2, 1], [3, 4]],
      scalar: [[], [7]],
      empty: [[0, 5], []],
      param: [[6], [0, 1, 2, 3, 4, 5]],
    };
    assert.deepEqual(Object.keys(got), Object.keys(expect));
    for (const [name, [shape, values]] of Object.entries(expect)) {
      assert.deepEqual(got[name].shape, shape, name);
      assert.deepEqual([...got[name].data], values, name);
      assert.equal(got[name].dtype, 'F32');
    }
  });
});

test('any strided view (including stride 0 and offsets) reads as storage[offset + Σ index·stride], broadcasts on request', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'prop.pt');
    const view = fc.array(fc.tuple(fc.integer({ min: 0, max: 4 }), fc.integer({ min: 0, max: 6 })), { maxLength: 4 });
    await fc.assert(
      fc.asyncProperty(view, fc.integer({ min: 0, max: 5 }), fc.integer({ min: 0, max: 3 }), async (dims, offset, spare) => {
        const size = dims.map(([n]) => n);
        const stride = dims.map(([, s]) => s);
        const n = size.reduce((a, b) => a * b, 1);
        const extent = n === 0 ? 0 : 1 + size.reduce((acc, k, d) => acc + (k - 1) * stride[d], 0);
        const numel = offset + extent + spare;
        await writeTorchArchive(path, checkpointPickle([f32('t', '0', numel, offset, size, stride)]), new Map([['0', bytesOf(iota(numel))]]));
        const ckpt = await openTorchCheckpoint(path);
        const ref = ckpt.tensors[0];
        const t = await ref.read({ expandViews: true });
        if (ref.broadcast) await assert.rejects(ref.read(), /is a broadcast view/);
        else assert.deepEqual(await ref.read(), t);
        await ckpt.close();
        const expected: number[] = [];
        for (let flat = 0; flat < n; flat++) {
          let rest = flat;
          let at = offset;
          for (let d = size.length - 1; d >= 0; d--) {
            at += (rest % size[d]) * stride[d];
            rest = Math.floor(rest / size[d]);
          }
          expected.push(at);
        }
        assert.deepEqual(t.shape, size);
        assert.deepEqual([...t.data], expected);
        assert.deepEqual([ref.stride, ref.storageOffset], [stride, offset]);
        // Flagged views do repeat elements; unflagged ones never come out larger than the span they read.
        if (ref.broadcast) assert.ok(new Set(expected).size < n);
        else assert.ok(n <= extent);
        if (n > 0 && size.some((k, d) => k > 1 && stride[d] === 0)) assert.ok(ref.broadcast);
      }),
      { numRuns: 60 },
    );
  });
});

test('integer and double storages, and a ZIP64 archive, read exactly', async () => {
  await withTempDir(async (dir) => {
    const specs: TensorSpec[] = [
      { key: 'idx', storage: 'LongStorage', storageKey: 'a', numel: 3, offset: 0, size: [3], stride: [1] },
      { key: 'i32', storage: 'IntStorage', storageKey: 'b', numel: 2, offset: 0, size: [2], stride: [1] },
      { key: 'f64', storage: 'DoubleStorage', storageKey: 'c', numel: 2, offset: 0, size: [1, 2], stride: [2, 1] },
    ];
    const storages = new Map([
      ['a', bytesOf(new BigInt64Array([-5n, 0n, 2n ** 60n]))],
      ['b', bytesOf(new Int32Array([-7, 2 ** 31 - 1]))],
      ['c', bytesOf(new Float64Array([Math.PI, -1e300]))],
    ]);
    for (const zip64 of [false, true]) {
      const path = join(dir, `ints-${zip64}.pt`);
      await writeTorchArchive(path, checkpointPickle(specs), storages, { zip64, stem: 'my_ckpt' });
      const out = join(dir, `ints-${zip64}.safetensors`);
      assert.deepEqual(await convertTorchToSafetensors(path, out), { count: 3, bytes: (await readFile(out)).byteLength });
      const t = await readSafetensors(out);
      assertSameTensor(t.get('idx')!, { dtype: 'I64', shape: [3], data: new BigInt64Array([-5n, 0n, 2n ** 60n]) }, 'idx');
      assertSameTensor(t.get('i32')!, { dtype: 'I32', shape: [2], data: new Int32Array([-7, 2 ** 31 - 1]) }, 'i32');
      assertSameTensor(t.get('f64')!, { dtype: 'F64', shape: [1, 2], data: new Float64Array([Math.PI, -1e300]) }, 'f64');
    }
  });
});

test('wrapped checkpoints: ema by default, model on request, and a clear error when nothing fits', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'train.pt');
    const pkl = pickle(
      op.proto(2), op.emptyDict, op.mark,
      op.str('model'), stateDictOps([f32('w', '0', 2, 0, [2], [1])]),
      op.str('ema'), stateDictOps([f32('w', '1', 2, 0, [2], [1])]),
      op.str('step'), op.int(123456),
      op.setitems, op.stop,
    );
    await writeTorchArchive(path, pkl, new Map([['0', bytesOf(new Float32Array([1, 2]))], ['1', bytesOf(new Float32Array([3, 4]))]]));
    const ema = await openTorchCheckpoint(path);
    assert.equal(ema.wrapperKey, 'ema');
    assert.deepEqual(ema.extra, { model: '<state_dict of 1 tensors>', step: 123456 });
    assert.deepEqual([...(await ema.tensors[0].read()).data], [3, 4]);
    await ema.close();
    const model = await openTorchCheckpoint(path, { prefer: 'model' });
    assert.equal(model.wrapperKey, 'model');
    assert.deepEqual([...(await model.tensors[0].read()).data], [1, 2]);
    await model.close();

    // A list that contains itself (via the memo) is summarised, not followed forever.
    const cyclic = join(dir, 'cyclic.pt');
    await writeTorchArchive(cyclic, pickle(
      op.proto(2), op.emptyDict, op.mark, op.str('ema'), stateDictOps([f32('w', '0', 2, 0, [2], [1])]),
      op.str('loop'), op.emptyList, op.binput(0), op.binget(0), op.append, op.setitems, op.stop,
    ), new Map([['0', bytesOf(new Float32Array([1, 2]))]]));
    const withLoop = await openTorchCheckpoint(cyclic);
    assert.deepEqual(withLoop.extra.loop, ['<list of 1, shared: written out at its first occurrence>']);
    await withLoop.close();

    const other = join(dir, 'other.pt');
    await writeTorchArchive(other, pickle(op.proto(2), op.emptyDict, op.mark, op.str('foo'), op.int(1), op.str('bar'), op.emptyDict, op.setitems, op.stop), new Map());
    await rejectsWith(openTorchCheckpoint(other), `${other}: no state_dict found`, /top-level dict has keys \['foo', 'bar'\]; expected .* 'ema', 'model', 'state_dict'/);
  });
});

test('half precision is refused without fp16ToFp32 and widened exactly with it', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'half.pt');
    const specs: TensorSpec[] = [
      { key: 'h', storage: 'HalfStorage', storageKey: '0', numel: 3, offset: 0, size: [3], stride: [1] },
      { key: 'b', storage: 'BFloat16Storage', storageKey: '1', numel: 2, offset: 0, size: [2], stride: [1] },
    ];
    await writeTorchArchive(path, checkpointPickle(specs), new Map([
      ['0', bytesOf(new Uint16Array([0x3c00, 0x0001, 0xfbff]))], ['1', bytesOf(new Uint16Array([0x4049, 0x3f80]))],
    ]));
    const out = join(dir, 'half.safetensors');
    await rejectsWith(convertTorchToSafetensors(path, out), `${path}: 2 tensors are half precision (first: 'h', F16)`, /pass --fp16-to-fp32/);
    assert.deepEqual(await readdir(dir), ['half.pt']);
    await convertTorchToSafetensors(path, out, { fp16ToFp32: true });
    const t = await readSafetensors(out);
    assertSameTensor(t.get('h')!, { dtype: 'F32', shape: [3], data: new Float32Array([1, 2 ** -24, -65504]) }, 'h');
    assertSameTensor(t.get('b')!, { dtype: 'F32', shape: [2], data: new Float32Array([3.140625, 1]) }, 'b');
    const ckpt = await openTorchCheckpoint(path);
    assert.deepEqual(ckpt.tensors.map((x) => x.dtype), ['F16', 'BF16']);
    assert.equal((await ckpt.tensors[0].read()).dtype, 'F16');
    await ckpt.close();
  });
});

test('malicious pickles are refused, naming the global or opcode and its byte offset', async () => {
  await withTempDir(async (dir) => {
    const cases: [string, Uint8Array, RegExp][] = [
      ['os.system', pickle(op.proto(2), op.global('os', 'system'), op.mark, op.str('echo pwned'), op.tuple, op.reduce, op.stop),
        /pickle byte 2: refusing global 'os\.system': a weights checkpoint may only use collections\.OrderedDict, torch\._utils\._rebuild_tensor_v2/],
      ['unknown class', pickle(op.proto(2), op.global('__main__', 'Evil'), op.emptyTuple, op.newobj, op.stop),
        /pickle byte 2: refusing global '__main__\.Evil'/],
      ['builtins.eval via STACK_GLOBAL', pickle(op.proto(4), op.str('builtins'), op.str('eval'), op.stackGlobal, op.stop),
        /pickle byte 24: refusing global 'builtins\.eval'/],
      ['hidden in a state_dict', pickle(op.proto(2), stateDictOps([]).slice(0, -1), op.str('w'), op.global('subprocess', 'Popen'), op.emptyTuple, op.reduce, op.setitems, op.stop),
        /pickle byte 36: refusing global 'subprocess\.Popen'/],
      // A record class is data only: made by NEWOBJ + BUILD, never called.
      ['calling argparse.Namespace', pickle(op.proto(2), op.global('argparse', 'Namespace'), op.emptyTuple, op.reduce, op.stop),
        /argparse\.Namespace may not be called/],
      ['a Namespace built from a list', pickle(op.proto(2), op.global('argparse', 'Namespace'), op.emptyTuple, op.newobj, op.emptyList, op.build, op.stop),
        /BUILD of argparse\.Namespace needs a dict of attribute names, got list of 0/],
      ['INST', pickle(op.proto(2), op.inst('os', 'system'), op.stop), /pickle byte 2: opcode INST \(0x69\) is not allowed/],
      ['calling a storage type', pickle(op.proto(2), op.global('torch', 'FloatStorage'), op.emptyTuple, op.reduce, op.stop),
        /torch\.FloatStorage may not be called/],
      ['truncated pickle', pickle(op.proto(2), op.emptyDict), /the pickle ends without STOP/],
      ['huge integer', pickle(op.proto(2), Uint8Array.of(0x8b, 0, 1, 0, 0), new Uint8Array(256), op.stop), /a 256-byte integer is implausible/],
    ];
    for (const [name, pkl, message] of cases) {
      const path = join(dir, `${name.replaceAll(' ', '_')}.pt`);
      await writeTorchArchive(path, pkl, new Map());
      await rejectsWith(openTorchCheckpoint(path), `${path}: archive/data.pkl: pickle byte `, message);
    }
  });
});

test('corrupt archives and inconsistent storages are refused with clear errors, leaving no output', async () => {
  await withTempDir(async (dir) => {
    const good = join(FIXTURES, 'dit-tiny/weights.pt');
    const original = await readFile(good);

    const truncated = join(dir, 'truncated.pt');
    await writeFile(truncated, original.subarray(0, original.byteLength >> 1));
    await rejectsWith(openTorchCheckpoint(truncated), `${truncated}: `, /not a zip archive: no end-of-central-directory record found \(the file is truncated/);

    const legacy = join(dir, 'legacy.pt');
    await writeFile(legacy, Buffer.from([0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc]));
    await rejectsWith(openTorchCheckpoint(legacy), `${legacy}: `, /legacy \(pre-1\.6, non-zip\) torch\.save file/);

    const beyond = join(dir, 'beyond.pt');
    await writeTorchArchive(beyond, checkpointPickle([f32('w', '0', 4, 2, [4], [1])]), new Map([['0', bytesOf(iota(4))]]));
    await rejectsWith(openTorchCheckpoint(beyond), `${beyond}: `,
      /tensor 'w' \(storage offset 2, size \[4\], stride \[1\]\) needs storage elements up to 6 but storage '0' holds only 4/);

    const short = join(dir, 'short.pt');
    await writeTorchArchive(short, checkpointPickle([f32('w', '0', 10, 0, [10], [1])]), new Map([['0', bytesOf(iota(4))]]));
    await rejectsWith(openTorchCheckpoint(short), `${short}: `, /storage '0' should hold 10 F32 elements \(40 bytes\) but its archive entry has 16 bytes/);

    const missing = join(dir, 'missing.pt');
    await writeTorchArchive(missing, checkpointPickle([f32('w', '7', 4, 0, [4], [1])]), new Map());
    await rejectsWith(openTorchCheckpoint(missing), `${missing}: `, /tensor 'w' refers to storage '7' but the archive has no entry 'archive\/data\/7'/);

    // Flip one byte inside pos_embed's storage: opening works, converting fails on the CRC.
    const flipped = join(dir, 'flipped.pt');
    const corrupt = Buffer.from(original);
    const posEmbed = (await readSafetensors(join(FIXTURES, 'dit-tiny/weights.safetensors'))).get('pos_embed')!;
    const at = corrupt.indexOf(bytesOf(posEmbed.data).subarray(0, 256));
    assert.ok(at > 0);
    corrupt[at + 100] ^= 0xff;
    await writeFile(flipped, corrupt);
    const out = join(dir, 'out.safetensors');
    await rejectsWith(convertTorchToSafetensors(flipped, out), `${flipped}: storage `, /fails its CRC check; the file is corrupt/);
    assert.ok(!(await readdir(dir)).some((f) => f.startsWith('out.safetensors')), 'no output or temp file left');
  });
});

test('a memo GET yields the very object PUT: shared references are never copied', () => {
  const pair = unpickle(pickle(op.proto(4), op.emptyList, op.memoize, op.mark, op.emptyList, op.memoize, op.binget(1), op.appends, op.stop), 'pair');
  assert.ok(Array.isArray(pair) && pair.length === 2 && pair[0] === pair[1] && pair[0] !== pair);

  let level = unpickle(pickle(op.proto(2), sharedListChain(30, 10), op.stop), 'chain');
  for (let depth = 30; depth > 0; depth--) {
    assert.ok(Array.isArray(level) && level.length === 10, `level ${depth}`);
    const items: PyValue[] = level;
    assert.ok(items.every((x) => x === items[0]), `level ${depth}: the 10 items are one list`);
    level = items[0];
  }
  assert.deepEqual(level, []);
});

test('the object-graph cap counts each push and memo entry (a dict as four) and names the limit and byte', async () => {
  // 31 lists, 31 memo entries and 30 × 9 memo GETs: 332 slots, the last taken by the final BINGET.
  const chain = pickle(op.proto(2), sharedListChain(30, 10), op.stop);
  assert.ok(Array.isArray(unpickle(chain, 'chain', { maxSlots: 332 })));
  assert.throws(() => unpickle(chain, 'chain', { maxSlots: 331 }),
    { message: `chain: pickle byte ${chain.length - 4}: the pickle's object graph exceeds the limit of 331 slots (one per value pushed or memoised, 4 per new dict); a weights checkpoint needs far fewer` });
  const dict = pickle(op.proto(2), op.emptyDict, op.stop);
  assert.ok(unpickle(dict, 'dict', { maxSlots: 4 }));
  assert.throws(() => unpickle(dict, 'dict', { maxSlots: 3 }), /^Error: dict: pickle byte 2: the pickle's object graph exceeds the limit of 3 slots/);

  await withTempDir(async (dir) => {
    const path = join(dir, 'small.pt');
    await writeTorchArchive(path, checkpointPickle([f32('w', '0', 2, 0, [2], [1])]), new Map([['0', bytesOf(iota(2))]]));
    await rejectsWith(openTorchCheckpoint(path, { maxPickleSlots: 10 }), `${path}: archive/data.pkl: pickle byte `, /object graph exceeds the limit of 10 slots/);
    const ckpt = await openTorchCheckpoint(path);
    assert.deepEqual([...(await ckpt.tensors[0].read()).data], [0, 1]);
    await ckpt.close();
  });
});

test('30 levels of lists of 10 shared references beside the weights open at once, in bounded memory', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'shared.pt');
    await writeTorchArchive(path, pickle(
      op.proto(2), op.emptyDict, op.mark,
      op.str('ema'), stateDictOps([f32('w', '0', 4, 0, [2, 2], [2, 1])]),
      op.str('junk'), sharedListChain(30, 10),
      op.setitems, op.stop,
    ), new Map([['0', bytesOf(iota(4))]]));
    const out = join(dir, 'shared.safetensors');
    const { result, ms, rssGrowthMB } = await measured(async () => {
      const ckpt = await openTorchCheckpoint(path);
      const w = await ckpt.tensors[0].read();
      await ckpt.close();
      await convertTorchToSafetensors(path, out);
      return { extra: ckpt.extra, w };
    });
    assert.ok(ms < 1000, `took ${ms.toFixed(0)} ms`);
    assert.ok(rssGrowthMB < 100, `grew the RSS by ${rssGrowthMB.toFixed(0)} MB`);
    assert.deepEqual([...result.w.data], [0, 1, 2, 3]);
    assertSameTensor((await readSafetensors(out)).get('w')!, result.w, 'converted w');
    // Each shared list is written out once; its other 9 references are summaries.
    let level = result.extra.junk;
    for (let depth = 30; depth > 0; depth--) {
      assert.ok(Array.isArray(level) && level.length === 10, `level ${depth}`);
      assert.deepEqual(level.slice(1), Array(9).fill(`<list of ${depth > 1 ? 10 : 0}, shared: written out at its first occurrence>`));
      level = level[0];
    }
    assert.deepEqual(level, []);
    assert.ok(JSON.stringify(result.extra).length < 20_000);
  });
});

test('an expand(16384, 16384) view as an unused key costs nothing; it is read only on request, within the size limits', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'expanded.pt');
    await writeTorchArchive(path, checkpointPickle([
      f32('w', '0', 4, 0, [4], [1]),
      f32('junk', '1', 1, 0, [16384, 16384], [0, 0]),
      f32('huge', '1', 1, 0, [2 ** 17, 2 ** 16], [0, 0]),
      f32('row', '2', 4, 0, [3, 4], [0, 1]),
    ]), new Map([['0', bytesOf(iota(4))], ['1', bytesOf(new Float32Array([7]))], ['2', bytesOf(iota(4))]]));
    const { result: ckpt, ms, rssGrowthMB } = await measured(async () => {
      const c = await openTorchCheckpoint(path);
      assert.deepEqual([...(await c.tensors[0].read()).data], [0, 1, 2, 3]);
      return c;
    });
    assert.ok(ms < 1000, `took ${ms.toFixed(0)} ms`);
    assert.ok(rssGrowthMB < 100, `grew the RSS by ${rssGrowthMB.toFixed(0)} MB`);

    const [, junk, huge, row] = ckpt.tensors;
    assert.deepEqual([junk.shape, junk.stride, junk.storageOffset, junk.broadcast], [[16384, 16384], [0, 0], 0, true]);
    await rejectsWith(junk.read(), `${path}: tensor 'junk' of shape [16384, 16384] (268435456 elements, strides [0, 0]) is a broadcast view`,
      /repeating 1 stored element \(such as expand\(\) makes\); expanded it takes 1073741824 bytes, so it is read only on request \(expandViews: true; mdt convert --expand-views\)$/);
    await rejectsWith(huge.read({ expandViews: true }), `${path}: tensor 'huge' of shape [131072, 65536] (8589934592 elements, strides [0, 0]) `,
      /exceeds the limit of 2147483647 elements per tensor$/);
    assert.deepEqual([...(await row.read({ expandViews: true })).data], [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);
    await ckpt.close();

    // convert refuses before writing anything, and expands on request.
    const out = join(dir, 'out.safetensors');
    await rejectsWith(convertTorchToSafetensors(path, out), `${path}: tensor 'junk' of shape [16384, 16384]`, /read only on request \(expandViews: true; mdt convert --expand-views\)$/);
    assert.deepEqual(await readdir(dir), ['expanded.pt']);
    const small = join(dir, 'small.pt');
    await writeTorchArchive(small, checkpointPickle([f32('row', '0', 4, 0, [3, 4], [0, 1])]), new Map([['0', bytesOf(iota(4))]]));
    await convertTorchToSafetensors(small, out, { expandViews: true });
    assert.deepEqual([...(await readSafetensors(out)).get('row')!.data], [0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3]);
  });
});

test('maxTensorBytes bounds what one read returns (half precision counted widened) and the span it fetches', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'sizes.pt');
    await writeTorchArchive(path, checkpointPickle([
      f32('fits', '0', 250, 0, [250], [1]),
      f32('big', '1', 256, 0, [16, 16], [16, 1]),
      f32('sparse', '2', 301, 0, [2], [300]),
      { key: 'half', storage: 'HalfStorage', storageKey: '3', numel: 300, offset: 0, size: [300], stride: [1] },
    ]), new Map([['0', bytesOf(iota(250))], ['1', bytesOf(iota(256))], ['2', bytesOf(iota(301))], ['3', new Uint8Array(600)]]));
    const ckpt = await openTorchCheckpoint(path, { maxTensorBytes: 1000 });
    const [fits, big, sparse, half] = ckpt.tensors;
    assert.equal((await fits.read()).data.length, 250);
    await rejectsWith(big.read(), `${path}: tensor 'big' of shape [16, 16] (256 elements, strides [16, 1]) `,
      /takes 1024 bytes when read, over the limit of 1000 bytes per tensor \(maxTensorBytes\)$/);
    await rejectsWith(sparse.read(), `${path}: tensor 'sparse' of shape [2] (2 elements, strides [300]) `,
      /is read from a span of 301 stored elements \(1204 bytes\), over the limit of 1000 bytes per tensor \(maxTensorBytes\)$/);
    assert.throws(() => half.checkReadable(), /tensor 'half' of shape \[300\] \(300 elements, strides \[1\]\) takes 1200 bytes when read/);
    await ckpt.close();
  });
});
