/** Starts the compute runtime: the best backend (or the one asked for) plus the kernels we add to it. */
import { initBackend, type BackendInfo, type BackendName } from './backend.ts';
import { registerMissingKernels } from './kernels.ts';
import { enableNativeKernels, wasmThreadDefault } from './native.ts';
import { guardWasmHeap } from './heap.ts';

/**
 * On wasm, matrix products and the fused pointwise kernels go to the optional native addon
 * when it built at install (AVX2/FMA, which WebAssembly lacks); MDT_NATIVE=0 keeps them on
 * wasm. With the addon, wasm itself runs one thread unless MDT_WASM_THREADS says otherwise
 * (a second wasm thread only contends with the addon's pool; see runtime/backend.ts). The wasm
 * heap is guarded (runtime/heap.ts): running out of it is an error, not a dead module.
 */
export async function startRuntime(prefer: BackendName | 'auto' = 'auto'): Promise<BackendInfo> {
  const info = await initBackend({ prefer, ...wasmThreadDefault() });
  registerMissingKernels();
  if (info.name !== 'wasm') return info;
  guardWasmHeap();
  const native = enableNativeKernels();
  return { ...info, detail: { ...info.detail, native: native.reason } };
}
