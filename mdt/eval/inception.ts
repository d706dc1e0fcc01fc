/**
 * InceptionV3 as pytorch-fid runs it for FID (its `fid_inception_v3`: torchvision's Inception3
 * with FIDInceptionA/C/E_1/E_2 patched in, and the weights `pt_inception-2015-12-05-6726825d.pth`
 * converted from TensorFlow's FID graph): images in [0, 1] are resized to 299×299 (bilinear,
 * align_corners=False), scaled to [-1, 1], and the 2048 features are the final average pool
 * (pool3), as ADM's evaluator and the paper's tables use. Parameter paths are the .pth keys.
 * Inference only; maps stay NHWC inside.
 */
import { add, concat, constant, conv2dNhwc, maximum, mean, mul, pool2dNhwc, reshape, resizeBilinearNhwc, rsqrt, scale, shift, sub, transpose } from '../../dsl/ops.ts';
import { param, type ParamDecls, type ParamSpec, type ParamView } from '../../dsl/param.ts';
import type { Tensor } from '../../dsl/tensor.ts';
import type { Program } from '../../compile/trace.ts';
import { toNhwc, type Maps } from '../../layers/conv.ts';

export const INCEPTION_SIZE = 299;
export const INCEPTION_DIM = 2048;
/** torchvision's BasicConv2d: BatchNorm2d(eps=0.001). */
const BN_EPS = 1e-3;

type Kernel = number | readonly [number, number];
interface ConvSpec {
  readonly name: string;
  readonly in: number;
  readonly out: number;
  readonly k: Kernel;
  readonly stride?: number;
  readonly pad?: Kernel;
}

const pair = (k: Kernel): readonly [number, number] => (typeof k === 'number' ? [k, k] : k);

/** conv (no bias) → BatchNorm (running statistics) → ReLU, with the keys `name.conv.weight`, `name.bn.*`. */
function basicConvDecls(c: ConvSpec): Record<string, ParamSpec> {
  const [kh, kw] = pair(c.k);
  const z = { kind: 'zeros' } as const;
  return {
    [`${c.name}.conv.weight`]: param([c.out, c.in, kh, kw], z),
    ...Object.fromEntries(['weight', 'bias', 'running_mean', 'running_var'].map((k) => [`${c.name}.bn.${k}`, param([c.out], z)])),
  };
}

function basicConv(p: ParamView, c: ConvSpec, x: Tensor<Maps>): Tensor<Maps> {
  const [ph, pw] = pair(c.pad ?? 0);
  const y = conv2dNhwc(x, transpose(p.get(`${c.name}.conv.weight`), [2, 3, 1, 0]), c.stride ?? 1, [ph, ph, pw, pw]);
  const factor = mul(p.get(`${c.name}.bn.weight`), rsqrt(shift(p.get(`${c.name}.bn.running_var`), BN_EPS)));
  const normed = add(mul(sub(y, p.get(`${c.name}.bn.running_mean`)), factor), p.get(`${c.name}.bn.bias`));
  return maximum(normed, constant(normed, 0)) as unknown as Tensor<Maps>;
}

/** A branch: convolutions in order, optionally after a 3×3 pool. */
interface Branch {
  readonly pool?: { readonly kind: 'max' | 'avg'; readonly stride: 1 | 2 };
  readonly convs: readonly ConvSpec[];
  /** Two convolutions applied to the branch's output side by side and concatenated (InceptionE). */
  readonly split?: readonly [ConvSpec, ConvSpec];
}
interface Block {
  readonly name: string;
  readonly branches: readonly Branch[];
}

const c = (name: string, inC: number, out: number, k: Kernel, extra: { stride?: number; pad?: Kernel } = {}): ConvSpec => ({ name, in: inC, out, k, ...extra });

function blockA(name: string, inC: number, poolFeatures: number): Block {
  return {
    name,
    branches: [
      { convs: [c('branch1x1', inC, 64, 1)] },
      { convs: [c('branch5x5_1', inC, 48, 1), c('branch5x5_2', 48, 64, 5, { pad: 2 })] },
      { convs: [c('branch3x3dbl_1', inC, 64, 1), c('branch3x3dbl_2', 64, 96, 3, { pad: 1 }), c('branch3x3dbl_3', 96, 96, 3, { pad: 1 })] },
      { pool: { kind: 'avg', stride: 1 }, convs: [c('branch_pool', inC, poolFeatures, 1)] },
    ],
  };
}

const blockB = (name: string, inC: number): Block => ({
  name,
  branches: [
    { convs: [c('branch3x3', inC, 384, 3, { stride: 2 })] },
    { convs: [c('branch3x3dbl_1', inC, 64, 1), c('branch3x3dbl_2', 64, 96, 3, { pad: 1 }), c('branch3x3dbl_3', 96, 96, 3, { stride: 2 })] },
    { pool: { kind: 'max', stride: 2 }, convs: [] },
  ],
});

function blockC(name: string, inC: number, c7: number): Block {
  const row = [1, 7] as const, col = [7, 1] as const, padRow = [0, 3] as const, padCol = [3, 0] as const;
  return {
    name,
    branches: [
      { convs: [c('branch1x1', inC, 192, 1)] },
      { convs: [c('branch7x7_1', inC, c7, 1), c('branch7x7_2', c7, c7, row, { pad: padRow }), c('branch7x7_3', c7, 192, col, { pad: padCol })] },
      {
        convs: [
          c('branch7x7dbl_1', inC, c7, 1), c('branch7x7dbl_2', c7, c7, col, { pad: padCol }), c('branch7x7dbl_3', c7, c7, row, { pad: padRow }),
          c('branch7x7dbl_4', c7, c7, col, { pad: padCol }), c('branch7x7dbl_5', c7, 192, row, { pad: padRow }),
        ],
      },
      { pool: { kind: 'avg', stride: 1 }, convs: [c('branch_pool', inC, 192, 1)] },
    ],
  };
}

const blockD = (name: string, inC: number): Block => ({
  name,
  branches: [
    { convs: [c('branch3x3_1', inC, 192, 1), c('branch3x3_2', 192, 320, 3, { stride: 2 })] },
    { convs: [c('branch7x7x3_1', inC, 192, 1), c('branch7x7x3_2', 192, 192, [1, 7], { pad: [0, 3] }), c('branch7x7x3_3', 192, 192, [7, 1], { pad: [3, 0] }), c('branch7x7x3_4', 192, 192, 3, { stride: 2 })] },
    { pool: { kind: 'max', stride: 2 }, convs: [] },
  ],
});

/** FIDInceptionE_1 pools by average, FIDInceptionE_2 by max (the TF graph's quirk pytorch-fid keeps). */
function blockE(name: string, inC: number, pool: 'avg' | 'max'): Block {
  const split = (a: string, b: string): readonly [ConvSpec, ConvSpec] => [c(a, 384, 384, [1, 3], { pad: [0, 1] }), c(b, 384, 384, [3, 1], { pad: [1, 0] })];
  return {
    name,
    branches: [
      { convs: [c('branch1x1', inC, 320, 1)] },
      { convs: [c('branch3x3_1', inC, 384, 1)], split: split('branch3x3_2a', 'branch3x3_2b') },
      { convs: [c('branch3x3dbl_1', inC, 448, 1), c('branch3x3dbl_2', 448, 384, 3, { pad: 1 })], split: split('branch3x3dbl_3a', 'branch3x3dbl_3b') },
      { pool: { kind: pool, stride: 1 }, convs: [c('branch_pool', inC, 192, 1)] },
    ],
  };
}

const STEM: readonly (ConvSpec | 'maxpool')[] = [
  c('Conv2d_1a_3x3', 3, 32, 3, { stride: 2 }), c('Conv2d_2a_3x3', 32, 32, 3), c('Conv2d_2b_3x3', 32, 64, 3, { pad: 1 }), 'maxpool',
  c('Conv2d_3b_1x1', 64, 80, 1), c('Conv2d_4a_3x3', 80, 192, 3), 'maxpool',
];

const BLOCKS: readonly Block[] = [
  blockA('Mixed_5b', 192, 32), blockA('Mixed_5c', 256, 64), blockA('Mixed_5d', 288, 64),
  blockB('Mixed_6a', 288),
  blockC('Mixed_6b', 768, 128), blockC('Mixed_6c', 768, 160), blockC('Mixed_6d', 768, 160), blockC('Mixed_6e', 768, 192),
  blockD('Mixed_7a', 768),
  blockE('Mixed_7b', 1280, 'avg'), blockE('Mixed_7c', 2048, 'max'),
];

const prefixed = (b: Block, s: ConvSpec): ConvSpec => ({ ...s, name: `${b.name}.${s.name}` });

export const INCEPTION_PARAMS: ParamDecls = Object.assign(
  {},
  ...STEM.filter((s): s is ConvSpec => s !== 'maxpool').map(basicConvDecls),
  ...BLOCKS.flatMap((b) => b.branches.flatMap((br) => [...br.convs, ...(br.split ?? [])].map((s) => basicConvDecls(prefixed(b, s))))),
);

/**
 * Keys of the .pth that pool3 features do not read: the 1008-way classifier (`fc.*`) and
 * BatchNorm's step counters. A strict load accepts exactly these besides INCEPTION_PARAMS.
 */
export function unusedInceptionKey(key: string): boolean {
  return key === 'fc.weight' || key === 'fc.bias' || key.endsWith('.bn.num_batches_tracked');
}

function runBlock(p: ParamView, b: Block, x: Tensor<Maps>): Tensor<Maps> {
  const outs = b.branches.flatMap((br) => {
    let h = br.pool ? (pool2dNhwc(br.pool.kind, x, 3, br.pool.stride, br.pool.stride === 1 ? 'same' : 'valid') as unknown as Tensor<Maps>) : x;
    for (const s of br.convs) h = basicConv(p, prefixed(b, s), h);
    return br.split ? br.split.map((s) => basicConv(p, prefixed(b, s), h)) : [h];
  });
  return concat(outs, 3) as unknown as Tensor<Maps>;
}

/**
 * pytorch-fid's four output blocks of images (B, 3, H, W) in [0, 1]: after the first and the
 * second max pool, after Mixed_6e, and pool3 (B, 2048).
 */
export function inceptionBlocks(p: ParamView, images: Tensor<Maps>): [Tensor<Maps>, Tensor<Maps>, Tensor<Maps>, Tensor<readonly [number, number]>] {
  const resized = resizeBilinearNhwc(toNhwc(images), INCEPTION_SIZE, INCEPTION_SIZE) as unknown as Tensor<Maps>;
  let h = shift(scale(resized, 2), -1) as unknown as Tensor<Maps>;
  const out: Tensor<Maps>[] = [];
  for (const s of STEM) {
    h = s === 'maxpool' ? (pool2dNhwc('max', h, 3, 2, 'valid') as unknown as Tensor<Maps>) : basicConv(p, s, h);
    if (s === 'maxpool') out.push(h);
  }
  for (const b of BLOCKS) {
    h = runBlock(p, b, h);
    if (b.name === 'Mixed_6e') out.push(h);
  }
  const pool3 = reshape(mean(h, [1, 2]), [h.shape[0], INCEPTION_DIM]) as unknown as Tensor<readonly [number, number]>;
  return [out[0]!, out[1]!, out[2]!, pool3];
}

/** `images` (B, 3, H, W) in [0, 1] → `features` (B, 2048), pool3. */
export const inceptionProgram: Program = (io) => ({ features: inceptionBlocks(io.params(INCEPTION_PARAMS), io.data('images'))[3] });
