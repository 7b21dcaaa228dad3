// The three networks a pretraining run builds, as the diffusers/transformers config JSON objects
// their folders will hold (vae/config.json, unet/config.json, text_encoder/config.json): the
// modules are constructed from these, so what is trained is exactly what is saved and reloaded.

import { SD_V1_SCHEDULER } from '../rl/tiny-model.js';
import type { SchedulerConfig } from '../diffusion/schedule.js';
import type { ClipTokenizer } from '../diffusion/tokenizer.js';
import type { PretrainConfig } from './config.js';

/** How many times the VAE halves the image (its levels after the first). */
export function vaeFactor(c: PretrainConfig): number {
  return 2 ** (c.vae.block_out_channels.length - 1);
}

/** diffusers AutoencoderKL config for images of `resolution` px. */
export function vaeConfigJson(c: PretrainConfig, resolution: number, scalingFactor = 1): Record<string, unknown> {
  const n = c.vae.block_out_channels.length;
  return {
    _class_name: 'AutoencoderKL',
    act_fn: 'silu',
    block_out_channels: [...c.vae.block_out_channels],
    down_block_types: new Array(n).fill('DownEncoderBlock2D'),
    up_block_types: new Array(n).fill('UpDecoderBlock2D'),
    in_channels: 3,
    out_channels: 3,
    latent_channels: c.vae.latent_channels,
    layers_per_block: c.vae.layers_per_block,
    norm_num_groups: c.vae.norm_num_groups,
    mid_block_add_attention: c.vae.mid_block_attention,
    sample_size: resolution,
    scaling_factor: scalingFactor,
  };
}

/** diffusers UNet2DConditionModel config for latents of `latentSize` with `latentChannels`, attending to text of width crossDim. */
export function unetConfigJson(c: PretrainConfig, latentSize: number, latentChannels: number, crossDim: number): Record<string, unknown> {
  const u = c.unet;
  return {
    _class_name: 'UNet2DConditionModel',
    act_fn: 'silu',
    attention_head_dim: u.attention_heads,
    block_out_channels: [...u.block_out_channels],
    center_input_sample: false,
    cross_attention_dim: crossDim,
    down_block_types: u.cross_attention.map((x) => (x ? 'CrossAttnDownBlock2D' : 'DownBlock2D')),
    up_block_types: [...u.cross_attention].reverse().map((x) => (x ? 'CrossAttnUpBlock2D' : 'UpBlock2D')),
    mid_block_type: u.mid_block ? 'UNetMidBlock2DCrossAttn' : null,
    downsample_padding: 1,
    flip_sin_to_cos: true,
    freq_shift: 0,
    in_channels: latentChannels,
    out_channels: latentChannels,
    layers_per_block: u.layers_per_block,
    mid_block_scale_factor: 1,
    norm_eps: 1e-5,
    norm_num_groups: u.norm_num_groups,
    sample_size: latentSize,
    use_linear_projection: false,
  };
}

/** transformers CLIPTextModel config for a tokenizer (its vocabulary and special ids). */
export function clipConfigJson(c: PretrainConfig, tok: ClipTokenizer): Record<string, unknown> {
  const t = c.text_encoder;
  return {
    architectures: ['CLIPTextModel'],
    model_type: 'clip_text_model',
    vocab_size: tok.vocabSize,
    hidden_size: t.hidden_size,
    intermediate_size: t.intermediate_size,
    num_hidden_layers: t.layers,
    num_attention_heads: t.heads,
    max_position_embeddings: c.tokenizer.max_length,
    hidden_act: 'quick_gelu',
    layer_norm_eps: 1e-5,
    bos_token_id: tok.bosId,
    eos_token_id: tok.eosId,
    pad_token_id: tok.padId,
  };
}

/** SD v1's scheduler (scaled-linear betas 0.00085 → 0.012 over 1000 steps), as DDIM's config. */
export function schedulerConfigJson(): SchedulerConfig {
  return { _class_name: 'DDIMScheduler', ...SD_V1_SCHEDULER };
}
