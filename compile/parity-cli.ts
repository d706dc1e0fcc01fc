/** `npm run parity -- [--backend NAME] [DIR...]`: every case of every fixture directory. */
import { existsSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { BackendName } from '../runtime/backend.ts';
import { startRuntime } from '../runtime/start.ts';
import { runFixture, type CaseResult } from './parity.ts';

export const DEFAULT_FIXTURES = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../shared/fixtures');

/** Fixture directories under `root` (those with a cases.json), sorted. */
export function fixtureDirs(root: string): string[] {
  if (existsSync(join(root, 'cases.json'))) return [root];
  if (!existsSync(root)) throw new Error(`no fixture directory at ${root}`);
  return readdirSync(root, { withFileTypes: true })
    .filter((d) => d.isDirectory() && existsSync(join(root, d.name, 'cases.json')))
    .map((d) => join(root, d.name))
    .sort();
}

export async function runParity(dirs: readonly string[], log: (line: string) => void = console.log): Promise<CaseResult[]> {
  const all: CaseResult[] = [];
  for (const dir of dirs) {
    for (const r of await runFixture(dir)) {
      all.push(r);
      const ratio = r.status === 'SKIP' ? '' : ` worst ${Number.isFinite(r.ratio) ? r.ratio.toExponential(2) : 'inf'} of allowed`;
      log(`${r.status.padEnd(4)} ${r.fixture}/${r.name}${ratio}${r.status === 'PASS' ? '' : ` — ${r.detail}`}`);
    }
  }
  const count = (s: CaseResult['status']) => all.filter((r) => r.status === s).length;
  log(`parity: ${count('PASS')} passed, ${count('FAIL')} failed, ${count('SKIP')} skipped`);
  return all;
}

export async function parityMain(argv: readonly string[]): Promise<number> {
  const args = [...argv];
  let backend: BackendName | 'auto' = 'auto';
  const bi = args.indexOf('--backend');
  if (bi >= 0) {
    backend = args[bi + 1] as BackendName;
    args.splice(bi, 2);
  }
  const info = await startRuntime(backend);
  console.log(`backend: ${info.name}${info.detail.native ? ` (native kernels: ${String(info.detail.native)})` : ''}`);
  const dirs = (args.length > 0 ? args : [DEFAULT_FIXTURES]).flatMap((d) => fixtureDirs(resolve(d)));
  const results = await runParity(dirs);
  return results.some((r) => r.status === 'FAIL') ? 1 : 0;
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await parityMain(process.argv.slice(2));
}
