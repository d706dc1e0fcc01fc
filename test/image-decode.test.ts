// Image decoding against Pillow: each fixture under test/fixtures/images has beside it the bytes of
// Image.open(f).convert('RGB') (the official MDT loader's decoding), written by make.py there.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { decodeImage } from '../mdt/data/image-folder.ts';

const dir = fileURLToPath(new URL('./fixtures/images/', import.meta.url));
const references: Record<string, { width: number; height: number; mode: string }> = JSON.parse(
  readFileSync(join(dir, 'references.json'), 'utf8'),
);
const read = (name: string) => new Uint8Array(readFileSync(join(dir, name)));

function maxAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i] - b[i]));
  return max;
}

function checkAgainstPillow(name: string, tolerance: number): void {
  const { width, height, mode } = references[name];
  const got = decodeImage(read(name), name);
  assert.deepEqual([got.width, got.height], [width, height], `${name}: size`);
  const diff = maxAbsDiff(got.data, read(name.replace(/\.\w+$/, '.rgb')));
  assert.ok(diff <= tolerance, `${name} (Pillow mode ${mode}): max |ours − Pillow| = ${diff}/255, allowed ${tolerance}`);
}

const names = Object.keys(references);
test('the fixtures cover what Pillow decodes differently: subsamplings, progressive, gray, CMYK, 16-bit PNG', () => {
  for (const part of ['-420-base', '-420-prog', '-422-prog', '-444-prog', '-440-', '-411-', 'gray.jpg', 'cmyk', 'gray16', 'rgb16', 'palette1']) {
    assert.ok(names.some((n) => n.includes(part)), `fixtures lack a ${part} case; rerun test/fixtures/images/make.py`);
  }
});

test('JPEG decoding equals Pillow (libjpeg-turbo) within 1/255: all subsamplings, progressive, gray, CMYK, odd sizes', () => {
  for (const name of names.filter((n) => n.endsWith('.jpg'))) checkAgainstPillow(name, 1);
});

test("PNG decoding equals Pillow's convert('RGB') exactly for every colour type and bit depth", () => {
  // 16-bit gray clips at 255, other 16-bit kinds keep the high byte, tRNS key colours keep their colour
  for (const name of names.filter((n) => n.endsWith('.png'))) checkAgainstPillow(name, 0);
});

test('a truncated JPEG is an error, as in Pillow; one libjpeg only warns about decodes', () => {
  const whole = read('64x48-q75-420-prog.jpg');
  for (const end of [200, whole.length >> 1, whole.length - 2]) {
    assert.throws(() => decodeImage(whole.subarray(0, end), 'cut.jpg'), /cut\.jpg: cannot decode JPEG: expected a .*truncated/);
  }
  assert.throws(
    () => decodeImage(Uint8Array.of(0xff, 0xd8, 0xff, 0xe0, 0, 2, 0xff, 0xd9), 'junk.jpg'),
    /junk\.jpg: cannot decode JPEG: expected a baseline or progressive 8-bit JPEG, got data libjpeg-turbo stops on/,
  );
  // the decoder recovers from the failures above
  checkAgainstPillow('33x17-extraneous-bytes.jpg', 1);
});
