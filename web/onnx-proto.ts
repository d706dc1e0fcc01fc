/**
 * formats/onnx-proto.ts as the page's build has it (web/build.ts swaps this file in): a page
 * has no file system, so esbuild inlines the schema's text (its `.proto` loader is `text`).
 * Typed against the Node module, so the two cannot drift apart.
 */
import type * as Node from '../formats/onnx-proto.ts';
import text from '../formats/onnx/onnx.proto';

export const ONNX_PROTO: typeof Node.ONNX_PROTO = text;
