// A Stable Diffusion pipeline folder in diffusers' layout (model_index.json, unet/, vae/,
// text_encoder/, tokenizer/, scheduler/): load every component, reporting all problems at once,
// and save one back in the same layout (current key names) so diffusers can load it too.

import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, writeFile, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { Device } from '../engine/device.js';
import { getDefaultDevice } from '../engine/tensor.js';
import { ClipTokenizer } from './tokenizer.js';
import { loadClipTokenizer } from './text/load-node.js';
import { ClipTextModel, loadClipTextModel, saveClipTextModel } from './models/clip-text.js';
import { UNet2DConditionModel, loadUnet, saveUnet } from './models/unet.js';
import { AutoencoderKL, loadVae, saveVae } from './models/vae.js';
import { DDIMSchedule, SchedulerConfig } from './schedule.js';

export interface StableDiffusion {
  folder: string;
  tokenizer: ClipTokenizer;
  textEncoder: ClipTextModel;
  unet: UNet2DConditionModel;
  vae: AutoencoderKL;
  schedule: DDIMSchedule;
  schedulerConfig: SchedulerConfig;
}

export interface LoadOptions {
  device?: Device;
  /** Storage type of the UNet and text encoder weights (default f32; f16 halves memory, frozen only). */
  dtype?: 'f32' | 'f16';
  /** The VAE's own dtype (default f32: SD's VAE overflows in f16 at high resolution). */
  vaeDtype?: 'f32' | 'f16';
}

const PARTS = ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'] as const;

function readJson(path: string): Record<string, unknown> {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: ${(e as Error).message}`);
  }
}

/** Loads all components; an Error lists every component that failed and why. */
export async function loadStableDiffusion(folder: string, opts: LoadOptions = {}): Promise<StableDiffusion> {
  const device = opts.device ?? getDefaultDevice();
  const index = join(folder, 'model_index.json');
  if (!existsSync(index)) throw new Error(`${folder}: not a diffusers pipeline folder (no model_index.json). Expected ${PARTS.join('/, ')}/ inside.`);
  readJson(index);
  const missing = PARTS.filter((p) => !existsSync(join(folder, p)));
  if (missing.length) throw new Error(`${folder}: missing component folder(s): ${missing.join(', ')}`);
  const problems: string[] = [];
  const attempt = async <T>(part: string, fn: () => Promise<T> | T): Promise<T | null> => {
    try { return await fn(); } catch (e) { problems.push(`${part}: ${(e as Error).message}`); return null; }
  };
  const schedulerConfig = await attempt('scheduler', () => readJson(join(folder, 'scheduler', 'scheduler_config.json')) as SchedulerConfig);
  const schedule = schedulerConfig ? await attempt('scheduler', () => new DDIMSchedule(schedulerConfig)) : null;
  const tokenizer = await attempt('tokenizer', () => loadClipTokenizer(join(folder, 'tokenizer')));
  const textEncoder = await attempt('text_encoder', () => loadClipTextModel(join(folder, 'text_encoder'), { device, dtype: opts.dtype }));
  const unet = await attempt('unet', () => loadUnet(join(folder, 'unet'), { device, dtype: opts.dtype }));
  const vae = await attempt('vae', () => loadVae(join(folder, 'vae'), { device, dtype: opts.vaeDtype ?? 'f32' }));
  if (problems.length) {
    for (const m of [textEncoder, unet, vae]) m?.dispose();
    throw new Error(`cannot load ${folder}:\n  ${problems.join('\n  ')}`);
  }
  return { folder, tokenizer: tokenizer!, textEncoder: textEncoder!, unet: unet!, vae: vae!, schedule: schedule!, schedulerConfig: schedulerConfig! };
}

/** Writes the pipeline in diffusers' layout with current key names. The tokenizer files are copied from the source folder. */
export async function saveStableDiffusion(sd: StableDiffusion, folder: string): Promise<void> {
  await mkdir(folder, { recursive: true });
  await saveUnet(sd.unet, join(folder, 'unet'));
  await saveVae(sd.vae, join(folder, 'vae'));
  await saveClipTextModel(sd.textEncoder, join(folder, 'text_encoder'));
  await mkdir(join(folder, 'tokenizer'), { recursive: true });
  for (const f of ['vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json']) {
    const src = join(sd.folder, 'tokenizer', f);
    if (existsSync(src)) await copyFile(src, join(folder, 'tokenizer', f));
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

export function disposeStableDiffusion(sd: StableDiffusion): void {
  sd.unet.dispose();
  sd.vae.dispose();
  sd.textEncoder.dispose();
}
