/** `mdt parity`: runs the golden-fixture cases of the official PyTorch code. */
import type { Command } from 'commander';
import { DEFAULT_FIXTURES, parityMain } from '../compile/parity-cli.ts';
import { backendOption, type BackendChoice } from './options.ts';

export function parityCommand(program: Command, setExitCode: (code: number) => void): Command {
  return program
    .command('parity')
    .description('check every case of the fixture directories against this implementation')
    .argument('[dirs...]', 'fixture directories (or a folder of them)', [DEFAULT_FIXTURES])
    .addOption(backendOption())
    .action(async (dirs: string[], f: { backend: BackendChoice }) => {
      setExitCode(await parityMain(['--backend', f.backend, ...dirs]));
    });
}
