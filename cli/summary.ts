/** `mdt summary`: parameters and MACs per module of a named (or resized) model. */
import type { Command } from 'commander';
import { gridSize, namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { formatSummary, summary } from '../compile/summary.ts';
import { say, type CliIO } from './io.ts';
import { addSizeOptions, intArg, modelNameArg, option, sizeOverrides, UsageError, type SizeOverrides } from './options.ts';

interface SummaryFlags extends SizeOverrides {
  readonly model: string;
  readonly inputSize?: number;
  readonly inChannels?: number;
  readonly numClasses?: number;
  readonly keep?: number;
}

export function summaryCommand(program: Command, io: CliIO): Command {
  const cmd = program.command('summary').description('parameters and forward GMACs per module');
  cmd.addOption(option('--model <name>', 'model family and size: DiT|MDT-{S,B,L,XL}/{2,4,8} or MDTv2-{S,B,L,XL}/2', { default: 'MDT-S/2', parse: modelNameArg }));
  addSizeOptions(cmd, () => "the model's");
  return cmd
    .addOption(option('--input-size <n>', 'input side (latent side for latent models)', { defaultText: "the model's (32)", parse: intArg(1, 4096) }))
    .addOption(option('--in-channels <n>', 'input channels', { defaultText: "the model's (4)", parse: intArg(1, 1024) }))
    .addOption(option('--num-classes <n>', 'classes', { defaultText: "the model's (1000)", parse: intArg(1, 1_000_000) }))
    .addOption(option('--keep <tokens>', 'tokens the masked encoder keeps, for the masked GMAC column', { defaultText: '⌊N·(1 − mask ratio)⌋', parse: intArg(1) }))
    .action((f: SummaryFlags) => {
      const data = Object.fromEntries((['inputSize', 'inChannels', 'numClasses'] as const).filter((k) => f[k] !== undefined).map((k) => [k, f[k]]));
      const model = buildModel(namedConfig(f.model, { ...data, ...sizeOverrides(f) }));
      const tokens = gridSize(model.config) ** 2;
      if (f.keep !== undefined && f.keep > tokens) throw new UsageError(`--keep: ${f.keep} tokens, but the model has ${tokens}`);
      say(io, formatSummary(summary(model, { name: f.model, ...(f.keep === undefined ? {} : { lenKeep: f.keep }) })));
    });
}
