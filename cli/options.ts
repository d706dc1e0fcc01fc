/**
 * Flag parsing shared by the commands: validating argument parsers (a bad value is a usage
 * error that says what is allowed), the model-size flags, the backend flag.
 */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { BACKEND_NAMES, type BackendInfo, type BackendName } from '../runtime/backend.ts';
import { startRuntime } from '../runtime/start.ts';
import { MODEL_NAMES, type ModelConfig } from '../mdt/config.ts';
import { spaceTimesteps } from '../mdt/diffusion/respace.ts';

/** A wrong combination of flags, found after parsing: reported like commander's errors, exit 2. */
export { UsageError } from '../dsl/errors.ts';

export function intArg(min: number, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`Expected an integer ${max === Number.MAX_SAFE_INTEGER ? `≥ ${min}` : `from ${min} to ${max}`}.`);
    }
    return n;
  };
}

/** A finite number in [lo, hi] (or (lo, hi] with `loOpen`). */
export function numberArg(lo: number, hi: number, loOpen = false): (v: string) => number {
  return (v) => {
    const n = Number(v);
    const ok = v.trim() !== '' && Number.isFinite(n) && (loOpen ? n > lo : n >= lo) && n <= hi;
    if (!ok) {
      const range = hi === Infinity ? `${loOpen ? '>' : '≥'} ${lo}` : `in ${loOpen ? '(' : '['}${lo}, ${hi}]`;
      throw new InvalidArgumentError(`Expected a number ${range}.`);
    }
    return n;
  };
}

/** A timestep respacing: "250", "25,25", or "ddim25". */
export function respacingArg(v: string): string {
  try {
    spaceTimesteps(1000, v);
  } catch (e) {
    throw new InvalidArgumentError(`Expected a step count like 250, section counts like 25,25, or ddimN like ddim25 (of 1000 diffusion steps): ${(e as Error).message}.`);
  }
  return v;
}

export function modelNameArg(v: string): string {
  if (!MODEL_NAMES.includes(v)) throw new InvalidArgumentError(`Allowed: ${MODEL_NAMES.join(', ')}.`);
  return v;
}

export interface OptionSpec<T> {
  /** A real default, shown in --help. */
  readonly default?: T;
  /** How --help shows the default (for a computed or absent one, the rule). */
  readonly defaultText?: string;
  readonly parse?: (v: string) => T;
  readonly choices?: readonly string[];
  readonly required?: boolean;
}

/** An option whose --help line always says its default (or that it is required). */
export function option<T>(flags: string, description: string, spec: OptionSpec<T> = {}): Option {
  // Commander shows no default for a negated flag (--no-x), so its text goes in the description.
  const textOnly = spec.default === undefined || flags.startsWith('--no-');
  const shownDefault = textOnly && spec.defaultText !== undefined ? ` (default: ${spec.defaultText})` : '';
  const o = new Option(flags, `${description}${spec.required ? ' (required)' : shownDefault}`);
  if (spec.choices) o.choices(spec.choices);
  if (spec.parse) o.argParser(spec.parse);
  if (spec.default !== undefined) o.default(spec.default, spec.defaultText);
  if (spec.required) o.makeOptionMandatory();
  return o;
}

/** The size flags and the ModelConfig field each sets. */
export const SIZE_FLAGS = {
  depth: ['--depth <n>', 'transformer blocks', intArg(1, 1000)],
  hiddenSize: ['--hidden-size <n>', 'width D', intArg(4, 100_000)],
  numHeads: ['--num-heads <n>', 'attention heads', intArg(1, 1000)],
  patchSize: ['--patch-size <n>', 'patch side', intArg(1, 1024)],
  decodeLayer: ['--decode-layer <n>', 'MDT decoder blocks (N2)', intArg(1, 1000)],
  maskRatio: ['--mask-ratio <r>', 'MDT mask ratio (MDTv2: lower bound of U[r, r + 0.2))', numberArg(0, 1, true)],
} as const;

export type SizeField = keyof typeof SIZE_FLAGS;
export const SIZE_FIELDS = Object.keys(SIZE_FLAGS) as SizeField[];
export type SizeOverrides = Partial<Pick<ModelConfig, SizeField>>;

export function addSizeOptions(cmd: Command, defaultText: (field: SizeField) => string): Command {
  for (const field of SIZE_FIELDS) {
    const [flags, what, parse] = SIZE_FLAGS[field];
    cmd.addOption(option(flags, what, { parse: parse as (v: string) => number, defaultText: defaultText(field) }));
  }
  return cmd;
}

/** The size fields the user gave (undefined ones dropped, so they never override). */
export function sizeOverrides(opts: SizeOverrides): SizeOverrides {
  return Object.fromEntries(SIZE_FIELDS.filter((f) => opts[f] !== undefined).map((f) => [f, opts[f]]));
}

export type BackendChoice = BackendName | 'auto';
export const BACKEND_CHOICES: readonly BackendChoice[] = ['auto', ...BACKEND_NAMES];

export function backendOption(): Option {
  return option('--backend <name>', 'tfjs backend (auto: tensorflow > webgpu on a GPU > wasm > cpu, or MDT_BACKEND)', { default: 'auto', choices: BACKEND_CHOICES });
}

/**
 * Starts the backend before any tensor exists, with the kernels wasm lacks. A backend that
 * starts but will be slow (tfjs-node-gpu on the CPU, a software WebGPU adapter) says so on stderr.
 */
export async function startBackend(prefer: BackendChoice): Promise<BackendInfo> {
  const info = await startRuntime(prefer);
  if (typeof info.detail.warning === 'string') console.warn(`warning: backend ${info.name}: ${info.detail.warning}`);
  return info;
}

/** A file or folder name from free text: letters, digits, '.', '_', '-'. */
export function sanitize(text: string): string {
  return text.replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^-+|-+$/g, '');
}

/** 2025-01-31T12-00-00: a sortable timestamp usable in file names. */
export function timestamp(d = new Date()): string {
  return d.toISOString().slice(0, 19).replace(/:/g, '-');
}
