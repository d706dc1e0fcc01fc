/**
 * AutoencoderKL configuration (diffusers' config.json fields, camelCased). The defaults are
 * Stable Diffusion's VAE, shared by sd-vae-ft-mse and sd-vae-ft-ema: 256×256×3 ↔ 32×32×4.
 */

export interface VaeConfig {
  readonly inChannels: number;
  readonly outChannels: number;
  /** Widths of the encoder's down blocks; the decoder's up blocks use them reversed. */
  readonly blockOutChannels: readonly number[];
  /** Resnets per encoder down block; each decoder up block has one more. */
  readonly layersPerBlock: number;
  readonly latentChannels: number;
  readonly normNumGroups: number;
  /** Latents fed to the diffusion model are z·scalingFactor. */
  readonly scalingFactor: number;
}

export const SD_VAE_CONFIG: VaeConfig = {
  inChannels: 3,
  outChannels: 3,
  blockOutChannels: [128, 256, 512, 512],
  layersPerBlock: 2,
  latentChannels: 4,
  normNumGroups: 32,
  scalingFactor: 0.18215,
};

const positiveInt = (v: unknown): boolean => typeof v === 'number' && Number.isInteger(v) && v >= 1;

/** SD's config with `overrides`, checked: every width must split into `normNumGroups` groups. */
export function vaeConfig(overrides: Partial<VaeConfig> = {}): VaeConfig {
  const c: VaeConfig = { ...SD_VAE_CONFIG, ...overrides };
  const problems: string[] = [];
  for (const k of ['inChannels', 'outChannels', 'layersPerBlock', 'latentChannels', 'normNumGroups'] as const) {
    if (!positiveInt(c[k])) problems.push(`${k} must be a positive integer, got ${JSON.stringify(c[k])}`);
  }
  if (!Array.isArray(c.blockOutChannels) || c.blockOutChannels.length < 1 || !c.blockOutChannels.every(positiveInt)) {
    problems.push(`blockOutChannels must be a non-empty list of positive integers, got ${JSON.stringify(c.blockOutChannels)}`);
  } else if (positiveInt(c.normNumGroups)) {
    const bad = c.blockOutChannels.filter((w) => w % c.normNumGroups !== 0);
    if (bad.length > 0) problems.push(`blockOutChannels ${JSON.stringify(c.blockOutChannels)} must all be multiples of normNumGroups=${c.normNumGroups} (not: ${bad.join(', ')})`);
  }
  if (typeof c.scalingFactor !== 'number' || !(c.scalingFactor > 0)) problems.push(`scalingFactor must be a positive number, got ${JSON.stringify(c.scalingFactor)}`);
  if (problems.length > 0) throw new Error(`invalid VAE config:\n  ${problems.join('\n  ')}`);
  return { ...c, blockOutChannels: [...c.blockOutChannels] };
}

/** Image side / latent side: 2^(number of down blocks − 1) (8 for SD). */
export function downFactor(c: VaeConfig): number {
  return 2 ** (c.blockOutChannels.length - 1);
}

/** Latent side for an image side, which must be a multiple of downFactor(c). */
export function latentSize(c: VaeConfig, imageSize: number): number {
  const f = downFactor(c);
  if (!Number.isInteger(imageSize) || imageSize < f || imageSize % f !== 0) {
    throw new Error(`VAE: image side must be a positive multiple of ${f} (2^${c.blockOutChannels.length - 1} down-samplings), got ${imageSize}`);
  }
  return imageSize / f;
}
