/** `mdt convert`: an official PyTorch .pt checkpoint to a safetensors state dict, no Python. */
import type { Command } from 'commander';
import { convertTorchToSafetensors } from '../formats/torch-pt.ts';
import { say, type CliIO } from './io.ts';
import { option, UsageError } from './options.ts';
import { startProgress, type Progress } from './progress.ts';

interface ConvertFlags {
  readonly fp16ToFp32: boolean;
  readonly expandViews: boolean;
  readonly prefer: 'ema' | 'model';
}

const MB = 1024 * 1024;

export function convertCommand(program: Command, io: CliIO): Command {
  return program
    .command('convert')
    .description('convert a torch.save checkpoint (.pt) to .safetensors, one tensor at a time')
    .argument('<in>', 'the .pt / .pth file')
    .argument('<out>', 'the .safetensors file to write')
    .addOption(option('--fp16-to-fp32', 'store half-precision tensors as float32 (exact); without it they are refused', { default: false }))
    .addOption(option('--expand-views', 'write broadcast (stride-0 or overlapping) views at their full size; without it they are refused', { default: false }))
    .addOption(option('--prefer <which>', 'state dict to take from a checkpoint holding several', { default: 'ema', choices: ['ema', 'model'] }))
    .action(async (input: string, out: string, f: ConvertFlags) => {
      if (!out.endsWith('.safetensors')) throw new UsageError(`<out>: expected a path ending in .safetensors, got ${out}`);
      const progress: { bar?: Progress } = {};
      const { count, bytes } = await convertTorchToSafetensors(input, out, {
        prefer: f.prefer,
        fp16ToFp32: f.fp16ToFp32,
        expandViews: f.expandViews,
        onProgress(done, total) {
          progress.bar ??= startProgress(io, { label: 'converting', total: total / MB, unit: 'MB', every: 256 });
          progress.bar.update(done / MB);
        },
      });
      progress.bar?.stop();
      say(io, `wrote ${count} tensors (${(bytes / MB).toFixed(1)} MB) to ${out}`);
    });
}
