/**
 * What every notebook shares: its positional arguments, checked before any work starts, and
 * an uncaught error reported as one line (`examples/02-mdt-vs-dit.ts: error: …`, exit 1; a bad
 * argument exits 2, like the CLI). MDT_DEBUG=1 prints the stack as well.
 */
import { basename } from 'node:path';
import { UsageError } from '../dsl/errors.ts';

const script = `examples/${basename(process.argv[1] ?? 'notebook')}`;

function report(e: unknown): never {
  const message = e instanceof Error ? e.message : String(e);
  process.stderr.write(`${script}: error: ${message}\n`);
  if (process.env.MDT_DEBUG && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  process.exit(e instanceof UsageError ? 2 : 1);
}
process.on('uncaughtException', report);
process.on('unhandledRejection', report);

/** Positional argument `i` (0-based, after the script) as a positive integer, or `fallback` when absent. */
export function positiveIntArg(i: number, name: string, fallback: number): number {
  const given = process.argv[2 + i];
  if (given === undefined) return fallback;
  if (!/^\d+$/.test(given) || !Number.isSafeInteger(Number(given)) || Number(given) < 1) {
    report(new UsageError(`${name} must be a positive integer, got "${given}"`));
  }
  return Number(given);
}

/** Positional argument `i` as a path (any non-empty string), or `fallback` when absent. */
export function pathArg(i: number, name: string, fallback: string): string {
  const given = process.argv[2 + i];
  if (given === undefined) return fallback;
  if (given.trim() === '') report(new UsageError(`${name} must be a non-empty path`));
  return given;
}

/** Fails with a usage error unless nothing follows the last of the `count` positional arguments. */
export function noMoreArgs(count: number, usage: string): void {
  const extra = process.argv.slice(2 + count);
  if (extra.length > 0) report(new UsageError(`unexpected argument(s) ${extra.map((a) => JSON.stringify(a)).join(' ')}; usage: npx tsx ${script} ${usage}`));
}
