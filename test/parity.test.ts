/**
 * Golden parity against the official PyTorch code, on the wasm and cpu backends: nothing may
 * fail or be skipped. Also on webgpu where its optional packages and an adapter are present
 * (README: Backends), skipped with the reason otherwise.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as tf from '@tensorflow/tfjs';
import { initBackend, webgpuAvailable } from '../runtime/backend.ts';
import { registerMissingKernels } from '../runtime/kernels.ts';
import { disableNativeKernels, enableNativeKernels } from '../runtime/native.ts';
import { DEFAULT_FIXTURES, fixtureDirs, runParity } from '../compile/parity-cli.ts';

for (const backend of ['wasm', 'wasm+native', 'cpu', 'webgpu'] as const) {
  test(`every fixture case passes on ${backend}`, async (t) => {
    if (backend === 'webgpu') {
      const gpu = await webgpuAvailable();
      if (!gpu.ok) return t.skip(`webgpu unavailable: ${gpu.error}`);
    }
    const tfName = backend === 'wasm+native' ? 'wasm' : backend;
    await initBackend({ prefer: tfName });
    registerMissingKernels();
    disableNativeKernels();
    if (backend === 'wasm+native') {
      const native = enableNativeKernels();
      if (!native.enabled) return t.skip(`native kernels unavailable: ${native.reason}`);
    }
    assert.equal(tf.getBackend(), tfName);
    const lines: string[] = [];
    const results = await runParity(fixtureDirs(DEFAULT_FIXTURES), (l) => lines.push(l));
    assert.equal(fixtureDirs(DEFAULT_FIXTURES).length, 3);
    const bad = results.filter((r) => r.status !== 'PASS');
    assert.deepEqual(bad.map((r) => `${r.fixture}/${r.name}: ${r.status} ${r.detail}`), [], lines.join('\n'));
    assert.equal(results.length, 79);
    // Worst error per case kind, for the record.
    const worst = new Map<string, number>();
    for (const r of results) worst.set(r.kind, Math.max(worst.get(r.kind) ?? 0, r.ratio));
    console.log(`${backend} worst error/allowed per kind: ${[...worst].map(([k, v]) => `${k} ${v.toExponential(1)}`).join(', ')}`);
    disableNativeKernels();
  });
}
