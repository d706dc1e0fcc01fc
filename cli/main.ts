/**
 * The `mdt` command line. `runCli` never exits the process: it returns the exit code (0 ok,
 * 1 a failure while running, 2 a usage error: unknown flag, bad value, wrong combination).
 */
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { classifierCommand } from './classifier.ts';
import { convertCommand } from './convert.ts';
import { doctorCommand } from './doctor.ts';
import { encodeCommand } from './encode.ts';
import { exportCommand } from './export.ts';
import { evalCommand } from './eval.ts';
import { graphCommand } from './graph.ts';
import { inpaintCommand } from './inpaint.ts';
import { processIO, type CliIO } from './io.ts';
import { UsageError } from './options.ts';
import { parityCommand } from './parity.ts';
import { sampleCommand } from './sample.ts';
import { summaryCommand } from './summary.ts';
import { trainCommand } from './train.ts';

export const VERSION = '0.1.0';

/** The program; `setExitCode` receives the status of commands that report one (parity). */
export function buildProgram(io: CliIO, setExitCode: (code: number) => void = () => {}): Command {
  const program = new Command('mdt')
    .description('Masked Diffusion Transformers (MDT, MDTv2) and DiT in TypeScript / TensorFlow.js')
    .version(VERSION)
    // Set before the subcommands are added, which inherit them.
    .exitOverride()
    .showHelpAfterError('(add --help for every flag and its default)')
    .configureOutput({ writeOut: (s) => io.write(s), writeErr: (s) => io.writeErr(s) });
  trainCommand(program, io);
  sampleCommand(program, io);
  inpaintCommand(program, io);
  summaryCommand(program, io);
  graphCommand(program, io);
  doctorCommand(program, io);
  parityCommand(program, setExitCode);
  convertCommand(program, io);
  encodeCommand(program, io);
  exportCommand(program, io);
  classifierCommand(program, io);
  evalCommand(program, io);
  return program;
}

export async function runCli(argv: readonly string[], io: CliIO = processIO): Promise<number> {
  let code = 0;
  let running = '';
  const program = buildProgram(io, (c) => (code = c));
  program.hook('preAction', (_self, action) => {
    running = action.name();
  });
  try {
    await program.parseAsync([...argv], { from: 'user' });
    return code;
  } catch (e) {
    // Commander has printed its own message (or the help / version).
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2;
    if (e instanceof UsageError) {
      io.writeErr(`error: ${e.message}\n(see mdt ${running} --help for every flag and its default)\n`);
      return 2;
    }
    io.writeErr(`error: ${e instanceof Error ? e.message : String(e)}\n`);
    if (process.env.MDT_DEBUG && e instanceof Error && e.stack) io.writeErr(`${e.stack}\n`);
    return 1;
  }
}

export function main(argv: readonly string[] = process.argv.slice(2)): Promise<number> {
  return runCli(argv, processIO);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  process.exitCode = await main();
}
