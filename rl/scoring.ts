// Scoring a batch of images with the run's reward: in a RewardPool of worker threads (a spec) or
// in this thread (a function: tests, browsers). A sample whose reward threw or was not finite is
// rescored up to `retries` times, then dropped with its reason (rewards/score.ts).
//
// The timeout bounds a batch's whole scoring: the wait for a worker, the first attempt and every
// retry together. What is not scored by then is dropped as timed out (a timed-out sample is not
// retried), and a worker still busy with it is replaced.

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

  /** `timeoutMs`: the whole scoring of one batch (retries included); undefined: no limit. */
  constructor(reward: RewardSpec | Reward, private readonly retries: number, private readonly timeoutMs?: number, poolOptions: RewardPoolOptions = {}) {
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

  private timeoutReason(): string {
    return `reward timed out: scoring the batch took longer than reward_options.timeout_s = ${(this.timeoutMs ?? 0) / 1000} s (which covers waiting for a worker and every retry)`;
  }

  private async once(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[], deadline: number): Promise<Scored> {
    if (this.pool) return this.pool.submitDetailed(id, images, prompts, metadata, Number.isFinite(deadline) ? { deadline, timeoutReason: this.timeoutReason() } : {});
    const scoring = scoreBatch(this.fn!, images, prompts, metadata);
    if (!Number.isFinite(deadline)) return scoring;
    // An in-thread reward cannot be interrupted; past the deadline its result is ignored.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<Scored>((resolve) => {
      timer = setTimeout(() => resolve({ rewards: prompts.map(() => NaN), dropped: prompts.map((_, index) => ({ index, reason: this.timeoutReason() })) }), Math.max(0, deadline - performance.now()));
    });
    try {
      return await Promise.race([scoring, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Scores a batch, rescoring failed samples up to `retries` times within the timeout. */
  async score(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[]): Promise<Scored> {
    const deadline = this.timeoutMs === undefined ? Infinity : performance.now() + this.timeoutMs;
    const res = await this.once(id, images, prompts, metadata, deadline);
    const rewards = [...res.rewards];
    let dropped = res.dropped;
    const per = images.c * images.h * images.w;
    const timedOut = this.timeoutReason();
    for (let attempt = 1; attempt <= this.retries && dropped.some((d) => d.reason !== timedOut) && performance.now() < deadline; attempt++) {
      const retry = dropped.filter((d) => d.reason !== timedOut);
      const idx = retry.map((d) => d.index);
      const data = new Float32Array(idx.length * per);
      idx.forEach((i, j) => data.set(sliceBatch(images, i, i + 1).data, j * per));
      const again = await this.once(`${id}/retry${attempt}`, { data, n: idx.length, c: images.c, h: images.h, w: images.w }, idx.map((i) => prompts[i]), idx.map((i) => metadata[i]), deadline);
      const still: Dropped[] = dropped.filter((d) => d.reason === timedOut);
      idx.forEach((i, j) => {
        if (Number.isFinite(again.rewards[j])) rewards[i] = again.rewards[j];
        else still.push({ index: i, reason: again.dropped.find((d) => d.index === j)?.reason ?? 'reward failed' });
      });
      dropped = still.sort((a, b) => a.index - b.index);
    }
    return { rewards, dropped };
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }
}
