/// <reference lib="dom" />
// The demo page's reward worker (bundled into dist/web/reward-worker.js with jpeg-js): scores a
// batch of images for JPEG compressibility off the page's main thread, with the same code Node's
// reward workers run (rewards/jpeg.ts through rewards/score.ts, so a failing sample comes back
// dropped with its reason rather than failing the batch).

import { jpegCompressibility } from '../rewards/jpeg.js';
import { scoreBatch } from '../rewards/score.js';
import type { ImageBatch, Metadata } from '../rewards/types.js';

export interface RewardRequest { id: number; images: ImageBatch; prompts: string[]; metadata: Metadata[] }

const scope = self as unknown as { onmessage: (e: MessageEvent<RewardRequest>) => void; postMessage(m: unknown): void };
scope.onmessage = async (e) => {
  const { id, images, prompts, metadata } = e.data;
  try {
    scope.postMessage({ id, ...(await scoreBatch(jpegCompressibility, images, prompts, metadata)) });
  } catch (err) {
    scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
};
