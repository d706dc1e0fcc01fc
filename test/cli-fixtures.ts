/** Files the CLI tests make: random-weight state dicts and small RGB PNGs. */
import { writeSafetensors } from '../formats/safetensors.ts';
import { keyFromSeed } from '../dsl/random.ts';
import { initParams } from '../compile/init.ts';
import { stateDictFromParams } from '../compile/weights.ts';
import type { ParamDecls } from '../dsl/param.ts';
import { encodePng } from '../mdt/viz/png.ts';

/** Random weights of `decls` as a bare .safetensors state dict (like a converted official file). */
export async function writeRandomStateDict(path: string, decls: ParamDecls, seed: number): Promise<void> {
  const values = initParams(decls, keyFromSeed(seed));
  await writeSafetensors(path, await stateDictFromParams(decls, values), { format: 'pt' });
  for (const v of values.values()) v.dispose();
}

/** A side×side RGB PNG whose channel c at (x, y) is f(x, y, c). */
export const rgbPng = (side: number, f: (x: number, y: number, c: number) => number) =>
  encodePng({ width: side, height: side, channels: 3, data: Uint8Array.from({ length: side * side * 3 }, (_, i) => f(Math.floor(i / 3) % side, Math.floor(i / 3 / side), i % 3)) });
