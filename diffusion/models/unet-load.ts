// Loading diffusers' UNet2DConditionModel from a unet/ folder (config.json +
// diffusion_pytorch_model[.fp16].safetensors) in any ModelFolder (disk, fetch, memory);
// browser-safe. Saving (Node) is in unet.ts.

import { Device } from '../../engine/device.js';
import { getDefaultDevice } from '../../engine/tensor.js';
import { noGrad } from '../../engine/autograd.js';
import { copyInto } from '../../engine/nn/module.js';
import { SafetensorsFile, loadSafetensorsFrom } from '../../engine/io/safetensors-load.js';
import type { ModelFolder } from '../../engine/io/source.js';
import { fmt } from '../../engine/shape.js';
import { UNetConfig, parseUnetConfig, unetParameterShapes } from './unet-config.js';
import { ModelDType, UNet2DConditionModel } from './unet-model.js';
import { openWeights } from './checked-load.js';

export const UNET_WEIGHT_FILES = ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'];

export interface LoadUnetOptions {
  device?: Device;
  dtype?: ModelDType;
}

/**
 * Loads a diffusers unet/ folder (config.json + diffusion_pytorch_model[.fp16].safetensors).
 * The file's names and shapes are checked against the model before anything is read: every
 * missing, unexpected or mis-shaped key is listed in one Error. Weights are streamed one
 * top-level block at a time (never the whole file on the GPU twice).
 */
export async function loadUnetFrom(folder: ModelFolder, opts: LoadUnetOptions = {}): Promise<UNet2DConditionModel> {
  const where = folder.describe('');
  const cfgPath = folder.describe('config.json');
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(await folder.readText('config.json')) as Record<string, unknown>;
  } catch (e) {
    throw new Error(`loadUnet ${where}: cannot read ${cfgPath}: ${(e as Error).message}`);
  }
  let name: string | undefined;
  for (const f of UNET_WEIGHT_FILES) if (!name && (await folder.exists(f))) name = f;
  if (!name) throw new Error(`loadUnet ${where}: no weights file (looked for ${UNET_WEIGHT_FILES.join(', ')})`);
  const config = parseUnetConfig(raw);
  const weights = await openWeights(folder, name);
  try {
    return await loadPlanned(raw, config, weights, opts);
  } finally {
    await weights.source.close();
  }
}

async function loadPlanned(raw: Record<string, unknown>, config: UNetConfig, weights: SafetensorsFile, opts: LoadUnetOptions): Promise<UNet2DConditionModel> {
  const file = weights.source.name;
  const header = weights.header;
  const expected = new Map(unetParameterShapes(config));
  const missing = [...expected.keys()].filter((k) => !header.tensors.has(k));
  const unexpected = [...header.tensors.keys()].filter((k) => !expected.has(k));
  const bad: string[] = [];
  for (const [k, e] of header.tensors) {
    const want = expected.get(k);
    if (!want) continue;
    if (e.shape.join() !== want.join()) bad.push(`${k}: shape ${fmt(e.shape)} in the file, ${fmt(want)} in the model`);
    else if (!['F32', 'F16', 'BF16', 'F64'].includes(e.dtype)) bad.push(`${k}: dtype ${e.dtype} is not a float type`);
  }
  if (missing.length || unexpected.length || bad.length) {
    const lines = [`loadUnet ${file}: the weights do not fit the config`];
    if (missing.length) lines.push(`  missing keys (${missing.length}): ${missing.join(', ')}`);
    if (unexpected.length) lines.push(`  unexpected keys (${unexpected.length}): ${unexpected.join(', ')}`);
    if (bad.length) lines.push(`  mis-shaped keys (${bad.length}):`, ...bad.map((b) => `    ${b}`));
    throw new Error(lines.join('\n'));
  }
  const device = opts.device ?? getDefaultDevice();
  const dtype = opts.dtype ?? 'f32';
  const model = new UNet2DConditionModel(raw, { device, dtype });
  try {
    const params = model.stateDict();
    const groups = new Set([...params.keys()].map(topLevelGroup));
    for (const g of groups) {
      const part = await loadSafetensorsFrom(weights, { device, dtype, filter: (n) => topLevelGroup(n) === g });
      try {
        noGrad(() => {
          for (const [k, t] of part) if (!copyInto(params.get(k)!, t, `loadUnet "${k}"`)) model.loadStateDict(new Map([[k, t]]), { strict: false });
        });
      } finally {
        for (const t of part.values()) t.dispose();
      }
    }
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/** 'down_blocks.1.resnets…' → 'down_blocks.1'; 'conv_in.weight' → 'conv_in'. */
function topLevelGroup(name: string): string {
  const parts = name.split('.');
  return /^\d+$/.test(parts[1] ?? '') ? `${parts[0]}.${parts[1]}` : parts[0];
}

