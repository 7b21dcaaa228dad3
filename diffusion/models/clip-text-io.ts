// Loading and saving the CLIP text encoder in transformers' folder layout: config.json plus
// model.safetensors.
//
// Key names: files written by transformers 4.x (every SD v1 release) prefix each key with
// `text_model.` and carry an int64 `text_model.embeddings.position_ids` buffer; transformers 5.x
// writes neither. Both load; the buffer is skipped (positions are always 0..L-1 here). Saving
// always writes the current names.
//
// The whole file is checked against the config (names, shapes, dtypes) from its header before
// any tensor is read, and every problem is reported in one Error. Tensors are then streamed in
// groups (embeddings, one layer, the final norm) and copied into the model, so peak memory is
// the model plus one group, not the model plus the whole file.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Device } from '../../engine/index.js';
import { saveSafetensors } from '../../engine/safetensors.js';
import { loadCheckedModel, readConfigJson } from './checked-load.js';
import { getDefaultDevice } from '../../engine/tensor.js';
import { ClipTextConfig, clipTextConfigJson, clipTextParameterShapes, parseClipTextConfig } from './clip-config.js';
import { ClipTextModel } from './clip-text-model.js';

const PREFIX = 'text_model.';
/** Non-parameter buffers some files carry (after removing the prefix). */
const BUFFERS = new Set(['embeddings.position_ids']);

export interface LoadClipTextOptions {
  device?: Device;
  /** The model's dtype (default f32); the file may be f32 or f16 (or bf16/f64) either way. */
  dtype?: 'f32' | 'f16';
  /** Weights file name inside the folder (default model.safetensors; e.g. model.fp16.safetensors). */
  weightsName?: string;
}

/** Reads and parses `folder/config.json`. */
export async function readClipTextConfig(folder: string): Promise<ClipTextConfig> {
  const { json, path } = await readConfigJson(folder, 'loadClipTextModel');
  return parseClipTextConfig(json, path);
}

/** File key → model name: the `text_model.` prefix removed, the position_ids buffer skipped. */
function textKey(key: string): string | null {
  const name = key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
  return BUFFERS.has(name) ? null : name;
}

/**
 * Loads a transformers CLIPTextModel folder (config.json + model.safetensors) onto the device.
 * Keys may carry the `text_model.` prefix or not; the position_ids buffer is skipped.
 */
export async function loadClipTextModel(folder: string, opts: LoadClipTextOptions = {}): Promise<ClipTextModel> {
  const device = opts.device ?? getDefaultDevice();
  const cfg = await readClipTextConfig(folder);
  const path = join(folder, opts.weightsName ?? 'model.safetensors');
  return loadCheckedModel(path, new Map(clipTextParameterShapes(cfg)), textKey, 'loadClipTextModel', device,
    () => new ClipTextModel(cfg, { device, dtype: opts.dtype, init: 'empty' }));
}

/**
 * Writes `folder/config.json` (transformers 5.x style) and `folder/model.safetensors` with the
 * current key names (no prefix, no position_ids buffer), in the model's dtype.
 */
export async function saveClipTextModel(model: ClipTextModel, folder: string): Promise<void> {
  await mkdir(folder, { recursive: true });
  await saveSafetensors(join(folder, 'model.safetensors'), model.stateDict(), { format: 'pt' });
  const json = clipTextConfigJson(model.config, model.dtype === 'f16' ? 'float16' : 'float32');
  await writeFile(join(folder, 'config.json'), JSON.stringify(json, null, 2) + '\n');
}
