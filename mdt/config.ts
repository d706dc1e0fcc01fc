/** Model configurations: the official named sizes and any custom size. */
import type { Checked, Div, Mul } from '../dsl/size-types.ts';

export type Variant = 'dit' | 'mdt-v1' | 'mdt-v2';

export interface ModelConfig {
  readonly variant: Variant;
  /** Latent (or pixel) side H = W; must equal grid·patch. */
  readonly inputSize: number;
  readonly inChannels: number;
  readonly patchSize: number;
  readonly depth: number;
  readonly hiddenSize: number;
  readonly numHeads: number;
  readonly mlpRatio: number;
  readonly numClasses: number;
  readonly classDropoutProb: number;
  readonly learnSigma: boolean;
  /** MDT decoder depth (N2 in the paper, `decode_layer` in the code). */
  readonly decodeLayer: number;
  /** v1: the fixed ratio; v2: the lower bound of U[r, r + 0.2). */
  readonly maskRatio: number;
}

const SIZES = {
  S: { depth: 12, hiddenSize: 384, numHeads: 6 },
  B: { depth: 12, hiddenSize: 768, numHeads: 12 },
  L: { depth: 24, hiddenSize: 1024, numHeads: 16 },
  XL: { depth: 28, hiddenSize: 1152, numHeads: 16 },
} as const;

const PREFIX: Record<string, Variant> = { DiT: 'dit', MDT: 'mdt-v1', MDTv2: 'mdt-v2' };

export const MODEL_NAMES: readonly string[] = Object.keys(PREFIX).flatMap((v) => Object.keys(SIZES).flatMap((s) => [2, 4, 8].filter((p) => v !== 'MDTv2' || p === 2).map((p) => `${v}-${s}/${p}`)));

type Size = keyof typeof SIZES;
type VariantOf<P extends string> = P extends 'DiT' ? 'dit' : P extends 'MDT' ? 'mdt-v1' : 'mdt-v2';
/**
 * The config a name stands for, with its sizes as type-level constants (`MDT-S/2`: hiddenSize
 * 384, numHeads 6, patchSize 2, inputSize 32, …); any other string is a plain ModelConfig.
 */
export type NamedConfig<N extends string> = N extends `${infer P extends 'DiT' | 'MDT' | 'MDTv2'}-${infer S extends Size}/${infer Pt extends 2 | 4 | 8}`
  ? ModelConfig & {
    readonly variant: VariantOf<P>;
    readonly inputSize: 32;
    readonly inChannels: 4;
    readonly patchSize: Pt;
    readonly depth: (typeof SIZES)[S]['depth'];
    readonly hiddenSize: (typeof SIZES)[S]['hiddenSize'];
    readonly numHeads: (typeof SIZES)[S]['numHeads'];
    readonly mlpRatio: 4;
    readonly learnSigma: true;
  }
  : ModelConfig;
/** C with the fields of O (given ones replace C's; optional ones may keep C's). */
export type WithOverrides<C extends ModelConfig, O extends Partial<ModelConfig>> = {
  readonly [K in keyof ModelConfig]: K extends keyof O ? Exclude<O[K], undefined> | (undefined extends O[K] ? C[K] : never) : C[K];
};

/** The sizes a config fixes, exact in types for literal configs (see dsl/size-types.ts for the bound). */
export type GridOf<C extends ModelConfig> = Div<C['inputSize'], C['patchSize']> extends infer G extends number ? G : number;
export type TokensOf<C extends ModelConfig> = Mul<GridOf<C>, GridOf<C>>;
export type OutChannelsOf<C extends ModelConfig> = C['learnSigma'] extends true ? Mul<2, C['inChannels']> : C['learnSigma'] extends false ? C['inChannels'] : number;
/**
 * `unknown` for a config whose literal sizes fit together, else the error — intersected into a
 * builder's parameter (`mdtV1(c: C & ConfigCheck<C>)`), a width that the head count does not
 * divide or an input the patch does not tile is a compile error at the argument.
 */
export type ConfigCheck<C extends ModelConfig> = Checked<Div<C['hiddenSize'], C['numHeads']>> & Checked<Div<C['inputSize'], C['patchSize']>>;

/**
 * `DiT-S/2`, `MDT-XL/2`, `MDTv2-B/2`, … with the official defaults (input 32, 4 channels,
 * 1000 classes, learned sigma, dropout 0.1; v1 dl=2 r=0.3; v2 dl=6 for S/2 (README), else 4).
 * A literal name (and literal overrides) gives a config typed with its sizes.
 */
export function namedConfig<const N extends string, const O extends Partial<ModelConfig> = {}>(name: N, overrides?: O): WithOverrides<NamedConfig<N>, O>;
export function namedConfig(name: string, overrides: Partial<ModelConfig> = {}): ModelConfig {
  const m = /^(DiT|MDT|MDTv2)-(S|B|L|XL)\/(2|4|8)$/.exec(name);
  if (!m || !MODEL_NAMES.includes(name)) throw new Error(`unknown model "${name}"; expected one of ${MODEL_NAMES.join(', ')}`);
  const variant = PREFIX[m[1]!]!;
  const size = SIZES[m[2] as keyof typeof SIZES];
  const base: ModelConfig = {
    variant,
    inputSize: 32,
    inChannels: 4,
    patchSize: Number(m[3]),
    ...size,
    mlpRatio: 4,
    numClasses: 1000,
    classDropoutProb: 0.1,
    learnSigma: true,
    decodeLayer: variant === 'mdt-v1' ? 2 : variant === 'mdt-v2' ? (m[2] === 'S' ? 6 : 4) : 0,
    maskRatio: variant === 'dit' ? 0 : 0.3,
  };
  return validateConfig({ ...base, ...overrides });
}

/**
 * The name of what `name` with its overrides actually is: `MDT-S/4` for MDT-S/2 at patch 4, and
 * `MDT-d4h96/4` (depth and width) when the size is none of S, B, L, XL.
 */
export function modelLabel(name: string, c: ModelConfig): string {
  const family = name.split('-')[0]!;
  const size = Object.entries(SIZES).find(([, s]) => s.depth === c.depth && s.hiddenSize === c.hiddenSize && s.numHeads === c.numHeads)?.[0];
  return `${family}-${size ?? `d${c.depth}h${c.hiddenSize}`}/${c.patchSize}`;
}

export function gridSize(c: ModelConfig): number {
  return c.inputSize / c.patchSize;
}

export function outChannels(c: ModelConfig): number {
  return c.learnSigma ? 2 * c.inChannels : c.inChannels;
}

/** MDTv2's encoder halves: floor((depth − dl)/2) blocks each (one block is lost if odd). */
export function halfDepth(c: ModelConfig): number {
  return Math.floor((c.depth - c.decodeLayer) / 2);
}

/** Checks what types cannot: divisibility and ranges, naming every offending field. */
export function validateConfig(c: ModelConfig): ModelConfig {
  const errs: string[] = [];
  if (!Number.isInteger(c.inputSize / c.patchSize)) errs.push(`inputSize ${c.inputSize} is not a multiple of patchSize ${c.patchSize}`);
  if (c.hiddenSize % c.numHeads !== 0) errs.push(`hiddenSize ${c.hiddenSize} is not divisible by numHeads ${c.numHeads}`);
  if (c.hiddenSize % 4 !== 0) errs.push(`hiddenSize ${c.hiddenSize} must be a multiple of 4 (2-D sin-cos table)`);
  if (c.variant !== 'dit' && (c.decodeLayer < 1 || c.decodeLayer >= c.depth)) errs.push(`decodeLayer ${c.decodeLayer} must be in [1, depth − 1 = ${c.depth - 1}]`);
  if (c.variant === 'mdt-v2' && halfDepth(c) < 1) errs.push(`MDTv2 needs depth − decodeLayer ≥ 2, got ${c.depth} − ${c.decodeLayer}`);
  if (c.variant !== 'dit' && !(c.maskRatio > 0 && c.maskRatio < 1)) errs.push(`maskRatio ${c.maskRatio} must be in (0, 1)`);
  if (c.numClasses < 1) errs.push(`numClasses ${c.numClasses} must be ≥ 1`);
  if (c.depth < 1) errs.push(`depth ${c.depth} must be ≥ 1`);
  if (errs.length > 0) throw new Error(`invalid model config: ${errs.join('; ')}`);
  return c;
}

/** A fixture's / official config.json (snake_case) as a ModelConfig. */
export function configFromJson(j: Record<string, unknown>): ModelConfig {
  const num = (k: string, d?: number): number => {
    const v = j[k] ?? d;
    if (typeof v !== 'number') throw new Error(`config.json: "${k}" must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const variant = j.variant;
  if (variant !== 'dit' && variant !== 'mdt-v1' && variant !== 'mdt-v2') throw new Error(`config.json: "variant" must be dit, mdt-v1 or mdt-v2, got ${JSON.stringify(variant)}`);
  return validateConfig({
    variant,
    inputSize: num('input_size'),
    inChannels: num('in_channels'),
    patchSize: num('patch_size'),
    depth: num('depth'),
    hiddenSize: num('hidden_size'),
    numHeads: num('num_heads'),
    mlpRatio: num('mlp_ratio', 4),
    numClasses: num('num_classes'),
    classDropoutProb: num('class_dropout_prob', 0.1),
    learnSigma: j.learn_sigma !== false,
    decodeLayer: variant === 'dit' ? 0 : num('decode_layer'),
    maskRatio: variant === 'dit' ? 0 : num('mask_ratio', 0.3),
  });
}
