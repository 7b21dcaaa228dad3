// The aesthetic reward of the DDPO paper (ddpo-pytorch's aesthetic_score): CLIP ViT-L/14's image
// embedding (get_image_features), divided by its L2 norm, through the LAION aesthetic head; the
// raw score is the reward (about 4–7 for real photographs). Images are preprocessed exactly as
// the paper's code does it (uint8 rounding, PIL bicubic resize, centre crop, CLIP mean/std; see
// diffusion/models/clip-image-processor.ts), on the training device, in micro-batches.
//
// Config: {"aesthetic": {"clip": DIR, "head": FILE, "dtype": "f32", "batch_size": 16, "offload": false}}
// with DIR a local openai/clip-vit-large-patch14 folder (or a CLIPVisionModelWithProjection
// folder) and FILE the head's safetensors (e.g. ../shared/reference/laion-aesthetic/).

import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { Tensor, cast, noGrad, tidy } from '../engine/index.js';
import { ClipVisionModelWithProjection } from '../diffusion/models/clip-vision-model.js';
import { loadClipVisionModel, readClipImageProcessorConfig } from '../diffusion/models/clip-vision-io.js';
import { AestheticHead, loadAestheticHead } from './aesthetic-head.js';
import { ModelHolder, resolveDevice, scoreClipImages } from './clip-images.js';
import { AestheticOptions, checkHostedReward } from './hosted-options.js';
import type { HostedReward, RewardContext } from './hosted.js';
import type { ImageBatch } from './types.js';

/** Throws unless `path` is an existing folder (kind 'dir') or file, naming the option. */
export function requirePath(option: string, path: string, kind: 'dir' | 'file'): string {
  const p = resolve(path);
  if (!existsSync(p)) throw new Error(`${option}: ${p} does not exist`);
  if (kind === 'dir' !== statSync(p).isDirectory()) throw new Error(`${option}: ${p} is not a ${kind === 'dir' ? 'folder' : 'file'}`);
  return p;
}

/** Builds the reward (a main-thread factory): checks the paths, loads CLIP and the head, checks they fit. */
export async function createAestheticReward(options: AestheticOptions, ctx: RewardContext = {}): Promise<HostedReward> {
  const problems = checkHostedReward('aesthetic', options, 'reward');
  if (problems.length) throw new Error(problems.join('; '));
  const clipDir = requirePath('aesthetic.clip', options.clip, 'dir');
  const headPath = requirePath('aesthetic.head', options.head, 'file');
  const device = resolveDevice(ctx.device);
  const processor = await readClipImageProcessorConfig(clipDir);
  const batchSize = options.batch_size ?? 16;
  const holder = new ModelHolder(device, async () => {
    const clip = await loadClipVisionModel(clipDir, { device, dtype: options.dtype });
    let head: AestheticHead;
    try {
      head = await loadAestheticHead(headPath, device, clip.config.projectionDim);
    } catch (e) {
      clip.dispose();
      throw e;
    }
    clip.freeze();
    return { clip, head, dispose() { clip.dispose(); head.dispose(); } };
  }, options.offload ?? false);
  await holder.get(); // load now: a bad folder or head fails before sampling starts
  const score = async (images: ImageBatch) => {
    const { clip, head } = await holder.get();
    return scoreClipImages('aesthetic', images, batchSize, device, processor, async (px) => {
      const scores = aestheticScores(clip, head, px);
      try { return await scores.data(); } finally { scores.dispose(); }
    });
  };
  return { score, release: () => holder.release(), close: () => holder.close() };
}

/** Scores [B] of preprocessed pixel_values: head(normalise(get_image_features(px))). */
export function aestheticScores(clip: ClipVisionModelWithProjection, head: AestheticHead, px: Tensor): Tensor {
  return noGrad(() => tidy(() => {
    const e = clip.getImageFeatures(px);
    return head.forward(e.dtype === 'f32' ? e : cast(e, 'f32'));
  }));
}
