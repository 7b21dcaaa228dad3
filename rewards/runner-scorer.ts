// A reward scorer over an injected runner: anything that scores one batch (a Web Worker in a
// browser page, a function in this thread). It retries dropped samples like Node's RewardScorer
// (rewards/retries.ts, the same code) and fits the trainer core's EpochScorer
// (rl/trainer-core.ts). No Node here; Node's runner is the worker_threads RewardPool inside
// RewardScorer.

import type { Scored } from './scorer.js';
import type { ScoredBatch } from './score.js';
import { withRetries } from './retries.js';
import type { ImageBatch, Metadata } from './types.js';

/** Scores one batch; reports a failing sample as dropped (NaN reward) rather than throwing. */
export type RewardRunner = (images: ImageBatch, prompts: string[], metadata: Metadata[]) => Promise<ScoredBatch>;

export class RunnerScorer {
  constructor(private readonly runner: RewardRunner, private readonly retries = 2) {}

  score(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[]): Promise<Scored> {
    return withRetries((_id, im, p, m) => this.runner(im, p, m), this.retries, id, images, prompts, metadata);
  }

  /** Nothing to release between epochs. */
  async endEpoch(): Promise<void> {}

  takeStats(): Record<string, number> {
    return {};
  }
}
