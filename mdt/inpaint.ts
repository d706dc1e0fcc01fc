/**
 * Inpainting with the side-interpolater (paper appendix C; the official code never released
 * it; procedure of MDT-SPEC §9): known tokens are re-noised to the current step, during the
 * first fraction of the steps the masked forward keeps exactly the known tokens and the
 * side-interpolater predicts the rest, then plain steps; the known region is pasted back.
 *
 * The pieces here are pure JS (which tokens are known, the pixel mask they make, the checks);
 * compile/inpaint.ts runs the loop on compiled sampling steps.
 */
import type { ModelConfig } from './config.ts';

/** A token is known only if every pixel of its p×p patch is known. */
export function knownTokens(knownPixels: ArrayLike<boolean>, grid: number, patch: number): boolean[] {
  const side = grid * patch;
  if (knownPixels.length !== side * side) throw new Error(`inpaint: mask has ${knownPixels.length} pixels, expected ${side}×${side}`);
  const out: boolean[] = [];
  for (let r = 0; r < grid; r++) {
    for (let c = 0; c < grid; c++) {
      let all = true;
      for (let dy = 0; dy < patch && all; dy++) for (let dx = 0; dx < patch && all; dx++) all = !!knownPixels[(r * patch + dy) * side + c * patch + dx];
      out.push(all);
    }
  }
  return out;
}

/** The token mask expanded back to pixels, (H·W) row-major (1 = known). */
export function tokenMaskPixels(tokens: readonly boolean[], grid: number, patch: number): Float32Array {
  const side = grid * patch;
  const m = new Float32Array(side * side);
  for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) m[y * side + x] = tokens[Math.floor(y / patch) * grid + Math.floor(x / patch)] ? 1 : 0;
  return m;
}

/** Throws unless an MDT with side-interpolater weights (`has`) can inpaint `batch` images of `shape` (C, H, W). */
export function checkInpaint(c: ModelConfig, has: (path: string) => boolean, shape: readonly number[], labels: number, switchFraction: number): void {
  if (c.variant === 'dit') throw new Error('inpaint needs an MDT model (DiT has no side-interpolater)');
  for (const k of ['sideblocks.0.adaLN_modulation.1.weight', 'mask_token']) {
    if (!has(k)) throw new Error(`inpaint needs the side-interpolater weights, but the checkpoint has no ${k}`);
  }
  if (!(switchFraction >= 0 && switchFraction <= 1)) throw new Error(`inpaint: switch fraction must be in [0, 1], got ${switchFraction}`);
  const [b, ch, h, w] = shape;
  if (ch !== c.inChannels || h !== c.inputSize || w !== c.inputSize) throw new Error(`inpaint: image is ${ch}×${h}×${w}, the model takes ${c.inChannels}×${c.inputSize}×${c.inputSize}`);
  if (labels !== b) throw new Error(`inpaint: ${b} images but ${labels} labels`);
}
