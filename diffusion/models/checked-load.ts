// Loading a transformers-style weights file into a model whose names and shapes the config
// fixes: the whole file is checked from its header first (every missing, unexpected, duplicated,
// mis-shaped or non-float key reported in one Error), then tensors are streamed in groups (one
// transformer layer at a time) and copied into the model, so peak memory is the model plus one
// group, not the model plus the file. Files come from a ModelFolder (disk, fetch, memory), so
// this runs in browsers too.

import { fmt, nn } from '../../engine/index.js';
import type { Device } from '../../engine/index.js';
import { SafetensorsFile, loadSafetensorsFrom, openSafetensorsSource } from '../../engine/io/safetensors-load.js';
import type { SafetensorsHeader } from '../../engine/io/safetensors-format.js';
import { ModelFolder, openSource } from '../../engine/io/source.js';

/** Reads and parses a JSON file of a folder; a missing file and bad JSON are Errors naming the path. */
export async function readJsonFile(folder: ModelFolder, name: string, label: string): Promise<{ json: unknown; path: string }> {
  const path = folder.describe(name);
  let text: string;
  try {
    text = await folder.readText(name);
  } catch (e) {
    throw new Error(`${label}: cannot read ${path}: ${(e as Error).message}`);
  }
  try {
    return { json: JSON.parse(text), path };
  } catch (e) {
    throw new Error(`${label}: ${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/** Reads `folder/config.json` (readJsonFile). */
export function readConfigJson(folder: ModelFolder, label: string): Promise<{ json: unknown; path: string }> {
  return readJsonFile(folder, 'config.json', label);
}

/** Opens a weights file of a folder and reads its header; close `source` when done. */
export async function openWeights(folder: ModelFolder, name: string): Promise<SafetensorsFile> {
  return openSafetensorsSource(await openSource(folder, name));
}

const FLOAT_FILE_DTYPES = new Set(['F64', 'F32', 'F16', 'BF16']);

/**
 * Maps each file key to the model's name for it: a name, or null for a key the loader skips on
 * purpose (a buffer such as position_ids, or the other tower of a dual encoder).
 */
export type KeyMapper = (fileKey: string) => string | null;

export interface HeaderComparison {
  /** File key by model name, for the keys that map to an expected name. */
  fileKey: Map<string, string>;
  missing: string[];
  unexpected: string[];
  /** Duplicated, mis-shaped and non-float keys, one line each. */
  bad: string[];
}

/** A weights header against the expected names and shapes (`fits` may accept other shapes, e.g. 1×1-conv weights). */
export function compareHeader(header: SafetensorsHeader, expected: ReadonlyMap<string, readonly number[]>, mapKey: KeyMapper,
  fits: (name: string, got: readonly number[], want: readonly number[]) => boolean = (_n, got, want) => got.join() === want.join()): HeaderComparison {
  const fileKey = new Map<string, string>();
  const unexpected: string[] = [], bad: string[] = [];
  for (const [key, entry] of header.tensors) {
    const name = mapKey(key);
    if (name === null) continue;
    const want = expected.get(name);
    if (!want) { unexpected.push(key); continue; }
    const prev = fileKey.get(name);
    if (prev !== undefined) { bad.push(`${name}: given twice (as "${prev}" and "${key}")`); continue; }
    fileKey.set(name, key);
    if (!fits(name, entry.shape, want)) bad.push(`${key}: shape ${fmt(entry.shape)} in the file, ${fmt(want)} expected by the config`);
    else if (!FLOAT_FILE_DTYPES.has(entry.dtype)) bad.push(`${key}: dtype ${entry.dtype} is not a float type`);
  }
  return { fileKey, missing: [...expected.keys()].filter((n) => !fileKey.has(n)), unexpected, bad };
}

/** Checks a file against the expected names and shapes; returns file key by model name, or throws one Error listing every problem. */
export function planCheckedLoad(file: SafetensorsFile, expected: ReadonlyMap<string, readonly number[]>, mapKey: KeyMapper, label: string): Map<string, string> {
  const path = file.source.name;
  const { fileKey, missing, unexpected, bad } = compareHeader(file.header, expected, mapKey);
  if (missing.length || unexpected.length || bad.length) {
    const lines = [`${label} ${path}: the weights do not fit the config`];
    if (missing.length) lines.push(`  missing keys (${missing.length}): ${missing.join(', ')}`);
    if (unexpected.length) lines.push(`  unexpected keys (${unexpected.length}): ${unexpected.join(', ')}`);
    if (bad.length) lines.push(`  bad keys (${bad.length}):`, ...bad.map((b) => `    ${b}`));
    throw new Error(lines.join('\n'));
  }
  return fileKey;
}

/** The loading group of a name: each `…layers.N.` prefix is one group, anything else goes by its first component. */
export function layerGroup(name: string): string {
  const m = /^(.*?\blayers\.\d+)\./.exec(name);
  return m ? m[1] : name.split('.')[0];
}

/**
 * Streams the planned tensors into `model` group by group (cast to `dtype`). The caller disposes
 * the model if this throws.
 */
export async function streamInto(model: nn.Module, file: SafetensorsFile, fileKey: ReadonlyMap<string, string>, device: Device, dtype: 'f32' | 'f16', groupOf: (name: string) => string = layerGroup): Promise<void> {
  const groups = new Map<string, string[]>();
  for (const name of fileKey.keys()) {
    const g = groupOf(name);
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g)!.push(name);
  }
  for (const names of groups.values()) {
    const wanted = new Map(names.map((n) => [fileKey.get(n)!, n]));
    const loaded = await loadSafetensorsFrom(file, { device, dtype, filter: (k) => wanted.has(k) });
    try {
      model.loadStateDict(new Map([...loaded].map(([k, t]) => [wanted.get(k)!, t])), { strict: false });
    } finally {
      for (const t of loaded.values()) t.dispose();
    }
  }
}

/**
 * The whole checked load of `folder/name`: the file is planned from its header first (nothing is
 * allocated when it does not fit), then `build` makes the model with empty weights and the file
 * is streamed into it; the model is freed if streaming fails.
 */
export async function loadCheckedModel<M extends nn.Module & { readonly dtype: 'f32' | 'f16' }>(
  folder: ModelFolder, name: string, expected: ReadonlyMap<string, readonly number[]>, mapKey: KeyMapper, label: string, device: Device, build: () => M,
): Promise<M> {
  const file = await openWeights(folder, name);
  try {
    const fileKey = planCheckedLoad(file, expected, mapKey, label);
    const model = build();
    try {
      await streamInto(model, file, fileKey, device, model.dtype);
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model;
  } finally {
    await file.source.close();
  }
}
