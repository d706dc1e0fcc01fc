// ADM's `space_timesteps` and `SpacedDiffusion`: which original steps a respaced sampler keeps,
// and the betas that make the kept steps a Markov chain with the same ᾱ.

import { linearBetas, tablesFromBetas } from './schedule.ts';
import type { DiffusionTables } from './schedule.ts';

const ALLOWED =
  'expected "" (all steps), a step count like "250", comma-separated section counts like "25,25", or "ddimN" like "ddim25"';

function parseCount(text: string, spec: string): number {
  const trimmed = text.trim();
  if (!/^\d+$/.test(trimmed) || Number(trimmed) < 1) {
    throw new Error(`invalid timestep respacing "${spec}": ${ALLOWED} (every count a positive integer), got "${text}"`);
  }
  return Number(trimmed);
}

/** Python's round(): to nearest, ties to even. */
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function ddimSteps(T: number, count: number): number[] {
  for (let stride = 1; stride < T; stride++) {
    if (Math.ceil(T / stride) === count) {
      const steps: number[] = [];
      for (let s = 0; s < T; s += stride) steps.push(s);
      return steps;
    }
  }
  throw new Error(`cannot create exactly ${count} steps with an integer stride from ${T} diffusion steps`);
}

function sectionSteps(T: number, counts: number[]): number[] {
  const sizePer = Math.floor(T / counts.length);
  const extra = T % counts.length;
  const steps: number[] = [];
  let startIdx = 0;
  counts.forEach((count, i) => {
    const size = sizePer + (i < extra ? 1 : 0);
    if (size < count) throw new Error(`cannot divide section of ${size} steps into ${count}`);
    const fracStride = count <= 1 ? 1 : (size - 1) / (count - 1);
    // Accumulated like ADM (cur += stride), not k·stride: the two round differently.
    let cur = 0.0;
    for (let k = 0; k < count; k++) {
      steps.push(startIdx + roundHalfEven(cur));
      cur += fracStride;
    }
    startIdx += size;
  });
  return steps;
}

/** The original steps kept by `spec`, ascending and unique. */
export function spaceTimesteps(T: number, spec: string): Int32Array {
  if (!Number.isInteger(T) || T < 1) {
    throw new Error(`spaceTimesteps: expected a positive integer number of diffusion steps, got ${T}`);
  }
  let steps: number[];
  if (spec.trim() === '') {
    steps = sectionSteps(T, [T]);
  } else if (spec.startsWith('ddim')) {
    steps = ddimSteps(T, parseCount(spec.slice('ddim'.length), spec));
  } else {
    steps = sectionSteps(T, spec.split(',').map((part) => parseCount(part, spec)));
  }
  return Int32Array.from(new Set(steps)).sort();
}

/** Tables of the respaced process for the linear T-step schedule ("" keeps every step). */
export function respacedTables(T: number, spec: string): DiffusionTables {
  const kept = spaceTimesteps(T, spec);
  const base = tablesFromBetas(linearBetas(T), Int32Array.from({ length: T }, (_, i) => i));
  const betas = new Float64Array(kept.length);
  let lastAlphaCumprod = 1.0;
  kept.forEach((step, k) => {
    const ab = base.alphasCumprod[step];
    betas[k] = 1 - ab / lastAlphaCumprod;
    lastAlphaCumprod = ab;
  });
  return tablesFromBetas(betas, kept);
}
