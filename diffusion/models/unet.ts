// diffusers' UNet2DConditionModel: the model (unet-model.ts), loading from any ModelFolder
// (unet-load.ts), and here the Node side: loading from a folder path and saving a diffusers folder.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { saveSafetensors } from '../../engine/safetensors.js';
import { asFolder } from '../../engine/files.js';
import type { ModelFolder } from '../../engine/io/source.js';
import { UNet2DConditionModel } from './unet-model.js';
import { LoadUnetOptions, UNET_WEIGHT_FILES, loadUnetFrom } from './unet-load.js';

export * from './unet-model.js';
export * from './unet-load.js';

/**
 * Loads a diffusers unet/ folder (a path, or any ModelFolder); see loadUnetFrom.
 */
export function loadUnet(folder: string | ModelFolder, opts: LoadUnetOptions = {}): Promise<UNet2DConditionModel> {
  return loadUnetFrom(asFolder(folder), opts);
}

/**
 * Writes config.json and diffusion_pytorch_model.safetensors with the model's names (and
 * dtype). A model with LoRA adapters writes them too (…to_q.lora_A.weight etc.); loadUnet
 * expects a plain model, so merge or save the adapters separately (unetLoRAStateDict).
 */
export async function saveUnet(model: UNet2DConditionModel, folder: string): Promise<void> {
  await mkdir(folder, { recursive: true });
  await writeFile(join(folder, 'config.json'), JSON.stringify({ _class_name: 'UNet2DConditionModel', ...model.rawConfig }, null, 2) + '\n');
  await saveSafetensors(join(folder, UNET_WEIGHT_FILES[0]), model.stateDict(), { format: 'pt' });
}

