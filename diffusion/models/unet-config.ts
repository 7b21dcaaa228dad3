// UNet2DConditionModel's config (diffusers' unet/config.json): parsing with strict validation,
// the resolved architecture plan (every block's channel arithmetic in one place), and the
// parameter names and shapes that plan implies, computable without allocating any tensor.
//
// Both the modules (unet-blocks.ts, unet.ts) and unetParameterShapes() are built from the same
// plan, so the channel arithmetic is written once; the tests check that the modules' state dict
// equals unetParameterShapes() name for name, in order.
//
// Validation rule: every key of config.json is either understood (and its value checked against
// what we implement) or an Error naming it. Keys that only matter when a feature we reject is on
// (e.g. addition_embed_type_num_heads without addition_embed_type) are accepted as inert.

export type DownBlockType = 'CrossAttnDownBlock2D' | 'DownBlock2D';
export type UpBlockType = 'UpBlock2D' | 'CrossAttnUpBlock2D';

/** The resolved config (camelCase, per-block lists expanded). */
export interface UNetConfig {
  inChannels: number;
  outChannels: number;
  downBlockTypes: DownBlockType[];
  upBlockTypes: UpBlockType[];
  midBlockType: 'UNetMidBlock2DCrossAttn' | null;
  blockOutChannels: number[];
  layersPerBlock: number[];
  /** Per down block. */
  crossAttentionDim: number[];
  /** Number of attention heads per down block (config num_attention_heads, else attention_head_dim: SD v1's misnomer). */
  numAttentionHeads: number[];
  transformerLayersPerBlock: number[];
  onlyCrossAttention: boolean[];
  flipSinToCos: boolean;
  freqShift: number;
  downsamplePadding: number;
  useLinearProjection: boolean;
  upcastAttention: boolean;
  resnetTimeScaleShift: 'default' | 'scale_shift';
  resnetSkipTimeAct: boolean;
  resnetOutScaleFactor: number;
  midBlockScaleFactor: number;
  normNumGroups: number;
  normEps: number;
  centerInputSample: boolean;
  timeEmbeddingDim: number;
  convInKernel: number;
  convOutKernel: number;
  sampleSize: number | number[] | null;
}

type Json = Record<string, unknown>;

function fail(key: string, value: unknown, why: string): never {
  throw new Error(`UNet config: "${key}" = ${JSON.stringify(value)}: ${why}`);
}

const isPosInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;

function posInt(cfg: Json, key: string, def?: number): number {
  const v = key in cfg ? cfg[key] : def;
  if (!isPosInt(v)) fail(key, v, 'expected a positive integer');
  return v;
}

function bool(cfg: Json, key: string, def: boolean): boolean {
  const v = key in cfg ? cfg[key] : def;
  if (typeof v !== 'boolean') fail(key, v, 'expected true or false');
  return v;
}

function num(cfg: Json, key: string, def: number): number {
  const v = key in cfg ? cfg[key] : def;
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(key, v, 'expected a finite number');
  return v;
}

/** A value that must equal its default (a feature we do not implement). */
function only(cfg: Json, key: string, allowed: readonly unknown[]): void {
  if (!(key in cfg)) return;
  const v = cfg[key];
  if (!allowed.some((a) => a === v)) fail(key, v, `not supported (supported: ${allowed.map((a) => JSON.stringify(a)).join(', ')})`);
}

/** An int or a per-block list of ints (diffusers accepts both for several keys). */
function perBlock(cfg: Json, key: string, n: number, def: unknown): number[] {
  const v = key in cfg && cfg[key] !== null ? cfg[key] : def;
  if (isPosInt(v)) return new Array<number>(n).fill(v);
  if (Array.isArray(v) && v.length === n && v.every(isPosInt)) return [...v];
  return fail(key, v, `expected a positive integer or a list of ${n} positive integers (one per block)`);
}

/** Keys of diffusers' UNet2DConditionModel that are inert while the features they tune are off. */
const INERT_KEYS = ['addition_embed_type_num_heads', 'addition_time_embed_dim', 'projection_class_embeddings_input_dim',
  'class_embeddings_concat', 'mid_block_only_cross_attention'];

const HANDLED_KEYS = new Set([
  'in_channels', 'out_channels', 'down_block_types', 'up_block_types', 'mid_block_type', 'block_out_channels', 'layers_per_block',
  'cross_attention_dim', 'attention_head_dim', 'num_attention_heads', 'transformer_layers_per_block', 'reverse_transformer_layers_per_block',
  'only_cross_attention', 'flip_sin_to_cos', 'freq_shift', 'downsample_padding', 'use_linear_projection', 'upcast_attention',
  'resnet_time_scale_shift', 'resnet_skip_time_act', 'resnet_out_scale_factor', 'mid_block_scale_factor', 'norm_num_groups', 'norm_eps',
  'act_fn', 'center_input_sample', 'dropout', 'dual_cross_attention', 'class_embed_type', 'num_class_embeds', 'addition_embed_type',
  'time_embedding_type', 'time_embedding_dim', 'time_embedding_act_fn', 'timestep_post_act', 'time_cond_proj_dim', 'encoder_hid_dim',
  'encoder_hid_dim_type', 'cross_attention_norm', 'attention_type', 'conv_in_kernel', 'conv_out_kernel', 'sample_size',
  ...INERT_KEYS,
]);

/**
 * Parses a diffusers UNet2DConditionModel config object (the parsed config.json). Missing keys
 * take diffusers' defaults; an unknown key or a value we do not implement is an Error naming it.
 */
export function parseUnetConfig(raw: unknown): UNetConfig {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new Error('UNet config: expected a JSON object');
  const cfg = raw as Json;
  const cls = cfg._class_name;
  if (cls !== undefined && cls !== 'UNet2DConditionModel') fail('_class_name', cls, 'expected "UNet2DConditionModel"');
  const unknown = Object.keys(cfg).filter((k) => !k.startsWith('_') && !HANDLED_KEYS.has(k));
  if (unknown.length) throw new Error(`UNet config: unknown key(s) ${unknown.map((k) => `"${k}"`).join(', ')} (not implemented; refusing to ignore them)`);

  // Features we do not implement: they must be at their "off" value.
  only(cfg, 'act_fn', ['silu', 'swish']);
  only(cfg, 'dropout', [0]);
  only(cfg, 'dual_cross_attention', [false]);
  only(cfg, 'class_embed_type', [null]);
  only(cfg, 'num_class_embeds', [null]);
  only(cfg, 'addition_embed_type', [null]);
  only(cfg, 'time_embedding_type', ['positional']);
  only(cfg, 'time_embedding_act_fn', [null]);
  only(cfg, 'timestep_post_act', [null]);
  only(cfg, 'time_cond_proj_dim', [null]);
  only(cfg, 'encoder_hid_dim', [null]);
  only(cfg, 'encoder_hid_dim_type', [null]);
  only(cfg, 'cross_attention_norm', [null]);
  only(cfg, 'attention_type', ['default']);
  only(cfg, 'reverse_transformer_layers_per_block', [null]);

  const boc = cfg.block_out_channels ?? [320, 640, 1280, 1280];
  if (!Array.isArray(boc) || boc.length < 1 || !boc.every(isPosInt)) fail('block_out_channels', boc, 'expected a non-empty list of positive integers');
  const blockOutChannels = [...boc] as number[];
  const n = blockOutChannels.length;

  const down = cfg.down_block_types ?? ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'];
  if (!Array.isArray(down) || down.length !== n) fail('down_block_types', down, `expected a list of ${n} block types (one per block_out_channels entry)`);
  for (const t of down) if (t !== 'CrossAttnDownBlock2D' && t !== 'DownBlock2D') fail('down_block_types', down, `block type ${JSON.stringify(t)} is not supported (CrossAttnDownBlock2D, DownBlock2D)`);
  const up = cfg.up_block_types ?? ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'];
  if (!Array.isArray(up) || up.length !== n) fail('up_block_types', up, `expected a list of ${n} block types (one per block_out_channels entry)`);
  for (const t of up) if (t !== 'UpBlock2D' && t !== 'CrossAttnUpBlock2D') fail('up_block_types', up, `block type ${JSON.stringify(t)} is not supported (UpBlock2D, CrossAttnUpBlock2D)`);
  const mid = 'mid_block_type' in cfg ? cfg.mid_block_type : 'UNetMidBlock2DCrossAttn';
  if (mid !== 'UNetMidBlock2DCrossAttn' && mid !== null) fail('mid_block_type', mid, 'supported: "UNetMidBlock2DCrossAttn", null');

  // SD v1's "attention_head_dim" is the number of heads; num_attention_heads, when set, wins.
  const heads = cfg.num_attention_heads != null
    ? perBlock(cfg, 'num_attention_heads', n, null)
    : perBlock(cfg, 'attention_head_dim', n, 8);
  const oca = 'only_cross_attention' in cfg ? cfg.only_cross_attention : false;
  let onlyCrossAttention: boolean[];
  if (typeof oca === 'boolean') onlyCrossAttention = new Array<boolean>(n).fill(oca);
  else if (Array.isArray(oca) && oca.length === n && oca.every((b) => typeof b === 'boolean')) onlyCrossAttention = [...oca] as boolean[];
  else fail('only_cross_attention', oca, `expected a boolean or a list of ${n} booleans`);

  const shift = 'resnet_time_scale_shift' in cfg ? cfg.resnet_time_scale_shift : 'default';
  if (shift !== 'default' && shift !== 'scale_shift') fail('resnet_time_scale_shift', shift, 'supported: "default", "scale_shift"');
  const convInKernel = posInt(cfg, 'conv_in_kernel', 3), convOutKernel = posInt(cfg, 'conv_out_kernel', 3);
  if (convInKernel % 2 === 0) fail('conv_in_kernel', convInKernel, 'must be odd (same padding)');
  if (convOutKernel % 2 === 0) fail('conv_out_kernel', convOutKernel, 'must be odd (same padding)');
  const downsamplePadding = 'downsample_padding' in cfg ? cfg.downsample_padding : 1;
  if (downsamplePadding !== 0 && downsamplePadding !== 1) fail('downsample_padding', downsamplePadding, 'supported: 0 (pad right/bottom by 1, as diffusers) or 1');
  const normEps = num(cfg, 'norm_eps', 1e-5);
  if (!(normEps > 0)) fail('norm_eps', normEps, 'must be > 0');
  const sampleSize = cfg.sample_size ?? null;
  if (sampleSize !== null && !isPosInt(sampleSize) && !(Array.isArray(sampleSize) && sampleSize.length === 2 && sampleSize.every(isPosInt))) {
    fail('sample_size', sampleSize, 'expected a positive integer, a pair, or null');
  }
  const ted = cfg.time_embedding_dim ?? null;
  if (ted !== null && !isPosInt(ted)) fail('time_embedding_dim', ted, 'expected a positive integer or null');

  const c: UNetConfig = {
    inChannels: posInt(cfg, 'in_channels', 4),
    outChannels: posInt(cfg, 'out_channels', 4),
    downBlockTypes: down as DownBlockType[],
    upBlockTypes: up as UpBlockType[],
    midBlockType: mid,
    blockOutChannels,
    layersPerBlock: perBlock(cfg, 'layers_per_block', n, 2),
    crossAttentionDim: perBlock(cfg, 'cross_attention_dim', n, 1280),
    numAttentionHeads: heads,
    transformerLayersPerBlock: perBlock(cfg, 'transformer_layers_per_block', n, 1),
    onlyCrossAttention,
    flipSinToCos: bool(cfg, 'flip_sin_to_cos', true),
    freqShift: num(cfg, 'freq_shift', 0),
    downsamplePadding,
    useLinearProjection: bool(cfg, 'use_linear_projection', false),
    upcastAttention: bool(cfg, 'upcast_attention', false),
    resnetTimeScaleShift: shift,
    resnetSkipTimeAct: bool(cfg, 'resnet_skip_time_act', false),
    resnetOutScaleFactor: num(cfg, 'resnet_out_scale_factor', 1),
    midBlockScaleFactor: num(cfg, 'mid_block_scale_factor', 1),
    normNumGroups: posInt(cfg, 'norm_num_groups', 32),
    normEps,
    centerInputSample: bool(cfg, 'center_input_sample', false),
    timeEmbeddingDim: ted ?? blockOutChannels[0] * 4,
    convInKernel,
    convOutKernel,
    sampleSize: sampleSize as UNetConfig['sampleSize'],
  };
  if (c.resnetOutScaleFactor === 0) fail('resnet_out_scale_factor', 0, 'must be non-zero');
  if (c.midBlockScaleFactor === 0) fail('mid_block_scale_factor', 0, 'must be non-zero');
  // Group norms over every block width (and the skip-concatenated widths) need divisibility.
  for (const ch of blockOutChannels) if (ch % c.normNumGroups) fail('norm_num_groups', c.normNumGroups, `does not divide block width ${ch}`);
  blockOutChannels.forEach((ch, i) => {
    if (ch % heads[i]) fail(cfg.num_attention_heads != null ? 'num_attention_heads' : 'attention_head_dim', heads[i], `${heads[i]} heads do not divide block ${i}'s width ${ch}`);
  });
  return c;
}

/** SD v1.x's UNet (v1-4 / v1-5) as its unet/config.json describes it. */
export const SD_V1_UNET_CONFIG = {
  _class_name: 'UNet2DConditionModel',
  act_fn: 'silu',
  attention_head_dim: 8,
  block_out_channels: [320, 640, 1280, 1280],
  center_input_sample: false,
  cross_attention_dim: 768,
  down_block_types: ['CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D', 'DownBlock2D'],
  downsample_padding: 1,
  flip_sin_to_cos: true,
  freq_shift: 0,
  in_channels: 4,
  layers_per_block: 2,
  mid_block_scale_factor: 1,
  norm_eps: 1e-5,
  norm_num_groups: 32,
  out_channels: 4,
  sample_size: 64,
  up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'CrossAttnUpBlock2D'],
} as const;

// ------------------------------------------------------------------ the architecture plan

export interface ResnetPlan {
  inChannels: number;
  outChannels: number;
  tembChannels: number;
  groups: number;
  eps: number;
  timeScaleShift: 'default' | 'scale_shift';
  skipTimeAct: boolean;
  outputScaleFactor: number;
}

export interface TransformerPlan {
  channels: number;
  heads: number;
  headDim: number;
  layers: number;
  crossAttentionDim: number;
  groups: number;
  useLinearProjection: boolean;
  onlyCrossAttention: boolean;
  upcastAttention: boolean;
}

export interface DownBlockPlan {
  type: DownBlockType;
  resnets: ResnetPlan[];
  /** Empty for DownBlock2D. */
  attentions: TransformerPlan[];
  /** Stride-2 conv channels and padding, or null on the last block. */
  downsample: { channels: number; padding: number } | null;
}

export interface MidBlockPlan {
  resnets: ResnetPlan[];
  attentions: TransformerPlan[];
}

export interface UpBlockPlan {
  type: UpBlockType;
  /** resnet i takes (previous output or prev block) + skip channels. */
  resnets: ResnetPlan[];
  attentions: TransformerPlan[];
  upsample: { channels: number } | null;
}

export interface UNetPlan {
  config: UNetConfig;
  timeEmbedDim: number;
  down: DownBlockPlan[];
  mid: MidBlockPlan | null;
  up: UpBlockPlan[];
}

/** diffusers' channel arithmetic (UNet2DConditionModel.__init__ and get_down_block / get_up_block). */
export function planUnet(c: UNetConfig): UNetPlan {
  const temb = c.timeEmbeddingDim;
  const boc = c.blockOutChannels;
  const n = boc.length;
  const resnet = (inChannels: number, outChannels: number, outputScaleFactor: number): ResnetPlan => ({
    inChannels, outChannels, tembChannels: temb, groups: c.normNumGroups, eps: c.normEps,
    timeScaleShift: c.resnetTimeScaleShift, skipTimeAct: c.resnetSkipTimeAct, outputScaleFactor,
  });
  const transformer = (channels: number, heads: number, layers: number, crossAttentionDim: number, onlyCrossAttention: boolean): TransformerPlan => ({
    channels, heads, headDim: channels / heads, layers, crossAttentionDim, groups: c.normNumGroups,
    useLinearProjection: c.useLinearProjection, onlyCrossAttention, upcastAttention: c.upcastAttention,
  });

  const down: DownBlockPlan[] = [];
  let output = boc[0];
  for (let i = 0; i < n; i++) {
    const input = output;
    output = boc[i];
    const cross = c.downBlockTypes[i] === 'CrossAttnDownBlock2D';
    const resnets: ResnetPlan[] = [], attentions: TransformerPlan[] = [];
    for (let j = 0; j < c.layersPerBlock[i]; j++) {
      resnets.push(resnet(j === 0 ? input : output, output, c.resnetOutScaleFactor));
      if (cross) attentions.push(transformer(output, c.numAttentionHeads[i], c.transformerLayersPerBlock[i], c.crossAttentionDim[i], c.onlyCrossAttention[i]));
    }
    down.push({ type: c.downBlockTypes[i], resnets, attentions, downsample: i < n - 1 ? { channels: output, padding: c.downsamplePadding } : null });
  }

  let mid: MidBlockPlan | null = null;
  if (c.midBlockType) {
    const ch = boc[n - 1];
    mid = {
      resnets: [resnet(ch, ch, c.midBlockScaleFactor), resnet(ch, ch, c.midBlockScaleFactor)],
      attentions: [transformer(ch, c.numAttentionHeads[n - 1], c.transformerLayersPerBlock[n - 1], c.crossAttentionDim[n - 1], false)],
    };
  }

  const rev = <T>(a: T[]) => [...a].reverse();
  const rBoc = rev(boc), rHeads = rev(c.numAttentionHeads), rLayers = rev(c.layersPerBlock), rCross = rev(c.crossAttentionDim);
  const rTLayers = rev(c.transformerLayersPerBlock), rOnly = rev(c.onlyCrossAttention);
  const up: UpBlockPlan[] = [];
  output = rBoc[0];
  for (let i = 0; i < n; i++) {
    const prevOutput = output;
    output = rBoc[i];
    const input = rBoc[Math.min(i + 1, n - 1)];
    const cross = c.upBlockTypes[i] === 'CrossAttnUpBlock2D';
    const numLayers = rLayers[i] + 1;
    const resnets: ResnetPlan[] = [], attentions: TransformerPlan[] = [];
    for (let j = 0; j < numLayers; j++) {
      const skip = j === numLayers - 1 ? input : output;
      const resIn = j === 0 ? prevOutput : output;
      resnets.push(resnet(resIn + skip, output, c.resnetOutScaleFactor));
      if (cross) attentions.push(transformer(output, rHeads[i], rTLayers[i], rCross[i], rOnly[i]));
    }
    up.push({ type: c.upBlockTypes[i], resnets, attentions, upsample: i < n - 1 ? { channels: output } : null });
  }
  // Skip concatenation needs the popped skips to divide into the norm groups too.
  for (const b of up) for (const r of b.resnets) {
    if (r.inChannels % c.normNumGroups) throw new Error(`UNet config: "norm_num_groups" = ${c.normNumGroups} does not divide an up block's concatenated width ${r.inChannels}`);
  }
  return { config: c, timeEmbedDim: temb, down, mid, up };
}

// ------------------------------------------------------------------ names and shapes only

type Shapes = [string, number[]][];

const linearShapes = (out: Shapes, name: string, inF: number, outF: number, bias = true) => {
  out.push([`${name}.weight`, [outF, inF]]);
  if (bias) out.push([`${name}.bias`, [outF]]);
};
const convShapes = (out: Shapes, name: string, inC: number, outC: number, k: number) => {
  out.push([`${name}.weight`, [outC, inC, k, k]], [`${name}.bias`, [outC]]);
};
const normShapes = (out: Shapes, name: string, ch: number) => {
  out.push([`${name}.weight`, [ch]], [`${name}.bias`, [ch]]);
};

export function resnetShapes(out: Shapes, p: string, r: ResnetPlan): void {
  normShapes(out, `${p}.norm1`, r.inChannels);
  convShapes(out, `${p}.conv1`, r.inChannels, r.outChannels, 3);
  linearShapes(out, `${p}.time_emb_proj`, r.tembChannels, r.timeScaleShift === 'scale_shift' ? 2 * r.outChannels : r.outChannels);
  normShapes(out, `${p}.norm2`, r.outChannels);
  convShapes(out, `${p}.conv2`, r.outChannels, r.outChannels, 3);
  if (r.inChannels !== r.outChannels) convShapes(out, `${p}.conv_shortcut`, r.inChannels, r.outChannels, 1);
}

export function transformerShapes(out: Shapes, p: string, t: TransformerPlan): void {
  const dim = t.heads * t.headDim;
  normShapes(out, `${p}.norm`, t.channels);
  if (t.useLinearProjection) linearShapes(out, `${p}.proj_in`, t.channels, dim);
  else convShapes(out, `${p}.proj_in`, t.channels, dim, 1);
  for (let l = 0; l < t.layers; l++) {
    const b = `${p}.transformer_blocks.${l}`;
    const attn = (name: string, kvDim: number) => {
      linearShapes(out, `${b}.${name}.to_q`, dim, dim, false);
      linearShapes(out, `${b}.${name}.to_k`, kvDim, dim, false);
      linearShapes(out, `${b}.${name}.to_v`, kvDim, dim, false);
      linearShapes(out, `${b}.${name}.to_out.0`, dim, dim);
    };
    normShapes(out, `${b}.norm1`, dim);
    attn('attn1', t.onlyCrossAttention ? t.crossAttentionDim : dim);
    normShapes(out, `${b}.norm2`, dim);
    attn('attn2', t.crossAttentionDim);
    normShapes(out, `${b}.norm3`, dim);
    linearShapes(out, `${b}.ff.net.0.proj`, dim, 8 * dim);
    linearShapes(out, `${b}.ff.net.2`, 4 * dim, dim);
  }
  if (t.useLinearProjection) linearShapes(out, `${p}.proj_out`, dim, t.channels);
  else convShapes(out, `${p}.proj_out`, dim, t.channels, 1);
}

/**
 * Every parameter name and shape of the UNet, in state-dict order (diffusers registers a block's
 * attentions before its resnets, and up_blocks before mid_block), without allocating anything.
 */
export function unetParameterShapes(config: UNetConfig | UNetPlan): [string, number[]][] {
  const plan = 'down' in config ? config : planUnet(config);
  const c = plan.config;
  const out: Shapes = [];
  convShapes(out, 'conv_in', c.inChannels, c.blockOutChannels[0], c.convInKernel);
  linearShapes(out, 'time_embedding.linear_1', c.blockOutChannels[0], plan.timeEmbedDim);
  linearShapes(out, 'time_embedding.linear_2', plan.timeEmbedDim, plan.timeEmbedDim);
  plan.down.forEach((b, i) => {
    b.attentions.forEach((t, j) => transformerShapes(out, `down_blocks.${i}.attentions.${j}`, t));
    b.resnets.forEach((r, j) => resnetShapes(out, `down_blocks.${i}.resnets.${j}`, r));
    if (b.downsample) convShapes(out, `down_blocks.${i}.downsamplers.0.conv`, b.downsample.channels, b.downsample.channels, 3);
  });
  plan.up.forEach((b, i) => {
    b.attentions.forEach((t, j) => transformerShapes(out, `up_blocks.${i}.attentions.${j}`, t));
    b.resnets.forEach((r, j) => resnetShapes(out, `up_blocks.${i}.resnets.${j}`, r));
    if (b.upsample) convShapes(out, `up_blocks.${i}.upsamplers.0.conv`, b.upsample.channels, b.upsample.channels, 3);
  });
  if (plan.mid) {
    plan.mid.attentions.forEach((t, j) => transformerShapes(out, `mid_block.attentions.${j}`, t));
    plan.mid.resnets.forEach((r, j) => resnetShapes(out, `mid_block.resnets.${j}`, r));
  }
  normShapes(out, 'conv_norm_out', c.blockOutChannels[0]);
  convShapes(out, 'conv_out', c.blockOutChannels[0], c.outChannels, c.convOutKernel);
  return out;
}
