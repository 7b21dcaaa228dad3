// Scoring a batch of images with the run's reward: in a RewardPool of worker threads (a spec) or
// in this thread (a function: tests, browsers). A sample whose reward threw or was not finite is
// rescored up to `retries` times, then dropped with its reason (rewards/score.ts).

import { RewardPool, RewardPoolOptions } from '../rewards/pool.js';
import { Dropped, scoreBatch } from '../rewards/score.js';
import { ImageBatch, Metadata, Reward, RewardSpec, sliceBatch } from '../rewards/types.js';

export interface Scored {
  /** One per sample; NaN where dropped. */
  rewards: number[];
  dropped: Dropped[];
}

export class RewardScorer {
  private readonly pool: RewardPool | null;
  private readonly fn: Reward | null;

  constructor(reward: RewardSpec | Reward, private readonly retries: number, poolOptions: RewardPoolOptions = {}) {
    if (typeof reward === 'function') {
      this.fn = reward;
      this.pool = null;
    } else {
      this.fn = null;
      this.pool = new RewardPool(reward, poolOptions);
    }
  }

  /** Resolves once the reward has loaded in every worker (at once for a function). */
  async ready(): Promise<void> {
    if (this.pool) await this.pool.ready();
  }

  private once(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[]): Promise<Scored> {
    if (this.pool) return this.pool.submitDetailed(id, images, prompts, metadata);
    return scoreBatch(this.fn!, images, prompts, metadata);
  }

  /** Scores a batch, rescoring failed samples up to `retries` times. */
  async score(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[]): Promise<Scored> {
    const res = await this.once(id, images, prompts, metadata);
    const rewards = [...res.rewards];
    let dropped = res.dropped;
    const per = images.c * images.h * images.w;
    for (let attempt = 1; attempt <= this.retries && dropped.length; attempt++) {
      const idx = dropped.map((d) => d.index);
      const data = new Float32Array(idx.length * per);
      idx.forEach((i, j) => data.set(sliceBatch(images, i, i + 1).data, j * per));
      const again = await this.once(`${id}/retry${attempt}`, { data, n: idx.length, c: images.c, h: images.h, w: images.w }, idx.map((i) => prompts[i]), idx.map((i) => metadata[i]));
      const still: Dropped[] = [];
      idx.forEach((i, j) => {
        if (Number.isFinite(again.rewards[j])) rewards[i] = again.rewards[j];
        else still.push({ index: i, reason: again.dropped.find((d) => d.index === j)?.reason ?? 'reward failed' });
      });
      dropped = still;
    }
    return { rewards, dropped };
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }
}
