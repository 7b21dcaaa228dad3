// A small Stable Diffusion pipeline built in memory with random weights: the SD v1 architecture
// (cross-attention UNet, KL VAE, CLIP text encoder, DDIM schedule of SD's betas) at toy sizes, so
// that the trainer's tests and the demo run in seconds on a software device, from scratch, with
// no downloaded weights.
//
// The tokenizer is CLIP's real one when ../shared/reference/tiny-sd-pipe/tokenizer exists (the
// vocabulary then costs 49408 × width parameters of embedding table, still tiny at width 16);
// otherwise a byte-level vocabulary of 514 tokens built here (no merges: every byte is a token),
// which tokenises any prompt. Its files are written to a scratch folder that becomes `folder`,
// because saveStableDiffusion copies tokenizer files from `${folder}/tokenizer`.

import { copyFileSync, existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Device } from '../engine/device.js';
import { getDefaultDevice } from '../engine/tensor.js';
import { manualSeed } from '../engine/nn/module.js';
import { StableDiffusion } from '../diffusion/load.js';
import { DDIMSchedule, SchedulerConfig } from '../diffusion/schedule.js';
import { loadClipTokenizer } from '../diffusion/text/load-node.js';
import { clipTokenizerFiles } from '../diffusion/text/bpe-learn.js';
import { ClipTextModel, parseClipTextConfig } from '../diffusion/models/clip-text.js';
import { UNet2DConditionModel } from '../diffusion/models/unet.js';
import { AutoencoderKL, parseVaeConfig } from '../diffusion/models/vae.js';

export interface TinyPipelineOptions {
  device?: Device;
  /** Seed of every random initialisation (default 0). */
  seed?: number;
  /** Image side in pixels (default 16): a multiple of 4, as latents are size/2 and the UNet halves them once. */
  size?: number;
  /** Width of the text encoder and of the UNet's cross-attention (default 16). */
  width?: number;
  /** Where to write the tokenizer files (default: a new folder under the OS temp dir). */
  folder?: string;
  /** Use the byte-level tokenizer even when CLIP's files are available (default false). */
  byteTokenizer?: boolean;
  /** Storage type of the UNet's weights (default f32; f16 needs shader-f16): initialised in f32, then cast. */
  dtype?: 'f32' | 'f16';
}

const TOKENIZER_FILES = ['vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json'];

function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json'))) {
    const up = dirname(d);
    if (up === d) return process.cwd();
    d = up;
  }
  return d;
}

/** CLIP's tokenizer folder in the shared reference data, or null when absent. */
export function referenceTokenizerDir(): string | null {
  const dir = resolve(repoRoot(), '..', 'shared', 'reference', 'tiny-sd-pipe', 'tokenizer');
  return existsSync(join(dir, 'vocab.json')) && existsSync(join(dir, 'merges.txt')) ? dir : null;
}

/** Writes a byte-level CLIP-style tokenizer (514 tokens, no merges) into dir. */
function writeByteTokenizer(dir: string): number {
  const files = clipTokenizerFiles([]);
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text);
  return Object.keys(JSON.parse(files['vocab.json'])).length;
}

/** SD v1's scheduler settings (scaled-linear betas 0.00085 … 0.012, steps_offset 1). */
export const SD_V1_SCHEDULER: Readonly<SchedulerConfig> = Object.freeze({
  num_train_timesteps: 1000, beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear',
  set_alpha_to_one: false, steps_offset: 1, clip_sample: false, prediction_type: 'epsilon',
});

/**
 * A random-weight SD-architecture pipeline: UNet block_out_channels [16, 32] (cross-attention
 * down block then a plain one, 1 layer per block, 2 heads, cross_attention_dim = width), VAE
 * [8, 16] with 4 latent channels (size/2 latents), a 2-layer CLIP text encoder of width `width`.
 */
export function createTinyPipeline(opts: TinyPipelineOptions = {}): StableDiffusion {
  const device = opts.device ?? getDefaultDevice();
  const seed = opts.seed ?? 0;
  const size = opts.size ?? 16;
  const width = opts.width ?? 16;
  if (!Number.isInteger(size) || size < 8 || size % 4 !== 0) throw new Error(`createTinyPipeline: size ${size} must be a multiple of 4, at least 8 (latents are size/2 and the UNet halves them once)`);
  if (!Number.isInteger(width) || width < 2 || width % 2 !== 0) throw new Error(`createTinyPipeline: width ${width} must be an even integer ≥ 2 (2 attention heads)`);

  const folder = opts.folder ?? mkdtempSync(join(tmpdir(), 'ddpo-tiny-'));
  const tokDir = join(folder, 'tokenizer');
  mkdirSync(tokDir, { recursive: true });
  const ref = opts.byteTokenizer ? null : referenceTokenizerDir();
  let vocabSize: number;
  if (ref) {
    for (const f of TOKENIZER_FILES) if (existsSync(join(ref, f))) copyFileSync(join(ref, f), join(tokDir, f));
    vocabSize = -1;
  } else {
    vocabSize = writeByteTokenizer(tokDir);
  }
  const tokenizer = loadClipTokenizer(tokDir);
  if (vocabSize < 0) vocabSize = tokenizer.vocabSize;

  const textConfig = parseClipTextConfig({
    vocab_size: vocabSize, hidden_size: width, intermediate_size: 2 * width, num_hidden_layers: 2, num_attention_heads: 2,
    max_position_embeddings: 77, hidden_act: 'quick_gelu', layer_norm_eps: 1e-5,
    bos_token_id: tokenizer.bosId, eos_token_id: tokenizer.eosId, pad_token_id: tokenizer.padId,
  }, 'tiny CLIP text config');
  const textEncoder = new ClipTextModel(textConfig, { device, seed: seed * 3 + 1 });

  const unet = new UNet2DConditionModel({
    sample_size: size / 2, in_channels: 4, out_channels: 4, layers_per_block: 1,
    block_out_channels: [16, 32], down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'],
    up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'], attention_head_dim: 2, cross_attention_dim: width,
    norm_num_groups: 8, norm_eps: 1e-5, flip_sin_to_cos: true, freq_shift: 0, act_fn: 'silu',
    center_input_sample: false, downsample_padding: 1, mid_block_scale_factor: 1, use_linear_projection: false,
  }, { device, seed: seed * 3 + 2, dtype: opts.dtype ?? 'f32' });

  manualSeed(seed * 3 + 3);
  const vae = new AutoencoderKL(parseVaeConfig({
    in_channels: 3, out_channels: 3, latent_channels: 4, block_out_channels: [8, 16], layers_per_block: 1,
    down_block_types: ['DownEncoderBlock2D', 'DownEncoderBlock2D'], up_block_types: ['UpDecoderBlock2D', 'UpDecoderBlock2D'],
    norm_num_groups: 4, sample_size: size, scaling_factor: 0.18215,
  }), { device, microBatch: 4 });

  const schedulerConfig: SchedulerConfig = { ...SD_V1_SCHEDULER };
  return { folder, tokenizer, textEncoder, unet, vae, schedule: new DDIMSchedule(schedulerConfig), schedulerConfig };
}
