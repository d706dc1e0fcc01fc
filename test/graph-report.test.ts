import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { startRuntime } from '../runtime/start.ts';
import { lower } from '../compile/execute.ts';
import { layer, named } from '../dsl/layer.ts';
import { mergeDecls, param } from '../dsl/param.ts';
import { add, linear, mul, silu } from '../dsl/ops.ts';
import type { Tensor } from '../dsl/tensor.ts';
import { GraphBuilder, graphInputs } from '../compile/ir.ts';
import { formatGraphReport, formatModuleListing, graphReport, memoryPlan, type GraphPart } from '../compile/graph-report.ts';
import { summary } from '../compile/summary.ts';
import { runCli } from '../cli/main.ts';
import type { CliIO } from '../cli/io.ts';
import { namedConfig } from '../mdt/config.ts';
import { buildModel } from '../mdt/model.ts';
import { B, L, checkInputs, trunk, type DiffusionModel } from '../mdt/trunk.ts';

const TINY = { depth: 3, hiddenSize: 32, numHeads: 2, inputSize: 8, patchSize: 2, inChannels: 1, numClasses: 3, decodeLayer: 1 };
const D: number = 32, N = 16, C = 1, P = 2, FREQ = 256;
/** DiT's per-image block count: 12·T·D² (qkv, proj, MLP) + 2·T²·D (q·kᵀ, attn·v) + 6·D² (adaLN). */
const block = (t: number) => 12 * t * D * D + 2 * t * t * D + 6 * D * D;
const macsOf = (part: GraphPart) => Object.fromEntries(part.modules.map((m) => [m.module, [m.forward, m.backward]]));

test('training report: MACs per module are the closed forms, backward twice the forward products', () => {
  const batch = 2;
  const r = graphReport(buildModel(namedConfig('MDT-S/2', TINY)), 'train', { batch });
  const lenKeep = Math.trunc(N * 0.7);
  assert.equal(r.lenKeep, lenKeep);
  assert.deepEqual(r.parts.map((p) => p.name), ['full branch', 'masked branch']);
  const [full, masked] = r.parts as [GraphPart, GraphPart];
  const embed = batch * N * C * P * P * D;
  const time = batch * (FREQ * D + D * D);
  const head = batch * (N * D * P * P * 2 * C + 2 * D * D);
  // x is data, so x_embedder's backward is dW only; t_embedder's first layer reads constant features.
  const timeBackward = batch * (FREQ * D + 2 * D * D);
  assert.deepEqual(macsOf(full), {
    x_embedder: [embed, embed],
    t_embedder: [time, timeBackward],
    'blocks.0': [batch * block(N), 2 * batch * block(N)],
    'blocks.1': [batch * block(N), 2 * batch * block(N)],
    'blocks.2': [batch * block(N), 2 * batch * block(N)],
    final_layer: [head, 2 * head],
  });
  // Masked: the encoder (blocks 0, 1) sees the kept tokens; the decoder and the side block all N.
  assert.deepEqual(macsOf(masked), {
    x_embedder: [embed, embed],
    t_embedder: [time, timeBackward],
    'blocks.0': [batch * block(lenKeep), 2 * batch * block(lenKeep)],
    'blocks.1': [batch * block(lenKeep), 2 * batch * block(lenKeep)],
    'sideblocks.0': [batch * block(N), 2 * batch * block(N)],
    'blocks.2': [batch * block(N), 2 * batch * block(N)],
    final_layer: [head, 2 * head],
  });
  for (const p of r.parts) {
    const ratio = p.backwardMacs / p.forwardMacs;
    assert.ok(ratio > 1.9 && ratio <= 2, `${p.name}: backward/forward ${ratio}`);
  }
  // The per-image forward agrees with summary().
  const s = summary(buildModel(namedConfig('MDT-S/2', TINY)));
  assert.equal(full.forwardMacs, batch * s.macs);
  assert.equal(masked.forwardMacs, batch * s.maskedMacs);
});

test('training report: fusions fire per layer, the passes shrink nothing they should keep', () => {
  const r = graphReport(buildModel(namedConfig('MDT-S/2', TINY)), 'train');
  const [full, masked] = r.parts as [GraphPart, GraphPart];
  // linear: 5 per block (adaLN, qkv, proj, fc1, fc2) + x_embedder + 2 in t_embedder + 2 in the final layer;
  // ln_modulate: 2 per block + the final layer; softmax_bias (relative bias) and gelu: 1 per block.
  assert.deepEqual(full.applied, { linear: 5 * 3 + 5, ln_modulate: 2 * 3 + 1, softmax_bias: 3, gelu: 3 });
  assert.deepEqual(masked.applied, { linear: 5 * 4 + 5, ln_modulate: 2 * 4 + 1, softmax_bias: 4, gelu: 4 });
  const ops = new Map(full.ops);
  assert.equal(ops.get('linear'), 20);
  assert.equal(ops.get('softmax_bias'), 3);
  assert.ok(ops.get('ln_modulate')! >= 7, 'the forward ln_modulate survive autodiff');
  assert.ok(full.traced < full.graph.nodes.length, 'the training graph holds the backward pass');
  assert.ok(full.memory.folded > 0 && full.memory.foldedKept <= full.memory.folded);
  assert.ok(full.memory.peak > 0 && full.memory.peak < full.memory.total);
  // Train-only parameters (side block, mask token) are read by the masked branch only.
  const sideParams = (p: GraphPart) => p.graph.nodes.filter((n) => n.op === 'input' && String(n.attrs['name']).startsWith('sideblocks.')).length;
  assert.equal(sideParams(full), 0);
  assert.ok(sideParams(masked) > 0);
  assert.ok(masked.params.bytes > full.params.bytes);
  const text = formatGraphReport(r, 'tiny MDT');
  assert.match(text, /fused softmax_bias\s+3\s+4/);
  assert.match(text, /blocks\.2\s/);
});

test('sampling report: one guided DDPM step runs 2·batch rows, forward only', () => {
  const model = buildModel(namedConfig('MDT-S/2', TINY));
  const plain = graphReport(model, 'sample', { batch: 2 });
  const guided = graphReport(model, 'sample', { batch: 2, cfgScale: 4 });
  assert.equal(plain.rows, 2);
  assert.equal(guided.rows, 4);
  const per = summary(model).macs;
  assert.equal(plain.parts[0]!.forwardMacs, 2 * per);
  assert.equal(guided.parts[0]!.forwardMacs, 4 * per);
  assert.equal(guided.parts[0]!.backwardMacs, 0);
  assert.ok(guided.parts[0]!.graph.nodes.every((n) => !(n.op === 'input' && String(n.attrs['name']).startsWith('sideblocks.'))));
});

test('the memory plan follows the executor: freed after the last reader, reshapes share a buffer', () => {
  const b = new GraphBuilder();
  const x = b.input('x', 'param', [10, 10], 'float32');
  const a = b.emit('exp', [x]); // 400 B
  const v = b.emit('reshape', [a], { shape: [100] }); // a view of a: no bytes
  const c = b.emit('mul', [v, v]); // 400 B; a's buffer goes after this, with its last view
  const d = b.emit('sum', [c], { axes: [0], keepDims: false }); // 4 B, the output
  const k = b.constant(2, []);
  const k2 = b.emit('mul', [k, k]); // folded, kept (read by the run)
  b.output('y', b.emit('mul', [d, k2]));
  const m = memoryPlan(b.finish());
  assert.equal(m.peak, 800);
  assert.equal(m.peakNode, c);
  assert.equal(m.total, 400 + 400 + 4 + 4);
  assert.equal(m.folded, 2);
  assert.equal(m.foldedKept, 1);
  assert.equal(m.foldedBytes, 4);
});

test('the simulated peak is what the executor reaches (tf.memory, which counts views as copies)', async () => {
  await startRuntime('cpu');
  const model = buildModel(namedConfig('MDT-S/2', TINY));
  const parts = [...graphReport(model, 'train', { batch: 2 }).parts, ...graphReport(model, 'sample', { batch: 2, cfgScale: 4 }).parts];
  for (const part of parts) {
    const exe = lower(part.graph);
    const inputs = new Map(graphInputs(part.graph).map((i) => [i.name, tf.zeros(i.node.shape as number[], i.node.dtype)]));
    const base = tf.memory().numBytes;
    let peak = 0;
    const out = exe.run(inputs, () => void (peak = Math.max(peak, tf.memory().numBytes - base)));
    tf.dispose([...out.values(), ...inputs.values()]);
    exe.dispose();
    assert.equal(peak, memoryPlan(part.graph, { viewsShareBuffers: false }).peak, part.name);
    assert.ok(part.memory.peak <= peak, `${part.name}: shared views lower the peak`);
  }
});

/** A block written in a test from DSL ops: a gated MLP (SwiGLU) residual, x + W2·(silu(W1·x) ⊙ W3·x), no bias. */
function swigluModel(hidden: number): DiffusionModel {
  const c = namedConfig('DiT-S/2', { depth: 1, hiddenSize: D, numHeads: 2, inputSize: 8, patchSize: 2, inChannels: 1, numClasses: 3 });
  const base = trunk(c);
  const init = { kind: 'normal', std: 0.02 } as const;
  const blk = named('blocks.0', layer([B, L, D] as const, [B, L, D] as const, {
    'w1.weight': param([hidden, D], init), 'w3.weight': param([hidden, D], init), 'w2.weight': param([D, hidden], init),
  }, (p, x) => {
    const w = (name: string) => p.get<readonly [number, number]>(name);
    const gatedHidden = mul(silu(linear(x, w('w1.weight'))), linear(x, w('w3.weight')));
    return add(x, linear(gatedHidden, w('w2.weight'))) as unknown as Tensor<readonly [B, L, number]>;
  }));
  return {
    config: c,
    params: mergeDecls(base.params, blk.params),
    forward(p, x, t, y) {
      checkInputs(c, x, t, y);
      const cond = base.condition(p, t, y);
      return base.head(p, blk.apply(p, base.embed(p, x), undefined), cond);
    },
  };
}

test('a custom block written with DSL ops is counted from its graph', () => {
  const hidden = 48;
  const model = swigluModel(hidden);
  const s = summary(model);
  const row = s.rows.find((r) => r.module === 'blocks.0')!;
  assert.equal(row.params, 3 * hidden * D);
  assert.equal(row.macs, 3 * N * D * hidden);
  const r = graphReport(model, 'train');
  assert.equal(r.parts.length, 1);
  assert.deepEqual(macsOf(r.parts[0]!)['blocks.0'], [3 * N * D * hidden, 6 * N * D * hidden]);
  const listing = formatModuleListing(r.parts[0]!, 'blocks.0');
  assert.match(listing, /^# full branch: module blocks\.0, \d+ nodes/);
  assert.match(listing, /%\d+ = param "blocks\.0\.w1\.weight" \[48, 32\] f32/);
  assert.match(listing, /= matmul\(%\d+, %\d+\) \{transposeA: false, transposeB: true\} \[16, 48\] f32\s+# blocks\.0$/m);
  assert.match(listing, /# blocks\.0 backward$/m);
});

async function cli(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIO = { write: (s) => void (out += s), writeErr: (s) => void (err += s), tty: false };
  const code = await runCli(argv, io);
  return { code, out, err };
}

test('mdt graph prints the train and sample reports and one module\'s listing', async () => {
  const size = ['--model', 'MDT-S/2', '--depth', '3', '--hidden-size', '32', '--num-heads', '2', '--input-size', '8', '--in-channels', '1', '--num-classes', '3', '--decode-layer', '1'];
  const train = await cli('graph', ...size, '--mode', 'train');
  assert.equal(train.code, 0, train.err);
  assert.match(train.out, /^MDT-S\/2: training step, batch 1, 8×8×1, 16 tokens: full branch \+ masked branch keeping 11/);
  assert.match(train.out, /fused ln_modulate\s+7\s+9/);
  assert.match(train.out, /MACs per module\s+full branch fwd\s+full branch bwd\s+masked branch fwd\s+masked branch bwd/);
  const sample = await cli('graph', ...size, '--mode', 'sample', '--cfg-scale', '4', '--batch', '2');
  assert.equal(sample.code, 0, sample.err);
  assert.match(sample.out, /one DDPM sampling step, batch 2 with CFG w=4 \(4 rows\)/);
  assert.doesNotMatch(sample.out, /bwd/);
  const listing = await cli('graph', ...size, '--mode', 'sample', '--module', 'blocks.0');
  assert.equal(listing.code, 0, listing.err);
  assert.match(listing.out, /^%\d+ = linear\(%\d+, %\d+, %\d+\) \[16, 96\] f32\s+# blocks\.0\.attn\.qkv$/m);
  assert.match(listing.out, /^%\d+ = attention\(%\d+, %\d+\) \{heads: 2, scale: 0\.25\} \[1, 16, 32\] f32\s+# blocks\.0\.attn$/m);
  assert.match(sample.out, /fused attention\s+3\n/);
  assert.doesNotMatch(sample.out, /fused softmax_bias/);
  const bad: [string[], RegExp][] = [
    [['--module', 'blocks.9'], /--module: no node .* in module 'blocks\.9'; its modules: blocks\.0, blocks\.1, blocks\.2/],
    [['--mode', 'train', '--cfg-scale', '2'], /--cfg-scale applies to --mode sample/],
    [['--mode', 'sample', '--keep', '3'], /--keep applies to --mode train/],
    [['--keep', '17'], /--keep: 17 tokens, but the model has 16/],
    [['--mode', 'eval'], /Allowed choices are train, sample/],
    [['--batch', '0'], /Expected an integer from 1/],
  ];
  for (const [argv, message] of bad) {
    const r = await cli('graph', ...size, ...argv);
    assert.equal(r.code, 2, `${argv.join(' ')}: exit ${r.code}, ${r.err}`);
    assert.match(r.err, message, argv.join(' '));
  }
});
