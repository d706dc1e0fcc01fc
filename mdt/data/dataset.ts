// The one shape every image source is reduced to. It is plain JS (no tfjs) so data code can be
// tested and reused without a backend; training turns the returned arrays into tensors.

export interface ImageDataset {
  readonly name: string;
  readonly size: number;
  readonly channels: 1 | 3;
  readonly height: number;
  readonly width: number;
  readonly numClasses: number;
  readonly classNames: readonly string[];
  /** images as float32 in [-1, 1], NCHW */
  get(indices: ArrayLike<number>): { images: Float32Array; labels: Int32Array };
}

export interface ByteImageSpec {
  readonly name: string;
  readonly channels: 1 | 3;
  readonly height: number;
  readonly width: number;
  readonly classNames: readonly string[];
  /** 0..255, NCHW, `labels.length` images */
  readonly pixels: Uint8Array;
  readonly labels: Int32Array;
}

/** Throws unless `i` is an integer index into a dataset of `size` items. */
export function checkIndex(i: number, size: number, name: string): void {
  if (!Number.isInteger(i) || i < 0 || i >= size) {
    throw new RangeError(`${name}: expected an integer index in [0, ${size}), got ${i}`);
  }
}

/**
 * A dataset held in memory as bytes (a quarter of the float size), scaled to [-1, 1] only for the
 * images a batch asks for — the same `x / 127.5 - 1` as the official loader.
 */
export class ByteImageDataset implements ImageDataset {
  readonly name: string;
  readonly size: number;
  readonly channels: 1 | 3;
  readonly height: number;
  readonly width: number;
  readonly numClasses: number;
  readonly classNames: readonly string[];
  readonly pixels: Uint8Array;
  readonly labels: Int32Array;

  constructor(spec: ByteImageSpec) {
    const per = spec.channels * spec.height * spec.width;
    if (spec.pixels.length !== spec.labels.length * per) {
      throw new Error(
        `${spec.name}: expected ${spec.labels.length} images × ${per} bytes = ${spec.labels.length * per} pixel bytes, got ${spec.pixels.length}`,
      );
    }
    for (let i = 0; i < spec.labels.length; i++) {
      const y = spec.labels[i];
      if (y < 0 || y >= spec.classNames.length) {
        throw new Error(`${spec.name}: label of image ${i} must be in [0, ${spec.classNames.length}), got ${y}`);
      }
    }
    this.name = spec.name;
    this.size = spec.labels.length;
    this.channels = spec.channels;
    this.height = spec.height;
    this.width = spec.width;
    this.numClasses = spec.classNames.length;
    this.classNames = spec.classNames;
    this.pixels = spec.pixels;
    this.labels = spec.labels;
  }

  get(indices: ArrayLike<number>): { images: Float32Array; labels: Int32Array } {
    const per = this.channels * this.height * this.width;
    const images = new Float32Array(indices.length * per);
    const labels = new Int32Array(indices.length);
    for (let k = 0; k < indices.length; k++) {
      const i = indices[k];
      checkIndex(i, this.size, this.name);
      labels[k] = this.labels[i];
      const src = i * per;
      const dst = k * per;
      for (let j = 0; j < per; j++) images[dst + j] = this.pixels[src + j] / 127.5 - 1;
    }
    return { images, labels };
  }
}
