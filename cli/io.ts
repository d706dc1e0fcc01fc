/** Where a command's output goes: the process streams, or buffers in tests. */
export interface CliIO {
  /** Raw text to stdout / stderr. */
  write(text: string): void;
  writeErr(text: string): void;
  /** Whether stdout is a terminal (progress bars are drawn only then). */
  readonly tty: boolean;
}

export const processIO: CliIO = {
  write: (text) => process.stdout.write(text),
  writeErr: (text) => process.stderr.write(text),
  tty: process.stdout.isTTY === true,
};

export function say(io: CliIO, line: string): void {
  io.write(`${line}\n`);
}
