// Weighted sums of rewards, e.g. aesthetic + 0.1·compressibility.

import { ImageBatch, Metadata, Reward } from './types.js';

export interface WeightedReward {
  reward: Reward;
  weight: number;
}

/**
 * Σ weight·reward per sample. A sample any part scores NaN is NaN (dropped) in the sum; parts
 * of weight 0 are not run at all. The parts run concurrently (each may be async).
 */
export function combineRewards(parts: readonly WeightedReward[]): Reward {
  if (!parts.length) throw new Error('combineRewards: no rewards given');
  parts.forEach(({ reward, weight }, k) => {
    if (typeof reward !== 'function') throw new Error(`combineRewards: part ${k} is not a function`);
    if (!Number.isFinite(weight)) throw new Error(`combineRewards: part ${k} has weight ${weight}`);
  });
  const live = parts.filter((p) => p.weight !== 0);
  return async (images: ImageBatch, prompts: string[], metadata: Metadata[]) => {
    const results = await Promise.all(live.map((p) => p.reward(images, prompts, metadata)));
    const total = new Array<number>(images.n).fill(0);
    results.forEach((r, k) => {
      if (!r || r.length !== images.n) throw new Error(`combineRewards: part ${parts.indexOf(live[k])} returned ${r?.length} values for ${images.n} images`);
      for (let i = 0; i < images.n; i++) total[i] += live[k].weight * (typeof r[i] === 'number' ? r[i] : NaN);
    });
    return total;
  };
}
