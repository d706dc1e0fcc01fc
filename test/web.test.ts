/**
 * The web page: its checkpoint loading in Node (the same code the page runs, bad files
 * refused with a sentence), then the built page in Debian's headless Chromium (playwright-core
 * pointed at it; no browser is downloaded): load the mdt-v1-tiny fixture model served beside
 * the page, sample with a fixed seed, compare with the Node result, inpaint; the same model
 * exported to ONNX, sampled on onnxruntime-web, against the same Node result; bad files shown
 * as errors on the page. The browser part is skipped, with the reason, where no Chromium is
 * installed (.ci/run installs Debian's).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../runtime/backend.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { DEFAULT_FIXTURES } from '../compile/parity-cli.ts';
import { compileSampler } from '../compile/sample.ts';
import { exportOnnx } from '../compile/onnx-export.ts';
import { encodeOnnx } from '../formats/onnx.ts';
import { foldIn, keyFromSeed } from '../dsl/random.ts';
import { bytesOf } from '../formats/safetensors-header.ts';
import { toUint8 } from '../mdt/viz/raster.ts';
import { modelFromSafetensors } from '../web/checkpoint.ts';
import { buildWeb } from '../web/build.ts';

const FIXTURE = join(DEFAULT_FIXTURES, 'mdt-v1-tiny');
const HINTS = { numHeads: 4, decodeLayer: 2 };
const WEIGHTS = readFileSync(join(FIXTURE, 'weights.safetensors'));
/** A small safetensors file of another kind of model (keys of no DiT/MDT). */
const OTHER = (() => {
  const header = new TextEncoder().encode(JSON.stringify({ 'encoder.conv_in.weight': { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }).padEnd(64, ' '));
  const out = new Uint8Array(8 + header.length + 8);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(bytesOf(Float32Array.from([1, 2])), 8 + header.length);
  return out;
})();
const NOT_SAFETENSORS = readFileSync(new URL('../web/index.html', import.meta.url));

test('the page\'s loader: the fixture\'s model through the CLI\'s code; bad files get a sentence', async () => {
  await initBackend({ prefer: 'cpu' });
  const m = modelFromSafetensors(WEIGHTS, 'weights.safetensors', HINTS);
  assert.deepEqual([m.model.config.variant, m.model.config.depth, m.model.config.numHeads, m.canInpaint], ['mdt-v1', 4, 4, true]);
  tf.dispose([...m.values.values()]);
  assert.throws(() => modelFromSafetensors(NOT_SAFETENSORS, 'index.html', HINTS), /safetensors index\.html: header length \d+ (exceeds|runs past)/);
  assert.throws(() => modelFromSafetensors(WEIGHTS.subarray(0, WEIGHTS.length - 100), 'cut.safetensors', HINTS), /safetensors cut\.safetensors: tensor '.*' ends at data byte \d+ but the data section holds only \d+ bytes \(truncated file/);
  assert.throws(() => modelFromSafetensors(OTHER, 'vae.safetensors', HINTS), /vae\.safetensors: not a DiT\/MDT state dict: expected keys blocks\.N\.\*/);
  const dit = readFileSync(join(DEFAULT_FIXTURES, 'dit-tiny', 'weights.safetensors'));
  assert.throws(() => modelFromSafetensors(dit, 'dit.safetensors', {}), /dit\.safetensors: cannot tell the number of attention heads.*pass --num-heads/);
});

/** Debian's Chromium, or why there is none. */
function findChromium(): { path: string } | { reason: string } {
  const candidates = [process.env.MDT_CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser'].filter((p): p is string => p !== undefined && p !== '');
  const path = candidates.find((p) => existsSync(p));
  return path === undefined ? { reason: `no Chromium at ${candidates.join(', ')} (apt-get install chromium; .ci/run does)` } : { path };
}

const TYPES: Record<string, string> = { '.html': 'text/html', '.js': 'text/javascript', '.wasm': 'application/wasm', '.map': 'application/json' };

/** The built page, plus files served beside it by name. */
function serve(dir: string, beside: Record<string, Uint8Array>): Promise<{ server: Server; base: string }> {
  const server = createServer((req, res) => {
    const name = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname.slice(1)) || 'index.html';
    const body = beside[name] ?? (existsSync(join(dir, name)) && !name.includes('..') ? readFileSync(join(dir, name)) : null);
    if (body === null) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[extname(name)] ?? 'application/octet-stream' }).end(body);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok({ server, base: `http://127.0.0.1:${(server.address() as { port: number }).port}` })));
}

// ../shared/docs/BROWSER.md: WebGPU and WebGL2 on SwiftShader, headless, as root.
const FLAGS = ['--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--enable-unsafe-webgpu', '--enable-features=Vulkan', '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader', '--enable-unsafe-swiftshader'];

test('the page in headless Chromium samples what Node samples, inpaints, and shows bad files as errors', async (t) => {
  const chromium = findChromium();
  if ('reason' in chromium) return t.skip(chromium.reason);
  const { chromium: launcher } = await import('playwright-core');

  // Node: what `mdt sample --seed 7` samples (the same model, guidance, steps and key), and
  // the model exported with that guidance, as `mdt export --cfg-scale 4` writes it.
  await initBackend({ prefer: 'cpu' });
  registerMissingKernels();
  const m = modelFromSafetensors(WEIGHTS, 'weights.safetensors', HINTS);
  const guidance = { schedule: { kind: 'power-cosine', scale: 4, power: 4 } as const, channels: 'first3' as const };
  const sampler = compileSampler(m.model, m.values, { steps: '10', sampler: 'ddpm', guidance: guidance.schedule, guideChannels: guidance.channels });
  const x = sampler.sample(Int32Array.from([1, 2, 3, 4]), foldIn(keyFromSeed(7), 0));
  const want = (await x.data()) as Float32Array;
  const onnx = encodeOnnx(exportOnnx(m.model, m.values, { guidance: { ...guidance, inChannels: 4 }, which: 'ema', producerVersion: 'test' }));
  tf.dispose([x, ...m.values.values()]);
  sampler.dispose();
  const maxAbs = Math.max(...want.map(Math.abs));
  /** The page's images against Node's: in float32, and as the 8-bit pixels a grid shows. */
  const compare = (what: string, got: number[]) => {
    assert.equal(got.length, want.length);
    const worst = Math.max(...got.map((v, i) => Math.abs(v - want[i]!)));
    const [p, q] = [toUint8(Float32Array.from(got)), toUint8(want)];
    const worstLevel = Math.max(...p.map((v, i) => Math.abs(v - q[i]!)));
    console.log(`${what} vs Node (tfjs cpu): max |Δ| ${worst.toExponential(2)} of max |x| ${maxAbs.toFixed(2)}; 8-bit pixels differ by at most ${worstLevel}`);
    // A GPU backend's float32 differs from the CPU's in the last bits of exp, tanh and sums; over 10 steps that stays far below one 8-bit level.
    assert.ok(worst <= 1e-3 * maxAbs, `${what}: max |Δ| ${worst} > 1e-3·${maxAbs}`);
    assert.ok(worstLevel <= 1, what);
  };

  const dir = mkdtempSync(join(tmpdir(), 'mdt-web-'));
  await buildWeb(dir);
  const { server, base } = await serve(dir, {
    'model.safetensors': WEIGHTS, 'other.safetensors': OTHER, 'broken.safetensors': NOT_SAFETENSORS,
    'model.onnx': onnx, 'cut.onnx': onnx.subarray(0, onnx.length >> 1), 'other.onnx': NOT_SAFETENSORS,
  });
  const browser = await launcher.launch({ executablePath: chromium.path, args: FLAGS });
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
    const logs: string[] = [];
    page.on('console', (m) => logs.push(m.text()));
    page.on('pageerror', (e) => logs.push(`page error: ${e.message}`));
    const settled = async () => {
      await page.waitForFunction(() => ['done', 'error'].includes(document.body.dataset.state ?? ''), null, { timeout: 300_000 });
      return page.evaluate(() => ({ state: document.body.dataset.state, error: document.getElementById('error')!.textContent, info: document.getElementById('info')!.textContent, status: document.getElementById('status')!.textContent }));
    };
    const run = { classes: '1,2,3,4', count: '1', steps: '10', cfg: '4', seed: '7' };
    await page.goto(`${base}/index.html?${new URLSearchParams({ ...run, 'num-heads': '4', 'decode-layer': '2', autorun: 'sample' })}`);
    const sampled = await settled();
    assert.equal(sampled.state, 'done', `${sampled.error}\n${logs.join('\n')}`);
    const shown = () => page.evaluate(() => {
      const v = (window as unknown as { mdt: { last: { data: Float32Array; n: number }; backend: string } }).mdt;
      return { data: [...v.last.data], backend: v.backend };
    });
    const got = await shown();
    console.log(`page: ${sampled.info} — ${sampled.status}`);
    const shot = process.env.MDT_WEB_SCREENSHOT ?? join(dir, 'screenshot.png');
    await page.screenshot({ path: shot, fullPage: true });
    compare(`page (${got.backend})`, got.data);

    await page.click('#inpaint');
    const inpainted = await settled();
    assert.equal(inpainted.state, 'done', `${inpainted.error}\n${logs.join('\n')}`);
    assert.equal(await page.evaluate(() => (window as unknown as { mdt: { kind: string } }).mdt.kind), 'inpainted');

    // The exported file on onnxruntime-web: its guidance is the file's, and it cannot inpaint.
    await page.goto(`${base}/index.html?${new URLSearchParams({ ...run, cfg: '2', ckpt: 'model.onnx', autorun: 'sample' })}`);
    const viaOnnx = await settled();
    assert.equal(viaOnnx.state, 'done', `${viaOnnx.error}\n${logs.join('\n')}`);
    console.log(`page: ${viaOnnx.info} — ${viaOnnx.status}`);
    assert.match(viaOnnx.info ?? '', /on onnxruntime-web wasm; guidance power-cosine w=4 s=4 on first3 channels, as exported/);
    assert.equal(await page.inputValue('#cfg'), '4');
    assert.ok(await page.isDisabled('#inpaint'));
    const viaOnnxGot = await shown();
    compare(`page (${viaOnnxGot.backend})`, viaOnnxGot.data);

    const bad = [
      ['broken.safetensors', /safetensors broken\.safetensors: header length \d+ (exceeds|runs past)/],
      ['other.safetensors', /other\.safetensors: not a DiT\/MDT state dict/],
      ['missing.safetensors', /missing\.safetensors: 404/],
      ['cut.onnx', /cut\.onnx: not a readable ONNX model \(\d+ bytes; protobuf: .*\); the file is truncated or of another kind/],
      ['other.onnx', /other\.onnx: not a readable ONNX model/],
    ] as const;
    for (const [file, pattern] of bad) {
      await page.goto(`${base}/index.html?ckpt=${file}`);
      const r = await settled();
      assert.equal(r.state, 'error', file);
      assert.match(r.error ?? '', pattern);
    }
  } finally {
    await browser.close();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
