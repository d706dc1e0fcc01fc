/**
 * The text of the ONNX schema formats/onnx/onnx.proto, read from beside this file. The page's
 * build (web/build.ts) swaps in web/onnx-proto.ts, which has esbuild inline the same file.
 */
import { readFileSync } from 'node:fs';

export const ONNX_PROTO: string = readFileSync(new URL('./onnx/onnx.proto', import.meta.url), 'utf8');
