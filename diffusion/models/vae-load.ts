// Loading AutoencoderKL from a diffusers folder (config.json + diffusion_pytorch_model.safetensors)
// in any ModelFolder (disk, fetch, memory); browser-safe. Saving (Node) is in vae-io.ts.
//
// Older checkpoints (SD v1-4's VAE and the tiny reference pipeline) name the mid-block
// attention's projections query / key / value / proj_attn instead of to_q / to_k / to_v /
// to_out.0, sometimes as 1×1-conv weights [C, C, 1, 1]. Both are accepted on load (renamed,
// reshaped to [C, C]).

import { reshape } from '../../engine/ops/movement.js';
import { noGrad } from '../../engine/autograd.js';
import { loadSafetensorsFrom } from '../../engine/io/safetensors-load.js';
import type { ModelFolder } from '../../engine/io/source.js';
import { Tensor, getDefaultDevice } from '../../engine/tensor.js';
import { Device } from '../../engine/device.js';
import { AutoencoderKL } from './vae-model.js';
import { VaeConfig, parseVaeConfig } from './vae-config.js';
import { openWeights, readJsonFile } from './checked-load.js';

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
export async function readVaeConfigFrom(folder: ModelFolder): Promise<VaeConfig> {
  const { json, path } = await readJsonFile(folder, VAE_CONFIG_FILE, 'loadVae');
  try {
    return parseVaeConfig(json as Record<string, unknown>);
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
export async function loadVaeFrom(folder: ModelFolder, opts: LoadVaeOptions = {}): Promise<AutoencoderKL> {
  const device = opts.device ?? getDefaultDevice();
  const dtype = opts.dtype ?? 'f32';
  const config = await readVaeConfigFrom(folder);
  const path = folder.describe(VAE_WEIGHTS_FILE);
  if (!(await folder.exists(VAE_WEIGHTS_FILE))) throw new Error(`loadVae: ${path} not found (only safetensors weights are supported)`);
  const vae = new AutoencoderKL(config, { device, microBatch: opts.microBatch });
  let loaded: Map<string, Tensor> | null = null;
  let created: Tensor[] = [];
  try {
    if (dtype !== 'f32') vae.toDtype(dtype);
    const file = await openWeights(folder, VAE_WEIGHTS_FILE);
    try {
      loaded = await loadSafetensorsFrom(file, { device, dtype });
    } finally {
      await file.source.close();
    }
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

