/**
 * Every notebook runs to the end with tiny arguments and exits 0; bad arguments and failures
 * are one line on stderr (never the wasm module's minified source), exit 2 or 1.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { withoutEmscriptenHandlers } from '../runtime/backend-wasm.ts';

function notebook(file: string, ...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join('examples', file), ...args], {
    encoding: 'utf8',
    env: { ...process.env, MDT_DEBUG: '' },
    timeout: 240_000,
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A failure is reported as exactly one line naming the notebook. */
function assertOneLineError(r: { code: number | null; err: string }, code: number, pattern: RegExp, file: string): void {
  assert.equal(r.code, code, r.err.slice(0, 2000));
  const lines = r.err.trimEnd().split('\n');
  assert.equal(lines.length, 1, `expected one line, got ${r.err.length} bytes:\n${r.err.slice(0, 2000)}`);
  assert.match(lines[0]!, new RegExp(`^examples/${file}: error: `));
  assert.match(lines[0]!, pattern);
}

test('notebooks run end to end with tiny arguments', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'mdt-notebooks-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));

  await t.test('01 composes variants and shows the shape error without throwing', () => {
    const r = notebook('01-compose-a-variant.ts');
    assert.equal(r.code, 0, r.err.slice(0, 2000));
    assert.match(r.out, /A residual MLP block declares: fc1\.weight \[1536, 384\]/);
    assert.match(r.out, /built anyway: seq: layer 0 returns \[B, 256, 384\] but layer 1 takes \[B, 256, 383\]/);
    assert.match(r.out, /MDT-S\/2 in types: block input \[B, 256, 384\], MLP hidden \[B, 256, 1536\], masked encoder input \[B, L, 384\]/);
  });
  await t.test('02 trains both models for 2 steps', () => {
    const r = notebook('02-mdt-vs-dit.ts', '2', join(dir, '02'));
    assert.equal(r.code, 0, r.err.slice(0, 2000));
    assert.ok(existsSync(join(dir, '02', 'mdt-vs-dit.png')));
    assert.ok(existsSync(join(dir, '02', 'MDT-S_2', 'run.json')));
  });
  await t.test('03 plots the guidance schedules', () => {
    const r = notebook('03-guidance-schedules.ts', join(dir, '03'));
    assert.equal(r.code, 0, r.err.slice(0, 2000));
    assert.ok(existsSync(join(dir, '03', 'guidance-w1.5.png')));
  });
  await t.test("04 inpaints with 02's MDT", () => {
    const r = notebook('04-inpainting.ts', join(dir, '02', 'MDT-S_2'), join(dir, '04'));
    assert.equal(r.code, 0, r.err.slice(0, 2000));
    assert.ok(existsSync(join(dir, '04', 'inpainting.png')));
  });
  await t.test('05 trains the ALiBi variant for 2 steps', () => {
    const r = notebook('05-new-attention.ts', '2');
    assert.equal(r.code, 0, r.err.slice(0, 2000));
    assert.match(r.out, /step +2 +loss/);
  });

  await t.test('bad arguments: one clear line, exit 2', () => {
    for (const steps of ['abc', '0', '-3']) {
      assertOneLineError(notebook('02-mdt-vs-dit.ts', steps, join(dir, 'never')), 2, new RegExp(`STEPS must be a positive integer, got "${steps}"`), '02-mdt-vs-dit.ts');
    }
    assertOneLineError(notebook('05-new-attention.ts', '1.5'), 2, /STEPS must be a positive integer/, '05-new-attention.ts');
    assertOneLineError(notebook('04-inpainting.ts', join(dir, 'missing')), 2, /missing is not a training run \(no run\.json there\)/, '04-inpainting.ts');
    assertOneLineError(notebook('03-guidance-schedules.ts', dir, 'extra'), 2, /unexpected argument\(s\) "extra"/, '03-guidance-schedules.ts');
  });
  await t.test('an error after the wasm backend started is one line, not the module source', () => {
    const run = join(dir, 'broken-run');
    mkdirSync(run, { recursive: true });
    writeFileSync(join(run, 'run.json'), '{ not json');
    assertOneLineError(notebook('04-inpainting.ts', run, join(dir, '04b')), 1, /JSON/, '04-inpainting.ts');
  });
});

test("the wasm module's rethrowing process handlers do not outlive its start", async () => {
  const before = [process.listenerCount('uncaughtException'), process.listenerCount('unhandledRejection')];
  const value = await withoutEmscriptenHandlers(async () => {
    // What Emscripten's Node glue does while the module loads.
    process.on('uncaughtException', (e) => { throw e; });
    process.on('unhandledRejection', (r) => { throw r; });
    return 7;
  });
  assert.equal(value, 7);
  assert.deepEqual([process.listenerCount('uncaughtException'), process.listenerCount('unhandledRejection')], before);
});
