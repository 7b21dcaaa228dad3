// The built-in rewards that take options — `{"aesthetic": {...}}`, `{"clip_score": {...}}`,
// `{"service": {...}}`, `{"judge": {...}}` in the trainer's thread, `{"jpeg_compressibility": {...}}`
// and `{"jpeg_incompressibility": {...}}` on the reward workers — their options with defaults,
// and checks that name every bad key before anything loads. Kept free of model code so that the
// config layer (and worker threads) can import it cheaply.

import type { RewardSpec } from './types.js';

export interface AestheticOptions {
  /** A CLIP folder: openai/clip-vit-large-patch14 (CLIPModel) or a CLIPVisionModelWithProjection. */
  clip: string;
  /** The LAION head's safetensors file (layers.{0,2,4,6,7}). */
  head: string;
  /** CLIP's storage dtype on the device (the head is always f32). */
  dtype?: 'f32' | 'f16';
  /** Images per CLIP forward. */
  batch_size?: number;
  /** Free the weights after each epoch's scoring and reload them for the next (saves their memory during training). */
  offload?: boolean;
}

export interface ClipScoreOptions {
  /** A CLIPModel folder (both towers), e.g. openai/clip-vit-large-patch14; its tokenizer files are used. */
  clip: string;
  /** Multiplies the cosine: 1 (default) gives cos ∈ [−1, 1]; 100 gives torchmetrics' CLIPScore per sample. */
  scale?: number;
  dtype?: 'f32' | 'f16';
  batch_size?: number;
  offload?: boolean;
  /** Tokenizer folder (vocab.json, merges.txt) when the CLIP folder has none. */
  tokenizer?: string;
}

export interface ServiceOptions {
  /** The server's base URL, e.g. http://127.0.0.1:8765 (POST {url}/score, GET {url}/health). */
  url: string;
  /** Images per request. */
  batch_size?: number;
  /** Requests in flight at once. */
  concurrency?: number;
  /** One request's limit (the connection is dropped after it and the request retried). */
  timeout_s?: number;
  /** Attempts after the first, per request. */
  retries?: number;
  /** Backoff before retry k: uniform in [0, min(max_backoff_s, backoff_s·2^k)] ("full jitter"). */
  backoff_s?: number;
  max_backoff_s?: number;
  /** JPEG quality of the images sent (the paper's client: 80). */
  jpeg_quality?: number;
  /** The start-up health check's limit. */
  health_timeout_s?: number;
}

export interface JpegRewardOptions {
  /** Encode each image with its longer side resized to this many pixels (Pillow's bicubic); default: as sampled. */
  size?: number;
  /** JPEG quality, 1–100 (default 95, the reference's). */
  quality?: number;
}

export interface JudgeRewardOptions {
  /** A judge folder written by `ddpo judge` (config.json, model.safetensors). */
  model: string;
  /** Images per forward. */
  batch_size?: number;
}

export const SERVICE_DEFAULTS: Required<Omit<ServiceOptions, 'url'>> = {
  batch_size: 16, concurrency: 2, timeout_s: 120, retries: 3, backoff_s: 0.5, max_backoff_s: 10, jpeg_quality: 80, health_timeout_s: 10,
};

type Check = (v: Record<string, unknown>, key: string, problems: string[]) => void;

const show = (v: unknown) => JSON.stringify(v) ?? String(v);

function known(v: Record<string, unknown>, keys: string[], key: string, problems: string[]): void {
  const bad = Object.keys(v).filter((k) => !keys.includes(k));
  if (bad.length) problems.push(`${key}: unknown key(s) ${bad.join(', ')}; valid: ${keys.join(', ')}`);
}
function str(v: Record<string, unknown>, k: string, key: string, problems: string[], required: boolean): void {
  if (v[k] === undefined) { if (required) problems.push(`${key}.${k}: missing (a path)`); return; }
  if (typeof v[k] !== 'string' || !v[k]) problems.push(`${key}.${k}: expected a non-empty string, got ${show(v[k])}`);
}
function int(v: Record<string, unknown>, k: string, key: string, problems: string[], min: number): void {
  if (v[k] === undefined) return;
  if (typeof v[k] !== 'number' || !Number.isInteger(v[k]) || (v[k] as number) < min) problems.push(`${key}.${k}: expected an integer ≥ ${min}, got ${show(v[k])}`);
}
function pos(v: Record<string, unknown>, k: string, key: string, problems: string[]): void {
  if (v[k] === undefined) return;
  if (typeof v[k] !== 'number' || !((v[k] as number) > 0) || !Number.isFinite(v[k])) problems.push(`${key}.${k}: expected a positive number, got ${show(v[k])}`);
}
function common(v: Record<string, unknown>, key: string, problems: string[]): void {
  if (v.dtype !== undefined && v.dtype !== 'f32' && v.dtype !== 'f16') problems.push(`${key}.dtype: expected 'f32' or 'f16', got ${show(v.dtype)}`);
  int(v, 'batch_size', key, problems, 1);
  if (v.offload !== undefined && typeof v.offload !== 'boolean') problems.push(`${key}.offload: expected true or false, got ${show(v.offload)}`);
}

const CHECKS: Record<string, Check> = {
  aesthetic: (v, key, problems) => {
    known(v, ['clip', 'head', 'dtype', 'batch_size', 'offload'], key, problems);
    str(v, 'clip', key, problems, true);
    str(v, 'head', key, problems, true);
    common(v, key, problems);
  },
  clip_score: (v, key, problems) => {
    known(v, ['clip', 'scale', 'dtype', 'batch_size', 'offload', 'tokenizer'], key, problems);
    str(v, 'clip', key, problems, true);
    str(v, 'tokenizer', key, problems, false);
    pos(v, 'scale', key, problems);
    common(v, key, problems);
  },
  jpeg_compressibility: jpegChecks,
  jpeg_incompressibility: jpegChecks,
  judge: (v, key, problems) => {
    known(v, ['model', 'batch_size'], key, problems);
    str(v, 'model', key, problems, true);
    int(v, 'batch_size', key, problems, 1);
  },
  service: (v, key, problems) => {
    known(v, ['url', ...Object.keys(SERVICE_DEFAULTS)], key, problems);
    if (typeof v.url !== 'string' || !/^https?:\/\/[^/]+/.test(v.url)) problems.push(`${key}.url: expected an http:// or https:// URL, got ${show(v.url)}`);
    for (const k of ['batch_size', 'concurrency', 'jpeg_quality']) int(v, k, key, problems, 1);
    int(v, 'retries', key, problems, 0);
    for (const k of ['timeout_s', 'backoff_s', 'max_backoff_s', 'health_timeout_s']) pos(v, k, key, problems);
    if (typeof v.jpeg_quality === 'number' && v.jpeg_quality > 100) problems.push(`${key}.jpeg_quality: at most 100, got ${v.jpeg_quality}`);
  },
};

function jpegChecks(v: Record<string, unknown>, key: string, problems: string[]): void {
  known(v, ['size', 'quality'], key, problems);
  int(v, 'size', key, problems, 8);
  int(v, 'quality', key, problems, 1);
  if (typeof v.size === 'number' && v.size > 2048) problems.push(`${key}.size: at most 2048 pixels, got ${v.size}`);
  if (typeof v.quality === 'number' && v.quality > 100) problems.push(`${key}.quality: at most 100, got ${v.quality}`);
}

// [module, factory, thread]: the JPEG rewards are plain CPU work and stay on the worker threads.
const MODULES: Record<string, [string, string, ('main' | 'worker')?]> = {
  jpeg_compressibility: ['./jpeg.js', 'createJpegCompressibility', 'worker'],
  jpeg_incompressibility: ['./jpeg.js', 'createJpegIncompressibility', 'worker'],
  aesthetic: ['./aesthetic.js', 'createAestheticReward'],
  clip_score: ['./clip-score.js', 'createClipScoreReward'],
  service: ['./service/client.js', 'createServiceReward'],
  // The judge is trained and defined in pretrain/ (a layer above this one); it is imported by URL
  // when a run asks for it, so nothing here depends on pretrain/ otherwise.
  judge: ['../pretrain/judge-reward.js', 'createJudgeReward'],
};

/** Names of the built-in rewards configured as {name: options}. */
export const HOSTED_REWARD_NAMES: readonly string[] = Object.keys(CHECKS);

/** The hosted reward an object names ({name: options} with a single known key), or null. */
export function hostedRewardName(v: unknown): string | null {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
  const keys = Object.keys(v);
  return keys.length === 1 && keys[0] in CHECKS ? keys[0] : null;
}

/** Problems with `{name: options}` at config key `key` (none: it is valid). */
export function checkHostedReward(name: string, options: unknown, key: string): string[] {
  const problems: string[] = [];
  const k = `${key}.${name}`;
  if (!options || typeof options !== 'object' || Array.isArray(options)) return [`${k}: expected an object of options, got ${show(options)}`];
  CHECKS[name](options as Record<string, unknown>, k, problems);
  return problems;
}

/** The spec of a built-in with options: its factory, called with the options (in the trainer's thread unless MODULES says 'worker'). */
export function hostedRewardSpec(name: string, options: unknown): RewardSpec {
  const m = MODULES[name];
  if (!m) throw new Error(`hostedRewardSpec: unknown reward "${name}"; known: ${HOSTED_REWARD_NAMES.join(', ')}`);
  const problems = checkHostedReward(name, options, 'reward');
  if (problems.length) throw new Error(problems.join('; '));
  return { module: new URL(m[0], import.meta.url).href, export: m[1], args: [options], thread: m[2] ?? 'main' };
}
