// Running a reward without letting one bad sample stop training: a reward that throws, returns
// the wrong number of values, or gives NaN/±Infinity for a sample has that sample reported as
// dropped (NaN with a reason); the other samples keep their scores.

import { ImageBatch, Metadata, Reward, checkBatch, sliceBatch } from './types.js';

export interface Dropped {
  /** Index of the sample in the batch that was scored. */
  index: number;
  reason: string;
}

export interface ScoredBatch {
  /** One value per sample; NaN where the sample was dropped. */
  rewards: number[];
  dropped: Dropped[];
}

export interface ScoreOptions {
  /**
   * When the reward throws for a batch of several samples, score each sample alone to find the
   * ones that fail (default true). Costs n extra calls, but only on failure.
   */
  isolate?: boolean;
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Scores a batch with `reward`; never throws for a reward's failure (only for a malformed batch). */
export async function scoreBatch(reward: Reward, images: ImageBatch, prompts: string[], metadata: Metadata[], opts: ScoreOptions = {}): Promise<ScoredBatch> {
  checkBatch('scoreBatch', images, prompts, metadata);
  const n = images.n;
  const all = (reason: string): ScoredBatch => ({ rewards: new Array(n).fill(NaN), dropped: Array.from({ length: n }, (_, index) => ({ index, reason })) });
  let values: unknown;
  try {
    values = await reward(images, prompts, metadata);
  } catch (e) {
    if ((opts.isolate ?? true) && n > 1) {
      const out: ScoredBatch = { rewards: [], dropped: [] };
      for (let i = 0; i < n; i++) {
        const one = await scoreBatch(reward, sliceBatch(images, i, i + 1), prompts.slice(i, i + 1), metadata.slice(i, i + 1), { isolate: false });
        out.rewards.push(one.rewards[0]);
        for (const d of one.dropped) out.dropped.push({ index: i, reason: d.reason });
      }
      return out;
    }
    return all(`reward threw: ${message(e)}`);
  }
  const arr = values as ArrayLike<unknown> | null;
  if (!arr || typeof arr !== 'object' || typeof arr.length !== 'number') return all(`reward returned ${typeof values}, not an array of ${n} numbers`);
  if (arr.length !== n) return all(`reward returned ${arr.length} values for ${n} images`);
  const out: ScoredBatch = { rewards: [], dropped: [] };
  for (let i = 0; i < n; i++) {
    const v = arr[i];
    if (typeof v === 'number' && Number.isFinite(v)) {
      out.rewards.push(v);
    } else {
      out.rewards.push(NaN);
      out.dropped.push({ index: i, reason: typeof v === 'number' ? `reward returned ${v}` : `reward returned ${typeof v}, not a number` });
    }
  }
  return out;
}
