/** Starts the compute runtime: the best backend (or the one asked for) plus the kernels we add to it. */
import { initBackend, type BackendInfo, type BackendName } from '../dsl/backend.ts';
import { registerMissingKernels } from '../dsl/kernels.ts';

export async function startRuntime(prefer: BackendName | 'auto' = 'auto'): Promise<BackendInfo> {
  const info = await initBackend({ prefer });
  registerMissingKernels();
  return info;
}
