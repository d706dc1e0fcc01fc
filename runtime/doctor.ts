// A plain-text report of what this machine can run and what is running, written so that
// a CUDA/cuDNN mismatch shows up as such instead of as a silent CPU fallback.

import * as tf from '@tensorflow/tfjs';
import { enableNativeKernels, wasmThreadDefault } from './native.ts';
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { availableParallelism, cpus, release } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  currentBackend, initBackend, resolvable, TFJS_NODE_PACKAGES, tryImport, WASM_PACKAGE, WEBGPU_PACKAGES, webgpuAvailable,
} from './backend.ts';
import { wasmStatus } from './backend-wasm.ts';

/** What @tensorflow/tfjs-node-gpu 4.22 is built against, and the sonames libtensorflow 2.9.1 loads. */
export const TFJS_NODE_GPU_NEEDS = {
  package: '@tensorflow/tfjs-node-gpu@4.22.0',
  libtensorflow: '2.9.1',
  cuda: '11.2',
  cudnn: '8.1',
  sonames: [
    'libcudart.so.11.0', 'libcublas.so.11', 'libcublasLt.so.11', 'libcufft.so.10',
    'libcurand.so.10', 'libcusolver.so.11', 'libcusparse.so.11', 'libcudnn.so.8',
  ],
} as const;

const CUDA_LIB = /^(libcudart|libcublas|libcublasLt|libcufft|libcurand|libcusolver|libcusparse|libcudnn)\.so(\.\d+)*$/;
const CONVENTIONAL_CUDA_DIRS = ['/usr/local/cuda/lib64'];

/** CUDA/cuDNN shared objects named in `ldconfig -p` output: file name to path. */
export function parseLdconfig(text: string): Map<string, string> {
  const found = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*(\S+)\s+\(.*\)\s+=>\s+(\S+)\s*$/.exec(line);
    if (m !== null && CUDA_LIB.test(m[1]) && !found.has(m[1])) found.set(m[1], m[2]);
  }
  return found;
}

function scanDir(dir: string, into: Map<string, string>): void {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return;
  }
  for (const n of names) if (CUDA_LIB.test(n) && !into.has(n)) into.set(n, join(dir, n));
}

function ldconfigOutput(): string | null {
  for (const bin of ['ldconfig', '/sbin/ldconfig', '/usr/sbin/ldconfig']) {
    try {
      return execFileSync(bin, ['-p'], { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
    } catch {
      // try the next location
    }
  }
  return null;
}

function family(soname: string): string {
  return soname.slice(0, soname.indexOf('.so'));
}

/**
 * Compares the CUDA libraries the dynamic loader can find with what tfjs-node-gpu needs.
 * `onLoaderPath` comes from ldconfig and LD_LIBRARY_PATH; `elsewhere` from conventional
 * install directories the loader does not search.
 */
export function cudaVerdict(onLoaderPath: ReadonlyMap<string, string>, elsewhere: ReadonlyMap<string, string> = new Map()): string[] {
  const lines: string[] = [];
  const missing: string[] = [];
  for (const soname of TFJS_NODE_GPU_NEEDS.sonames) {
    const path = onLoaderPath.get(soname);
    if (path !== undefined) {
      lines.push(`  ok       ${soname} -> ${path}`);
      continue;
    }
    missing.push(soname);
    const fam = family(soname);
    const others = [...onLoaderPath.keys()].filter((n) => family(n) === fam && /\.so\.\d/.test(n));
    const off = elsewhere.get(soname);
    if (others.length > 0) lines.push(`  WRONG    ${soname} missing; found ${others.join(', ')} (a different CUDA/cuDNN major version)`);
    else if (off !== undefined) lines.push(`  HIDDEN   ${soname} exists at ${off} but is not on the loader path (add its directory to LD_LIBRARY_PATH)`);
    else lines.push(`  MISSING  ${soname}`);
  }
  const want = `CUDA ${TFJS_NODE_GPU_NEEDS.cuda} + cuDNN ${TFJS_NODE_GPU_NEEDS.cudnn}`;
  lines.push(
    missing.length === 0
      ? `  verdict: every library ${TFJS_NODE_GPU_NEEDS.package} loads is present`
      : `  verdict: ${TFJS_NODE_GPU_NEEDS.package} (libtensorflow ${TFJS_NODE_GPU_NEEDS.libtensorflow}) needs ${want}; ` +
          `without ${missing.join(', ')} it would import but run every op on the CPU`,
  );
  return lines;
}

function cudaSection(): string[] {
  const ld = ldconfigOutput();
  const onPath = ld === null ? new Map<string, string>() : parseLdconfig(ld);
  const ldPath = (process.env.LD_LIBRARY_PATH ?? '').split(':').filter((d) => d !== '');
  for (const d of ldPath) scanDir(d, onPath);
  const elsewhere = new Map<string, string>();
  for (const d of CONVENTIONAL_CUDA_DIRS) if (!ldPath.includes(d)) scanDir(d, elsewhere);
  const lines = [
    `CUDA / cuDNN (for ${TFJS_NODE_GPU_NEEDS.package}: libtensorflow ${TFJS_NODE_GPU_NEEDS.libtensorflow}, ` +
      `CUDA ${TFJS_NODE_GPU_NEEDS.cuda}, cuDNN ${TFJS_NODE_GPU_NEEDS.cudnn})`,
    `  searched: ${ld === null ? 'ldconfig unavailable' : 'ldconfig -p'}; LD_LIBRARY_PATH=${ldPath.join(':') || '(unset)'}`,
  ];
  const smi = nvidiaSmi();
  if (smi !== null) lines.push(`  nvidia-smi: ${smi}`);
  return [...lines, ...cudaVerdict(onPath, elsewhere)];
}

function nvidiaSmi(): string | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=name,driver_version', '--format=csv,noheader'], {
      encoding: 'utf8', timeout: 10_000, stdio: ['ignore', 'pipe', 'ignore'],
    });
    return out.trim().split('\n').join('; ') || null;
  } catch {
    return null;
  }
}

function libtensorflowOf(pkg: string): string | null {
  const r = resolvable(pkg);
  if (!r.ok) return null;
  // tfjs-node keeps libtensorflow in <package>/deps/lib; its entry point is <package>/dist/index.js.
  const lib = join(dirname(dirname(fileURLToPath(r.path))), 'deps', 'lib');
  if (!existsSync(lib)) return `${lib} is missing (reinstall ${pkg})`;
  const so = readdirSync(lib).filter((n) => n.startsWith('libtensorflow.so'));
  return so.length > 0 ? `${lib}: ${so.join(', ')}` : `${lib} holds no libtensorflow.so`;
}

async function backendsSection(): Promise<string[]> {
  const lines = ['Backends importable here:'];
  for (const pkg of TFJS_NODE_PACKAGES) {
    const r = await tryImport(pkg);
    if (r.ok) {
      const version = (r.module.version as Record<string, unknown> | undefined)?.['tfjs-node'];
      lines.push(`  tensorflow via ${pkg}: imported${typeof version === 'string' ? ` (${version})` : ''}`);
    } else {
      lines.push(`  tensorflow via ${pkg}: not importable: ${r.error}`);
    }
    // Shown whenever the package is installed: a failed import is often a missing libtensorflow.
    const lib = libtensorflowOf(pkg);
    if (lib !== null) lines.push(`    libtensorflow: ${lib}`);
  }
  const wasm = await tryImport(WASM_PACKAGE);
  if (wasm.ok) {
    const simd = (await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT')) === true;
    lines.push(`  wasm via ${WASM_PACKAGE} ${String(wasm.module.version_wasm)}: importable; WebAssembly SIMD ${simd ? 'supported' : 'unsupported'}`);
  } else {
    lines.push(`  wasm via ${WASM_PACKAGE}: not importable: ${wasm.error}`);
  }
  lines.push('  cpu (pure JS): always available');
  const gpu = WEBGPU_PACKAGES.map((p) => {
    const r = resolvable(p);
    return `${p} ${r.ok ? 'installed' : 'not installed'}`;
  });
  lines.push(`  webgpu (automatic on a hardware adapter): ${gpu.join(', ')}`);
  if (WEBGPU_PACKAGES.every((p) => resolvable(p).ok)) {
    const a = await webgpuAvailable();
    lines.push(a.ok ? `    adapter: ${String(a.detail.adapter)}${a.detail.software === true ? ' (software, on the CPU)' : ''}` : `    adapter: none: ${a.error}`);
  }
  return lines;
}

async function liveSection(): Promise<string[]> {
  let info = currentBackend();
  if (info === null) {
    try {
      info = await initBackend(wasmThreadDefault());
    } catch (e) {
      return [`Live backend: none could start: ${e instanceof Error ? e.message : String(e)}`];
    }
  }
  const lines = [`Live backend: ${info.name} (tfjs ${info.tfjsVersion})`];
  for (const [k, v] of Object.entries(info.detail)) lines.push(`  ${k}: ${String(v)}`);
  const wasm = wasmStatus();
  lines.push(
    wasm === null
      ? 'WASM: not started in this process'
      : `WASM: SIMD ${wasm.simd === true ? 'on' : 'off'}, ${String(wasm.threads)} thread(s) ` +
          `(requested ${String(wasm.threadsRequested)}), binary ${String(wasm.binary ?? 'unknown')}` +
          (wasm.threadsFallback !== undefined ? `; threaded build failed: ${String(wasm.threadsFallback)}` : ''),
  );
  if (wasm !== null) {
    // What `mdt` commands would do on this backend: route matrix products to the native addon.
    const native = enableNativeKernels();
    lines.push(`Native kernels: ${native.enabled ? `on, ${native.threads} thread(s): ${native.reason}` : `off: ${native.reason}`}`);
  }
  return lines;
}

export async function doctor(): Promise<string> {
  const cpu = cpus();
  const lines = [
    'mdt-ts doctor',
    `Node ${process.version} on ${process.platform}/${process.arch} (kernel ${release()})`,
    `CPUs: ${cpu.length} logical (${cpu[0]?.model.trim() ?? 'unknown model'}), ${availableParallelism()} available to this process`,
    `MDT_BACKEND=${process.env.MDT_BACKEND ?? '(unset)'}  MDT_WASM_THREADS=${process.env.MDT_WASM_THREADS ?? '(unset)'}`,
    '',
    ...(await backendsSection()),
    '',
    ...(await liveSection()),
    '',
    ...cudaSection(),
    '',
    `tf.memory(): ${JSON.stringify(tf.memory())}`,
  ];
  return lines.join('\n');
}
