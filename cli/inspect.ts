// `ddpo inspect`: parameter names, shapes, dtypes and counts of a diffusers folder or of a named
// config, without loading a single weight.
//
// For a folder, only the safetensors headers are read, and every file is checked against its
// config with the same renaming rules the loaders accept (VAE attention query/key/value/proj_attn
// → to_q/to_k/to_v/to_out.0, possibly 1×1-conv shaped; text-encoder keys with or without
// `text_model.`, the position_ids buffer skipped). Every missing, unexpected or mis-shaped key of
// every part is reported at once, and the exit code is non-zero if there was any.
//
// --json prints { name: shape } for one part (--part), or { unet: {...}, vae: {...},
// text_encoder: {...} } for all: the layout of ../shared/reference/sd_v1_parameter_shapes.json,
// so the output of `ddpo inspect --config sd-v1 --json` can be compared with it directly. Names
// are the current ones (what the model calls them), whatever the file said.
//
// --check-values also reads the data and reports every tensor holding NaN/Inf (cli/check-values.ts);
// it takes a pipeline or component folder, a .safetensors file, or a training checkpoint folder.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsHeader, readSafetensorsHeader } from '../engine/safetensors.js';
import { checkFileValues } from './check-values.js';
import { fmt } from '../engine/shape.js';
import { CONFIG_NAMES, PART_NAMES, PartName, namedConfig } from '../diffusion/configs.js';
import { parseUnetConfig, unetParameterShapes } from '../diffusion/models/unet-config.js';
import { parseVaeConfig, vaeParameterShapes } from '../diffusion/models/vae.js';
import { clipTextParameterShapes, parseClipTextConfig } from '../diffusion/models/clip-text.js';
import { CLIP_CONFIG_NAMES, inspectClipConfig, inspectClipFolder, isClipConfigName } from './inspect-clip.js';
import { compareHeader } from '../diffusion/models/checked-load.js';

/** A CLIPModel / CLIPVisionModelWithProjection folder (its config.json says so). */
function isClipFolder(dir: string): boolean {
  const p = join(dir, 'config.json');
  if (!existsSync(p) || existsSync(join(dir, 'model_index.json'))) return false;
  const c = readJson(p);
  return c.model_type === 'clip' || c.model_type === 'clip_vision_model';
}

export interface ParamInfo {
  /** The current name (what our model and current diffusers/transformers call it). */
  name: string;
  /** The name in the file when it differs (an older spelling). */
  fileName?: string;
  shape: number[];
  /** safetensors dtype (F32, F16, ...) for a file; the dtype a fresh model would have for a config. */
  dtype: string;
}

export interface PartReport {
  /** An SD part, or a CLIP model (cli/inspect-clip.ts): 'clip' (CLIPModel) or 'vision' (CLIPVisionModelWithProjection). */
  part: PartName | 'clip' | 'vision';
  /** The weights file, or `config <name>`. */
  source: string;
  params: ParamInfo[];
  /** Missing, unexpected and mis-shaped keys, config errors: empty when the part is sound. */
  problems: string[];
}

const WEIGHT_FILES: Record<PartName, string[]> = {
  unet: ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'],
  vae: ['diffusion_pytorch_model.safetensors', 'diffusion_pytorch_model.fp16.safetensors'],
  text_encoder: ['model.safetensors', 'model.fp16.safetensors'],
};

const BYTES: Record<string, number> = { F64: 8, I64: 8, U64: 8, F32: 4, I32: 4, U32: 4, f32: 4, i32: 4, u32: 4, F16: 2, BF16: 2, I16: 2, U16: 2, f16: 2, I8: 1, U8: 1, BOOL: 1, F8_E4M3: 1, F8_E5M2: 1 };

const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** The names and shapes a part's config implies (throws the config's own Error when invalid). */
export function expectedShapes(part: PartName, config: Record<string, unknown>): [string, number[]][] {
  switch (part) {
    case 'unet': return unetParameterShapes(parseUnetConfig(config));
    case 'vae': return vaeParameterShapes(parseVaeConfig(config));
    case 'text_encoder': return clipTextParameterShapes(parseClipTextConfig(config, 'text_encoder config'));
  }
}

// ------------------------------------------------------------------ key renaming (as the loaders)

const OLD_VAE_ATTENTION = /^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$/;
const OLD_VAE_NAMES: Record<string, string> = { query: 'to_q', key: 'to_k', value: 'to_v', proj_attn: 'to_out.0' };
const VAE_ATTENTION_WEIGHT = /\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$/;
const CLIP_PREFIX = 'text_model.';
const CLIP_BUFFERS = new Set(['embeddings.position_ids']);

/** The current name of a file key, or null for a buffer the loader skips. */
function currentName(part: PartName, key: string, fileKeys: ReadonlySet<string>): string | null {
  if (part === 'text_encoder') {
    const n = key.startsWith(CLIP_PREFIX) ? key.slice(CLIP_PREFIX.length) : key;
    return CLIP_BUFFERS.has(n) ? null : n;
  }
  if (part === 'vae') {
    const m = OLD_VAE_ATTENTION.exec(key);
    if (m) {
      const target = `${m[1]}.${OLD_VAE_NAMES[m[2]]}.${m[3]}`;
      // Both spellings present: the loader keeps the old one, which is then unexpected.
      if (!fileKeys.has(target)) return target;
    }
  }
  return key;
}

/** Shapes equal, or (VAE attention) a 1×1-conv weight [C, C, 1, 1] for a Linear [C, C]. */
function shapeFits(part: PartName, name: string, got: readonly number[], want: readonly number[]): boolean {
  if (got.join() === want.join()) return true;
  return part === 'vae' && VAE_ATTENTION_WEIGHT.test(name) && got.length === 4 && got[2] === 1 && got[3] === 1 &&
    want.length === 2 && got[0] === want[0] && got[1] === want[1];
}

// ------------------------------------------------------------------ folders and configs

function readJson(path: string): Record<string, unknown> {
  let text: string;
  try { text = readFileSync(path, 'utf8'); } catch (e) { throw new Error(`cannot read ${path}: ${(e as Error).message}`); }
  try { return JSON.parse(text) as Record<string, unknown>; } catch (e) { throw new Error(`${path} is not valid JSON: ${(e as Error).message}`); }
}

/** Which part a component folder holds, from its config.json. */
function partOfConfig(cfg: Record<string, unknown>): PartName | null {
  if (cfg._class_name === 'UNet2DConditionModel') return 'unet';
  if (cfg._class_name === 'AutoencoderKL') return 'vae';
  if (cfg.model_type === 'clip_text_model' || (Array.isArray(cfg.architectures) && cfg.architectures.includes('CLIPTextModel'))) return 'text_encoder';
  return null;
}

/**
 * Fills `report` from a weights header: its parameters (current names, in the model's order) and
 * every missing, unexpected, duplicated, mis-shaped or non-float key. `nameOf` maps a file key to
 * the current name (null: a buffer the loaders skip).
 */
export function checkHeaderInto(report: PartReport, header: SafetensorsHeader, expected: ReadonlyMap<string, number[]>, nameOf: (key: string) => string | null,
  fits: (name: string, got: readonly number[], want: readonly number[]) => boolean = (_n, got, want) => got.join() === want.join()): void {
  const { fileKey, missing, unexpected, bad } = compareHeader(header, expected, nameOf, fits);
  for (const [name, key] of fileKey) {
    const entry = header.tensors.get(key)!;
    report.params.push({ name, ...(name !== key ? { fileName: key } : {}), shape: [...entry.shape], dtype: entry.dtype });
  }
  if (missing.length) report.problems.push(`missing keys (${missing.length}): ${missing.join(', ')}`);
  if (unexpected.length) report.problems.push(`unexpected keys (${unexpected.length}): ${unexpected.join(', ')}`);
  if (bad.length) report.problems.push(`mis-shaped or bad keys (${bad.length}):\n      ${bad.join('\n      ')}`);
  // List in the model's order (the file's is alphabetical or by offset).
  const order = new Map([...expected.keys()].map((k, i) => [k, i]));
  report.params.sort((a, b) => (order.get(a.name) ?? 0) - (order.get(b.name) ?? 0));
}

/** Checks one component folder's weights file against its config from the header alone. */
export async function inspectPartFolder(part: PartName, folder: string): Promise<PartReport> {
  const report: PartReport = { part, source: folder, params: [], problems: [] };
  let expected: Map<string, number[]>;
  try {
    expected = new Map(expectedShapes(part, readJson(join(folder, 'config.json'))));
  } catch (e) {
    report.problems.push(`config: ${(e as Error).message}`);
    return report;
  }
  const file = WEIGHT_FILES[part].map((f) => join(folder, f)).find((p) => existsSync(p));
  if (!file) {
    report.problems.push(`no weights file in ${folder} (looked for ${WEIGHT_FILES[part].join(', ')}; only safetensors are read)`);
    return report;
  }
  report.source = file;
  let header;
  try {
    header = await readSafetensorsHeader(file);
  } catch (e) {
    report.problems.push((e as Error).message);
    return report;
  }
  const fileKeys = new Set(header.tensors.keys());
  checkHeaderInto(report, header, expected, (key) => currentName(part, key, fileKeys), (name, got, want) => shapeFits(part, name, got, want));
  return report;
}

/**
 * A pipeline folder (model_index.json with unet/, vae/, text_encoder/) or one component folder
 * (its config.json says which). `parts` restricts a pipeline folder to some parts.
 */
export async function inspectFolder(dir: string, parts: readonly PartName[] = PART_NAMES): Promise<PartReport[]> {
  if (!existsSync(dir)) throw new Error(`${dir}: no such folder`);
  if (existsSync(join(dir, 'model_index.json'))) {
    const out: PartReport[] = [];
    for (const part of parts) {
      const folder = join(dir, part);
      if (!existsSync(folder)) out.push({ part, source: folder, params: [], problems: [`missing component folder ${folder}`] });
      else out.push(await inspectPartFolder(part, folder));
    }
    return out;
  }
  if (existsSync(join(dir, 'config.json'))) {
    const part = partOfConfig(readJson(join(dir, 'config.json')));
    if (!part) throw new Error(`${dir}/config.json: not a UNet2DConditionModel, AutoencoderKL or CLIPTextModel config`);
    if (!parts.includes(part)) throw new Error(`${dir} holds the ${part}, not ${parts.join('/')}`);
    return [await inspectPartFolder(part, dir)];
  }
  throw new Error(`${dir}: not a diffusers pipeline folder (no model_index.json) nor a component folder (no config.json)`);
}

/** The parameters a named config implies (f32, as createPipelineFromConfig builds them). */
export function inspectConfig(name: string, parts: readonly PartName[] = PART_NAMES): PartReport[] {
  const cfg = namedConfig(name);
  return parts.map((part) => ({
    part,
    source: `config ${name}`,
    params: expectedShapes(part, cfg[part]).map(([n, shape]) => ({ name: n, shape, dtype: 'f32' })),
    problems: [],
  }));
}

// ------------------------------------------------------------------ output

/** 'down_blocks.1.resnets.0.conv1.weight' → 'down_blocks.1'; 'encoder.layers.3…' → 'encoder'. */
export function topLevelModule(name: string): string {
  const p = name.split('.');
  return /^\d+$/.test(p[1] ?? '') ? `${p[0]}.${p[1]}` : p[0];
}

export interface GroupCount { module: string; tensors: number; parameters: number }

export function groupCounts(params: readonly ParamInfo[]): GroupCount[] {
  const groups = new Map<string, GroupCount>();
  for (const p of params) {
    const m = topLevelModule(p.name);
    const g = groups.get(m) ?? { module: m, tensors: 0, parameters: 0 };
    g.tensors++;
    g.parameters += numel(p.shape);
    groups.set(m, g);
  }
  return [...groups.values()];
}

export const countParameters = (params: readonly ParamInfo[]) => params.reduce((s, p) => s + numel(p.shape), 0);

const human = (n: number) => (n >= 1e9 ? `${(n / 1e9).toFixed(2)} G` : n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : `${n}`);
const bytesOf = (p: ParamInfo) => numel(p.shape) * (BYTES[p.dtype] ?? 4);
const human2 = (b: number) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(1)} MiB` : `${(b / 1024).toFixed(1)} KiB`);

/** The human-readable listing: per part every parameter (unless summary), then per-module and total counts, then problems. */
export function formatReports(reports: readonly PartReport[], opts: { summary?: boolean } = {}): string {
  const lines: string[] = [];
  let total = 0, totalBytes = 0;
  for (const r of reports) {
    const n = countParameters(r.params), bytes = r.params.reduce((s, p) => s + bytesOf(p), 0);
    total += n;
    totalBytes += bytes;
    const dtypes = [...new Set(r.params.map((p) => p.dtype))].join('/') || '-';
    lines.push(`== ${r.part}  (${r.source})  ${r.params.length} tensors, ${n.toLocaleString('en-US')} parameters (${human(n)}), ${dtypes}, ${human2(bytes)}`);
    if (!opts.summary) {
      const w = Math.max(10, ...r.params.map((p) => p.name.length));
      for (const p of r.params) {
        lines.push(`  ${p.name.padEnd(w)}  ${fmt(p.shape).padEnd(20)} ${p.dtype.padEnd(4)} ${String(numel(p.shape)).padStart(10)}${p.fileName ? `   (file: ${p.fileName})` : ''}`);
      }
      lines.push('');
    }
    lines.push('  by top-level module:');
    const groups = groupCounts(r.params);
    const w = Math.max(8, ...groups.map((g) => g.module.length));
    for (const g of groups) lines.push(`    ${g.module.padEnd(w)}  ${String(g.tensors).padStart(4)} tensors  ${g.parameters.toLocaleString('en-US').padStart(13)} parameters (${human(g.parameters)})`);
    for (const p of r.problems) lines.push(`  PROBLEM: ${p}`);
    lines.push('');
  }
  if (reports.length > 1) lines.push(`total: ${total.toLocaleString('en-US')} parameters (${human(total)}), ${human2(totalBytes)}`);
  return lines.join('\n');
}

/** { name: shape } for one part, { part: { name: shape } } for several. */
export function reportsToJson(reports: readonly PartReport[], single: boolean): Record<string, unknown> {
  const one = (r: PartReport) => Object.fromEntries(r.params.map((p) => [p.name, p.shape]));
  if (single && reports.length === 1) return one(reports[0]);
  return Object.fromEntries(reports.map((r) => [r.part, one(r)]));
}

export interface InspectCliOptions {
  config?: string;
  part?: string;
  json?: boolean;
  summary?: boolean;
  /** Also scan every weight for NaN/Inf (reads the data, not only the headers). */
  checkValues?: boolean;
}

/** The safetensors files a folder's weights are in: a pipeline's or component's weight files, a run checkpoint's, or the file itself. */
function weightFiles(path: string, reports: readonly PartReport[]): string[] {
  if (path.endsWith('.safetensors')) return [path];
  if (existsSync(join(path, 'trainer.json'))) return ['weights.safetensors', 'optimizer.safetensors'].map((f) => join(path, f)).filter((f) => existsSync(f));
  return reports.map((r) => r.source).filter((f) => f.endsWith('.safetensors') && existsSync(f));
}

/** --check-values: scans the files, prints what holds NaN/Inf; returns the number of such tensors. */
async function reportValues(files: readonly string[], out: (s: string) => void, err: (s: string) => void): Promise<number> {
  let bad = 0;
  for (const f of files) {
    const r = await checkFileValues(f);
    bad += r.bad.length;
    if (!r.bad.length) out(`${f}: all ${r.scanned} float tensors finite`);
    for (const t of r.bad) err(`${f}: "${t.name}" (${t.dtype}, ${t.size} values) holds ${t.nonFinite} non-finite values (${t.nan} NaN, ${t.nonFinite - t.nan} ±Inf)`);
  }
  return bad;
}

/** The command: prints the listing (or JSON) and returns the exit code (1 if any problem). */
export async function inspectCommand(dir: string | undefined, o: InspectCliOptions, out: (s: string) => void = console.log, err: (s: string) => void = console.error): Promise<number> {
  if (o.part !== undefined && !(PART_NAMES as readonly string[]).includes(o.part)) throw new Error(`--part ${o.part}: expected one of ${PART_NAMES.join(', ')}`);
  const parts = o.part ? [o.part as PartName] : PART_NAMES;
  if (dir && o.config) throw new Error('give a folder or --config NAME, not both');
  if (!dir && !o.config) throw new Error(`give a diffusers folder or --config ${[...CONFIG_NAMES, ...CLIP_CONFIG_NAMES].join('|')}`);
  if (o.checkValues && o.config) throw new Error('--check-values reads weights: give a folder (or a .safetensors file, or a checkpoint folder), not --config');
  if (o.checkValues && dir && (dir.endsWith('.safetensors') || existsSync(join(dir, 'trainer.json')))) {
    // A single file or a training checkpoint: values only (there is no config to check shapes against).
    if (!existsSync(dir)) throw new Error(`${dir}: no such file`);
    const bad = await reportValues(weightFiles(dir, []), out, err);
    if (bad) err(`${dir}: ${bad} tensor(s) hold NaN/Inf`);
    return bad ? 1 : 0;
  }
  const clip = o.config ? isClipConfigName(o.config) : isClipFolder(dir!);
  if (clip && o.part) throw new Error('--part applies to Stable Diffusion folders and configs, not to CLIP');
  const reports = clip ? (o.config ? inspectClipConfig(o.config) : [await inspectClipFolder(dir!)])
    : o.config ? inspectConfig(o.config, parts) : await inspectFolder(dir!, parts);
  const problems = reports.flatMap((r) => r.problems.map((p) => `${r.part}: ${p}`));
  if (o.json) out(JSON.stringify(reportsToJson(reports, !!o.part)));
  else out(formatReports(reports, { summary: o.summary }));
  const bad = o.checkValues ? await reportValues(weightFiles(dir!, reports), out, err) : 0;
  if (problems.length) {
    err(`${dir}: ${problems.length} problem(s) — the weights do not fit their configs:\n  ${problems.join('\n  ')}`);
    return 1;
  }
  if (bad) {
    err(`${dir}: ${bad} tensor(s) hold NaN/Inf; sampling with these weights gives NaN latents (ddpo sample reports the step), and training cannot recover them`);
    return 1;
  }
  return 0;
}
