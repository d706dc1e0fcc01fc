/** The messages between the page (web/page.ts) and the worker that runs the model (web/worker.ts). */
import type { ModelConfig } from '../mdt/config.ts';

export interface Hints {
  readonly numHeads?: number;
  readonly decodeLayer?: number;
}

export interface SampleRequest {
  readonly labels: readonly number[];
  readonly steps: string;
  /** 1: no guidance. */
  readonly cfgScale: number;
  readonly seed: number;
}

/** Which part of each image the inpainting regenerates. */
export type MaskShape = 'right' | 'bottom' | 'center';
export const MASK_SHAPES: readonly MaskShape[] = ['right', 'bottom', 'center'];

export type ToWorker =
  | { readonly type: 'load'; readonly bytes: Uint8Array; readonly name: string; readonly hints: Hints; readonly backend?: string }
  | ({ readonly type: 'sample' } & SampleRequest)
  | ({ readonly type: 'inpaint'; readonly mask: MaskShape; readonly switchFraction: number } & SampleRequest);

/** Images as the CLI writes them: NCHW floats in [-1, 1]. */
export interface Images {
  readonly data: Float32Array;
  readonly n: number;
  readonly channels: number;
  readonly size: number;
  readonly labels: readonly number[];
}

export type FromWorker =
  | {
      readonly type: 'loaded';
      readonly config: ModelConfig;
      /** 'tfjs' (a checkpoint) or 'onnxruntime-web' (an exported .onnx), on `backend`. */
      readonly engine: string;
      readonly backend: string;
      readonly tried: readonly string[];
      readonly notes: readonly string[];
      readonly canInpaint: boolean;
      /** The guidance scale an exported file fixed (1: none), else null: the page's field sets it. */
      readonly fixedCfg: number | null;
    }
  | { readonly type: 'progress'; readonly done: number; readonly total: number }
  | { readonly type: 'images'; readonly kind: 'samples' | 'inpainted'; readonly images: Images; readonly ms: number }
  | { readonly type: 'error'; readonly message: string };
