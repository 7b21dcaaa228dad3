// The CLIP text encoder on disk (Node): loading from a folder path (the folder-independent
// loader is clip-text-load.ts) and saving in transformers' layout with the current key names.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ModelFolder } from '../../engine/io/source.js';
import { asFolder } from '../../engine/files.js';
import { saveSafetensors } from '../../engine/safetensors.js';
import { ClipTextConfig, clipTextConfigJson } from './clip-config.js';
import { ClipTextModel } from './clip-text-model.js';
import { LoadClipTextOptions, loadClipTextModelFrom, readClipTextConfigFrom } from './clip-text-load.js';

export type { LoadClipTextOptions } from './clip-text-load.js';

/** Reads and parses `folder/config.json`. */
export function readClipTextConfig(folder: string | ModelFolder): Promise<ClipTextConfig> {
  return readClipTextConfigFrom(asFolder(folder));
}

/**
 * Loads a transformers CLIPTextModel folder (config.json + model.safetensors) onto the device.
 * Keys may carry the `text_model.` prefix or not; the position_ids buffer is skipped.
 */
export function loadClipTextModel(folder: string | ModelFolder, opts: LoadClipTextOptions = {}): Promise<ClipTextModel> {
  return loadClipTextModelFrom(asFolder(folder), opts);
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
