/** Runs the `mdt` CLI in this process and captures what it prints. */
import { runCli } from '../cli/main.ts';
import type { CliIO } from '../cli/io.ts';

export async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIO = { write: (s) => void (out += s), writeErr: (s) => void (err += s), tty: false };
  const code = await runCli(argv, io);
  return { code, out, err };
}
