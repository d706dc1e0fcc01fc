/** Starts the compute runtime: the best backend (or the one asked for) plus the kernels we add to it. */
import { initBackend, type BackendInfo, type BackendName } from '../dsl/backend.ts';
import { registerMissingKernels } from '../dsl/kernels.ts';
import { enableNativeKernels } from '../dsl/native.ts';

/**
 * On wasm, matrix products go to the optional native addon when it built at install
 * (AVX2/FMA, which WebAssembly lacks); MDT_NATIVE=0 keeps them on wasm.
 */
export async function startRuntime(prefer: BackendName | 'auto' = 'auto'): Promise<BackendInfo> {
  const info = await initBackend({ prefer });
  registerMissingKernels();
  if (info.name !== 'wasm') return info;
  const native = enableNativeKernels();
  return { ...info, detail: { ...info.detail, native: native.reason } };
}
