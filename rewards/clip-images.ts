// What the CLIP-based rewards (aesthetic, clip_score) share: their models are loaded once on the
// training device (or again each epoch with `offload`), images are scored in micro-batches
// (upload, CLIP preprocessing and the forward on the GPU), an image holding NaN/±Infinity is
// dropped (it would quantise to a black image and earn a real score), and between epochs the
// transient GPU memory goes back to the driver.

import type { Device } from '../engine/device.js';
import { Tensor, tensor } from '../engine/index.js';
import { getDefaultDevice } from '../engine/tensor.js';
import { ClipImageProcessorConfig, clipPreprocess } from '../diffusion/models/clip-image-processor.js';
import { ImageBatch, checkBatch, sliceBatch } from './types.js';
import { hasNonFinite } from './jpeg.js';

/** Models that can be disposed (one or several, bundled by the reward). */
export interface Disposable { dispose(): void }

/**
 * Holds the reward's models: loads them on first use, keeps them (or, with `offload`, frees them
 * at release() and loads them again at the next use), and trims the device's buffer pool at
 * release() so the reward's activation buffers do not stay pooled through training.
 */
export class ModelHolder<M extends Disposable> {
  private models: M | null = null;
  private loading: Promise<M> | null = null;
  /** Times the models were loaded (1 unless offloading). */
  loads = 0;

  constructor(readonly device: Device, private readonly load: () => Promise<M>, private readonly offload: boolean) {}

  async get(): Promise<M> {
    if (this.models) return this.models;
    this.loading ??= this.load().then((m) => { this.models = m; this.loads++; return m; }).finally(() => { this.loading = null; });
    return this.loading;
  }

  release(): void {
    if (this.offload && this.models) {
      this.models.dispose();
      this.models = null;
    }
    this.device.trim();
  }

  close(): void {
    this.models?.dispose();
    this.models = null;
  }
}

export function resolveDevice(device: Device | undefined): Device {
  return device ?? getDefaultDevice();
}

/**
 * Scores a batch in micro-batches of `batchSize`: `fn` gets each chunk's preprocessed
 * pixel_values [b, 3, crop, crop] (f32, on the device; it must not dispose them) and returns one
 * value per image. Images holding non-finite values are replaced by zeros for the forward and
 * reported NaN.
 */
export async function scoreClipImages(op: string, images: ImageBatch, batchSize: number, device: Device, processor: ClipImageProcessorConfig, fn: (pixels: Tensor) => Promise<ArrayLike<number>>): Promise<number[]> {
  checkBatch(op, images);
  const out: number[] = [];
  for (let from = 0; from < images.n; from += batchSize) {
    const to = Math.min(images.n, from + batchSize);
    const chunk = sliceBatch(images, from, to);
    const bad: boolean[] = [];
    let data = chunk.data;
    for (let i = 0; i < chunk.n; i++) bad.push(hasNonFinite(chunk, i));
    if (bad.some(Boolean)) {
      data = new Float32Array(chunk.data);
      const per = 3 * chunk.h * chunk.w;
      bad.forEach((b, i) => { if (b) data.fill(0, i * per, (i + 1) * per); });
    }
    const x = tensor(data, [chunk.n, 3, chunk.h, chunk.w], 'f32', device);
    let px: Tensor | null = null;
    try {
      px = clipPreprocess(x, processor);
      const values = await fn(px);
      if (values.length !== chunk.n) throw new Error(`${op}: ${values.length} values for ${chunk.n} images`);
      for (let i = 0; i < chunk.n; i++) out.push(bad[i] ? NaN : values[i]);
    } finally {
      x.dispose();
      px?.dispose();
    }
  }
  return out;
}
