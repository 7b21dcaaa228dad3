// CLIP's image tower and the dual encoder: transformers' CLIPVisionConfig and CLIPConfig as read
// from a `config.json`, and every parameter name and shape they imply, computed without
// allocating anything (`ddpo inspect --config clip-vit-l-14`).
//
// Config policy as for the text tower (clip-config.ts): keys we interpret are validated, keys
// known not to change the eval-mode forward pass are ignored, any other key is an Error naming it.
//
// Parameter order is torch's state-dict order: a module's own parameters first, then its
// children in registration order (CLIPModel: logit_scale, text_model, vision_model,
// visual_projection, text_projection).

import { BENIGN_CONFIG_KEYS, ClipHiddenAct, ClipTextConfig, clipEncoderLayerShapes, clipTextParameterShapes, configDtype, encoderFields, parseClipTextConfig } from './clip-config.js';

export interface ClipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numChannels: number;
  imageSize: number;
  patchSize: number;
  hiddenAct: ClipHiddenAct;
  layerNormEps: number;
  /** Width of visual_projection's output (CLIPVisionModelWithProjection; CLIPModel's own projection_dim wins there). */
  projectionDim: number;
  dtype?: string;
}

export interface ClipModelConfig {
  text: ClipTextConfig;
  vision: ClipVisionConfig;
  /** Width of both projections. */
  projectionDim: number;
  /** logit_scale's initial value (ln(1/0.07)); the checkpoint's value is what counts. */
  logitScaleInit: number;
  dtype?: string;
}

/** Patches per side and tokens (patches + the class token). */
export function visionTokens(cfg: ClipVisionConfig): { side: number; tokens: number } {
  const side = cfg.imageSize / cfg.patchSize;
  return { side, tokens: side * side + 1 };
}

/** openai/clip-vit-large-patch14's image tower (the aesthetic reward's CLIP). */
export function vitL14VisionConfig(): ClipVisionConfig {
  return {
    hiddenSize: 1024, intermediateSize: 4096, numHiddenLayers: 24, numAttentionHeads: 16, numChannels: 3,
    imageSize: 224, patchSize: 14, hiddenAct: 'quick_gelu', layerNormEps: 1e-5, projectionDim: 768,
  };
}

/** openai/clip-vit-large-patch14 as a whole (its text tower is SD v1's text encoder, with legacy eos id 2 pooling). */
export function vitL14ClipConfig(): ClipModelConfig {
  return {
    text: {
      vocabSize: 49408, hiddenSize: 768, intermediateSize: 3072, numHiddenLayers: 12, numAttentionHeads: 12,
      maxPositionEmbeddings: 77, hiddenAct: 'quick_gelu', layerNormEps: 1e-5, bosTokenId: 0, eosTokenId: 2, padTokenId: 1,
    },
    vision: vitL14VisionConfig(),
    projectionDim: 768,
    logitScaleInit: 2.6592,
  };
}

type Raw = Record<string, unknown>;

function objectOf(json: unknown, where: string): Raw {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new Error(`${where}: not a JSON object`);
  return json as Raw;
}

function intOf(raw: Raw, key: string, min: number, where: string, fallback?: number): number {
  const v = raw[key] ?? fallback;
  if (v === undefined) throw new Error(`${where}: missing required key "${key}"`);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new Error(`${where}: "${key}" = ${JSON.stringify(v)} must be an integer ≥ ${min}`);
  return v;
}

function rejectUnknown(raw: Raw, interpreted: readonly string[], where: string): void {
  const known = new Set(interpreted);
  for (const key of Object.keys(raw)) {
    if (known.has(key) || BENIGN_CONFIG_KEYS.has(key) || key.startsWith('_')) continue;
    throw new Error(`${where}: unknown key "${key}" (it may change the computation; not supported)`);
  }
}

const VISION_KEYS = [
  'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_channels', 'image_size', 'patch_size',
  'hidden_act', 'layer_norm_eps', 'projection_dim', 'torch_dtype', 'dtype',
  // Token ids a vision config inherits from PretrainedConfig (null there); they change nothing.
  'bos_token_id', 'eos_token_id', 'pad_token_id',
];

/**
 * Parses a CLIPVisionConfig JSON object (a CLIPVisionModelWithProjection folder's config.json,
 * or CLIPConfig's vision_config). Defaults are transformers' (ViT-B/32-like) where it has them.
 */
export function parseClipVisionConfig(json: unknown, where = 'CLIP vision config'): ClipVisionConfig {
  const raw = objectOf(json, where);
  const cfg: ClipVisionConfig = {
    hiddenSize: intOf(raw, 'hidden_size', 1, where, 768),
    intermediateSize: intOf(raw, 'intermediate_size', 1, where, 3072),
    numHiddenLayers: intOf(raw, 'num_hidden_layers', 0, where, 12),
    numAttentionHeads: intOf(raw, 'num_attention_heads', 1, where, 12),
    numChannels: intOf(raw, 'num_channels', 1, where, 3),
    imageSize: intOf(raw, 'image_size', 1, where, 224),
    patchSize: intOf(raw, 'patch_size', 1, where, 32),
    hiddenAct: 'quick_gelu',
    layerNormEps: 1e-5,
    projectionDim: intOf(raw, 'projection_dim', 1, where, 512),
  };
  Object.assign(cfg, encoderFields(raw, cfg, where));
  if (cfg.imageSize % cfg.patchSize !== 0) {
    // transformers floors the patch count; a ragged border would be silently cropped there.
    throw new Error(`${where}: "image_size" = ${cfg.imageSize} is not a multiple of "patch_size" = ${cfg.patchSize}`);
  }
  const dtype = configDtype(raw, where);
  if (dtype) cfg.dtype = dtype;
  rejectUnknown(raw, VISION_KEYS, where);
  return cfg;
}

/**
 * A sub-config of CLIPConfig: transformers reads `text_config`, then lets the legacy
 * `text_config_dict` (openai's checkpoints carry both) override it key by key.
 */
function subConfig(raw: Raw, name: 'text' | 'vision', where: string): Raw {
  const base = raw[`${name}_config`], legacy = raw[`${name}_config_dict`];
  const pick = (v: unknown, key: string): Raw => {
    if (v === undefined || v === null) return {};
    return objectOf(v, `${where} "${key}"`);
  };
  return { ...pick(base, `${name}_config`), ...pick(legacy, `${name}_config_dict`) };
}

/** Parses a CLIPConfig (a CLIPModel folder's config.json). */
export function parseClipModelConfig(json: unknown, where = 'CLIP config'): ClipModelConfig {
  const raw = objectOf(json, where);
  const projectionDim = intOf(raw, 'projection_dim', 1, where, 512);
  const ls = raw.logit_scale_init_value ?? 2.6592;
  if (typeof ls !== 'number' || !Number.isFinite(ls)) throw new Error(`${where}: "logit_scale_init_value" = ${JSON.stringify(ls)} must be a finite number`);
  // transformers' CLIPTextConfig defaults for what a legacy config may leave out.
  const textDefaults = { vocab_size: 49408, hidden_size: 512, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 8, max_position_embeddings: 77 };
  const text = parseClipTextConfig({ ...textDefaults, ...subConfig(raw, 'text', where) }, `${where} text_config`);
  // The dual encoder's projection width is CLIPConfig.projection_dim, whatever the vision part says.
  const vision = { ...parseClipVisionConfig(subConfig(raw, 'vision', where), `${where} vision_config`), projectionDim };
  const cfg: ClipModelConfig = { text, vision, projectionDim, logitScaleInit: ls };
  const dtype = configDtype(raw, where);
  if (dtype) cfg.dtype = dtype;
  rejectUnknown(raw, ['projection_dim', 'logit_scale_init_value', 'text_config', 'vision_config', 'text_config_dict', 'vision_config_dict', 'torch_dtype', 'dtype'], where);
  return cfg;
}

/** The image tower's names and shapes (CLIPVisionTransformer, no prefix). */
export function clipVisionTowerShapes(cfg: ClipVisionConfig): [string, number[]][] {
  const D = cfg.hiddenSize;
  const out: [string, number[]][] = [
    ['embeddings.class_embedding', [D]],
    ['embeddings.patch_embedding.weight', [D, cfg.numChannels, cfg.patchSize, cfg.patchSize]],
    ['embeddings.position_embedding.weight', [visionTokens(cfg).tokens, D]],
    ['pre_layrnorm.weight', [D]], ['pre_layrnorm.bias', [D]],
  ];
  for (let i = 0; i < cfg.numHiddenLayers; i++) out.push(...clipEncoderLayerShapes(`encoder.layers.${i}`, D, cfg.intermediateSize));
  out.push(['post_layernorm.weight', [D]], ['post_layernorm.bias', [D]]);
  return out;
}

const prefixed = (p: string, list: [string, number[]][]): [string, number[]][] => list.map(([n, s]) => [`${p}.${n}`, s]);

/** CLIPVisionModelWithProjection: vision_model.* and visual_projection.weight (no bias). */
export function clipVisionWithProjectionShapes(cfg: ClipVisionConfig): [string, number[]][] {
  return [...prefixed('vision_model', clipVisionTowerShapes(cfg)), ['visual_projection.weight', [cfg.projectionDim, cfg.hiddenSize]]];
}

/** CLIPModel: logit_scale (a scalar), text_model.*, vision_model.*, both projections (no biases). */
export function clipModelShapes(cfg: ClipModelConfig): [string, number[]][] {
  return [
    ['logit_scale', []],
    ...prefixed('text_model', clipTextParameterShapes(cfg.text)),
    ...prefixed('vision_model', clipVisionTowerShapes(cfg.vision)),
    ['visual_projection.weight', [cfg.projectionDim, cfg.vision.hiddenSize]],
    ['text_projection.weight', [cfg.projectionDim, cfg.text.hiddenSize]],
  ];
}
