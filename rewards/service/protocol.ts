// The reward service's wire format (documented in rewards/service/README.md), shared by the
// client and the reference server: JSON over HTTP, images as base64 JPEG (quality 80 by default,
// as the DDPO paper's client sends them).
//
//   GET  /health → 200 {"status": "ok", "protocol": 1, "reward": LABEL}
//   POST /score    {"id": ID, "images": [B64 JPEG, ...], "prompts": [...], "metadata": [{...}, ...]}
//              → 200 {"id": ID, "rewards": [number | null, ...], "details": {...}}
//
// `id` names one batch of samples; a client sends the same id on every retry of that batch, and
// a server answers a repeated id from its cache instead of scoring (and counting) it again.

import jpeg from 'jpeg-js';
import { toRGBA } from '../jpeg.js';
import { ImageBatch, Metadata } from '../types.js';

export const PROTOCOL_VERSION = 1;

export interface ScoreRequest {
  id: string;
  images: string[];
  prompts: string[];
  metadata: Metadata[];
}

export interface ScoreResponse {
  id: string;
  /** One per image; null: the server could not score that sample (it is dropped and counted). */
  rewards: (number | null)[];
  /** Free-form; the reference server sends {dropped: [{index, reason}], seconds, cached}. */
  details?: Record<string, unknown>;
}

export interface HealthResponse {
  status: 'ok';
  protocol: number;
  reward?: string;
}

/** Image i of a batch as a base64 JPEG (quantised as the JPEG rewards: x·255 rounded half to even, clamped). */
export function encodeImage(images: ImageBatch, i: number, quality: number): string {
  const data = jpeg.encode({ data: toRGBA(images, i), width: images.w, height: images.h }, quality).data;
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64');
}

/** Decodes base64 JPEGs into batches, one per distinct size (with each image's index in the request). */
export function decodeImages(b64: readonly string[]): { batch: ImageBatch; indices: number[] }[] {
  const groups = new Map<string, { h: number; w: number; indices: number[]; rgba: Uint8Array[] }>();
  b64.forEach((s, i) => {
    if (typeof s !== 'string' || !s.length) throw new Error(`images[${i}]: not a base64 string`);
    let img: { width: number; height: number; data: Uint8Array };
    try {
      img = jpeg.decode(Buffer.from(s, 'base64'), { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 1024 });
    } catch (e) {
      throw new Error(`images[${i}]: not a JPEG (${e instanceof Error ? e.message : String(e)})`);
    }
    const key = `${img.height}x${img.width}`;
    const g = groups.get(key) ?? { h: img.height, w: img.width, indices: [], rgba: [] };
    g.indices.push(i);
    g.rgba.push(img.data);
    groups.set(key, g);
  });
  return [...groups.values()].map(({ h, w, indices, rgba }) => {
    const plane = h * w;
    const data = new Float32Array(indices.length * 3 * plane);
    rgba.forEach((px, k) => {
      for (let p = 0; p < plane; p++) for (let c = 0; c < 3; c++) data[(k * 3 + c) * plane + p] = px[p * 4 + c] / 255;
    });
    return { batch: { data, n: indices.length, c: 3, h, w }, indices };
  });
}

const isObject = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** Checks a parsed request body; throws naming the field (the server answers 400 with it). */
export function parseScoreRequest(body: unknown): ScoreRequest {
  if (!isObject(body)) throw new Error('the body is not a JSON object');
  const { id, images, prompts, metadata } = body;
  if (typeof id !== 'string' || !id) throw new Error('"id" must be a non-empty string');
  if (!Array.isArray(images) || !images.every((s) => typeof s === 'string')) throw new Error('"images" must be a list of base64 JPEG strings');
  const n = images.length;
  if (!Array.isArray(prompts) || prompts.length !== n || !prompts.every((p) => typeof p === 'string')) throw new Error(`"prompts" must be a list of ${n} strings (one per image)`);
  const meta = metadata === undefined ? images.map(() => ({})) : metadata;
  if (!Array.isArray(meta) || meta.length !== n || !meta.every(isObject)) throw new Error(`"metadata" must be a list of ${n} objects (one per image)`);
  const extra = Object.keys(body).filter((k) => !['id', 'images', 'prompts', 'metadata'].includes(k));
  if (extra.length) throw new Error(`unknown field(s) ${extra.join(', ')}; a request has id, images, prompts, metadata`);
  return { id, images: images as string[], prompts: prompts as string[], metadata: meta as Metadata[] };
}

/**
 * Checks a response against its request: the same id and one reward (a number, or null for a
 * sample the server dropped) per image. Throws saying what is wrong (the client retries).
 */
export function parseScoreResponse(body: unknown, id: string, n: number): ScoreResponse {
  if (!isObject(body)) throw new Error('the response is not a JSON object');
  if (body.id !== id) throw new Error(`the response is for id ${JSON.stringify(body.id)}, not ${JSON.stringify(id)}`);
  const r = body.rewards;
  if (!Array.isArray(r)) throw new Error('the response has no "rewards" list');
  if (r.length !== n) throw new Error(`${r.length} rewards for ${n} images`);
  if (!r.every((v) => v === null || typeof v === 'number')) throw new Error('"rewards" must hold numbers or null');
  if (body.details !== undefined && !isObject(body.details)) throw new Error('"details" must be an object');
  return { id, rewards: r as (number | null)[], details: body.details as Record<string, unknown> | undefined };
}

/** The reasons a response's details give for dropped samples, by index (the reference server's format). */
export function droppedReasons(details: Record<string, unknown> | undefined): Map<number, string> {
  const out = new Map<number, string>();
  const d = details?.dropped;
  if (Array.isArray(d)) for (const x of d) if (isObject(x) && typeof x.index === 'number' && typeof x.reason === 'string') out.set(x.index, x.reason);
  return out;
}
