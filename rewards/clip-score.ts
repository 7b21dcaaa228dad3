// CLIP score: the cosine between a sample's image embedding and its prompt's text embedding
// (CLIPModel.get_image_features / get_text_features, each divided by its L2 norm), times
// `scale`. scale 1 (the default) gives cos ∈ [−1, 1]; scale 100 gives torchmetrics' CLIPScore
// per sample, 100·cos (torchmetrics then clamps the *batch mean* at 0, which a per-sample reward
// does not do).
//
// Images are preprocessed as for the aesthetic reward (CLIPImageProcessor, on the GPU). Prompts
// are tokenized with the CLIP folder's own tokenizer, padded to its maximum length (77) and, if
// longer, truncated keeping the end token (torchmetrics cuts the ids at 77 without one, which only
// matters for prompts over 75 tokens). Text embeddings are cached per prompt on the host (a run
// cycles through a fixed prompt set).
//
// Config: {"clip_score": {"clip": DIR, "scale": 1, "dtype": "f32", "batch_size": 16, "offload": false}}

import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { cast, noGrad, tensor, tidy } from '../engine/index.js';
import { loadClipModel, readClipImageProcessorConfig } from '../diffusion/models/clip-vision-io.js';
import { loadClipTokenizer } from '../diffusion/text/load-node.js';
import type { ClipTokenizer } from '../diffusion/tokenizer.js';
import { requirePath } from './aesthetic.js';
import { ModelHolder, resolveDevice, scoreClipImages } from './clip-images.js';
import { ClipScoreOptions, checkHostedReward } from './hosted-options.js';
import type { HostedReward, RewardContext } from './hosted.js';
import type { ImageBatch, Metadata } from './types.js';

/** Rows of a [n, d] matrix divided by their L2 norms, in float64. */
function normaliseRows(v: ArrayLike<number>, n: number, d: number): Float64Array[] {
  return Array.from({ length: n }, (_, i) => {
    const row = Float64Array.from({ length: d }, (_, k) => v[i * d + k]);
    const norm = Math.sqrt(row.reduce((s, x) => s + x * x, 0));
    return row.map((x) => x / norm);
  });
}

export async function createClipScoreReward(options: ClipScoreOptions, ctx: RewardContext = {}): Promise<HostedReward> {
  const problems = checkHostedReward('clip_score', options, 'reward');
  if (problems.length) throw new Error(problems.join('; '));
  const clipDir = requirePath('clip_score.clip', options.clip, 'dir');
  const tokDir = options.tokenizer ? requirePath('clip_score.tokenizer', options.tokenizer, 'dir') : clipDir;
  if (!existsSync(join(tokDir, 'vocab.json'))) throw new Error(`clip_score: ${tokDir} has no vocab.json/merges.txt; give "tokenizer": DIR (e.g. a Stable Diffusion folder's tokenizer/)`);
  const tokenizer: ClipTokenizer = loadClipTokenizer(tokDir);
  const device = resolveDevice(ctx.device);
  const processor = await readClipImageProcessorConfig(clipDir);
  const batchSize = options.batch_size ?? 16;
  const scale = options.scale ?? 1;
  const holder = new ModelHolder(device, async () => {
    const m = await loadClipModel(clipDir, { device, dtype: options.dtype });
    m.freeze();
    if (tokenizer.vocabSize > m.config.text.vocabSize) throw new Error(`clip_score: the tokenizer in ${tokDir} has ${tokenizer.vocabSize} tokens, the text tower ${m.config.text.vocabSize}`);
    return m;
  }, options.offload ?? false);
  await holder.get();
  const P = () => holder.get().then((m) => m.config.projectionDim);
  const textCache = new Map<string, Float64Array>();

  const textFeatures = async (prompts: string[]): Promise<Float64Array[]> => {
    const missing = [...new Set(prompts.filter((p) => !textCache.has(p)))];
    for (let from = 0; from < missing.length; from += batchSize) {
      const chunk = missing.slice(from, from + batchSize);
      const m = await holder.get();
      const L = Math.min(tokenizer.modelMaxLength, m.config.text.maxPositionEmbeddings);
      const enc = tokenizer.encodeBatch(chunk, { maxLength: L, padding: 'max_length', truncation: true });
      const ids = tensor(enc.ids, [enc.batch, enc.length], 'i32', device);
      try {
        const f = noGrad(() => tidy(() => { const t = m.getTextFeatures(ids); return t.dtype === 'f32' ? t : cast(t, 'f32'); }));
        const rows = normaliseRows(await f.data(), chunk.length, await P());
        f.dispose();
        chunk.forEach((p, i) => textCache.set(p, rows[i]));
      } finally {
        ids.dispose();
      }
    }
    return prompts.map((p) => textCache.get(p)!);
  };

  const score = async (images: ImageBatch, prompts: string[], metadata: Metadata[] = []) => {
    void metadata;
    if (prompts.length !== images.n) throw new Error(`clip_score: ${prompts.length} prompts for ${images.n} images`);
    const text = await textFeatures(prompts);
    const m = await holder.get();
    const d = await P();
    let at = 0;
    return scoreClipImages('clip_score', images, batchSize, device, processor, async (px) => {
      const f = noGrad(() => tidy(() => { const e = m.getImageFeatures(px); return e.dtype === 'f32' ? e : cast(e, 'f32'); }));
      const rows = normaliseRows(await f.data(), px.shape[0], d);
      f.dispose();
      const out = rows.map((r, i) => scale * r.reduce((s, x, k) => s + x * text[at + i][k], 0));
      at += rows.length;
      return out;
    });
  };
  return { score, release: () => holder.release(), close: () => { holder.close(); textCache.clear(); } };
}
