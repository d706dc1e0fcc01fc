/**
 * `npm run web [-- OUTDIR]`: the static page (default web/dist/): index.html, page.js, worker.js
 * (esbuild bundles of web/page.ts and web/worker.ts with the model and compiler code),
 * tfjs-backend-wasm's binaries and onnxruntime-web's. Serve the folder with any static server,
 * optionally with a model.safetensors beside index.html.
 *
 * The model code is the CLI's; the Node modules on its path are swapped here for the page's
 * versions: runtime/native.ts (the native addon) for web/native-off.ts, formats/onnx-proto.ts
 * (which reads the ONNX schema from disk) for web/onnx-proto.ts (which inlines it).
 */
import { build, type Plugin } from 'esbuild';
import { copyFile, mkdir, readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const SWAPS = new Map([
  [resolve(HERE, '../runtime/native.ts'), join(HERE, 'native-off.ts')],
  [resolve(HERE, '../formats/onnx-proto.ts'), join(HERE, 'onnx-proto.ts')],
]);

const pageModules: Plugin = {
  name: 'page-modules',
  setup(b) {
    b.onResolve({ filter: /(native|onnx-proto)\.ts$/ }, (args) => {
      const path = SWAPS.get(resolve(args.resolveDir, args.path));
      return path === undefined ? undefined : { path };
    });
  },
};

/** The runtimes' wasm binaries the page fetches from beside itself. */
const WASM = [
  { dir: '../node_modules/@tensorflow/tfjs-backend-wasm/dist', keep: (f: string) => f.endsWith('.wasm') },
  // The wasm bundle of onnxruntime-web has its loader inside; only the binary is fetched.
  { dir: '../node_modules/onnxruntime-web/dist', keep: (f: string) => f === 'ort-wasm-simd-threaded.wasm' },
];

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
    loader: { '.proto': 'text' },
    plugins: [pageModules],
  });
  if (result.errors.length > 0) throw new Error(`web: esbuild failed: ${result.errors.map((e) => e.text).join('; ')}`);
  await copyFile(join(HERE, 'index.html'), join(outDir, 'index.html'));
  const wasm: string[] = [];
  for (const { dir, keep } of WASM) {
    for (const f of (await readdir(join(HERE, dir))).filter(keep)) {
      await copyFile(join(HERE, dir, f), join(outDir, f));
      wasm.push(f);
    }
  }
  return ['index.html', 'page.js', 'worker.js', ...wasm];
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const out = resolve(process.argv[2] ?? join(HERE, 'dist'));
  const files = await buildWeb(out);
  console.log(`web: wrote ${files.join(', ')} to ${out}; serve it with any static file server (python3 -m http.server -d ${out}) and a model.safetensors beside index.html, or drop one on the page`);
}
