// CLIP's image tower and the dual encoder as nn Modules with transformers' parameter names:
//   CLIPVisionModelWithProjection: vision_model.{embeddings.{class_embedding,
//     patch_embedding.weight, position_embedding.weight}, pre_layrnorm (sic), encoder.layers.N.*,
//     post_layernorm}, visual_projection.weight (no bias);
//   CLIPModel: logit_scale, text_model.* (the text tower of clip-text-model.ts), vision_model.*,
//     visual_projection.weight, text_projection.weight.
// Forward of the image tower: a stride-P convolution cuts P×P patches, the class embedding is
// prepended, position embeddings added, pre_layrnorm, the encoder with full attention (no mask;
// scale 1/√head_dim), and pooled = post_layernorm of the class token's final state. Loading lives
// in clip-vision-io.ts.

import { Tensor, add, concat, conv2d, expand, matmul, noGrad, permute, reshape, slice, tidy, nn, cast } from '../../engine/index.js';
import type { Device } from '../../engine/index.js';
import { getDefaultDevice } from '../../engine/tensor.js';
import { ClipEncoder, EmbeddingTable, FloatDType, ParamFactory, checkDtype } from './clip-encoder.js';
import { ClipModelConfig, ClipVisionConfig, visionTokens } from './clip-vision-config.js';
import { ClipTextModel } from './clip-text-model.js';

export interface ClipVisionModelOptions {
  device?: Device;
  /** Parameter and activation storage dtype (default f32); f16 stores f16 and computes in f32. */
  dtype?: FloatDType;
  /** 'random' (default) or 'empty' (allocated, unwritten: for loading). */
  init?: 'random' | 'empty';
  seed?: number;
}

export interface ClipVisionOutput {
  /** [B, tokens, D]: the encoder's output (not post-normalised, as transformers). */
  lastHiddenState: Tensor;
  /** [B, D]: post_layernorm of the class token's final state. */
  pooled: Tensor;
}

/** The patch convolution's weight [D, C, P, P] (transformers' Conv2d without bias). */
class PatchEmbedding extends nn.Module {
  constructor(weight: Tensor, readonly patch: number) {
    super();
    this.registerParameter('weight', weight);
  }
  get weight(): Tensor { return this.param('weight'); }
  /** [B, C, S, S] → [B, (S/P)², D], patches in row-major order (torch's flatten(2).transpose(1, 2)). */
  forward(px: Tensor): Tensor {
    return tidy(() => {
      const y = conv2d(px, this.weight, null, { stride: this.patch });
      const [B, D, h, w] = y.shape;
      return permute(reshape(y, [B, D, h * w]), [0, 2, 1]);
    });
  }
}

class ClipVisionEmbeddings extends nn.Module {
  readonly patch_embedding: PatchEmbedding;
  readonly position_embedding: EmbeddingTable;
  constructor(readonly cfg: ClipVisionConfig, f: ParamFactory) {
    super();
    const D = cfg.hiddenSize, P = cfg.patchSize;
    // transformers: class_embedding ~ N(0, 1)·D^-0.5 and the others N(0, 0.02)-like; only the
    // random tests use this init, checkpoints overwrite it.
    this.registerParameter('class_embedding', f.normal([D], D ** -0.5));
    this.patch_embedding = this.registerModule('patch_embedding', new PatchEmbedding(f.normal([D, cfg.numChannels, P, P], 0.02), P));
    this.position_embedding = this.registerModule('position_embedding', new EmbeddingTable(f.normal([visionTokens(cfg).tokens, D], 0.02)));
  }
  get class_embedding(): Tensor { return this.param('class_embedding'); }

  /** pixels [B, C, S, S] (model dtype) → [B, tokens, D]. */
  forward(px: Tensor): Tensor {
    return tidy(() => {
      const B = px.shape[0], D = this.cfg.hiddenSize;
      const patches = this.patch_embedding.forward(px);
      const cls = expand(reshape(this.class_embedding, [1, 1, D]), [B, 1, D]);
      return add(concat([cls, patches], 1), this.position_embedding.weight);
    });
  }
}

/** transformers' CLIPVisionTransformer. */
export class ClipVisionTransformer extends nn.Module {
  readonly embeddings: ClipVisionEmbeddings;
  readonly pre_layrnorm: nn.LayerNorm;
  readonly encoder: ClipEncoder;
  readonly post_layernorm: nn.LayerNorm;

  constructor(readonly config: ClipVisionConfig, f: ParamFactory) {
    super();
    if (config.hiddenSize % config.numAttentionHeads !== 0) throw new Error(`ClipVisionTransformer: hidden_size ${config.hiddenSize} is not divisible by num_attention_heads ${config.numAttentionHeads}`);
    this.embeddings = this.registerModule('embeddings', new ClipVisionEmbeddings(config, f));
    this.pre_layrnorm = this.registerModule('pre_layrnorm', f.layerNorm(config.hiddenSize, config.layerNormEps));
    this.encoder = this.registerModule('encoder', new ClipEncoder(config, f));
    this.post_layernorm = this.registerModule('post_layernorm', f.layerNorm(config.hiddenSize, config.layerNormEps));
  }

  forward(pixels: Tensor, dtype: FloatDType, device: Device): ClipVisionOutput {
    const cfg = this.config;
    const S = cfg.imageSize;
    const label = `CLIP vision forward(pixel_values ${pixels.describe()})`;
    if (pixels.rank !== 4 || pixels.shape[1] !== cfg.numChannels || pixels.shape[2] !== S || pixels.shape[3] !== S) {
      throw new Error(`${label}: pixel_values must be [batch, ${cfg.numChannels}, ${S}, ${S}] (preprocess with clipImageProcessor)`);
    }
    if (pixels.shape[0] < 1) throw new Error(`${label}: empty batch`);
    if (pixels.dtype !== 'f32' && pixels.dtype !== 'f16') throw new Error(`${label}: pixel_values must be f32 or f16`);
    if (pixels.device !== device) throw new Error(`${label}: pixel_values live on another device than the model`);
    return tidy(() => {
      const px = pixels.dtype === dtype ? pixels : cast(pixels, dtype);
      let h = tidy(() => this.pre_layrnorm.forward(this.embeddings.forward(px)));
      // One layer's output alive at a time (ViT-L/14 has 24 of them).
      for (const layer of this.encoder.layers) {
        const next = layer.forward(h, null);
        h.dispose();
        h = next;
      }
      const B = h.shape[0], D = h.shape[2];
      const cls = reshape(slice(h, [0, 0, 0], [B, 1, D]), [B, D]);
      return { lastHiddenState: h, pooled: this.post_layernorm.forward(cls) };
    });
  }
}

/** y = x·Wᵀ for a projection without bias. */
function project(x: Tensor, lin: nn.Linear): Tensor {
  return matmul(x, lin.weight, { transB: true });
}

/** transformers' CLIPVisionModelWithProjection: the image tower and visual_projection. */
export class ClipVisionModelWithProjection extends nn.Module {
  readonly vision_model: ClipVisionTransformer;
  readonly visual_projection: nn.Linear;
  readonly dtype: FloatDType;
  readonly device: Device;

  constructor(readonly config: ClipVisionConfig, opts: ClipVisionModelOptions = {}) {
    super();
    this.device = opts.device ?? getDefaultDevice();
    this.dtype = opts.dtype ?? 'f32';
    checkDtype('ClipVisionModelWithProjection', this.dtype, this.device);
    const f = new ParamFactory(this.device, this.dtype, opts.init === 'empty', opts.seed ?? nn.nextSeed());
    this.vision_model = this.registerModule('vision_model', new ClipVisionTransformer(config, f));
    this.visual_projection = this.registerModule('visual_projection', f.linear(config.hiddenSize, config.projectionDim, false));
  }

  /** pixel_values [B, C, S, S] → the tower's outputs and imageEmbeds [B, projection_dim]. */
  forward(pixels: Tensor): ClipVisionOutput & { imageEmbeds: Tensor } {
    return tidy(() => {
      const out = this.vision_model.forward(pixels, this.dtype, this.device);
      return { ...out, imageEmbeds: project(out.pooled, this.visual_projection) };
    });
  }

  /** get_image_features: [B, projection_dim] (gradient-free). */
  getImageFeatures(pixels: Tensor): Tensor {
    return noGrad(() => tidy(() => {
      const out = this.forward(pixels);
      return out.imageEmbeds;
    }));
  }
}

/** transformers' CLIPModel: both towers, both projections and logit_scale. */
export class ClipModel extends nn.Module {
  readonly text_model: ClipTextModel;
  readonly vision_model: ClipVisionTransformer;
  readonly visual_projection: nn.Linear;
  readonly text_projection: nn.Linear;
  readonly dtype: FloatDType;
  readonly device: Device;

  constructor(readonly config: ClipModelConfig, opts: ClipVisionModelOptions = {}) {
    super();
    this.device = opts.device ?? getDefaultDevice();
    this.dtype = opts.dtype ?? 'f32';
    checkDtype('ClipModel', this.dtype, this.device);
    const seed = opts.seed ?? nn.nextSeed();
    const f = new ParamFactory(this.device, this.dtype, opts.init === 'empty', seed + 1);
    // A parameter of CLIPModel itself: first in torch's state dict.
    this.registerParameter('logit_scale', f.constant([], config.logitScaleInit));
    this.text_model = this.registerModule('text_model', new ClipTextModel(config.text, { device: this.device, dtype: this.dtype, init: opts.init, seed }));
    this.vision_model = this.registerModule('vision_model', new ClipVisionTransformer({ ...config.vision, projectionDim: config.projectionDim }, f));
    this.visual_projection = this.registerModule('visual_projection', f.linear(config.vision.hiddenSize, config.projectionDim, false));
    this.text_projection = this.registerModule('text_projection', f.linear(config.text.hiddenSize, config.projectionDim, false));
  }

  /** The learned temperature's log (the logits are exp(logit_scale)·cos). */
  get logit_scale(): Tensor { return this.param('logit_scale'); }

  /** get_image_features: visual_projection of the pooled image state, [B, projection_dim]. */
  getImageFeatures(pixels: Tensor): Tensor {
    return noGrad(() => tidy(() => project(this.vision_model.forward(pixels, this.dtype, this.device).pooled, this.visual_projection)));
  }

  /** get_text_features: text_projection of the pooled text state, [B, projection_dim]. */
  getTextFeatures(inputIds: Tensor): Tensor {
    return noGrad(() => tidy(() => project(this.text_model.forward(inputIds).pooled, this.text_projection)));
  }
}
