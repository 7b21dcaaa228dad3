// AutoencoderKL on disk (Node): loading from a folder path (the folder-independent loader is
// vae-load.ts) and saving in diffusers' layout with the current key names.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { saveSafetensors } from '../../engine/safetensors.js';
import { asFolder } from '../../engine/files.js';
import type { ModelFolder } from '../../engine/io/source.js';
import { fmt } from '../../engine/shape.js';
import { AutoencoderKL } from './vae-model.js';
import { VaeConfig, vaeConfigToJson } from './vae-config.js';
import { LoadVaeOptions, VAE_CONFIG_FILE, VAE_WEIGHTS_FILE, loadVaeFrom, readVaeConfigFrom } from './vae-load.js';

/** Reads and validates `config.json` of a diffusers VAE folder. */
export function readVaeConfig(folder: string | ModelFolder): Promise<VaeConfig> {
  return readVaeConfigFrom(asFolder(folder));
}

/**
 * Loads an AutoencoderKL from a diffusers folder (`vae/` of a pipeline). Every missing,
 * unexpected or mis-shaped key is listed in one Error naming the file.
 */
export function loadVae(folder: string | ModelFolder, opts: LoadVaeOptions = {}): Promise<AutoencoderKL> {
  return loadVaeFrom(asFolder(folder), opts);
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
