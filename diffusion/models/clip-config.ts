// CLIP text encoder configuration: transformers' CLIPTextConfig as read from a
// `text_encoder/config.json`, and the parameter names and shapes a config implies.
//
// Config policy: keys that we interpret are validated; keys known not to change the forward
// pass (bookkeeping, generation settings, dropout — we always compute in eval mode, as DDPO
// uses a frozen text encoder) are ignored; any other key is an Error naming it, because a key we
// do not know might change the computation and silently computing something else is worse than
// refusing to load.

export type ClipHiddenAct = 'quick_gelu' | 'gelu';

export interface ClipTextConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  maxPositionEmbeddings: number;
  hiddenAct: ClipHiddenAct;
  layerNormEps: number;
  bosTokenId: number;
  eosTokenId: number;
  padTokenId: number;
  /** The checkpoint's storage dtype as the config states it ("float32", "float16", ...), if any. */
  dtype?: string;
}

/** SD v1's text encoder (openai/clip-vit-large-patch14's text tower). */
export function sdV1ClipTextConfig(): ClipTextConfig {
  return {
    vocabSize: 49408, hiddenSize: 768, intermediateSize: 3072, numHiddenLayers: 12, numAttentionHeads: 12,
    maxPositionEmbeddings: 77, hiddenAct: 'quick_gelu', layerNormEps: 1e-5,
    bosTokenId: 49406, eosTokenId: 49407, padTokenId: 1,
  };
}

// Keys of PretrainedConfig / CLIPTextConfig (transformers 4.x and 5.x) that do not change the
// eval-mode forward pass of the text model.
export const BENIGN_CONFIG_KEYS: ReadonlySet<string> = new Set([
  'architectures', 'model_type', 'transformers_version', 'projection_dim', 'initializer_range', 'initializer_factor',
  'attention_dropout', 'dropout', 'hidden_dropout', 'hidden_dropout_prob', 'attention_probs_dropout_prob',
  'output_attentions', 'output_hidden_states', 'return_dict', 'use_return_dict', 'torchscript', 'use_bfloat16',
  'tie_word_embeddings', 'is_decoder', 'is_encoder_decoder', 'add_cross_attention', 'cross_attention_hidden_size',
  'tie_encoder_decoder', 'chunk_size_feed_forward', 'pruned_heads', 'id2label', 'label2id', 'num_labels',
  'problem_type', 'finetuning_task', 'tokenizer_class', 'prefix', 'task_specific_params', 'sep_token_id',
  'decoder_start_token_id', 'use_cache',
  // generation settings (old configs carry all of these)
  'max_length', 'min_length', 'do_sample', 'early_stopping', 'num_beams', 'num_beam_groups', 'diversity_penalty',
  'temperature', 'top_k', 'top_p', 'typical_p', 'repetition_penalty', 'length_penalty', 'no_repeat_ngram_size',
  'encoder_no_repeat_ngram_size', 'bad_words_ids', 'num_return_sequences', 'output_scores',
  'return_dict_in_generate', 'forced_bos_token_id', 'forced_eos_token_id', 'remove_invalid_values',
  'exponential_decay_length_penalty', 'suppress_tokens', 'begin_suppress_tokens',
]);

const DTYPES = new Set(['float32', 'float16', 'bfloat16', 'float64', 'auto']);

/** The storage dtype a config states (`torch_dtype`, or `dtype` as transformers 5.x writes it), checked. */
export function configDtype(raw: Record<string, unknown>, where: string): string | undefined {
  let out: string | undefined;
  for (const key of ['torch_dtype', 'dtype']) {
    const v = raw[key];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string' || !DTYPES.has(v)) throw new Error(`${where}: "${key}" = ${JSON.stringify(v)} is not a known dtype (${[...DTYPES].join(', ')})`);
    out = v;
  }
  return out;
}

/**
 * Parses a CLIPTextConfig JSON object. `where` names the source in error messages. Throws an
 * Error naming the key for a missing or invalid required value, an unsupported hidden_act, or an
 * unknown key.
 */
/**
 * The encoder fields both CLIP towers share and check alike: the activation (quick_gelu or gelu),
 * the layer-norm epsilon, and heads that divide the width.
 */
export function encoderFields(raw: Record<string, unknown>, dims: { hiddenSize: number; numAttentionHeads: number }, where: string): { hiddenAct: ClipHiddenAct; layerNormEps: number } {
  const act = raw.hidden_act ?? 'quick_gelu';
  if (act !== 'quick_gelu' && act !== 'gelu') {
    throw new Error(`${where}: "hidden_act" = ${JSON.stringify(act)} is not supported (quick_gelu or gelu)`);
  }
  const eps = raw.layer_norm_eps ?? 1e-5;
  if (typeof eps !== 'number' || !(eps >= 0) || !Number.isFinite(eps)) throw new Error(`${where}: "layer_norm_eps" = ${JSON.stringify(eps)} must be a finite number ≥ 0`);
  if (dims.hiddenSize % dims.numAttentionHeads !== 0) {
    throw new Error(`${where}: "hidden_size" = ${dims.hiddenSize} is not divisible by "num_attention_heads" = ${dims.numAttentionHeads}`);
  }
  return { hiddenAct: act, layerNormEps: eps };
}

export function parseClipTextConfig(json: unknown, where = 'CLIP text config'): ClipTextConfig {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new Error(`${where}: not a JSON object`);
  const raw = json as Record<string, unknown>;
  const int = (key: string, min: number, fallback?: number): number => {
    const v = raw[key] ?? fallback;
    if (v === undefined) throw new Error(`${where}: missing required key "${key}"`);
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) throw new Error(`${where}: "${key}" = ${JSON.stringify(v)} must be an integer ≥ ${min}`);
    return v;
  };
  const cfg: ClipTextConfig = {
    vocabSize: int('vocab_size', 1),
    hiddenSize: int('hidden_size', 1),
    intermediateSize: int('intermediate_size', 1),
    numHiddenLayers: int('num_hidden_layers', 0),
    numAttentionHeads: int('num_attention_heads', 1),
    maxPositionEmbeddings: int('max_position_embeddings', 1),
    hiddenAct: 'quick_gelu',
    layerNormEps: 1e-5,
    // transformers' CLIPTextConfig defaults.
    bosTokenId: int('bos_token_id', 0, 49406),
    eosTokenId: int('eos_token_id', 0, 49407),
    padTokenId: int('pad_token_id', 0, 1),
  };
  Object.assign(cfg, encoderFields(raw, cfg, where));
  const dtype = configDtype(raw, where);
  if (dtype) cfg.dtype = dtype;
  const interpreted = new Set([
    'vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'max_position_embeddings',
    'hidden_act', 'layer_norm_eps', 'bos_token_id', 'eos_token_id', 'pad_token_id', 'torch_dtype', 'dtype',
  ]);
  for (const key of Object.keys(raw)) {
    // Leading underscores are transformers' private bookkeeping (_name_or_path, _commit_hash, ...).
    if (interpreted.has(key) || BENIGN_CONFIG_KEYS.has(key) || key.startsWith('_')) continue;
    throw new Error(`${where}: unknown key "${key}" (it may change the computation; not supported)`);
  }
  return cfg;
}

/** The config as transformers 5.x writes it (used when saving). */
export function clipTextConfigJson(cfg: ClipTextConfig, dtype: 'float32' | 'float16'): Record<string, unknown> {
  return {
    architectures: ['CLIPTextModel'],
    model_type: 'clip_text_model',
    vocab_size: cfg.vocabSize,
    hidden_size: cfg.hiddenSize,
    intermediate_size: cfg.intermediateSize,
    num_hidden_layers: cfg.numHiddenLayers,
    num_attention_heads: cfg.numAttentionHeads,
    max_position_embeddings: cfg.maxPositionEmbeddings,
    hidden_act: cfg.hiddenAct,
    layer_norm_eps: cfg.layerNormEps,
    bos_token_id: cfg.bosTokenId,
    eos_token_id: cfg.eosTokenId,
    pad_token_id: cfg.padTokenId,
    dtype,
  };
}

/**
 * Every parameter name and shape of CLIPTextModel for a config, in transformers 5.x naming (no
 * `text_model.` prefix) and in state-dict order. ClipTextModel registers exactly these.
 */
export function clipTextParameterShapes(cfg: ClipTextConfig): [string, number[]][] {
  const D = cfg.hiddenSize, F = cfg.intermediateSize;
  const out: [string, number[]][] = [
    ['embeddings.token_embedding.weight', [cfg.vocabSize, D]],
    ['embeddings.position_embedding.weight', [cfg.maxPositionEmbeddings, D]],
  ];
  for (let i = 0; i < cfg.numHiddenLayers; i++) out.push(...clipEncoderLayerShapes(`encoder.layers.${i}`, D, F));
  out.push(['final_layer_norm.weight', [D]], ['final_layer_norm.bias', [D]]);
  return out;
}

/** One CLIPEncoderLayer's names (under `p`) and shapes, width D, MLP width F: the same in both towers. */
export function clipEncoderLayerShapes(p: string, D: number, F: number): [string, number[]][] {
  const out: [string, number[]][] = [];
  // transformers' CLIPAttention creates k, v, q, out in that order.
  for (const proj of ['k_proj', 'v_proj', 'q_proj', 'out_proj']) {
    out.push([`${p}.self_attn.${proj}.weight`, [D, D]], [`${p}.self_attn.${proj}.bias`, [D]]);
  }
  out.push([`${p}.layer_norm1.weight`, [D]], [`${p}.layer_norm1.bias`, [D]]);
  out.push([`${p}.mlp.fc1.weight`, [F, D]], [`${p}.mlp.fc1.bias`, [F]]);
  out.push([`${p}.mlp.fc2.weight`, [D, F]], [`${p}.mlp.fc2.bias`, [D]]);
  out.push([`${p}.layer_norm2.weight`, [D]], [`${p}.layer_norm2.bias`, [D]]);
  return out;
}
