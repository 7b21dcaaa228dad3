// Loading the CLIP text encoder from a transformers folder (config.json + model.safetensors) in
// any ModelFolder (disk, fetch, memory); browser-safe. Saving (Node) is in clip-text-io.ts.
//
// Key names: files written by transformers 4.x (every SD v1 release) prefix each key with
// `text_model.` and carry an int64 `text_model.embeddings.position_ids` buffer; transformers 5.x
// writes neither. Both load; the buffer is skipped (positions are always 0..L-1 here).
//
// The whole file is checked against the config (names, shapes, dtypes) from its header before
// any tensor is read, and every problem is reported in one Error. Tensors are then streamed in
// groups (embeddings, one layer, the final norm) and copied into the model, so peak memory is
// the model plus one group, not the model plus the whole file.

import type { Device } from '../../engine/device.js';
import type { ModelFolder } from '../../engine/io/source.js';
import { getDefaultDevice } from '../../engine/tensor.js';
import { loadCheckedModel, readConfigJson } from './checked-load.js';
import { ClipTextConfig, clipTextParameterShapes, parseClipTextConfig } from './clip-config.js';
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

/** Reads and parses `config.json` of a text_encoder folder. */
export async function readClipTextConfigFrom(folder: ModelFolder): Promise<ClipTextConfig> {
  const { json, path } = await readConfigJson(folder, 'loadClipTextModel');
  return parseClipTextConfig(json, path);
}

/** File key → model name: the `text_model.` prefix removed, the position_ids buffer skipped. */
function textKey(key: string): string | null {
  const name = key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
  return BUFFERS.has(name) ? null : name;
}

/** Loads a transformers CLIPTextModel folder onto the device. */
export async function loadClipTextModelFrom(folder: ModelFolder, opts: LoadClipTextOptions = {}): Promise<ClipTextModel> {
  const device = opts.device ?? getDefaultDevice();
  const cfg = await readClipTextConfigFrom(folder);
  return loadCheckedModel(folder, opts.weightsName ?? 'model.safetensors', new Map(clipTextParameterShapes(cfg)), textKey, 'loadClipTextModel', device,
    () => new ClipTextModel(cfg, { device, dtype: opts.dtype, init: 'empty' }));
}
