// Loading and saving AutoencoderKL in diffusers' folder layout (config.json +
// diffusion_pytorch_model.safetensors), Node only.
//
// Older checkpoints (SD v1-4's VAE and the tiny reference pipeline) name the mid-block
// attention's projections query / key / value / proj_attn instead of to_q / to_k / to_v /
// to_out.0, sometimes as 1×1-conv weights [C, C, 1, 1]. Both are accepted on load (renamed,
// reshaped to [C, C]); saving always writes the current names.

import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { reshape } from '../../engine/ops/movement.js';
import { noGrad } from '../../engine/autograd.js';
import { loadSafetensors, saveSafetensors } from '../../engine/safetensors.js';
import { Tensor, getDefaultDevice } from '../../engine/tensor.js';
import { Device } from '../../engine/device.js';
import { fmt } from '../../engine/shape.js';
import { AutoencoderKL } from './vae-model.js';
import { VaeConfig, parseVaeConfig, vaeConfigToJson } from './vae-config.js';

export const VAE_WEIGHTS_FILE = 'diffusion_pytorch_model.safetensors';
export const VAE_CONFIG_FILE = 'config.json';

const OLD_ATTENTION_NAMES: Record<string, string> = { query: 'to_q', key: 'to_k', value: 'to_v', proj_attn: 'to_out.0' };
const OLD_ATTENTION_KEY = /^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$/;
const ATTENTION_WEIGHT = /\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$/;

export interface ConvertedVaeState {
  /** Current names → tensors (the input's tensors, or reshaped views of them). */
  state: Map<string, Tensor>;
  /** Views this conversion created (dispose them after loading; the input's tensors stay the caller's). */
  created: Tensor[];
  /** [old name, new name] for every renamed key. */
  renamed: [string, string][];
}

/**
 * Maps a diffusers VAE state dict to the current names: query/key/value/proj_attn →
 * to_q/to_k/to_v/to_out.0, and 1×1-conv shaped attention weights [C, C, 1, 1] → [C, C]. A key
 * present under both its old and new name keeps the old one unrenamed, so loading reports it
 * as unexpected rather than silently picking one.
 */
export function convertVaeStateDict(input: Map<string, Tensor>): ConvertedVaeState {
  const state = new Map<string, Tensor>();
  const created: Tensor[] = [];
  const renamed: [string, string][] = [];
  for (const [name, t] of input) {
    let key = name;
    const m = OLD_ATTENTION_KEY.exec(name);
    if (m) {
      const target = `${m[1]}.${OLD_ATTENTION_NAMES[m[2]]}.${m[3]}`;
      if (!input.has(target)) { key = target; renamed.push([name, target]); }
    }
    let value = t;
    if (ATTENTION_WEIGHT.test(key) && t.rank === 4 && t.shape[2] === 1 && t.shape[3] === 1) {
      value = noGrad(() => reshape(t, [t.shape[0], t.shape[1]]));
      created.push(value);
    }
    state.set(key, value);
  }
  return { state, created, renamed };
}

/** Reads and validates `config.json` of a diffusers VAE folder. */
export async function readVaeConfig(folder: string): Promise<VaeConfig> {
  const path = join(folder, VAE_CONFIG_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new Error(`loadVae: cannot read ${path}: ${(e as Error).message}`);
  }
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`loadVae: ${path} is not valid JSON: ${(e as Error).message}`);
  }
  try {
    return parseVaeConfig(json);
  } catch (e) {
    throw new Error(`loadVae ${path}: ${(e as Error).message}`);
  }
}

export interface LoadVaeOptions {
  device?: Device;
  /** Parameter dtype (default f32). f16 needs shader-f16; SD v1's VAE may overflow in f16 at high resolution (diffusers' force_upcast). */
  dtype?: 'f32' | 'f16';
  /** Default samples per encode/decode pass (default 1). */
  microBatch?: number;
}

/**
 * Loads an AutoencoderKL from a diffusers folder (`vae/` of a pipeline). Every missing,
 * unexpected or mis-shaped key is listed in one Error naming the file.
 */
export async function loadVae(folder: string, opts: LoadVaeOptions = {}): Promise<AutoencoderKL> {
  const device = opts.device ?? getDefaultDevice();
  const dtype = opts.dtype ?? 'f32';
  const config = await readVaeConfig(folder);
  const path = join(folder, VAE_WEIGHTS_FILE);
  if (!existsSync(path)) throw new Error(`loadVae: ${path} not found (only safetensors weights are supported)`);
  const vae = new AutoencoderKL(config, { device, microBatch: opts.microBatch });
  let loaded: Map<string, Tensor> | null = null;
  let created: Tensor[] = [];
  try {
    if (dtype !== 'f32') vae.toDtype(dtype);
    loaded = await loadSafetensors(path, { device, dtype });
    const conv = convertVaeStateDict(loaded);
    created = conv.created;
    try {
      vae.loadStateDict(conv.state);
    } catch (e) {
      const note = conv.renamed.length ? `\n  (old attention names were renamed: ${conv.renamed.length} keys, e.g. ${conv.renamed[0][0]} → ${conv.renamed[0][1]})` : '';
      throw new Error(`loadVae ${path}: ${(e as Error).message}${note}`);
    }
  } catch (e) {
    vae.dispose();
    throw e;
  } finally {
    for (const t of created) t.dispose();
    if (loaded) for (const t of loaded.values()) t.dispose();
  }
  return vae;
}

/** Writes config.json and diffusion_pytorch_model.safetensors (current key names) into folder. */
export async function saveVae(vae: AutoencoderKL, folder: string): Promise<void> {
  await mkdir(folder, { recursive: true });
  const state = vae.stateDict();
  for (const [k, t] of state) {
    if (t.isDisposed) throw new Error(`saveVae: parameter "${k}" ${fmt(t.shape)} was disposed`);
  }
  await saveSafetensors(join(folder, VAE_WEIGHTS_FILE), state, { format: 'pt' });
  await writeFile(join(folder, VAE_CONFIG_FILE), JSON.stringify(vaeConfigToJson(vae.config), null, 2) + '\n');
}
