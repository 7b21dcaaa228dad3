// `ddpo pretrain`'s configuration: one table (rl/schema.ts) gives every option its type, default
// and meaning; it validates config files and `--set` overrides and generates
// docs/pretrain-config.md. The defaults train the shipped 16 px emoji model on a 2-core CPU:
// small networks of SD's architecture (KL VAE with factor 2, cross-attention UNet, CLIP text
// encoder). The UNet has the layout the software kernels are tuned for (bench/unet-step.ts:
// cross-attention at the two lower of three levels, 8×8×4 latents, 16-token context) at half its
// widths (32/64/64): measured 13.1 vs 4.3 samples/s at batch 32 on the shared 2-core machine.

import { ConfigSchema, Overrides, Spec, bool, field, int, num, section, str } from '../rl/schema.js';

export interface TokenizerSection { merges: number; max_length: number }
export interface VaeSection {
  from: string | null;
  block_out_channels: number[];
  layers_per_block: number;
  latent_channels: number;
  norm_num_groups: number;
  mid_block_attention: boolean;
  steps: number;
  batch_size: number;
  lr: number;
  warmup_steps: number;
  kl_weight: number;
  max_grad_norm: number;
}
export interface TextEncoderSection { hidden_size: number; layers: number; heads: number; intermediate_size: number }
export interface UnetSection {
  block_out_channels: number[];
  layers_per_block: number;
  attention_heads: number;
  cross_attention: boolean[];
  mid_block: boolean;
  norm_num_groups: number;
}
export interface TrainSection {
  steps: number;
  batch_size: number;
  lr: number;
  warmup_steps: number;
  adam_beta1: number;
  adam_beta2: number;
  weight_decay: number;
  eps: number;
  max_grad_norm: number;
  caption_dropout: number;
  ema_decay: number;
}
export interface SampleSection { every: number; n: number; steps: number; guidance: number; eta: number; seed: number; prompts: string[] | null }

export interface PretrainConfig {
  data: string | null;
  out: string;
  adapter: string;
  seed: number;
  checkpoint_every: number;
  log_every: number;
  tokenizer: TokenizerSection;
  vae: VaeSection;
  text_encoder: TextEncoderSection;
  unet: UnetSection;
  train: TrainSection;
  sample: SampleSection;
}

const adam = 'AdamW with PyTorch\'s update rule; its β1, β2, ε and weight decay are train.adam_beta1 … train.eps for both stages.';

export const PRETRAIN_SCHEMA: Spec<PretrainConfig> = {
  data: str<string | null>(null, 'The captioned image set: a folder of square images of one size with metadata.jsonl or captions.tsv (`ddpo data emoji` / `ddpo data images` build one). Required.', { nullable: true, defaultDoc: 'null (required)' }),
  out: str('runs/pretrain', 'Run folder: checkpoint/, metrics.jsonl, grids/, report.html, config.json, tokenizer/, vae/ (after stage 1) and model/ (the diffusers pipeline folder, EMA weights).'),
  adapter: str('auto', "WebGPU adapter: 'auto' (a GPU if present, else the software one), 'gpu', 'cpu', or part of an adapter's name."),
  seed: int(0, 'Seed of every random stream: initialisation, batch order, timesteps, noise, caption dropout.', { min: 0 }),
  checkpoint_every: int(250, 'Write the checkpoint (replaced atomically) every this many steps of either stage; also at the end of each stage and on Ctrl-C.', { min: 1 }),
  log_every: int(25, 'Read the losses back (one GPU sync) and write metrics.jsonl every this many steps.', { min: 1 }),
  tokenizer: section<TokenizerSection>('The tokenizer, learned from the captions and written in CLIP\'s format (vocab.json, merges.txt).', {
    merges: int(1000, 'At most this many BPE merges learned from the captions (most frequent pair first, so common words become single tokens); 0: the 514-token byte-level vocabulary.', { min: 0 }),
    max_length: int(16, 'Tokens per prompt, start and end included (the tokenizer\'s model_max_length and the text encoder\'s positions; CLIP\'s is 77). Longer captions are truncated, with a warning.', { min: 3, max: 77 }),
  }),
  vae: section<VaeSection>(`Stage 1: an AutoencoderKL trained on the images (reconstruction + KL). Its scaling_factor is then measured as 1 / the standard deviation of the training latents. ${adam}`, {
    from: str<string | null>(null, 'A trained vae/ folder (diffusers AutoencoderKL) to use instead of training one: stage 1 is skipped.', { nullable: true }),
    block_out_channels: field('integer[]', [16, 32], 'Channels of each encoder/decoder level; each level after the first halves the resolution (2 levels: 16 px images → 8×8 latents).', { min: 1 }),
    layers_per_block: int(1, 'ResNet blocks per encoder level (the decoder has one more).', { min: 1 }),
    latent_channels: int(4, 'Latent channels (SD: 4; the UNet\'s in/out channels follow).', { min: 1 }),
    norm_num_groups: int(8, 'Group-norm groups (must divide every block width).', { min: 1 }),
    mid_block_attention: bool(true, 'Self-attention in the mid block (as SD\'s VAE).'),
    steps: int(600, 'Optimizer steps of stage 1.', { min: 0 }),
    batch_size: int(16, 'Images per step.', { min: 1 }),
    lr: num(2e-3, 'Peak learning rate (linear warm-up, then constant).', { gt: 0 }),
    warmup_steps: int(100, 'Linear learning-rate warm-up steps.', { min: 0 }),
    kl_weight: num(1e-4, 'Weight of the KL divergence to N(0, I), per latent element, against the per-pixel mean squared reconstruction error (in [−1, 1] units). Small, as in SD (whose latents are then rescaled by scaling_factor).', { min: 0 }),
    max_grad_norm: num(1.0, 'Gradients clipped to this global L2 norm.', { gt: 0 }),
  }),
  text_encoder: section<TextEncoderSection>('The CLIP text encoder (transformers CLIPTextModel: causal self-attention, quick-GELU), trained jointly with the UNet in stage 2.', {
    hidden_size: int(64, 'Width (also the UNet\'s cross_attention_dim).', { min: 2 }),
    layers: int(2, 'Transformer layers.', { min: 1 }),
    heads: int(2, 'Attention heads (must divide hidden_size).', { min: 1 }),
    intermediate_size: int(128, 'MLP width.', { min: 1 }),
  }),
  unet: section<UnetSection>('The UNet2DConditionModel (ε-prediction on the scaled latents), trained in stage 2.', {
    block_out_channels: field('integer[]', [32, 64, 64], 'Channels of each level; each level after the first halves the latent resolution (8×8 latents → 4×4 → 2×2).', { min: 1 }),
    layers_per_block: int(1, 'ResNet blocks per down level (up levels have one more).', { min: 1 }),
    attention_heads: int(4, 'Attention heads of every transformer block (diffusers\' attention_head_dim, as SD v1 names it).', { min: 1 }),
    cross_attention: field('boolean[]', [false, true, true], 'Per level: a transformer block with cross-attention to the text after each ResNet (CrossAttnDownBlock2D / CrossAttnUpBlock2D) or not (DownBlock2D / UpBlock2D).'),
    mid_block: bool(true, 'A mid block (ResNet, cross-attention transformer, ResNet) at the lowest resolution.'),
    norm_num_groups: int(16, 'Group-norm groups (must divide every block width and the up blocks\' concatenated widths).', { min: 1 }),
  }),
  train: section<TrainSection>('Stage 2: the UNet and text encoder trained jointly on SD\'s scaled-linear schedule (1000 steps, β 0.00085 → 0.012), ε-prediction, mean squared error.', {
    steps: int(2000, 'Optimizer steps of stage 2 (a resumed run continues to this total).', { min: 0 }),
    batch_size: int(32, 'Samples (image, caption, timestep, noise) per step.', { min: 1 }),
    lr: num(1e-3, 'Peak learning rate (linear warm-up, then constant).', { gt: 0 }),
    warmup_steps: int(200, 'Linear learning-rate warm-up steps.', { min: 0 }),
    adam_beta1: num(0.9, 'AdamW β1 (both stages).', { min: 0, max: 1 }),
    adam_beta2: num(0.999, 'AdamW β2 (both stages).', { min: 0, max: 1 }),
    weight_decay: num(1e-2, 'AdamW decoupled weight decay (both stages).', { min: 0 }),
    eps: num(1e-8, 'AdamW ε (both stages).', { gt: 0 }),
    max_grad_norm: num(1.0, 'Gradients clipped to this global L2 norm.', { gt: 0 }),
    caption_dropout: num(0.1, 'Probability that a sample\'s caption is replaced by the empty prompt, so the model also learns the unconditional prediction classifier-free guidance needs.', { min: 0, max: 1 }),
    ema_decay: num(0.995, 'Decay of the exponential moving average of the UNet and text-encoder weights (warmed up as min(decay, (1 + n)/(10 + n)) after n updates); the EMA weights are what is sampled and exported.', { min: 0, max: 1 }),
  }),
  sample: section<SampleSection>('Fixed-seed sample grids during stage 2 (EMA weights, DDIM), for the report.', {
    every: int(250, 'A grid every this many stage-2 steps (and at the end); 0: only at the end.', { min: 0 }),
    n: int(16, 'Grid images (prompts cycle through sample.prompts).', { min: 1 }),
    steps: int(25, 'DDIM steps.', { min: 1 }),
    guidance: num(3, 'Classifier-free guidance scale.', { min: 0 }),
    eta: num(0, 'DDIM η (0: deterministic).', { min: 0 }),
    seed: int(1234, 'Noise seed of the grid (the same every time, so grids compare like for like).', { min: 0 }),
    prompts: field<string[] | null>('string[]', null, 'Prompts of the grid.', { nullable: true, defaultDoc: 'null (the data set\'s captions in order)' }),
  }),
};

export const PRETRAIN_CONFIG = new ConfigSchema<PretrainConfig>(PRETRAIN_SCHEMA, 'docs/pretrain-config.md (or `ddpo pretrain --docs`)');

/** Rules spanning several options (the model configs check their own divisibility when built). */
function finish(c: PretrainConfig): PretrainConfig {
  const problems: string[] = [];
  if (!c.data) problems.push('data: required: the image set folder (`ddpo pretrain --data DIR`; build one with `ddpo data emoji --out DIR`)');
  if (c.unet.cross_attention.length !== c.unet.block_out_channels.length) problems.push(`unet.cross_attention has ${c.unet.cross_attention.length} entries but unet.block_out_channels has ${c.unet.block_out_channels.length} levels; give one per level`);
  if (!c.unet.cross_attention.some(Boolean) && !c.unet.mid_block) problems.push('unet: no level has cross_attention and there is no mid_block, so the UNet would ignore the text; turn one on');
  if (c.text_encoder.hidden_size % c.text_encoder.heads) problems.push(`text_encoder.heads = ${c.text_encoder.heads} does not divide text_encoder.hidden_size = ${c.text_encoder.hidden_size}`);
  if (c.vae.from === null && c.vae.steps === 0) problems.push('vae.steps = 0 and no vae.from: stage 2 needs a VAE; train one (vae.steps > 0) or give a trained vae/ folder in vae.from');
  if (problems.length) PRETRAIN_CONFIG.fail(problems, 'inconsistent pretrain config');
  return c;
}

/** Defaults < config file < overrides, checked (one Error lists every problem). */
export function resolvePretrainConfig(fileJson?: unknown, overrides: Overrides = {}): PretrainConfig {
  return finish(PRETRAIN_CONFIG.resolve(fileJson, overrides));
}

/** What a resumed run may change without computing anything an uninterrupted run would not. */
export const PRETRAIN_RESUMABLE_KEYS: readonly string[] = ['out', 'adapter', 'train.steps', 'checkpoint_every', 'log_every', 'sample.every', 'sample.n', 'sample.steps', 'sample.guidance', 'sample.eta', 'sample.seed', 'sample.prompts'];

/** The markdown of docs/pretrain-config.md. */
export function pretrainConfigDocs(): string {
  return PRETRAIN_CONFIG.docs('`ddpo pretrain` configuration', [
    '<!-- Generated from pretrain/config.ts by `ddpo pretrain --docs > docs/pretrain-config.md`; test/pretrain-config.test.ts checks it is up to date. -->',
    '',
    '`ddpo pretrain --data DIR --out RUN [--config pretrain.json] [--set KEY=VALUE ...]` trains a small Stable Diffusion',
    'model from scratch in two stages: an AutoencoderKL on the images, then the UNet and a CLIP text encoder jointly',
    'on the VAE\'s scaled latents. Every key below has a default (a config file holds any subset; `data` is',
    'required). `--set` takes dotted names (`--set train.steps=5000 --set unet.block_out_channels=32,64`); lists',
    'are JSON or comma-separated. The resolved config is written to the run folder as `config.json`;',
    '`ddpo pretrain --resume RUN` continues from the last checkpoint bit-identically, and may change only',
    `${PRETRAIN_RESUMABLE_KEYS.map((k) => `\`${k}\``).join(', ')}.`,
    '',
    'The run ends by writing `RUN/model/`, a diffusers-layout pipeline (model_index.json, unet/, vae/, text_encoder/,',
    'tokenizer/, scheduler/) with the EMA weights, which `ddpo sample`, `ddpo train --model` and diffusers load.',
  ]);
}
