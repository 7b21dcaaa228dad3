// UNet LoRA adapters as a separate safetensors file, in diffusers' current LoRA format, and
// reading the older formats.
//
// What diffusers writes (checked against diffusers' src/diffusers/loaders/lora_base.py:
// `_save_lora_weights` packs each component's PEFT state dict with `_pack_dict_with_prefix(…,
// "unet")`, and `write_lora_layers` saves it with safetensors metadata {"format": "pt",
// LORA_ADAPTER_METADATA_KEY = "lora_adapter_metadata": json.dumps(metadata, indent=2,
// sort_keys=True)}, where the metadata is the adapter's LoraConfig dict, its keys prefixed
// "unet." too). So `pytorch_lora_weights.safetensors` holds
//   unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight  [r, in]
//   unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight  [out, r]
//   … for to_q, to_k, to_v, to_out.0 of attn1 and attn2 in every transformer block,
// and the scale alpha / r comes from the metadata's "unet.lora_alpha" (per-module exceptions in
// "unet.alpha_pattern"); diffusers builds `LoraConfig(**metadata)` from it on load, so we write
// only LoraConfig fields.
//
// Read as well (diffusers' state_dict_utils maps them onto the same modules):
//   unet.<module>.lora.down.weight / .lora.up.weight    diffusers' own names (convert_state_dict_to_diffusers)
//   <module>.lora_down.weight / .lora_up.weight         kohya-style suffixes
//   <attn>.processor.to_q_lora.down.weight / .up.weight the attention-processor LoRA of
//                                                       diffusers < 0.20 (to_out_lora → to_out.0)
//   lora_unet_<module with dots as underscores>.lora_down.weight, .alpha
//                                                       kohya's sd-scripts (diffusers module names)
// with alpha from (first found) a `<module>.alpha` tensor, the metadata, or none (alpha = rank,
// scale 1, as diffusers does for files without network alphas).

import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { loadSafetensors, readSafetensorsHeader, readSafetensorsHost, saveSafetensors } from '../engine/safetensors.js';
import { Tensor } from '../engine/tensor.js';
import { noGrad } from '../engine/autograd.js';
import { fmt } from '../engine/shape.js';
import { Linear } from '../engine/nn/layers.js';
import { LoRALinear, injectLoRA } from '../engine/nn/lora.js';
import { copyInto } from '../engine/nn/module.js';
import { UNet2DConditionModel, injectUnetLoRA } from './models/unet.js';

export const LORA_WEIGHT_NAME = 'pytorch_lora_weights.safetensors';
export const LORA_ADAPTER_METADATA_KEY = 'lora_adapter_metadata';

export type LoRAFileFormat = 'peft' | 'diffusers' | 'kohya-suffix' | 'attn-processor' | 'kohya';

/** A file path, or a folder holding pytorch_lora_weights.safetensors. */
function resolveFile(path: string): string {
  return existsSync(path) && statSync(path).isDirectory() ? join(path, LORA_WEIGHT_NAME) : path;
}

/** The UNet's LoRA layers by module name, in module order. */
export function unetLoRALayers(unet: UNet2DConditionModel): Map<string, LoRALinear> {
  const out = new Map<string, LoRALinear>();
  for (const [n, m] of unet.namedModules()) if (m instanceof LoRALinear) out.set(n, m);
  return out;
}

const mostCommon = (xs: number[]) => {
  const c = new Map<number, number>();
  for (const x of xs) c.set(x, (c.get(x) ?? 0) + 1);
  return [...c].sort((a, b) => b[1] - a[1])[0][0];
};

/**
 * Writes the UNet's adapters (lora_A / lora_B of every LoRALinear) in diffusers' current format,
 * to `path` (a .safetensors file, or a folder → folder/pytorch_lora_weights.safetensors). Returns
 * the file written.
 */
export async function saveUnetLoRA(unet: UNet2DConditionModel, path: string): Promise<string> {
  const layers = unetLoRALayers(unet);
  if (!layers.size) throw new Error('saveUnetLoRA: the UNet has no LoRA adapters (injectUnetLoRA first)');
  const file = path.endsWith('.safetensors') ? path : join(path, LORA_WEIGHT_NAME);
  if (!path.endsWith('.safetensors')) {
    const { mkdir } = await import('node:fs/promises');
    await mkdir(path, { recursive: true });
  }
  const tensors = new Map<string, Tensor>();
  for (const [name, l] of layers) {
    if (l.merged) throw new Error(`saveUnetLoRA: ${name} is merged into its base weight; unmerge() before saving the adapter`);
    tensors.set(`unet.${name}.lora_A.weight`, l.loraA);
    tensors.set(`unet.${name}.lora_B.weight`, l.loraB);
  }
  const r = mostCommon([...layers.values()].map((l) => l.rank));
  const alpha = mostCommon([...layers.values()].map((l) => l.alpha));
  const rankPattern: Record<string, number> = {}, alphaPattern: Record<string, number> = {};
  for (const [name, l] of layers) {
    if (l.rank !== r) rankPattern[name] = l.rank;
    if (l.alpha !== alpha) alphaPattern[name] = l.alpha;
  }
  const targets = [...new Set([...layers.keys()].map((n) => n.split('.').slice(-(n.endsWith('.0') ? 2 : 1)).join('.')))].sort();
  // LoraConfig fields only (diffusers calls LoraConfig(**metadata)).
  const config: Record<string, unknown> = {
    r, lora_alpha: alpha, target_modules: targets, rank_pattern: rankPattern, alpha_pattern: alphaPattern,
    init_lora_weights: 'gaussian', lora_dropout: 0, bias: 'none', use_dora: false, use_rslora: false,
  };
  const packed = Object.fromEntries(Object.keys(config).sort().map((k) => [`unet.${k}`, config[k]]));
  await saveSafetensors(file, tensors, { format: 'pt', [LORA_ADAPTER_METADATA_KEY]: JSON.stringify(packed, null, 2) });
  return file;
}

// ------------------------------------------------------------------ reading

export interface LoRAModulePlan {
  /** The UNet module (dotted, current names), e.g. down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q */
  module: string;
  /** File keys of the down (A, [r, in]) and up (B, [out, r]) matrices. */
  downKey: string;
  upKey: string;
  rank: number;
  inFeatures: number;
  outFeatures: number;
  /** From a `.alpha` tensor key (read later), the metadata, or null (= rank). */
  alphaKey: string | null;
  alpha: number | null;
}

export interface LoRAFilePlan {
  file: string;
  format: LoRAFileFormat;
  modules: LoRAModulePlan[];
}

const PROCESSOR = /^(.*)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/;
const PEFT = /^(.*)\.lora_([AB])(?:\.default)?\.weight$/;
const DIFFUSERS = /^(.*)\.lora\.(down|up)\.weight$/;
const KOHYA_SUFFIX = /^(.*)\.lora_(down|up)\.weight$/;
const ALPHA = /^(.*)\.alpha$/;

/**
 * Maps a LoRA file's keys onto UNet modules. `moduleNames` are the UNet's Linear layers (for
 * kohya's underscore names). Throws one Error listing every problem (unknown keys, a down
 * without its up, rank mismatches).
 */
export function planUnetLoRA(file: string, keys: Map<string, number[]>, metadata: Record<string, string>, moduleNames: Iterable<string>): LoRAFilePlan {
  const byUnderscore = new Map<string, string>();
  for (const n of moduleNames) byUnderscore.set(n.replace(/\./g, '_'), n);
  const problems: string[] = [];
  const formats = new Set<LoRAFileFormat>();
  const pairs = new Map<string, { down?: string; up?: string; alphaKey?: string }>();
  const entry = (m: string) => { let e = pairs.get(m); if (!e) pairs.set(m, e = {}); return e; };
  const put = (module: string, which: 'down' | 'up', key: string) => {
    const e = entry(module);
    if (e[which]) problems.push(`${module}: two ${which} matrices ("${e[which]}" and "${key}")`);
    e[which] = key;
  };
  for (const key of keys.keys()) {
    let k = key;
    if (k.startsWith('text_encoder.') || k.startsWith('lora_te')) { problems.push(`${key}: text-encoder LoRA is not supported (UNet adapters only)`); continue; }
    let kohya = false;
    if (k.startsWith('unet.')) k = k.slice(5);
    else if (k.startsWith('lora_unet_')) { kohya = true; k = k.slice(10); }
    const unKohya = (m: string) => {
      if (!kohya) return m;
      const n = byUnderscore.get(m);
      if (!n) problems.push(`${key}: no UNet Linear layer named like "${m}"`);
      return n ?? null;
    };
    let m: RegExpExecArray | null;
    if ((m = PROCESSOR.exec(k))) {
      formats.add('attn-processor');
      put(`${m[1]}.${m[2] === 'to_out' ? 'to_out.0' : m[2]}`, m[3] as 'down' | 'up', key);
    } else if ((m = PEFT.exec(k))) {
      formats.add('peft');
      put(m[1], m[2] === 'A' ? 'down' : 'up', key);
    } else if ((m = DIFFUSERS.exec(k))) {
      formats.add('diffusers');
      put(m[1], m[2] as 'down' | 'up', key);
    } else if ((m = KOHYA_SUFFIX.exec(k))) {
      formats.add(kohya ? 'kohya' : 'kohya-suffix');
      const mod = unKohya(m[1]);
      if (mod) put(mod, m[2] as 'down' | 'up', key);
    } else if ((m = ALPHA.exec(k))) {
      const mod = unKohya(m[1]);
      if (mod) entry(mod).alphaKey = key;
    } else {
      problems.push(`${key}: not a LoRA key this loader knows (…lora_A.weight / lora_B.weight, …lora.down/up.weight, …processor.to_q_lora.down/up.weight, lora_unet_…lora_down/up.weight, ….alpha)`);
    }
  }
  // Alpha from diffusers' metadata (LoraConfig fields, prefixed "unet.").
  let metaAlpha: number | null = null;
  let alphaPattern: Record<string, number> = {};
  const metaText = metadata[LORA_ADAPTER_METADATA_KEY];
  if (metaText !== undefined) {
    try {
      const meta = JSON.parse(metaText) as Record<string, unknown>;
      const a = meta['unet.lora_alpha'] ?? meta.lora_alpha;
      if (typeof a === 'number') metaAlpha = a;
      const ap = meta['unet.alpha_pattern'] ?? meta.alpha_pattern;
      if (ap && typeof ap === 'object') alphaPattern = ap as Record<string, number>;
    } catch (e) {
      problems.push(`metadata "${LORA_ADAPTER_METADATA_KEY}" is not valid JSON: ${(e as Error).message}`);
    }
  }
  const patternAlpha = (module: string): number | null => {
    for (const [p, v] of Object.entries(alphaPattern)) if (module === p || module.endsWith(`.${p}`)) return v;
    return null;
  };
  const modules: LoRAModulePlan[] = [];
  for (const [module, e] of pairs) {
    if (!e.down && !e.up) { problems.push(`${e.alphaKey}: an alpha without LoRA matrices for ${module}`); continue; }
    if (!e.down || !e.up) { problems.push(`${module}: ${e.down ? `down/lora_A "${e.down}" without its up/lora_B` : `up/lora_B "${e.up}" without its down/lora_A`} matrix`); continue; }
    const d = keys.get(e.down)!, u = keys.get(e.up)!;
    if (d.length !== 2 || u.length !== 2) { problems.push(`${module}: down ${fmt(d)} and up ${fmt(u)} must be matrices (conv LoRA is not supported)`); continue; }
    if (d[0] !== u[1]) { problems.push(`${module}: rank mismatch: down "${e.down}" ${fmt(d)} has rank ${d[0]}, up "${e.up}" ${fmt(u)} has rank ${u[1]}`); continue; }
    const alpha = e.alphaKey ? null : patternAlpha(module) ?? metaAlpha;
    modules.push({ module, downKey: e.down, upKey: e.up, rank: d[0], inFeatures: d[1], outFeatures: u[0], alphaKey: e.alphaKey ?? null, alpha });
  }
  if (problems.length) throw new Error(`LoRA file ${file}: ${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
  if (!modules.length) throw new Error(`LoRA file ${file}: no UNet LoRA weights in it`);
  const format: LoRAFileFormat = formats.size === 1 ? [...formats][0] : formats.has('peft') ? 'peft' : [...formats][0];
  return { file, format, modules };
}

export interface LoadedUnetLoRA {
  file: string;
  format: LoRAFileFormat;
  /** Per adapted module: its rank and alpha (scale = alpha / rank). */
  modules: { module: string; rank: number; alpha: number }[];
  /** How many adapters were injected (0 when the UNet already had them all). */
  injected: number;
}

/** The standard target set (injectUnetLoRA's): to_q/k/v/out.0 of attn1/attn2 in every block. */
const STANDARD_TARGET = /\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/;

/**
 * Loads a LoRA file (any format above) into the UNet: adapters already on the UNet must have the
 * file's rank and alpha; modules without one get one injected (rank and alpha from the file), and
 * the UNet is frozen so that only adapters train. Everything is checked before anything changes:
 * one Error lists every problem.
 */
export async function loadUnetLoRA(unet: UNet2DConditionModel, path: string): Promise<LoadedUnetLoRA> {
  const file = resolveFile(path);
  if (!existsSync(file)) throw new Error(`loadUnetLoRA: ${file} not found`);
  const header = await readSafetensorsHeader(file);
  const linears = new Map<string, Linear>();
  for (const [n, m] of unet.namedModules()) {
    if (m instanceof Linear && !/\.lora_[AB]$/.test(n)) linears.set(n, m);
  }
  const plan = planUnetLoRA(file, new Map([...header.tensors].map(([k, e]) => [k, e.shape])), header.metadata, linears.keys());
  // Alphas stored as tensors (kohya, older diffusers network alphas).
  for (const m of plan.modules) {
    if (!m.alphaKey) continue;
    const { data } = await readSafetensorsHost(file, m.alphaKey);
    if (data.length !== 1) throw new Error(`loadUnetLoRA ${file}: "${m.alphaKey}" must be a single number, has ${data.length}`);
    m.alpha = Number(data[0]);
  }
  const problems: string[] = [];
  for (const m of plan.modules) {
    const alpha = m.alpha ?? m.rank;
    if (!Number.isFinite(alpha)) problems.push(`${m.module}: alpha ${alpha} is not finite`);
    const lin = linears.get(m.module);
    if (!lin) { problems.push(`${m.module}: the UNet has no Linear layer of that name`); continue; }
    if (lin.inFeatures !== m.inFeatures || lin.outFeatures !== m.outFeatures) {
      problems.push(`${m.module}: the file's adapter maps ${m.inFeatures} → ${m.outFeatures} features (down ${fmt([m.rank, m.inFeatures])}, up ${fmt([m.outFeatures, m.rank])}), the layer ${lin.inFeatures} → ${lin.outFeatures}`);
    }
    if (lin instanceof LoRALinear) {
      if (lin.merged) problems.push(`${m.module}: the UNet's adapter is merged into its base weight; unmerge() before loading`);
      else if (lin.rank !== m.rank) problems.push(`${m.module}: rank mismatch: the file's adapter has rank ${m.rank}, the UNet's ${lin.rank}`);
      else if (lin.alpha !== alpha) problems.push(`${m.module}: alpha mismatch: the file says ${alpha}, the UNet's adapter has ${lin.alpha}`);
    } else if (lin.weight.dtype !== 'f32') {
      problems.push(`${m.module}: the UNet is ${lin.weight.dtype}; LoRA needs an f32 base model`);
    }
  }
  if (problems.length) throw new Error(`loadUnetLoRA ${file}: ${problems.length} problem(s):\n  ${problems.join('\n  ')}`);

  // Inject where needed, grouped by (rank, alpha): injectUnetLoRA when the file is the standard set.
  const todo = plan.modules.filter((m) => !(linears.get(m.module) instanceof LoRALinear));
  if (todo.length) {
    const groups = new Map<string, { rank: number; alpha: number; names: Set<string> }>();
    for (const m of todo) {
      const alpha = m.alpha ?? m.rank;
      const g = groups.get(`${m.rank}/${alpha}`) ?? { rank: m.rank, alpha, names: new Set<string>() };
      g.names.add(m.module);
      groups.set(`${m.rank}/${alpha}`, g);
    }
    const standard = [...linears.keys()].filter((n) => STANDARD_TARGET.test(n));
    const g0 = [...groups.values()][0];
    if (groups.size === 1 && standard.length === g0.names.size && standard.every((n) => g0.names.has(n))) {
      injectUnetLoRA(unet, { rank: g0.rank, alpha: g0.alpha });
    } else {
      unet.freeze();
      for (const g of groups.values()) injectLoRA(unet, (name) => g.names.has(name), { rank: g.rank, alpha: g.alpha });
    }
  }
  const layers = unetLoRALayers(unet);
  const wanted = new Set(plan.modules.flatMap((m) => [m.downKey, m.upKey]));
  const loaded = await loadSafetensors(file, { device: unet.device, dtype: 'f32', filter: (k) => wanted.has(k) });
  try {
    noGrad(() => {
      for (const m of plan.modules) {
        const l = layers.get(m.module)!;
        copyInto(l.loraA, loaded.get(m.downKey)!, `loadUnetLoRA "${m.downKey}"`);
        copyInto(l.loraB, loaded.get(m.upKey)!, `loadUnetLoRA "${m.upKey}"`);
      }
    });
  } finally {
    for (const t of loaded.values()) t.dispose();
  }
  return {
    file, format: plan.format, injected: todo.length,
    modules: plan.modules.map((m) => ({ module: m.module, rank: m.rank, alpha: m.alpha ?? m.rank })),
  };
}
