// JPEG compressibility rewards, as the DDPO reference code computes them: quantise the [0, 1]
// image to uint8 (x·255, round, clamp), encode at quality 95, size in kB = bytes / 1000.
// Compressibility is −size, incompressibility +size.
//
// One difference we cannot remove: the reference saves with PIL, which writes 4:2:0 chroma
// subsampling; jpeg-js always writes 4:4:4, so its files are larger, by a factor that depends on
// the image's colour detail: 1.05–2.06× on our probe images, 1.45–2.06× at SD's 512 px (flat
// colour to pure noise); at equal subsampling jpeg-js is within 2.2 % of PIL. rewards/README.md has
// the measured table, scripts/jpeg_pil_sizes.py the measurement. The rewards rank the probe
// images the same way, but absolute kB values are not comparable with the paper's plots.

import jpeg from 'jpeg-js';
import { pilResize8 } from '../engine/resample-weights.js';
import { ImageBatch, Metadata, checkBatch } from './types.js';
import type { JpegRewardOptions } from './hosted-options.js';

/** JPEG quality the reference code uses. */
export const JPEG_QUALITY = 95;

/**
 * x·255 rounded half to even (torch.round) and clamped to 0..255. The product is rounded to f32
 * first, as the reference multiplies a float32 tensor.
 */
export function quantise(x: number): number {
  const v = Math.fround(Math.fround(x) * 255);
  if (!(v > 0)) return 0; // NaN too (callers drop non-finite images before this)
  if (v >= 255) return 255;
  const f = Math.floor(v);
  const d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}

/** Image i of an NCHW batch as interleaved RGBA uint8 (what jpeg-js encodes). */
export function toRGBA(images: ImageBatch, i: number): Uint8Array {
  const { h, w } = images;
  const plane = h * w;
  const base = i * 3 * plane;
  const out = new Uint8Array(plane * 4);
  for (let p = 0; p < plane; p++) {
    out[p * 4] = quantise(images.data[base + p]);
    out[p * 4 + 1] = quantise(images.data[base + plane + p]);
    out[p * 4 + 2] = quantise(images.data[base + 2 * plane + p]);
    out[p * 4 + 3] = 255;
  }
  return out;
}

/** Bytes of the JPEG of interleaved RGBA pixels. */
export function jpegBytesRGBA(rgba: Uint8Array, w: number, h: number, quality = JPEG_QUALITY): number {
  return jpeg.encode({ data: rgba, width: w, height: h }, quality).data.length;
}

/** Does image i hold a NaN or ±Infinity? */
export function hasNonFinite(images: ImageBatch, i: number): boolean {
  const per = images.c * images.h * images.w;
  const d = images.data;
  for (let k = i * per; k < (i + 1) * per; k++) if (!Number.isFinite(d[k])) return true;
  return false;
}

/**
 * JPEG size in kB (bytes / 1000) of every image of the batch; NaN (a dropped sample) for an image
 * holding NaN or ±Infinity: a diverged sample quantises to black and would otherwise earn the
 * best compressibility there is.
 */
export function jpegSizesKB(images: ImageBatch, quality = JPEG_QUALITY, size = 0): number[] {
  checkBatch('jpegSizesKB', images);
  const { h, w } = images;
  // `size`: the longer side resized to it (Pillow's bicubic on the 8-bit image, as the reference
  // would save an image of that size), the other in proportion; 0 keeps the sampled size.
  const [H, W] = size > 0 ? [Math.max(1, Math.round((h * size) / Math.max(h, w))), Math.max(1, Math.round((w * size) / Math.max(h, w)))] : [h, w];
  const out: number[] = [];
  for (let i = 0; i < images.n; i++) {
    if (hasNonFinite(images, i)) { out.push(NaN); continue; }
    const rgba = H === h && W === w ? toRGBA(images, i) : pilResize8(toRGBA(images, i), h, w, 4, H, W, 'bicubic');
    out.push(jpegBytesRGBA(rgba, W, H, quality) / 1000);
  }
  return out;
}

/** Reward: −(JPEG size in kB). Higher = more compressible. */
export async function jpegCompressibility(images: ImageBatch, prompts: string[] = [], metadata: Metadata[] = []): Promise<number[]> {
  void prompts; void metadata;
  return jpegSizesKB(images).map((s) => -s);
}

/** Reward: +(JPEG size in kB). Higher = less compressible. */
export async function jpegIncompressibility(images: ImageBatch, prompts: string[] = [], metadata: Metadata[] = []): Promise<number[]> {
  void prompts; void metadata;
  return jpegSizesKB(images);
}

/**
 * The JPEG rewards with options ({"jpeg_compressibility": {"size": 64}} in a run config): `size`
 * encodes each image with its longer side resized to that many pixels. A small model's images
 * (16 px: four 8×8 JPEG blocks, most of the file its header) change size by a few bytes at most
 * within one motif, so the reward barely tells two samples apart; seen at 64 px, as a person
 * would look at them, the size follows the image's edges and detail smoothly. `quality` is the
 * encoder's quality (the reference's 95 by default).
 */
export function jpegReward(sign: 1 | -1, opts: JpegRewardOptions = {}): (images: ImageBatch) => Promise<number[]> {
  const quality = opts.quality ?? JPEG_QUALITY, size = opts.size ?? 0;
  return async (images: ImageBatch) => jpegSizesKB(images, quality, size).map((s) => sign * s);
}

/** Factory of {"jpeg_compressibility": options}: −kB. */
export function createJpegCompressibility(opts: JpegRewardOptions = {}): (images: ImageBatch) => Promise<number[]> {
  return jpegReward(-1, opts);
}

/** Factory of {"jpeg_incompressibility": options}: +kB. */
export function createJpegIncompressibility(opts: JpegRewardOptions = {}): (images: ImageBatch) => Promise<number[]> {
  return jpegReward(1, opts);
}
