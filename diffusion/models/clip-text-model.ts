// The CLIP text encoder (transformers' CLIPTextModel) as an nn Module, with transformers 5.x
// parameter names (no `text_model.` prefix):
//   embeddings.token_embedding.weight [V, D], embeddings.position_embedding.weight [P, D],
//   encoder.layers.{i}.self_attn.{k,v,q,out}_proj.{weight,bias}, .layer_norm1, .mlp.fc1/fc2,
//   .layer_norm2, final_layer_norm.
// Forward: token + position embeddings, pre-LN transformer blocks with a causal mask, final
// layer norm; pooled = the final state at the first end-of-text token of each prompt.
// Loading and saving live in clip-text-io.ts; clip-text.ts exports everything.

import {
  Tensor, add, arange, attention, cast, embedding, eq, full, gelu, indexSelect, max, min, permute, quickGelu,
  randomNormal, randomUniform, reshape, slice, tensor, tidy, where, nn,
} from '../../engine/index.js';
import type { Device } from '../../engine/index.js';
import { getDefaultDevice } from '../../engine/tensor.js';
import { ClipTextConfig } from './clip-config.js';

type FloatDType = 'f32' | 'f16';

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

/** Makes parameter tensors in the model's dtype, either initialised or left empty. */
class ParamFactory {
  private next: number;
  constructor(readonly device: Device, readonly dtype: FloatDType, readonly empty: boolean, seed: number) {
    this.next = seed;
  }

  private finish(t: Tensor): Tensor {
    if (this.dtype === 'f32') return t;
    const c = cast(t, this.dtype);
    t.dispose();
    return c;
  }

  uniform(shape: number[], bound: number): Tensor {
    if (this.empty) return new Tensor(this.device, shape, this.dtype);
    return this.finish(randomUniform(shape, this.next++, { low: -bound, high: bound, device: this.device }));
  }

  normal(shape: number[], std: number): Tensor {
    if (this.empty) return new Tensor(this.device, shape, this.dtype);
    return this.finish(randomNormal(shape, this.next++, { std, device: this.device }));
  }

  constant(shape: number[], value: number): Tensor {
    if (this.empty) return new Tensor(this.device, shape, this.dtype);
    return full(shape, value, this.dtype, this.device);
  }

  /** torch.nn.Linear's init: uniform(±1/sqrt(in)) for weight and bias. */
  linear(inF: number, outF: number): nn.Linear {
    const b = 1 / Math.sqrt(inF);
    return new nn.Linear(inF, outF, { weights: { weight: this.uniform([outF, inF], b), bias: this.uniform([outF], b) } });
  }

  layerNorm(dim: number, eps: number): nn.LayerNorm {
    const ln = new nn.LayerNorm(dim, { eps, device: this.device });
    if (this.dtype !== 'f32') {
      ln.replaceParameter('weight', this.constant([dim], 1));
      ln.replaceParameter('bias', this.constant([dim], 0));
    }
    return ln;
  }
}

/** A lookup table with one parameter, `weight` [n, dim] (nn.Embedding without its N(0,1) init). */
class EmbeddingTable extends nn.Module {
  constructor(weight: Tensor) {
    super();
    this.registerParameter('weight', weight);
  }
  get weight(): Tensor { return this.param('weight'); }
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

class ClipAttention extends nn.Module {
  readonly k_proj: nn.Linear;
  readonly v_proj: nn.Linear;
  readonly q_proj: nn.Linear;
  readonly out_proj: nn.Linear;
  constructor(readonly dim: number, readonly heads: number, f: ParamFactory) {
    super();
    // transformers registers k, v, q, out in this order; the state dict follows it.
    this.k_proj = this.registerModule('k_proj', f.linear(dim, dim));
    this.v_proj = this.registerModule('v_proj', f.linear(dim, dim));
    this.q_proj = this.registerModule('q_proj', f.linear(dim, dim));
    this.out_proj = this.registerModule('out_proj', f.linear(dim, dim));
  }

  /** x [B, L, D], mask [L, L] additive → [B, L, D]. */
  forward(x: Tensor, mask: Tensor): Tensor {
    return tidy(() => {
      const [B, L] = x.shape;
      const H = this.heads, hd = this.dim / H;
      // Fields, not the registered children, so an injected LoRA layer (which repoints them) is used.
      const split = (lin: nn.Linear) => permute(reshape(lin.forward(x), [B, L, H, hd]), [0, 2, 1, 3]);
      const o = attention(split(this.q_proj), split(this.k_proj), split(this.v_proj), { mask });
      const merged = reshape(permute(o, [0, 2, 1, 3]), [B, L, this.dim]);
      return this.out_proj.forward(merged);
    });
  }
}

class ClipMlp extends nn.Module {
  readonly fc1: nn.Linear;
  readonly fc2: nn.Linear;
  constructor(dim: number, hidden: number, readonly act: ClipTextConfig['hiddenAct'], f: ParamFactory) {
    super();
    this.fc1 = this.registerModule('fc1', f.linear(dim, hidden));
    this.fc2 = this.registerModule('fc2', f.linear(hidden, dim));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      const h = this.fc1.forward(x);
      // 'gelu' is transformers' exact (erf) GELU; quick_gelu is x·σ(1.702x).
      return this.fc2.forward(this.act === 'quick_gelu' ? quickGelu(h) : gelu(h));
    });
  }
}

class ClipEncoderLayer extends nn.Module {
  readonly self_attn: ClipAttention;
  readonly layer_norm1: nn.LayerNorm;
  readonly mlp: ClipMlp;
  readonly layer_norm2: nn.LayerNorm;
  constructor(cfg: ClipTextConfig, f: ParamFactory) {
    super();
    this.self_attn = this.registerModule('self_attn', new ClipAttention(cfg.hiddenSize, cfg.numAttentionHeads, f));
    this.layer_norm1 = this.registerModule('layer_norm1', f.layerNorm(cfg.hiddenSize, cfg.layerNormEps));
    this.mlp = this.registerModule('mlp', new ClipMlp(cfg.hiddenSize, cfg.intermediateSize, cfg.hiddenAct, f));
    this.layer_norm2 = this.registerModule('layer_norm2', f.layerNorm(cfg.hiddenSize, cfg.layerNormEps));
  }

  /** Pre-LN block: x + attn(ln1(x)), then + mlp(ln2(·)). */
  forward(x: Tensor, mask: Tensor): Tensor {
    return tidy(() => {
      const r = add(x, this.self_attn.forward(this.layer_norm1.forward(x), mask));
      return add(r, this.mlp.forward(this.layer_norm2.forward(r)));
    });
  }
}

class ClipEncoder extends nn.Module {
  readonly layers: nn.ModuleList<ClipEncoderLayer>;
  constructor(cfg: ClipTextConfig, f: ParamFactory) {
    super();
    this.layers = this.registerModule('layers', new nn.ModuleList(Array.from({ length: cfg.numHiddenLayers }, () => new ClipEncoderLayer(cfg, f))));
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
    if (this.dtype !== 'f32' && this.dtype !== 'f16') throw new Error(`ClipTextModel: dtype ${String(this.dtype)} must be f32 or f16`);
    if (this.dtype === 'f16' && !this.device.hasF16) throw new Error(`ClipTextModel: dtype f16 needs shader-f16, which ${this.device.adapterName} does not offer; use f32`);
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
