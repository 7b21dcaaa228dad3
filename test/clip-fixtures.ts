// Tiny CLIP configs, a float64 reference of the image tower, and CLIP folders written as
// transformers lays them out (any dtype, int64 position_ids buffers, missing or mis-shaped keys
// on request), shared by the CLIP model and CLIP reward tests.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeSafetensorsHeader } from '../engine/safetensors.js';
import { f32ToF16Bits } from '../engine/dtype.js';
import * as E from '../engine/index.js';
import { ClipModelConfig, ClipVisionConfig, visionTokens } from '../diffusion/models/clip-vision.js';
import { Params, encoderLayer64, layerNorm64, linear64 } from './clip-ref64.js';

export function tinyVision(over: Partial<ClipVisionConfig> = {}): ClipVisionConfig {
  // 12 px images in 4 px patches: 9 patches + the class token; odd widths on purpose.
  return {
    hiddenSize: 8, intermediateSize: 13, numHiddenLayers: 2, numAttentionHeads: 2, numChannels: 3,
    imageSize: 12, patchSize: 4, hiddenAct: 'quick_gelu', layerNormEps: 1e-5, projectionDim: 5, ...over,
  };
}

export function tinyClip(): ClipModelConfig {
  return {
    text: {
      vocabSize: 11, hiddenSize: 6, intermediateSize: 7, numHiddenLayers: 2, numAttentionHeads: 2, maxPositionEmbeddings: 7,
      hiddenAct: 'quick_gelu', layerNormEps: 1e-5, bosTokenId: 8, eosTokenId: 10, padTokenId: 9,
    },
    vision: tinyVision(),
    projectionDim: 5,
    logitScaleInit: 2.6592,
  };
}

/** CLIPVisionModelWithProjection's forward in float64 from the definitions. `pre` prefixes the tower's names. */
export function vision64(cfg: ClipVisionConfig, P: Params, px: Float64Array, B: number, pre = 'vision_model.') {
  const D = cfg.hiddenSize, C = cfg.numChannels, S = cfg.imageSize, Pp = cfg.patchSize;
  const { side, tokens: T } = visionTokens(cfg);
  const g = (n: string) => { const v = P.get(n); if (!v) throw new Error(`no ${n}`); return v; };
  const W = g(`${pre}embeddings.patch_embedding.weight`), cls = g(`${pre}embeddings.class_embedding`), pos = g(`${pre}embeddings.position_embedding.weight`);
  let x: Float64Array = new Float64Array(B * T * D);
  for (let b = 0; b < B; b++) for (let t = 0; t < T; t++) for (let d = 0; d < D; d++) {
    let v: number;
    if (t === 0) v = cls[d];
    else {
      // Patch t-1 in row-major order: a P×P window, no padding, stride P.
      const py = Math.floor((t - 1) / side), pxi = (t - 1) % side;
      v = 0;
      for (let c = 0; c < C; c++) for (let i = 0; i < Pp; i++) for (let j = 0; j < Pp; j++) {
        v += px[((b * C + c) * S + py * Pp + i) * S + pxi * Pp + j] * W[((d * C + c) * Pp + i) * Pp + j];
      }
    }
    x[(b * T + t) * D + d] = v + pos[t * D + d];
  }
  x = layerNorm64(x, B * T, D, g(`${pre}pre_layrnorm.weight`), g(`${pre}pre_layrnorm.bias`), cfg.layerNormEps);
  for (let i = 0; i < cfg.numHiddenLayers; i++) x = encoderLayer64(x, B, T, cfg, P, `${pre}encoder.layers.${i}`, false);
  const clsRows = new Float64Array(B * D);
  for (let b = 0; b < B; b++) for (let d = 0; d < D; d++) clsRows[b * D + d] = x[b * T * D + d];
  const pooled = layerNorm64(clsRows, B, D, g(`${pre}post_layernorm.weight`), g(`${pre}post_layernorm.bias`), cfg.layerNormEps);
  const embeds = linear64(pooled, B, D, cfg.projectionDim, g('visual_projection.weight'), null);
  return { last: x, pooled, embeds };
}


export const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

export type HostEntry = { name: string; dtype: 'F32' | 'F16' | 'I64'; shape: number[]; values: ArrayLike<number> };

/** A safetensors file from host values (F32, F16 or I64), for folders laid out as transformers writes them. */
export function writeHostSafetensors(path: string, entries: HostEntry[]): void {
  const { bytes: header, order } = encodeSafetensorsHeader(entries);
  const total = order.reduce((m, o) => Math.max(m, o.end), 0);
  const data = new Uint8Array(total);
  const view = new DataView(data.buffer);
  for (const { entry, begin } of order) {
    const e = entry as HostEntry;
    for (let i = 0; i < e.values.length; i++) {
      if (e.dtype === 'F32') view.setFloat32(begin + 4 * i, e.values[i], true);
      else if (e.dtype === 'F16') view.setUint16(begin + 2 * i, f32ToF16Bits(e.values[i]), true);
      else view.setBigInt64(begin + 8 * i, BigInt(e.values[i]), true);
    }
  }
  const out = new Uint8Array(header.length + total);
  out.set(header);
  out.set(data, header.length);
  writeFileSync(path, out);
}

export interface FolderOptions {
  dtype?: 'F32' | 'F16';
  /** int64 buffers [1, n] to add (as transformers 4.x writes position_ids). */
  buffers?: [string, number][];
  /** Parameters to leave out. */
  drop?: string[];
  /** Parameters written with another shape (zeros). */
  reshape?: Record<string, number[]>;
  /** Only the parameters whose names pass. */
  filter?: (name: string) => boolean;
}

/** Writes config.json and model.safetensors for `model`'s parameters (names as they are). */
export async function writeFolder(folder: string, config: unknown, model: E.nn.Module, o: FolderOptions = {}): Promise<void> {
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, 'config.json'), JSON.stringify(config));
  const entries: HostEntry[] = [];
  for (const [name, t] of model.namedParameters()) {
    if ((o.filter && !o.filter(name)) || o.drop?.includes(name)) continue;
    const shape = o.reshape?.[name] ?? [...t.shape];
    entries.push({ name, dtype: o.dtype ?? 'F32', shape, values: o.reshape?.[name] ? new Float64Array(numel(shape)) : await t.data() });
  }
  for (const [name, shape] of Object.entries(o.reshape ?? {})) {
    if (!entries.some((e) => e.name === name)) entries.push({ name, dtype: o.dtype ?? 'F32', shape, values: new Float64Array(numel(shape)) });
  }
  for (const [name, n] of o.buffers ?? []) entries.push({ name, dtype: 'I64', shape: [1, n], values: Array.from({ length: n }, (_, i) => i) });
  writeHostSafetensors(join(folder, 'model.safetensors'), entries);
}

export const TINY_CLIP_JSON = {
  architectures: ['CLIPModel'], model_type: 'clip', projection_dim: 5, logit_scale_init_value: 2.6592, torch_dtype: 'float32',
  text_config: { vocab_size: 11, hidden_size: 6, intermediate_size: 7, num_hidden_layers: 2, num_attention_heads: 2, max_position_embeddings: 7, bos_token_id: 8, eos_token_id: 10, pad_token_id: 9, model_type: 'clip_text_model' },
  text_config_dict: null,
  vision_config: { hidden_size: 8, intermediate_size: 13, num_hidden_layers: 2, num_attention_heads: 2, image_size: 12, patch_size: 4, projection_dim: 5, model_type: 'clip_vision_model' },
  vision_config_dict: null,
};

