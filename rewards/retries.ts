// Rescoring the samples a reward dropped, within a batch's deadline: shared by Node's
// RewardScorer (rewards/scorer.ts) and the runner scorer a browser page uses
// (rewards/runner-scorer.ts). No Node here.

import type { Dropped } from './score.js';
import type { Scored } from './scorer.js';
import { ImageBatch, Metadata, sliceBatch } from './types.js';

/** When a batch's scoring must end, and what its unscored samples are dropped with. */
export interface Deadline {
  /** performance.now() time in ms (Infinity: none). */
  at: number;
  reason: string;
}

export const NO_DEADLINE: Deadline = { at: Infinity, reason: '' };


/** Images `idx` of a batch, copied into one new batch. */
function pick(images: ImageBatch, idx: readonly number[]): ImageBatch {
  const per = images.c * images.h * images.w;
  const data = new Float32Array(idx.length * per);
  idx.forEach((i, j) => data.set(sliceBatch(images, i, i + 1).data, j * per));
  return { data, n: idx.length, c: images.c, h: images.h, w: images.w };
}

/** Scores with `once`, then rescores the dropped samples up to `retries` times, within the deadline (timed-out samples are not retried). */
export async function withRetries(once: (id: string, images: ImageBatch, prompts: string[], metadata: Metadata[]) => Promise<Scored>, retries: number, id: string, images: ImageBatch, prompts: string[], metadata: Metadata[], deadline: Deadline = NO_DEADLINE): Promise<Scored> {
  const res = await once(id, images, prompts, metadata);
  const rewards = [...res.rewards];
  let dropped = res.dropped;
  const retryable = () => dropped.filter((d) => d.reason !== deadline.reason);
  for (let attempt = 1; attempt <= retries && retryable().length && performance.now() < deadline.at; attempt++) {
    const idx = retryable().map((d) => d.index);
    const again = await once(`${id}/retry${attempt}`, pick(images, idx), idx.map((i) => prompts[i]), idx.map((i) => metadata[i]));
    const still: Dropped[] = dropped.filter((d) => d.reason === deadline.reason);
    idx.forEach((i, j) => {
      if (Number.isFinite(again.rewards[j])) rewards[i] = again.rewards[j];
      else still.push({ index: i, reason: again.dropped.find((d) => d.index === j)?.reason ?? 'reward failed' });
    });
    dropped = still.sort((a, b) => a.index - b.index);
  }
  return { rewards, dropped };
}

