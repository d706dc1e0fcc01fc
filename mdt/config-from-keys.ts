/**
 * The model config of a bare state dict (an official `.pt` or a `.safetensors` without
 * meta.json), read off its keys and shapes. Two things the keys cannot say: a DiT's head count
 * (its attention has no per-head table) and an MDT v1's decoder depth (its decoder blocks are
 * plain `blocks.*` like the encoder's). Those come from what the caller was given, then from
 * the official conventions, each reported in `notes`; when no convention applies the result is
 * an AmbiguousConfigError naming the keys and the flag that settles it.
 */
import { validateConfig, type ModelConfig, type Variant } from './config.ts';

/** Fields a caller may state; the ones the keys determine are checked against them. */
export type ConfigHints = Partial<Pick<ModelConfig, 'variant' | 'depth' | 'hiddenSize' | 'numHeads' | 'patchSize' | 'decodeLayer' | 'maskRatio'>>;

export interface InferredConfig {
  readonly config: ModelConfig;
  /** What was not read from the keys, and where it came from instead. */
  readonly notes: readonly string[];
}

/** The CLI flag that states each hint (named in errors and notes). */
export const HINT_FLAGS: Readonly<Record<keyof ConfigHints, string>> = {
  variant: '--model',
  depth: '--depth',
  hiddenSize: '--hidden-size',
  numHeads: '--num-heads',
  patchSize: '--patch-size',
  decodeLayer: '--decode-layer',
  maskRatio: '--mask-ratio',
};

/** Head counts of the official widths (S, B, L, XL), the only convention there is for a DiT. */
export const HEADS_BY_HIDDEN_SIZE: Readonly<Record<number, number>> = { 384: 6, 768: 12, 1024: 16, 1152: 16 };

/** The decoder depth of every official MDT v1 script (MDT-SPEC §1). */
export const V1_DECODE_LAYER = 2;
const DEFAULT_MASK_RATIO = 0.3;

export class AmbiguousConfigError extends Error {
  constructor(message: string, readonly keys: readonly string[], readonly flags: readonly string[]) {
    super(message);
    this.name = 'AmbiguousConfigError';
  }
}

/** A stated value that the keys contradict. */
export class ConflictingHintError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConflictingHintError';
  }
}

type Shapes = ReadonlyMap<string, readonly number[]>;

const fmt = (s: readonly number[]) => `[${s.join(', ')}]`;

function shapeOf(shapes: Shapes, key: string, rank: number): readonly number[] {
  const s = shapes.get(key);
  if (s === undefined) throw new Error(`state dict has no ${key}; expected a DiT, MDT or MDTv2 state dict`);
  if (s.length !== rank) throw new Error(`state dict: ${key} should have rank ${rank}, has shape ${fmt(s)}`);
  return s;
}

/** Indices n of the keys `<prefix>.n.*`; they must run 0..count−1. */
function blockCount(shapes: Shapes, prefix: string): number {
  const seen = new Set<number>();
  const re = new RegExp(`^${prefix.replace('.', '\\.')}\\.(\\d+)\\.`);
  for (const k of shapes.keys()) {
    const m = re.exec(k);
    if (m) seen.add(Number(m[1]));
  }
  const n = seen.size;
  for (let i = 0; i < n; i++) if (!seen.has(i)) throw new Error(`state dict: ${prefix}.* has indices ${[...seen].sort((a, b) => a - b).join(', ')}, expected 0..${n - 1}`);
  return n;
}

/** DiT, MDT v1 or MDTv2, from the block names alone. */
export function detectVariant(shapes: Shapes): Variant {
  const keys = [...shapes.keys()];
  if (keys.some((k) => k.startsWith('en_inblocks.'))) return 'mdt-v2';
  if (!keys.some((k) => k.startsWith('blocks.'))) {
    throw new Error(`not a DiT/MDT state dict: expected keys blocks.N.* (DiT, MDT) or en_inblocks.N.* (MDTv2); found ${keys.slice(0, 4).join(', ')}${keys.length > 4 ? ', …' : ''}`);
  }
  const mdt = keys.some((k) => k.startsWith('sideblocks.0.') || k === 'decoder_pos_embed' || /^blocks\.\d+\.attn\.rel_pos_bias\./.test(k));
  return mdt ? 'mdt-v1' : 'dit';
}

export function configFromKeys(shapes: Shapes, given: ConfigHints = {}, defaults: ConfigHints = {}): InferredConfig {
  const notes: string[] = [];
  const mismatches: string[] = [];
  /** A value the keys determine: a hint that disagrees is an error. */
  const read = <K extends keyof ConfigHints>(field: K, value: NonNullable<ConfigHints[K]>, why: string): NonNullable<ConfigHints[K]> => {
    const g = given[field];
    if (g !== undefined && g !== value) mismatches.push(`${HINT_FLAGS[field]} ${String(g)} but the checkpoint has ${String(value)} (${why})`);
    return value;
  };

  const variant = read('variant', detectVariant(shapes), 'from its block names');
  const [hiddenSize, inChannels, patchSize, patchW] = shapeOf(shapes, 'x_embedder.proj.weight', 4) as [number, number, number, number];
  if (patchSize !== patchW) throw new Error(`state dict: x_embedder.proj.weight ${fmt([hiddenSize, inChannels, patchSize, patchW])} has a non-square patch`);
  read('patchSize', patchSize, `x_embedder.proj.weight ${fmt([hiddenSize, inChannels, patchSize, patchW])}`);
  const pos = shapeOf(shapes, 'pos_embed', 3);
  read('hiddenSize', hiddenSize, `x_embedder.proj.weight ${fmt([hiddenSize, inChannels, patchSize, patchW])}`);
  if (pos[2] !== hiddenSize) throw new Error(`state dict: pos_embed ${fmt(pos)} disagrees with the hidden size ${hiddenSize} of x_embedder.proj.weight`);
  const grid = Math.round(Math.sqrt(pos[1]!));
  if (grid * grid !== pos[1]) throw new Error(`state dict: pos_embed ${fmt(pos)} holds ${pos[1]} tokens, not a square grid`);

  const blockPrefix = variant === 'mdt-v2' ? 'en_inblocks.0' : 'blocks.0';
  const fc1 = shapeOf(shapes, `${blockPrefix}.mlp.fc1.weight`, 2);
  const mlpRatio = fc1[0]! / hiddenSize;

  const labels = shapeOf(shapes, 'y_embedder.embedding_table.weight', 2);
  // The official embedder has the extra null row whenever class dropout is on (always, at 0.1).
  const numClasses = labels[0]! - 1;
  notes.push(`classes: ${numClasses} (y_embedder.embedding_table.weight ${fmt(labels)} minus the null-class row)`);

  const fin = shapeOf(shapes, 'final_layer.linear.weight', 2);
  const perToken = patchSize * patchSize * inChannels;
  if (fin[0] !== perToken && fin[0] !== 2 * perToken) {
    throw new Error(`state dict: final_layer.linear.weight ${fmt(fin)} should have ${perToken} or ${2 * perToken} rows (patch ${patchSize}² × ${inChannels} channels, ×2 with learned sigma)`);
  }
  const learnSigma = fin[0] === 2 * perToken;

  let depth: number;
  let decodeLayer: number;
  if (variant === 'mdt-v2') {
    const half = blockCount(shapes, 'en_inblocks');
    const outs = blockCount(shapes, 'en_outblocks');
    if (outs !== half) throw new Error(`state dict: ${half} en_inblocks but ${outs} en_outblocks; MDTv2 has as many of each`);
    decodeLayer = read('decodeLayer', blockCount(shapes, 'de_blocks'), 'the number of de_blocks');
    depth = 2 * half + decodeLayer;
    // An odd depth − decodeLayer loses one block (floor), so two depths build the same model.
    const g = given.depth;
    if (g !== undefined && g !== depth) {
      if (Math.floor((g - decodeLayer) / 2) === half) depth = g;
      else mismatches.push(`--depth ${g} but the checkpoint has ${half}+${half} encoder and ${decodeLayer} decoder blocks (depth ${depth})`);
    }
  } else {
    depth = read('depth', blockCount(shapes, 'blocks'), 'the number of blocks.N');
    if (variant === 'dit') decodeLayer = 0;
    else if (given.decodeLayer !== undefined) decodeLayer = given.decodeLayer;
    else if (defaults.decodeLayer !== undefined) {
      decodeLayer = defaults.decodeLayer;
      notes.push(`decode layer: ${decodeLayer} (from --model; an MDT v1 state dict does not record it, --decode-layer sets it)`);
    } else {
      decodeLayer = V1_DECODE_LAYER;
      notes.push(`decode layer: ${decodeLayer}, the official v1 scripts' value (an MDT v1 state dict does not record it: its decoder blocks look like the encoder's); --decode-layer sets it`);
    }
  }

  let numHeads: number;
  if (variant === 'dit') {
    const conventional = HEADS_BY_HIDDEN_SIZE[hiddenSize];
    if (given.numHeads !== undefined) numHeads = given.numHeads;
    else if (defaults.numHeads !== undefined) {
      numHeads = defaults.numHeads;
      notes.push(`heads: ${numHeads} (from --model; a DiT state dict does not record it)`);
    } else if (conventional !== undefined) {
      numHeads = conventional;
      notes.push(`heads: ${numHeads}, the official convention for hidden size ${hiddenSize} (a DiT state dict does not record it); --num-heads sets it`);
    } else {
      const qkv = shapeOf(shapes, 'blocks.0.attn.qkv.weight', 2);
      throw new AmbiguousConfigError(
        `cannot tell the number of attention heads: a DiT's blocks.*.attn.qkv.weight ${fmt(qkv)} fits any head count dividing ${hiddenSize}, ` +
          `and ${hiddenSize} is none of the official widths (${Object.keys(HEADS_BY_HIDDEN_SIZE).join(', ')}); pass --num-heads`,
        ['blocks.*.attn.qkv.weight'],
        ['--num-heads'],
      );
    }
  } else {
    const table = shapeOf(shapes, `${blockPrefix}.attn.rel_pos_bias.relative_position_bias_table`, 2);
    const rows = (2 * grid - 1) ** 2 + 3;
    if (table[0] !== rows) throw new Error(`state dict: ${blockPrefix}.attn.rel_pos_bias.relative_position_bias_table ${fmt(table)} should have ${rows} rows for a ${grid}×${grid} grid`);
    numHeads = read('numHeads', table[1]!, `${blockPrefix}.attn.rel_pos_bias.relative_position_bias_table ${fmt(table)}`);
  }

  if (mismatches.length > 0) throw new ConflictingHintError(`the checkpoint disagrees with the flags: ${mismatches.join('; ')}`);
  const maskRatio = variant === 'dit' ? 0 : (given.maskRatio ?? defaults.maskRatio ?? DEFAULT_MASK_RATIO);
  const candidate: ModelConfig = {
    variant,
    inputSize: grid * patchSize,
    inChannels,
    patchSize,
    depth,
    hiddenSize,
    numHeads,
    mlpRatio,
    numClasses,
    classDropoutProb: 0.1,
    learnSigma,
    decodeLayer,
    maskRatio,
  };
  try {
    return { config: validateConfig(candidate), notes };
  } catch (e) {
    if (variant !== 'mdt-v1' || given.decodeLayer !== undefined) throw e;
    throw new AmbiguousConfigError(`${(e as Error).message} (the state dict does not record an MDT v1's decode layer; pass --decode-layer)`, ['blocks.*'], ['--decode-layer']);
  }
}
