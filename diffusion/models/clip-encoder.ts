// The transformer shared by CLIP's text and image towers (transformers' CLIPEncoder and its
// layers), and the parameter factory both towers build their weights with. The towers differ
// only in their embeddings, their mask (causal for text, none for images) and what they pool.

import { Tensor, add, attention, cast, full, gelu, permute, quickGelu, randomNormal, randomUniform, reshape, tidy, nn } from '../../engine/index.js';
import type { Device } from '../../engine/index.js';
import type { ClipHiddenAct } from './clip-config.js';

export type FloatDType = 'f32' | 'f16';

/** What the encoder reads from a tower's config. */
export interface ClipEncoderConfig {
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  hiddenAct: ClipHiddenAct;
  layerNormEps: number;
}

/** Makes parameter tensors in the model's dtype, either initialised or left empty. */
export class ParamFactory {
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

  /** torch.nn.Linear's init: uniform(±1/sqrt(in)) for weight and bias (CLIP's projections have none). */
  linear(inF: number, outF: number, bias = true): nn.Linear {
    const b = 1 / Math.sqrt(inF);
    return new nn.Linear(inF, outF, { weights: { weight: this.uniform([outF, inF], b), bias: bias ? this.uniform([outF], b) : null } });
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
export class EmbeddingTable extends nn.Module {
  constructor(weight: Tensor) {
    super();
    this.registerParameter('weight', weight);
  }
  get weight(): Tensor { return this.param('weight'); }
}

export class ClipAttention extends nn.Module {
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

  /** x [B, L, D], mask [L, L] additive (none: full attention, as the vision tower) → [B, L, D]. */
  forward(x: Tensor, mask: Tensor | null): Tensor {
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

export class ClipMlp extends nn.Module {
  readonly fc1: nn.Linear;
  readonly fc2: nn.Linear;
  constructor(dim: number, hidden: number, readonly act: ClipHiddenAct, f: ParamFactory) {
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

export class ClipEncoderLayer extends nn.Module {
  readonly self_attn: ClipAttention;
  readonly layer_norm1: nn.LayerNorm;
  readonly mlp: ClipMlp;
  readonly layer_norm2: nn.LayerNorm;
  constructor(cfg: ClipEncoderConfig, f: ParamFactory) {
    super();
    this.self_attn = this.registerModule('self_attn', new ClipAttention(cfg.hiddenSize, cfg.numAttentionHeads, f));
    this.layer_norm1 = this.registerModule('layer_norm1', f.layerNorm(cfg.hiddenSize, cfg.layerNormEps));
    this.mlp = this.registerModule('mlp', new ClipMlp(cfg.hiddenSize, cfg.intermediateSize, cfg.hiddenAct, f));
    this.layer_norm2 = this.registerModule('layer_norm2', f.layerNorm(cfg.hiddenSize, cfg.layerNormEps));
  }

  /** Pre-LN block: x + attn(ln1(x)), then + mlp(ln2(·)). */
  forward(x: Tensor, mask: Tensor | null): Tensor {
    return tidy(() => {
      const r = add(x, this.self_attn.forward(this.layer_norm1.forward(x), mask));
      return add(r, this.mlp.forward(this.layer_norm2.forward(r)));
    });
  }
}

export class ClipEncoder extends nn.Module {
  readonly layers: nn.ModuleList<ClipEncoderLayer>;
  constructor(cfg: ClipEncoderConfig, f: ParamFactory) {
    super();
    this.layers = this.registerModule('layers', new nn.ModuleList(Array.from({ length: cfg.numHiddenLayers }, () => new ClipEncoderLayer(cfg, f))));
  }
}

/** A tower's dtype: f32, or f16 where the device has shader-f16; an Error naming the model otherwise. */
export function checkDtype(label: string, dtype: FloatDType, device: Device): void {
  if (dtype !== 'f32' && dtype !== 'f16') throw new Error(`${label}: dtype ${String(dtype)} must be f32 or f16`);
  if (dtype === 'f16' && !device.hasF16) throw new Error(`${label}: dtype f16 needs shader-f16, which ${device.adapterName} does not offer; use f32`);
}
