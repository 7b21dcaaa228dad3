// A Stable Diffusion pipeline folder on disk (Node): loading from a path (or any ModelFolder;
// the folder-independent loader is load-folder.ts) and saving one back in diffusers' layout
// (current key names) so diffusers can load it too.

import { existsSync } from 'node:fs';
import { copyFile, mkdir, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { asFolder } from '../engine/files.js';
import type { ModelFolder } from '../engine/io/source.js';
import { saveClipTextModel } from './models/clip-text.js';
import { saveUnet } from './models/unet.js';
import { saveVae } from './models/vae.js';
import { LoadOptions, StableDiffusion, loadStableDiffusionFrom } from './load-folder.js';
import { TOKENIZER_FILES } from './text/load-folder.js';

export { disposeStableDiffusion } from './load-folder.js';
export type { LoadOptions, StableDiffusion } from './load-folder.js';

/** Loads all components from a folder path or a ModelFolder; an Error lists every component that failed and why. */
export function loadStableDiffusion(folder: string | ModelFolder, opts: LoadOptions = {}): Promise<StableDiffusion> {
  return loadStableDiffusionFrom(asFolder(folder), opts);
}

/** Writes the pipeline in diffusers' layout with current key names. The tokenizer files are copied from the source folder. */
export async function saveStableDiffusion(sd: StableDiffusion, folder: string): Promise<void> {
  await mkdir(folder, { recursive: true });
  await saveUnet(sd.unet, join(folder, 'unet'));
  await saveVae(sd.vae, join(folder, 'vae'));
  await saveClipTextModel(sd.textEncoder, join(folder, 'text_encoder'));
  await mkdir(join(folder, 'tokenizer'), { recursive: true });
  for (const { name } of TOKENIZER_FILES) {
    if (sd.source) {
      const rel = `tokenizer/${name}`;
      if (await sd.source.exists(rel)) await writeFile(join(folder, 'tokenizer', name), await sd.source.readBytes(rel));
      continue;
    }
    const src = join(sd.folder, 'tokenizer', name);
    if (existsSync(src)) await copyFile(src, join(folder, 'tokenizer', name));
  }
  await mkdir(join(folder, 'scheduler'), { recursive: true });
  await writeAtomic(join(folder, 'scheduler', 'scheduler_config.json'), JSON.stringify(sd.schedulerConfig, null, 2));
  await writeAtomic(join(folder, 'model_index.json'), JSON.stringify({
    _class_name: 'StableDiffusionPipeline', _diffusers_version: '0.36.0',
    feature_extractor: [null, null], requires_safety_checker: false, safety_checker: [null, null],
    scheduler: ['diffusers', 'DDIMScheduler'], text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'], unet: ['diffusers', 'UNet2DConditionModel'], vae: ['diffusers', 'AutoencoderKL'],
  }, null, 2));
}

async function writeAtomic(path: string, text: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, text);
  await rename(tmp, path);
}
