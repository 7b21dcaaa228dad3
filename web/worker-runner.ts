/// <reference lib="dom" />
// A RewardRunner (rewards/runner-scorer.ts) that scores in a Web Worker: the page's counterpart of
// Node's worker_threads RewardPool. Each batch is posted with an id; the worker answers with the
// rewards and dropped samples (web/reward-worker.ts).

import type { RewardRunner } from '../rewards/runner-scorer.js';
import type { ScoredBatch } from '../rewards/score.js';

export function workerRunner(url: URL | string): { runner: RewardRunner; close(): void } {
  const worker = new Worker(url, { type: 'module' });
  const waiting = new Map<number, { ok: (r: ScoredBatch) => void; fail: (e: Error) => void }>();
  let next = 0;
  worker.onmessage = (e: MessageEvent<ScoredBatch & { id: number; error?: string }>) => {
    const w = waiting.get(e.data.id);
    if (!w) return;
    waiting.delete(e.data.id);
    if (e.data.error) w.fail(new Error(`reward worker: ${e.data.error}`));
    else w.ok({ rewards: e.data.rewards, dropped: e.data.dropped });
  };
  worker.onerror = (e) => {
    for (const w of waiting.values()) w.fail(new Error(`reward worker ${url}: ${e.message || 'failed to load'}`));
    waiting.clear();
  };
  const runner: RewardRunner = (images, prompts, metadata) => new Promise((ok, fail) => {
    const id = next++;
    waiting.set(id, { ok, fail });
    worker.postMessage({ id, images, prompts, metadata });
  });
  return { runner, close: () => worker.terminate() };
}
