// Worker-thread entry of RewardPool: loads the reward once (workerData.spec), then scores the
// chunks it is sent, one at a time, answering with per-sample rewards and drop reasons.

import { parentPort, workerData } from 'node:worker_threads';
import { loadReward } from './load.js';
import { scoreBatch } from './score.js';
import { ImageBatch, Metadata, Reward, RewardSpec } from './types.js';

export interface ScoreRequest {
  type: 'score';
  taskId: number;
  images: ImageBatch;
  prompts: string[];
  metadata: Metadata[];
  isolate: boolean;
}

export type WorkerReply =
  | { type: 'ready' }
  | { type: 'load-error'; message: string }
  | { type: 'result'; taskId: number; rewards: number[]; dropped: { index: number; reason: string }[] };

const port = parentPort;
if (!port) throw new Error('rewards/worker.js is a worker-thread entry; use RewardPool');

const spec = (workerData as { spec: RewardSpec }).spec;
let reward: Reward | null = null;
let loadError: string | null = null;
const loaded = loadReward(spec).then(
  (r) => { reward = r; port.postMessage({ type: 'ready' } satisfies WorkerReply); },
  (e: unknown) => {
    loadError = `could not load the reward: ${e instanceof Error ? e.message : String(e)}`;
    port.postMessage({ type: 'load-error', message: loadError } satisfies WorkerReply);
  },
);

port.on('message', async (msg: ScoreRequest) => {
  if (msg.type !== 'score') return;
  await loaded;
  let reply: WorkerReply;
  if (!reward) {
    reply = { type: 'result', taskId: msg.taskId, rewards: new Array(msg.images.n).fill(NaN), dropped: Array.from({ length: msg.images.n }, (_, index) => ({ index, reason: loadError ?? 'no reward' })) };
  } else {
    const r = await scoreBatch(reward, msg.images, msg.prompts, msg.metadata, { isolate: msg.isolate });
    reply = { type: 'result', taskId: msg.taskId, ...r };
  }
  port.postMessage(reply);
});
