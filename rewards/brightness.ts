// Brightness: the mean pixel value of each image, in [0, 1]. Not a paper task: a reward with a
// first-order handle on any model (one output bias moves it), so that it shows within a few
// epochs whether training moves a model the way a reward asks. The JPEG rewards cannot do that
// from scratch: a random model's images are noise, already near the JPEG size's maximum, where
// the size's gradient along every simple direction nearly vanishes (measured: rewards/README.md).

import { ImageBatch, Metadata, checkBatch } from './types.js';

/** The mean pixel value of each image (NCHW, values in [0, 1]). */
export function meanPixel(images: ImageBatch): number[] {
  const per = images.c * images.h * images.w;
  const out: number[] = [];
  for (let i = 0; i < images.n; i++) {
    let s = 0;
    for (let k = i * per; k < (i + 1) * per; k++) s += images.data[k];
    out.push(per ? s / per : NaN);
  }
  return out;
}

/** Reward: brightness in [0, 1] (0 black, 1 white). */
export async function brightness(images: ImageBatch, prompts: string[] = [], metadata: Metadata[] = []): Promise<number[]> {
  checkBatch('brightness', images, prompts.length ? prompts : undefined, metadata.length ? metadata : undefined);
  return meanPixel(images);
}

/** Reward: darkness, 1 − brightness. */
export async function darkness(images: ImageBatch, prompts: string[] = [], metadata: Metadata[] = []): Promise<number[]> {
  return (await brightness(images, prompts, metadata)).map((b) => 1 - b);
}
