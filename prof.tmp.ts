import * as tf from '@tensorflow/tfjs';
import { startRuntime } from './runtime/start.ts';
import { initParams } from './compile/init.ts';
import { keyFromSeed, normal } from './dsl/random.ts';
import { jit } from './compile/trace.ts';
import { trainingReport } from './compile/pipeline.ts';
import { CLASSIFIER_PARAMS, classifierLossProgram, classifierProgram } from './mdt/eval/classifier.ts';
await startRuntime();
const p = initParams(CLASSIFIER_PARAMS, keyFromSeed(0));
const B = 64;
const data = new Map<string, tf.Tensor>([...p, ['images', tf.tensor4d(normal(keyFromSeed(1), B * 1024), [B, 1, 32, 32])], ['targets', tf.oneHot(tf.zeros([B], 'int32'), 10).toFloat()]]);
for (const [label, prog, build] of [['train', classifierLossProgram, (g: any) => trainingReport(g, 'loss', [...p.keys()]).graph], ['infer', classifierProgram, undefined]] as const) {
  const exe = (build ? jit(prog, build) : jit(prog)).executable(data);
  exe.run(data).forEach((t) => t.dispose());
  const times = new Map<string, number>();
  const t0 = Date.now();
  exe.run(data, (n, ms) => { const k = `${n.op} ${n.shape.join('x')}`; times.set(k, (times.get(k) ?? 0) + ms); }).forEach((t) => t.dispose());
  console.log(label, 'total', Date.now() - t0);
  console.log([...times].sort((a, b) => b[1] - a[1]).slice(0, 14).map(([k, v]) => `${v.toFixed(1)} ${k}`).join('\n'));
}
