// A thread of the onnx engine's pool (compile/onnx-pool.ts). The engine is TypeScript run through
// tsx, whose loader a worker does not inherit from the thread that started it: register it here,
// then run the worker's body.
import { register } from 'tsx/esm/api';

register();
await import('./onnx-worker.ts');
