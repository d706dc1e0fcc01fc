/**
 * `mdt classifier`: trains the feature classifier of `mdt eval` on a built-in dataset, from a
 * seed, and writes its weights with the test accuracy in the safetensors metadata. The
 * committed mdt/eval/weights/*.safetensors come from this command at its defaults.
 */
import type { Command } from 'commander';
import type { BuiltinDataset } from '../mdt/data/builtin.ts';
import { accuracy, CLASSIFIER_TRAINING, classifyDataset, featureNet, saveClassifier, trainClassifier } from '../mdt/eval/train-classifier.ts';
import { classifierView, classifierWeightsPath } from '../mdt/eval/feature-nets.ts';
import { say, type CliIO } from './io.ts';
import { backendOption, intArg, option, startBackend, type BackendChoice } from './options.ts';

interface ClassifierFlags {
  readonly data: BuiltinDataset;
  readonly steps?: number;
  readonly seed?: number;
  readonly out?: string;
  readonly backend: BackendChoice;
}

export function classifierCommand(program: Command, io: CliIO): Command {
  return program
    .command('classifier')
    .description("train the feature classifier `mdt eval` uses for a built-in dataset (deterministic from the seed)")
    .addOption(option('--data <name>', 'built-in dataset', { default: 'fashion-mnist' as BuiltinDataset, choices: ['fashion-mnist', 'mnist'] }))
    .addOption(option('--steps <n>', 'training steps', { defaultText: '4000 (mnist), 8000 (fashion-mnist)', parse: intArg(1) }))
    .addOption(option('--seed <n>', 'seed of weights, data order and augmentation', { default: 0, parse: intArg(0) }))
    .addOption(option('--out <file>', 'where to write the weights', { defaultText: 'mdt/eval/weights/<data>.safetensors' }))
    .addOption(backendOption())
    .action(async (f: ClassifierFlags) => {
      await startBackend(f.backend);
      const cfg = { ...CLASSIFIER_TRAINING[f.data], ...(f.steps === undefined ? {} : { steps: f.steps }), ...(f.seed === undefined ? {} : { seed: f.seed }) };
      const started = Date.now();
      const params = await trainClassifier(classifierView(f.data, 'train'), cfg, (step, loss) => {
        if ((step + 1) % 500 === 0 || step + 1 === cfg.steps) say(io, `step ${step + 1}/${cfg.steps}  loss ${loss.toFixed(4)}  ${((Date.now() - started) / 1000).toFixed(0)} s`);
      });
      const net = featureNet(`classifier:${f.data}`, params);
      const test = classifyDataset(net, classifierView(f.data, 'test'));
      const acc = accuracy(test.predicted, test.labels);
      const out = f.out ?? classifierWeightsPath(f.data);
      await saveClassifier(out, params, {
        data: f.data,
        seed: String(cfg.seed),
        steps: String(cfg.steps),
        test_accuracy: acc.toFixed(4),
        command: `mdt classifier --data ${f.data} --steps ${cfg.steps} --seed ${cfg.seed}`,
      });
      net.dispose();
      say(io, `test accuracy ${(100 * acc).toFixed(2)}% on ${test.labels.length} images; weights in ${out}`);
    });
}
