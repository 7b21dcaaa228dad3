// Rewards for testing the reward machinery (RewardPool ordering and failure handling) without a
// real model. Each sample's score is its metadata's `value` (else its index in the chunk), after
// a random delay, so results come back out of order; prompts trigger failures:
// "throw" throws, "nan" returns NaN, "crash" kills the worker thread, "hang" never answers.

import { ImageBatch, Metadata, Reward } from './types.js';

export interface DebugRewardOptions {
  /** Each call waits a random 0..maxDelayMs milliseconds (default 20). */
  maxDelayMs?: number;
}

export function makeDebugReward(opts: DebugRewardOptions = {}): Reward {
  const maxDelay = opts.maxDelayMs ?? 20;
  return async (images: ImageBatch, prompts: string[], metadata: Metadata[]) => {
    await new Promise((r) => setTimeout(r, Math.random() * maxDelay));
    if (prompts.includes('crash')) process.exit(3); // in a worker thread this ends only the thread
    if (prompts.includes('hang')) await new Promise(() => {});
    if (prompts.includes('throw')) throw new Error('debug reward asked to throw');
    return prompts.map((p, i) => (p === 'nan' ? NaN : typeof metadata[i]?.value === 'number' ? (metadata[i].value as number) : i));
    void images;
  };
}
