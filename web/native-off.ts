/**
 * runtime/native.ts as the page's build has it (web/build.ts swaps this file in): a web page
 * cannot load the Node addon, so its kernels are off and tfjs's own run. Typed against the
 * Node module, so the two cannot drift apart.
 */
import type * as Native from '../runtime/native.ts';
import { normal } from '../dsl/random.ts';

export const nativeKernelsStatus: typeof Native.nativeKernelsStatus = () => ({ enabled: false, reason: 'a web page has no native addon', threads: 0, isa: 'none', calls: 0 });
export const rowKernels: typeof Native.rowKernels = () => null;
export const fastNormal: typeof Native.fastNormal = normal;
