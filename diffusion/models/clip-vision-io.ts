// Loading CLIP's image tower and the dual encoder from a transformers folder (config.json +
// model.safetensors), such as a local copy of openai/clip-vit-large-patch14 (a CLIPModel) or a
// CLIPVisionModelWithProjection folder.
//
// Files written by transformers 4.x carry int64 `*.embeddings.position_ids` buffers; 5.x does
// not. Both load (the buffers are skipped: positions are always 0..L-1 here). The image tower
// alone can be loaded from a CLIPModel folder (the aesthetic reward needs no text tower): the
// text-side keys are then skipped without being read.

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Device } from '../../engine/index.js';
import { getDefaultDevice } from '../../engine/tensor.js';
import { nodeFolder } from '../../engine/files.js';
import { KeyMapper, loadCheckedModel, readConfigJson } from './checked-load.js';
import {
  ClipModelConfig, ClipVisionConfig, clipModelShapes, clipVisionWithProjectionShapes, parseClipModelConfig, parseClipVisionConfig,
} from './clip-vision-config.js';
import { ClipModel, ClipVisionModelWithProjection } from './clip-vision-model.js';
import { CLIP_IMAGE_PROCESSOR, ClipImageProcessorConfig, parseClipImageProcessorConfig } from './clip-image-processor.js';

export interface LoadClipOptions {
  device?: Device;
  /** The model's dtype (default f32); the file may hold f32, f16, bf16 or f64 either way. */
  dtype?: 'f32' | 'f16';
  /** Weights file inside the folder (default model.safetensors). */
  weightsName?: string;
}

export type ClipFolderConfig = { kind: 'clip'; config: ClipModelConfig } | { kind: 'vision'; config: ClipVisionConfig };

const BUFFERS = new Set(['text_model.embeddings.position_ids', 'vision_model.embeddings.position_ids']);

/** Reads a CLIP folder's config.json and says what it holds (CLIPModel or CLIPVisionModelWithProjection). */
export async function readClipFolderConfig(folder: string, label = 'loadClip'): Promise<ClipFolderConfig> {
  const { json, path } = await readConfigJson(nodeFolder(folder), label);
  const raw = (json && typeof json === 'object' ? json : {}) as Record<string, unknown>;
  const arch = Array.isArray(raw.architectures) ? (raw.architectures as unknown[]) : [];
  if (raw.model_type === 'clip' || arch.includes('CLIPModel')) return { kind: 'clip', config: parseClipModelConfig(json, path) };
  if (raw.model_type === 'clip_vision_model' || arch.includes('CLIPVisionModelWithProjection')) return { kind: 'vision', config: parseClipVisionConfig(json, path) };
  throw new Error(`${label}: ${path} is not a CLIPModel nor a CLIPVisionModelWithProjection config (model_type ${JSON.stringify(raw.model_type)}, architectures ${JSON.stringify(raw.architectures)})`);
}

const skipBuffers: KeyMapper = (k) => (BUFFERS.has(k) ? null : k);
/** From a CLIPModel file, only the image side. */
const visionOnly: KeyMapper = (k) => (BUFFERS.has(k) || k.startsWith('text_model.') || k === 'text_projection.weight' || k === 'logit_scale' ? null : k);

/**
 * The image tower with its projection, from a CLIPVisionModelWithProjection folder or from the
 * image side of a CLIPModel folder.
 */
export async function loadClipVisionModel(folder: string, opts: LoadClipOptions = {}): Promise<ClipVisionModelWithProjection> {
  const label = 'loadClipVisionModel';
  const device = opts.device ?? getDefaultDevice();
  const info = await readClipFolderConfig(folder, label);
  const cfg = info.kind === 'clip' ? { ...info.config.vision, projectionDim: info.config.projectionDim } : info.config;
  return loadCheckedModel(nodeFolder(folder), opts.weightsName ?? 'model.safetensors', new Map(clipVisionWithProjectionShapes(cfg)), info.kind === 'clip' ? visionOnly : skipBuffers, label, device,
    () => new ClipVisionModelWithProjection(cfg, { device, dtype: opts.dtype, init: 'empty' }));
}

/** The whole dual encoder from a CLIPModel folder. */
export async function loadClipModel(folder: string, opts: LoadClipOptions = {}): Promise<ClipModel> {
  const label = 'loadClipModel';
  const device = opts.device ?? getDefaultDevice();
  const info = await readClipFolderConfig(folder, label);
  if (info.kind !== 'clip') throw new Error(`${label}: ${folder} holds a CLIPVisionModelWithProjection (no text tower); CLIP score needs a CLIPModel folder such as openai/clip-vit-large-patch14`);
  return loadCheckedModel(nodeFolder(folder), opts.weightsName ?? 'model.safetensors', new Map(clipModelShapes(info.config)), skipBuffers, label, device,
    () => new ClipModel(info.config, { device, dtype: opts.dtype, init: 'empty' }));
}

/** The folder's preprocessor_config.json if it has one, else CLIP's defaults. */
export async function readClipImageProcessorConfig(folder: string): Promise<ClipImageProcessorConfig> {
  const path = join(folder, 'preprocessor_config.json');
  if (!existsSync(path)) return { ...CLIP_IMAGE_PROCESSOR, mean: [...CLIP_IMAGE_PROCESSOR.mean], std: [...CLIP_IMAGE_PROCESSOR.std] };
  let json: unknown;
  try {
    json = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: cannot read it as JSON: ${(e as Error).message}`);
  }
  return parseClipImageProcessorConfig(json, path);
}
