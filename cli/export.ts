/**
 * `mdt export --format onnx`: a checkpoint's (guided) denoiser as an ONNX file, and what
 * `mdt sample --engine onnx` needs to open one.
 */
import * as tf from '@tensorflow/tfjs';
import { stat } from 'node:fs/promises';
import { InvalidArgumentError, type Command } from 'commander';
import { exportOnnx } from '../compile/onnx-export.ts';
import { versions } from '../compile/checkpoint.ts';
import { ONNX_OPSET, ONNX_OPSETS, type OnnxOpset } from '../compile/onnx.ts';
import { encodeOnnx } from '../formats/onnx.ts';
import { writeFileAtomic } from '../formats/atomic-write.ts';
import { addCheckpointOptions, loadCheckpointModel, type CheckpointFlags } from './checkpoint-model.ts';
import { describeGuidance } from '../mdt/diffusion/cfg.ts';
import { addGuidanceOptions, guideChannelsFrom, guidanceFrom, type GuidanceFlags } from './guidance.ts';
import { say, type CliIO } from './io.ts';
import { option, startBackend, UsageError } from './options.ts';

interface ExportFlags extends CheckpointFlags, GuidanceFlags {
  readonly format: 'onnx';
  readonly out: string;
  readonly cfg: boolean;
  readonly opset: OnnxOpset;
}

export function exportCommand(program: Command, io: CliIO): Command {
  const cmd = program.command('export').description(`write a checkpoint's sampling network as a file other runtimes run: ONNX (opset ${ONNX_OPSETS.join(' or ')}), the guided denoiser (x, t, y) → out with a dynamic batch`);
  addCheckpointOptions(cmd);
  cmd
    .addOption(option('--format <name>', 'file format', { default: 'onnx', choices: ['onnx'] }))
    .addOption(option('--out <file>', 'the file to write (e.g. model.onnx)', { required: true }))
    .addOption(option('--opset <n>', 'ONNX opset: 23 has attention as one Attention op and Gelu (onnxruntime ≥ 1.23); 17 writes both in their parts, for older runtimes', { default: ONNX_OPSET, parse: opsetArg }))
    .addOption(option('--no-cfg', 'export the plain denoiser (B rows), without classifier-free guidance', { defaultText: 'guided when the guidance scale is not 1' }));
  addGuidanceOptions(cmd).action(async (f: ExportFlags) => runExport(f, io));
  return cmd;
}

function opsetArg(v: string): OnnxOpset {
  const opset = ONNX_OPSETS.find((o) => String(o) === v);
  if (opset === undefined) throw new InvalidArgumentError(`Allowed: ${ONNX_OPSETS.join(', ')}.`);
  return opset;
}

async function runExport(f: ExportFlags, io: CliIO): Promise<void> {
  if (!f.cfg && (f.cfgScale !== undefined || f.cfgSchedule !== undefined || f.guideChannels !== undefined)) {
    throw new UsageError('--no-cfg exports the plain denoiser: drop --cfg-scale, --cfg-schedule and --guide-channels');
  }
  if (await stat(f.out).then((s) => s.isDirectory(), () => false)) throw new UsageError(`--out ${f.out} is a directory; expected a file name such as model.onnx`);
  // Export only reads the weights: the plain cpu backend holds them.
  await startBackend('cpu');
  const { model, values } = await loadCheckpointModel(f, io);
  try {
    const c = model.config;
    const schedule = f.cfg ? guidanceFrom(f, c) : null;
    const channels = guideChannelsFrom(f, c);
    if (f.cfg && schedule === null) say(io, 'note: the guidance scale is 1, so the plain denoiser is exported (pass --cfg-scale to export a guided one)');
    const guidance = schedule === null ? null : { schedule, channels, inChannels: c.inChannels };
    const bytes = encodeOnnx(exportOnnx(model, values, { guidance, which: f.which, producerVersion: versions()['mdt-ts']!, opset: f.opset }));
    await writeFileAtomic(f.out, bytes);
    const rows = guidance === null ? 'B rows' : '2B rows (B conditional, then the same B with the null label)';
    say(io, `wrote ${f.out} (${(bytes.length / 2 ** 20).toFixed(1)} MiB, ONNX opset ${f.opset}): ${c.variant} ${c.inputSize}×${c.inputSize}×${c.inChannels}, ${f.which} weights, ${describeGuidance(schedule, channels)}; inputs x [${rows}, ${c.inChannels}, ${c.inputSize}, ${c.inputSize}] float32, t and y [rows] int32; output out [rows, ${2 * c.inChannels}, ${c.inputSize}, ${c.inputSize}]`);
  } finally {
    tf.dispose([...values.values()]);
  }
}
