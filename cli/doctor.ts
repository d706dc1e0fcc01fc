/** `mdt doctor`: what runs here (backends, threads, CUDA libraries) and why not. */
import type { Command } from 'commander';
import { doctor } from '../runtime/doctor.ts';
import { say, type CliIO } from './io.ts';

export function doctorCommand(program: Command, io: CliIO): Command {
  return program
    .command('doctor')
    .description('report the platform, the tfjs backends available and the one chosen (MDT_BACKEND and MDT_WASM_THREADS apply)')
    .action(async () => say(io, await doctor()));
}
