/**
 * `npm run web [-- OUTDIR]`: the static page (default web/dist/): index.html, page.js, worker.js
 * (esbuild bundles of web/page.ts and web/worker.ts with the model and compiler code) and
 * tfjs-backend-wasm's binaries. Serve the folder with any static server, optionally with a
 * model.safetensors beside index.html.
 *
 * The model code is the CLI's; the only Node module on its path, runtime/native.ts (the
 * native addon), is swapped for web/native-off.ts here.
 */
import { build, type Plugin } from 'esbuild';
import { copyFile, mkdir, readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const NATIVE = resolve(HERE, '../runtime/native.ts');

const noNativeAddon: Plugin = {
  name: 'no-native-addon',
  setup(b) {
    b.onResolve({ filter: /native\.ts$/ }, (args) => (resolve(args.resolveDir, args.path) === NATIVE ? { path: join(HERE, 'native-off.ts') } : undefined));
  },
};

export async function buildWeb(outDir: string): Promise<string[]> {
  await mkdir(outDir, { recursive: true });
  const result = await build({
    entryPoints: { page: join(HERE, 'page.ts'), worker: join(HERE, 'worker.ts') },
    outdir: outDir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: true,
    logLevel: 'warning',
    plugins: [noNativeAddon],
  });
  if (result.errors.length > 0) throw new Error(`web: esbuild failed: ${result.errors.map((e) => e.text).join('; ')}`);
  await copyFile(join(HERE, 'index.html'), join(outDir, 'index.html'));
  const wasmDir = join(HERE, '../node_modules/@tensorflow/tfjs-backend-wasm/dist');
  const wasm = (await readdir(wasmDir)).filter((f) => f.endsWith('.wasm'));
  for (const f of wasm) await copyFile(join(wasmDir, f), join(outDir, f));
  return ['index.html', 'page.js', 'worker.js', ...wasm];
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = resolve(process.argv[2] ?? join(HERE, 'dist'));
  const files = await buildWeb(out);
  console.log(`web: wrote ${files.join(', ')} to ${out}; serve it with any static file server (python3 -m http.server -d ${out}) and a model.safetensors beside index.html, or drop one on the page`);
}
