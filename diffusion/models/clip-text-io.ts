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

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Device } from '../../engine/index.js';
import { fmt } from '../../engine/index.js';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors } from '../../engine/safetensors.js';
import { getDefaultDevice } from '../../engine/tensor.js';
import { ClipTextConfig, clipTextConfigJson, clipTextParameterShapes, parseClipTextConfig } from './clip-config.js';
import { ClipTextModel } from './clip-text-model.js';

const PREFIX = 'text_model.';
/** Non-parameter buffers some files carry (after removing the prefix). */
const BUFFERS = new Set(['embeddings.position_ids']);
const FLOAT_FILE_DTYPES = new Set(['F64', 'F32', 'F16', 'BF16']);

export interface LoadClipTextOptions {
  device?: Device;
  /** The model's dtype (default f32); the file may be f32 or f16 (or bf16/f64) either way. */
  dtype?: 'f32' | 'f16';
  /** Weights file name inside the folder (default model.safetensors; e.g. model.fp16.safetensors). */
  weightsName?: string;
}

/** Reads and parses `folder/config.json`. */
export async function readClipTextConfig(folder: string): Promise<ClipTextConfig> {
  const path = join(folder, 'config.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new Error(`loadClipTextModel: cannot read ${path}: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`loadClipTextModel: ${path} is not valid JSON: ${(e as Error).message}`);
  }
  return parseClipTextConfig(json, path);
}

/**
 * Maps the file's keys to model names (file key by model name), checking them against the
 * config's expected names and shapes. Throws one Error listing every problem.
 */
async function planLoad(path: string, cfg: ClipTextConfig): Promise<Map<string, string>> {
  const header = await readSafetensorsHeader(path);
  const expected = new Map(clipTextParameterShapes(cfg));
  const fileKey = new Map<string, string>();
  const unexpected: string[] = [], bad: string[] = [];
  for (const [key, entry] of header.tensors) {
    const name = key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
    if (BUFFERS.has(name)) continue;
    const want = expected.get(name);
    if (!want) { unexpected.push(key); continue; }
    const prev = fileKey.get(name);
    if (prev !== undefined) { bad.push(`${name}: given twice (as "${prev}" and "${key}")`); continue; }
    fileKey.set(name, key);
    if (entry.shape.join() !== want.join()) bad.push(`${key}: shape ${fmt(entry.shape)} in the file, ${fmt(want)} expected by the config`);
    else if (!FLOAT_FILE_DTYPES.has(entry.dtype)) bad.push(`${key}: dtype ${entry.dtype} is not a float type`);
  }
  const missing = [...expected.keys()].filter((n) => !fileKey.has(n));
  if (missing.length || unexpected.length || bad.length) {
    const lines = [`loadClipTextModel ${path}: the weights do not fit the config`];
    if (missing.length) lines.push(`  missing keys (${missing.length}): ${missing.join(', ')}`);
    if (unexpected.length) lines.push(`  unexpected keys (${unexpected.length}): ${unexpected.join(', ')}`);
    if (bad.length) lines.push(`  bad keys (${bad.length}):`, ...bad.map((b) => `    ${b}`));
    throw new Error(lines.join('\n'));
  }
  return fileKey;
}

/** Loading groups: the embeddings, each encoder layer, the final norm. */
function groupOf(name: string): string {
  const m = /^encoder\.layers\.(\d+)\./.exec(name);
  return m ? `layer ${m[1]}` : name.split('.')[0];
}

/**
 * Loads a transformers CLIPTextModel folder (config.json + model.safetensors) onto the device.
 * Keys may carry the `text_model.` prefix or not; the position_ids buffer is skipped.
 */
export async function loadClipTextModel(folder: string, opts: LoadClipTextOptions = {}): Promise<ClipTextModel> {
  const device = opts.device ?? getDefaultDevice();
  const cfg = await readClipTextConfig(folder);
  const path = join(folder, opts.weightsName ?? 'model.safetensors');
  const fileKey = await planLoad(path, cfg);
  const model = new ClipTextModel(cfg, { device, dtype: opts.dtype, init: 'empty' });
  try {
    const groups = new Map<string, string[]>();
    for (const name of fileKey.keys()) {
      const g = groupOf(name);
      if (!groups.has(g)) groups.set(g, []);
      groups.get(g)!.push(name);
    }
    for (const names of groups.values()) {
      const wanted = new Map(names.map((n) => [fileKey.get(n)!, n]));
      const loaded = await loadSafetensors(path, { device, dtype: model.dtype, filter: (k) => wanted.has(k) });
      try {
        const state = new Map([...loaded].map(([k, t]) => [wanted.get(k)!, t]));
        model.loadStateDict(state, { strict: false });
      } finally {
        for (const t of loaded.values()) t.dispose();
      }
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
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
