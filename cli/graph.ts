/**
 * `mdt graph`: the compiled graph of a named (or resized) model, traced without weights — the
 * training step's branches or one sampling step — as tables (nodes per op, MACs per module
 * forward and backward, parameter and activation memory, folded constants, fusions), or one
 * module's nodes as an IR listing (`--module blocks.0`).
 */
import type { Command } from 'commander';
import { gridSize, namedConfig, type ModelConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { formatGraphReport, formatModuleListing, graphModules, graphReport, inModule, type ReportMode } from '../compile/graph-report.ts';
import { say, type CliIO } from './io.ts';
import { addSizeOptions, intArg, modelNameArg, numberArg, option, sizeOverrides, UsageError, type SizeOverrides } from './options.ts';

interface GraphFlags extends SizeOverrides {
  readonly model: string;
  readonly mode: 'train' | 'sample';
  readonly inputSize?: number;
  readonly inChannels?: number;
  readonly numClasses?: number;
  readonly batch: number;
  readonly cfgScale?: number;
  readonly keep?: number;
  readonly module?: string;
}

export function graphCommand(program: Command, io: CliIO): Command {
  const cmd = program.command('graph').description('the compiled graph of a model, traced without weights: nodes, MACs per module, memory, fusions');
  cmd.addOption(option('--model <name>', 'model family and size: DiT|MDT-{S,B,L,XL}/{2,4,8} or MDTv2-{S,B,L,XL}/2', { default: 'MDT-S/2', parse: modelNameArg }));
  cmd.addOption(option('--mode <mode>', 'train: the training step\'s branches with gradients; sample: one DDPM sampling step', { default: 'train', choices: ['train', 'sample'] }));
  addSizeOptions(cmd, () => "the model's");
  return cmd
    .addOption(option('--input-size <n>', 'input side (latent side for latent models)', { defaultText: "the model's (32)", parse: intArg(1, 4096) }))
    .addOption(option('--in-channels <n>', 'input channels', { defaultText: "the model's (4)", parse: intArg(1, 1024) }))
    .addOption(option('--num-classes <n>', 'classes', { defaultText: "the model's (1000)", parse: intArg(1, 1_000_000) }))
    .addOption(option('--batch <n>', 'images per graph (a guided sampling step runs twice as many rows)', { default: 1, parse: intArg(1, 1_000_000) }))
    .addOption(option('--cfg-scale <w>', 'sample mode: classifier-free guidance scale (1 = no guidance)', { defaultText: '1', parse: numberArg(0, Infinity) }))
    .addOption(option('--keep <tokens>', 'train mode: tokens the masked branch keeps', { defaultText: '⌊N·(1 − mask ratio)⌋', parse: intArg(1) }))
    .addOption(option('--module <name>', 'print the nodes of one module (blocks.0, x_embedder, blocks.0.attn, …) as an IR listing instead of the tables', { defaultText: 'none' }))
    .action((f: GraphFlags) => {
      const data = Object.fromEntries((['inputSize', 'inChannels', 'numClasses'] as const).filter((k) => f[k] !== undefined).map((k) => [k, f[k]]));
      let config: ModelConfig;
      try {
        config = namedConfig(f.model, { ...data, ...sizeOverrides(f) });
      } catch (e) {
        throw new UsageError((e as Error).message);
      }
      const tokens = gridSize(config) ** 2;
      if (f.cfgScale !== undefined && f.mode !== 'sample') throw new UsageError('--cfg-scale applies to --mode sample');
      if (f.keep !== undefined && f.mode !== 'train') throw new UsageError('--keep applies to --mode train');
      if (f.keep !== undefined && config.variant === 'dit') throw new UsageError('--keep: DiT trains no masked branch');
      if (f.keep !== undefined && f.keep > tokens) throw new UsageError(`--keep: ${f.keep} tokens, but the model has ${tokens}`);
      const mode: ReportMode = f.mode;
      const report = graphReport(buildModel(config), mode, {
        batch: f.batch,
        ...(f.keep === undefined ? {} : { lenKeep: f.keep }),
        ...(f.cfgScale === undefined ? {} : { cfgScale: f.cfgScale }),
      });
      if (f.module === undefined) {
        say(io, formatGraphReport(report, f.model));
        return;
      }
      const name = f.module;
      const listings = report.parts.map((p) => formatModuleListing(p, name)).filter((s) => s !== '');
      if (listings.length === 0) {
        const known = [...new Set(report.parts.flatMap((p) => graphModules(p.graph)))];
        const near = known.filter((m) => inModule(m, name.split('.')[0]!));
        throw new UsageError(`--module: no node of ${f.model}'s ${f.mode} graph is in module '${name}'; its modules: ${(near.length > 0 ? near : known).join(', ')}`);
      }
      say(io, `${f.model}: ${report.title}\n`);
      say(io, listings.join('\n\n'));
    });
}
