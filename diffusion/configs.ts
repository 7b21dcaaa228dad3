// Named Stable Diffusion configurations, as the diffusers-style config JSON objects a pipeline
// folder would hold (unet/config.json, vae/config.json, text_encoder/config.json,
// scheduler/scheduler_config.json), and a random-weight pipeline built from one.
//
//   sd-v1  SD v1-4 / v1-5 sizes (UNet 860 M, VAE 84 M, CLIP ViT-L/14 text tower 123 M parameters).
//          Its names and shapes equal ../shared/reference/sd_v1_parameter_shapes.json (tested).
//   tiny   the sizes of ../shared/reference/tiny-sd-pipe (UNet 32/64, VAE 16/32, CLIP width 32):
//          for tests; seconds per sample even on a software adapter.
//   small  the same architecture scaled to what one GPU trains from scratch in hours, for 256²
//          images with 32×32×4 latents:
//            UNet  block_out_channels [64, 128, 256], 2 layers per block, cross-attention in the
//                  two outer levels and the mid block (down: CrossAttn, CrossAttn, Down; up: Up,
//                  CrossAttn, CrossAttn, as SD's deepest level), 4 heads (widths 16/32/64), groups
//                  32, cross_attention_dim 256, sample_size 32 → latents 32 → 16 → 8.
//            VAE   block_out_channels [32, 64, 128, 128] (4 levels = SD's factor 8: 256² → 32²),
//                  2 layers per block, 4 latent channels, groups 32.
//            CLIP  width 256, 4 layers, 4 heads, MLP 1024, 77 positions, CLIP's real vocabulary
//                  (49408, so the real tokenizer applies).
//          18.2 M UNet / 5.3 M VAE / 15.8 M text parameters (12.7 M of them the token
//          embedding; `ddpo inspect --config small --summary`): about 1/47 of SD's UNet, with
//          1/4 of SD's latent pixels.
// The scheduler is SD v1's for all three (PNDM config → DDIM, scaled_linear 0.00085 → 0.012).

import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Device } from '../engine/device.js';
import { getDefaultDevice } from '../engine/tensor.js';
import { manualSeed } from '../engine/nn/module.js';
import { StableDiffusion } from './load.js';
import { DDIMSchedule, SchedulerConfig } from './schedule.js';
import { loadClipTokenizer } from './text/load-node.js';
import { ClipTextModel, clipTextConfigJson, parseClipTextConfig, sdV1ClipTextConfig } from './models/clip-text.js';
import { UNet2DConditionModel } from './models/unet.js';
import { SD_V1_UNET_CONFIG } from './models/unet-config.js';
import { AutoencoderKL, SD_V1_VAE_CONFIG, parseVaeConfig, vaeConfigToJson } from './models/vae.js';

export type ConfigName = 'sd-v1' | 'tiny' | 'small';
export const CONFIG_NAMES: readonly ConfigName[] = ['sd-v1', 'tiny', 'small'];
export type PartName = 'unet' | 'vae' | 'text_encoder';
export const PART_NAMES: readonly PartName[] = ['unet', 'vae', 'text_encoder'];

export interface PipelineConfigs {
  unet: Record<string, unknown>;
  vae: Record<string, unknown>;
  text_encoder: Record<string, unknown>;
  scheduler: SchedulerConfig;
}

/** SD v1's scheduler/scheduler_config.json (a PNDM config; we build DDIM from its betas). */
const SD_V1_SCHEDULER: SchedulerConfig = {
  _class_name: 'PNDMScheduler',
  beta_end: 0.012,
  beta_schedule: 'scaled_linear',
  beta_start: 0.00085,
  num_train_timesteps: 1000,
  set_alpha_to_one: false,
  skip_prk_steps: true,
  steps_offset: 1,
  trained_betas: null,
  clip_sample: false,
};

const unetJson = (o: Record<string, unknown>) => ({
  _class_name: 'UNet2DConditionModel',
  act_fn: 'silu',
  center_input_sample: false,
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  out_channels: 4,
  ...o,
});

const vaeJson = (o: Record<string, unknown>) => {
  const n = (o.block_out_channels as number[]).length;
  return {
    _class_name: 'AutoencoderKL',
    act_fn: 'silu',
    down_block_types: new Array(n).fill('DownEncoderBlock2D'),
    up_block_types: new Array(n).fill('UpDecoderBlock2D'),
    in_channels: 3,
    out_channels: 3,
    latent_channels: 4,
    scaling_factor: 0.18215,
    ...o,
  };
};

const clipJson = (o: Record<string, unknown>) => ({
  architectures: ['CLIPTextModel'],
  model_type: 'clip_text_model',
  vocab_size: 49408,
  max_position_embeddings: 77,
  hidden_act: 'quick_gelu',
  layer_norm_eps: 1e-5,
  bos_token_id: 49406,
  eos_token_id: 49407,
  pad_token_id: 1,
  ...o,
});

function build(name: ConfigName): PipelineConfigs {
  switch (name) {
    case 'sd-v1':
      return {
        unet: structuredClone(SD_V1_UNET_CONFIG) as unknown as Record<string, unknown>,
        vae: vaeConfigToJson({ ...SD_V1_VAE_CONFIG, blockOutChannels: [...SD_V1_VAE_CONFIG.blockOutChannels] }),
        text_encoder: clipTextConfigJson(sdV1ClipTextConfig(), 'float32'),
        scheduler: { ...SD_V1_SCHEDULER },
      };
    case 'tiny':
      // ../shared/reference/tiny-sd-pipe's configs (the values that change anything).
      return {
        unet: unetJson({
          attention_head_dim: 4, block_out_channels: [32, 64], cross_attention_dim: 32,
          down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
          layers_per_block: 1, norm_num_groups: 16, sample_size: 8,
        }),
        vae: vaeJson({ block_out_channels: [16, 32], layers_per_block: 1, norm_num_groups: 16, sample_size: 16 }),
        text_encoder: clipJson({ hidden_size: 32, intermediate_size: 37, num_attention_heads: 4, num_hidden_layers: 2 }),
        scheduler: { ...SD_V1_SCHEDULER },
      };
    case 'small':
      return {
        unet: unetJson({
          attention_head_dim: 4, block_out_channels: [64, 128, 256], cross_attention_dim: 256,
          down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
          up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
          layers_per_block: 2, norm_num_groups: 32, sample_size: 32,
        }),
        vae: vaeJson({ block_out_channels: [32, 64, 128, 128], layers_per_block: 2, norm_num_groups: 32, sample_size: 256 }),
        text_encoder: clipJson({ hidden_size: 256, intermediate_size: 1024, num_attention_heads: 4, num_hidden_layers: 4 }),
        scheduler: { ...SD_V1_SCHEDULER },
      };
    default:
      throw new Error(`unknown config "${String(name)}" (known: ${CONFIG_NAMES.join(', ')})`);
  }
}

/** A fresh copy of the named configuration's JSON objects (callers may edit them). */
export function namedConfig(name: string): PipelineConfigs {
  if (!(CONFIG_NAMES as readonly string[]).includes(name)) throw new Error(`unknown config "${name}" (known: ${CONFIG_NAMES.join(', ')})`);
  return build(name as ConfigName);
}

function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json')) && dirname(d) !== d) d = dirname(d);
  return d;
}

/** Where the CLIP tokenizer files are looked for by default: ../shared/reference/tiny-sd-pipe/tokenizer. */
export function defaultTokenizerDir(): string {
  return resolve(repoRoot(), '..', 'shared', 'reference', 'tiny-sd-pipe', 'tokenizer');
}

export interface CreatePipelineOptions {
  device?: Device;
  /** Seed of the random initialisation (default 0). */
  seed?: number;
  /** A tokenizer/ folder with CLIP's vocab.json and merges.txt (default defaultTokenizerDir()). */
  tokenizerDir?: string;
  /** Storage type of the UNet (default f32; f16 needs shader-f16). The VAE and text encoder stay f32. */
  unetDtype?: 'f32' | 'f16';
}

/**
 * A StableDiffusion with randomly initialised weights at a named size (f32). Its `folder` is the
 * tokenizer folder's parent, so saveStableDiffusion copies the tokenizer files from there.
 */
export function createPipelineFromConfig(name: string, opts: CreatePipelineOptions = {}): StableDiffusion {
  const cfg = namedConfig(name);
  const device = opts.device ?? getDefaultDevice();
  const seed = opts.seed ?? 0;
  const tokDir = opts.tokenizerDir ?? defaultTokenizerDir();
  if (!existsSync(join(tokDir, 'vocab.json')) || !existsSync(join(tokDir, 'merges.txt'))) {
    throw new Error(`createPipelineFromConfig("${name}"): CLIP's tokenizer files (vocab.json, merges.txt) are not in ${tokDir}. ` +
      'Pass tokenizerDir: the tokenizer/ folder of any SD v1 pipeline (e.g. CompVis/stable-diffusion-v1-4/tokenizer or ' +
      'openai/clip-vit-large-patch14), or put the shared reference data at ../shared.');
  }
  const tokenizer = loadClipTokenizer(tokDir);
  const schedule = new DDIMSchedule(cfg.scheduler);
  // Each part gets its own seed so the weights of one do not depend on the others' sizes.
  const unet = new UNet2DConditionModel(cfg.unet, { device, seed, dtype: opts.unetDtype ?? 'f32' });
  let vae: AutoencoderKL | null = null;
  try {
    manualSeed(seed + 1);
    vae = new AutoencoderKL(parseVaeConfig(cfg.vae), { device });
    const textEncoder = new ClipTextModel(parseClipTextConfig(cfg.text_encoder, `config ${name} text_encoder`), { device, seed: seed + 2 });
    return { folder: dirname(tokDir), tokenizer, textEncoder, unet, vae, schedule, schedulerConfig: cfg.scheduler };
  } catch (e) {
    unet.dispose();
    vae?.dispose();
    throw e;
  }
}
