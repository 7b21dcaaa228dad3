// A Stable Diffusion pipeline folder in diffusers' layout (model_index.json, unet/, vae/,
// text_encoder/, tokenizer/, scheduler/) from any ModelFolder (disk, fetch, memory): every
// component loaded, every problem reported at once. Browser-safe; load.ts adds the Node side
// (paths, saving).

import { Device } from '../engine/device.js';
import { getDefaultDevice } from '../engine/tensor.js';
import { ModelFolder, subFolder } from '../engine/io/source.js';
import { ClipTokenizer } from './tokenizer.js';
import { loadClipTokenizerFrom } from './text/load-folder.js';
import { ClipTextModel } from './models/clip-text-model.js';
import { loadClipTextModelFrom } from './models/clip-text-load.js';
import { UNet2DConditionModel } from './models/unet-model.js';
import { loadUnetFrom } from './models/unet-load.js';
import { AutoencoderKL } from './models/vae-model.js';
import { loadVaeFrom } from './models/vae-load.js';
import { readJsonFile } from './models/checked-load.js';
import { DDIMSchedule, SchedulerConfig } from './schedule.js';

export interface StableDiffusion {
  /** Where it came from, for messages (a path or URL). */
  folder: string;
  /** The files it was loaded from (saveStableDiffusion copies the tokenizer's from here). */
  source?: ModelFolder;
  tokenizer: ClipTokenizer;
  textEncoder: ClipTextModel;
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  schedule: DDIMSchedule;
  schedulerConfig: SchedulerConfig;
}

export interface LoadOptions {
  device?: Device;
  /**
   * Storage type of the UNet and text encoder weights (default f32; f16 halves memory, frozen
   * only, needs shader-f16). f16 files load as f32 unless this says f16.
   */
  dtype?: 'f32' | 'f16';
  /** The VAE's own dtype (default f32: SD's VAE overflows in f16 at high resolution). */
  vaeDtype?: 'f32' | 'f16';
}

export const PIPELINE_PARTS = ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'] as const;
/** A file each component folder has: a web server cannot say whether a folder exists, only a file. */
const PART_FILE: Record<(typeof PIPELINE_PARTS)[number], string> = {
  unet: 'unet/config.json', vae: 'vae/config.json', text_encoder: 'text_encoder/config.json', tokenizer: 'tokenizer/vocab.json', scheduler: 'scheduler/scheduler_config.json',
};

/** Loads all components of a pipeline folder; an Error lists every component that failed and why. */
export async function loadStableDiffusionFrom(folder: ModelFolder, opts: LoadOptions = {}): Promise<StableDiffusion> {
  const device = opts.device ?? getDefaultDevice();
  const where = folder.describe('');
  if (!(await folder.exists('model_index.json'))) throw new Error(`${where}: not a diffusers pipeline folder (no model_index.json). Expected ${PIPELINE_PARTS.join('/, ')}/ inside.`);
  await readJsonFile(folder, 'model_index.json', where);
  const missing: string[] = [];
  for (const p of PIPELINE_PARTS) if (!(await folder.exists(PART_FILE[p])) && !(await folder.exists(p))) missing.push(p);
  if (missing.length) throw new Error(`${where}: missing component folder(s): ${missing.join(', ')}`);
  const problems: string[] = [];
  const attempt = async <T>(part: string, fn: () => Promise<T> | T): Promise<T | null> => {
    try { return await fn(); } catch (e) { problems.push(`${part}: ${(e as Error).message}`); return null; }
  };
  const schedulerConfig = await attempt('scheduler', async () => (await readJsonFile(folder, 'scheduler/scheduler_config.json', 'scheduler')).json as SchedulerConfig);
  const schedule = schedulerConfig ? await attempt('scheduler', () => new DDIMSchedule(schedulerConfig)) : null;
  const tokenizer = await attempt('tokenizer', () => loadClipTokenizerFrom(subFolder(folder, 'tokenizer')));
  const textEncoder = await attempt('text_encoder', () => loadClipTextModelFrom(subFolder(folder, 'text_encoder'), { device, dtype: opts.dtype }));
  const unet = await attempt('unet', () => loadUnetFrom(subFolder(folder, 'unet'), { device, dtype: opts.dtype }));
  const vae = await attempt('vae', () => loadVaeFrom(subFolder(folder, 'vae'), { device, dtype: opts.vaeDtype ?? 'f32' }));
  if (problems.length) {
    for (const m of [textEncoder, unet, vae]) m?.dispose();
    throw new Error(`cannot load ${where}:\n  ${problems.join('\n  ')}`);
  }
  return { folder: where, source: folder, tokenizer: tokenizer!, textEncoder: textEncoder!, unet: unet!, vae: vae!, schedule: schedule!, schedulerConfig: schedulerConfig! };
}

export function disposeStableDiffusion(sd: StableDiffusion): void {
  sd.unet.dispose();
  sd.vae.dispose();
  sd.textEncoder.dispose();
}
