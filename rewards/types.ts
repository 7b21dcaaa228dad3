// What a reward is. Images travel as one float32 batch in NCHW layout, values in [0, 1]: that is
// what the VAE decoder's output tensor reads back as (`await images.data()` after mapping
// [-1, 1] → [0, 1]), so no GPU transpose is needed, and a batch crosses to a worker thread as one
// typed array.

/** A batch of n RGB images, NCHW (each image channel-planar: all R, then all G, then all B), in [0, 1]. */
export interface ImageBatch {
  data: Float32Array;
  n: number;
  /** Channels: 3 (RGB). */
  c: number;
  h: number;
  w: number;
}

/** Per-sample metadata handed to rewards (the prompt function's, plus anything the caller adds). */
export type Metadata = Record<string, unknown>;

/**
 * A reward scores every sample of a batch. It may return NaN for a sample it cannot score, or
 * throw; both drop the sample (see scoreBatch) instead of failing the run.
 */
export type Reward = (images: ImageBatch, prompts: string[], metadata: Metadata[]) => Promise<number[]> | number[];

/**
 * How to find a reward: `module` is a path (absolute, or relative to the current directory), a
 * file: URL or a package specifier; `export` names either the reward itself or, when `args` is
 * given, a factory that is called once with those args and returns the reward (e.g. to load a
 * model once). By default it runs in worker threads (one factory call per worker); with
 * `thread: 'main'` it runs in the trainer's thread and the factory also receives a
 * RewardContext (the training device) after its args (rewards/hosted.ts). `combine` builds a
 * weighted sum of other specs; `name` labels a part in the per-epoch logs.
 */
export type RewardSpec =
  | { module: string; export: string; args?: unknown[]; thread?: 'worker' | 'main' }
  | { combine: { spec: RewardSpec; weight: number; name?: string }[] };

/** Checks a batch's shape against its data; `op` names the caller in the error. */
export function checkBatch(op: string, images: ImageBatch, prompts?: readonly unknown[], metadata?: readonly unknown[]): void {
  const { data, n, c, h, w } = images ?? ({} as ImageBatch);
  if (!(data instanceof Float32Array)) throw new Error(`${op}: images.data must be a Float32Array (NCHW, values in [0, 1])`);
  for (const [k, v] of Object.entries({ n, c, h, w })) {
    if (!Number.isInteger(v) || v < 0) throw new Error(`${op}: images.${k} = ${v} is not a non-negative integer`);
  }
  if (c !== 3) throw new Error(`${op}: images of ${n}×${c}×${h}×${w} (NCHW): expected c = 3 (RGB)`);
  if (data.length !== n * c * h * w) throw new Error(`${op}: images.data holds ${data.length} values, but n×c×h×w = ${n}×${c}×${h}×${w} = ${n * c * h * w}`);
  if (prompts && prompts.length !== n) throw new Error(`${op}: ${prompts.length} prompts for ${n} images`);
  if (metadata && metadata.length !== n) throw new Error(`${op}: ${metadata.length} metadata entries for ${n} images`);
}

/** Images [from, to) of a batch, sharing memory with it. */
export function sliceBatch(images: ImageBatch, from: number, to: number): ImageBatch {
  const per = images.c * images.h * images.w;
  return { data: images.data.subarray(from * per, to * per), n: to - from, c: images.c, h: images.h, w: images.w };
}

/** Builds a batch from HWC uint8 images (e.g. decoded files): the inverse of the rewards' quantisation. */
export function batchFromHWC(images: readonly Uint8Array[], h: number, w: number): ImageBatch {
  const per = 3 * h * w;
  const data = new Float32Array(images.length * per);
  images.forEach((img, i) => {
    if (img.length !== per) throw new Error(`batchFromHWC: image ${i} has ${img.length} bytes, expected ${h}×${w}×3 = ${per}`);
    for (let p = 0; p < h * w; p++) for (let c = 0; c < 3; c++) data[i * per + c * h * w + p] = img[p * 3 + c] / 255;
  });
  return { data, n: images.length, c: 3, h, w };
}
