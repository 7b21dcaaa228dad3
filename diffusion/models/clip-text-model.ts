// The CLIP text encoder (transformers' CLIPTextModel) as an nn Module, with transformers 5.x
// parameter names (no `text_model.` prefix):
//   embeddings.token_embedding.weight [V, D], embeddings.position_embedding.weight [P, D],
//   encoder.layers.{i}.self_attn.{k,v,q,out}_proj.{weight,bias}, .layer_norm1, .mlp.fc1/fc2,
//   .layer_norm2, final_layer_norm.
// Forward: token + position embeddings, pre-LN transformer blocks with a causal mask, final
// layer norm; pooled = the final state at the first end-of-text token of each prompt.
// Loading and saving live in clip-text-io.ts; clip-text.ts exports everything.

import { Tensor, add, arange, cast, embedding, eq, full, indexSelect, max, min, reshape, slice, tensor, tidy, where, nn } from '../../engine/index.js';
import type { Device } from '../../engine/index.js';
import { getDefaultDevice } from '../../engine/tensor.js';
import { ClipTextConfig } from './clip-config.js';
import { ClipEncoder, EmbeddingTable, FloatDType, ParamFactory, checkDtype } from './clip-encoder.js';

export interface ClipTextModelOptions {
  device?: Device;
  /** Parameter (and activation) storage dtype; default f32. f16 computes in f32, stores f16. */
  dtype?: FloatDType;
  /**
   * 'random' (default): a fresh model (embeddings N(0, 0.02), Linear as torch, norms 1/0).
   * 'empty': parameters are allocated but not written (their values are undefined until a
   * state dict is loaded) — no init work, for loading checkpoints.
   */
  init?: 'random' | 'empty';
  /** Base seed of the random init (default nn.nextSeed()). */
  seed?: number;
}

export interface ClipTextForwardOptions {
  /** Also return the hidden states: [0] the embeddings, [i] the output of layer i (1-based). */
  outputHiddenStates?: boolean;
}

export interface ClipTextOutput {
  /** [B, L, D]: the final layer norm's output. */
  lastHiddenState: Tensor;
  /** [B, D]: lastHiddenState at each prompt's first end token. */
  pooled: Tensor;
  /** numHiddenLayers + 1 tensors [B, L, D] (before the final norm), when asked for. */
  hiddenStates?: Tensor[];
}

class ClipTextEmbeddings extends nn.Module {
  readonly token_embedding: EmbeddingTable;
  readonly position_embedding: EmbeddingTable;
  constructor(cfg: ClipTextConfig, f: ParamFactory) {
    super();
    this.token_embedding = this.registerModule('token_embedding', new EmbeddingTable(f.normal([cfg.vocabSize, cfg.hiddenSize], 0.02)));
    this.position_embedding = this.registerModule('position_embedding', new EmbeddingTable(f.normal([cfg.maxPositionEmbeddings, cfg.hiddenSize], 0.02)));
  }

  /** ids [B, L] → [B, L, D]: token rows plus the rows of positions 0..L-1. */
  forward(ids: Tensor): Tensor {
    return tidy(() => {
      const L = ids.shape[1];
      const tok = embedding(this.token_embedding.weight, ids);
      const pw = this.position_embedding.weight;
      const pos = slice(pw, [0, 0], [L, pw.shape[1]]);
      return add(tok, pos);
    });
  }
}

/** Additive causal mask [L, L]: 0 on and below the diagonal, a large negative above. */
function causalMask(L: number, dtype: FloatDType, device: Device): Tensor {
  // Any large negative works: softmax subtracts the row max (the diagonal is always unmasked).
  // f16's most negative finite value for f16 activations.
  const neg = dtype === 'f16' ? -65504 : -1e9;
  const m = new Float32Array(L * L);
  for (let i = 0; i < L; i++) for (let j = i + 1; j < L; j++) m[i * L + j] = neg;
  return tensor(m, [L, L], dtype, device);
}

export class ClipTextModel extends nn.Module {
  readonly embeddings: ClipTextEmbeddings;
  readonly encoder: ClipEncoder;
  readonly final_layer_norm: nn.LayerNorm;
  readonly dtype: FloatDType;
  readonly device: Device;

  constructor(readonly config: ClipTextConfig, opts: ClipTextModelOptions = {}) {
    super();
    this.device = opts.device ?? getDefaultDevice();
    this.dtype = opts.dtype ?? 'f32';
    checkDtype('ClipTextModel', this.dtype, this.device);
    if (config.hiddenSize % config.numAttentionHeads !== 0) {
      throw new Error(`ClipTextModel: hidden_size ${config.hiddenSize} is not divisible by num_attention_heads ${config.numAttentionHeads}`);
    }
    const f = new ParamFactory(this.device, this.dtype, opts.init === 'empty', opts.seed ?? nn.nextSeed());
    this.embeddings = this.registerModule('embeddings', new ClipTextEmbeddings(config, f));
    this.encoder = this.registerModule('encoder', new ClipEncoder(config, f));
    this.final_layer_norm = this.registerModule('final_layer_norm', f.layerNorm(config.hiddenSize, config.layerNormEps));
  }

  /**
   * inputIds [B, L] i32/u32 (L ≤ max_position_embeddings) → outputs. Ids outside the vocabulary
   * give zero token vectors (they are not checked on the host, to avoid a GPU sync).
   */
  forward(inputIds: Tensor, opts: ClipTextForwardOptions = {}): ClipTextOutput {
    const cfg = this.config;
    const label = `ClipTextModel.forward(input_ids ${inputIds.describe()})`;
    if (inputIds.rank !== 2) throw new Error(`${label}: input_ids must be [batch, length]`);
    if (inputIds.dtype !== 'i32' && inputIds.dtype !== 'u32') throw new Error(`${label}: input_ids must be i32 or u32 token ids`);
    const [B, L] = inputIds.shape;
    if (B < 1 || L < 1) throw new Error(`${label}: empty batch or sequence`);
    if (L > cfg.maxPositionEmbeddings) throw new Error(`${label}: length ${L} exceeds max_position_embeddings ${cfg.maxPositionEmbeddings}`);
    if (inputIds.device !== this.device) throw new Error(`${label}: input_ids live on another device than the model`);
    return tidy(() => {
      const mask = causalMask(L, this.dtype, this.device);
      let h = this.embeddings.forward(inputIds);
      const hidden: Tensor[] = [h];
      for (const layer of this.encoder.layers) {
        h = layer.forward(h, mask);
        hidden.push(h);
      }
      const last = this.final_layer_norm.forward(h);
      const pooled = indexSelect(reshape(last, [B * L, cfg.hiddenSize]), 0, this.endTokenRows(inputIds));
      const out: ClipTextOutput = { lastHiddenState: last, pooled };
      if (opts.outputHiddenStates) out.hiddenStates = hidden;
      return out;
    });
  }

  /**
   * Flat row index b·L + p_b of each prompt's pooling position, computed on the GPU. As
   * transformers: p_b is the first position holding eos_token_id, or 0 if there is none —
   * except for legacy configs with eos_token_id = 2, where transformers takes argmax(input_ids)
   * (the first occurrence of the largest id, which is the end token for real CLIP ids).
   */
  private endTokenRows(ids: Tensor): Tensor {
    const [B, L] = ids.shape;
    const dev = this.device;
    let hit: Tensor;
    if (this.config.eosTokenId === 2) {
      const f = cast(ids, 'f32'); // ids < 2^24: exact
      hit = eq(f, max(f, 1, true));
    } else {
      hit = eq(ids, full([1], this.config.eosTokenId, ids.dtype, dev));
    }
    const Lt = full([1], L, 'i32', dev);
    const first = min(where(hit, arange(0, L, 1, 'i32', dev), Lt), 1); // L where no hit
    const p = where(eq(first, Lt), full([1], 0, 'i32', dev), first);
    return add(p, arange(0, B * L, L, 'i32', dev));
  }
}
