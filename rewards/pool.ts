// RewardPool: scores batches on worker threads so that reward computation (JPEG encoding, a
// reward model) overlaps the next sampling batch on the GPU. A batch is cut into chunks spread
// over the workers; each sample's result goes back to its index whatever order chunks finish in.
// Failures are per sample: a reward that throws or returns NaN, a worker that crashes or a chunk
// that times out drops those samples (NaN with a reason) and the pool carries on (replacing a
// dead worker).

import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { resolveSpec } from './load.js';
import { Dropped, ScoredBatch } from './score.js';
import { ImageBatch, Metadata, RewardSpec, checkBatch } from './types.js';
import type { ScoreRequest, WorkerReply } from './worker.js';

export interface RewardPoolOptions {
  /** Worker threads (default min(2, available cores)). */
  workers?: number;
  /** Samples per chunk (default: the batch split evenly over the workers). */
  chunkSize?: number;
  /** A chunk running longer than this is abandoned: its worker is terminated and replaced. */
  timeoutMs?: number;
  /** On a throwing reward, rescore the chunk's samples one by one to drop only the bad ones (default true). */
  isolate?: boolean;
  /** Worker replacements allowed over the pool's life before it gives up on crashes (default 16). */
  maxRestarts?: number;
}

export interface PoolResult extends ScoredBatch {
  batchId: string | number;
}

interface Pending {
  batchId: string | number;
  /** Fires at the batch's deadline (submitDetailed's `deadline`). */
  timer: ReturnType<typeof setTimeout> | null;
  rewards: number[];
  dropped: Dropped[];
  remaining: number;
  resolve: (r: PoolResult) => void;
  reject: (e: Error) => void;
}

interface Task {
  id: number;
  batch: Pending;
  offset: number;
  n: number;
  images: ImageBatch;
  prompts: string[];
  metadata: Metadata[];
}

interface Slot {
  worker: Worker;
  task: Task | null;
  timer: ReturnType<typeof setTimeout> | null;
  /** Why we are terminating it (timeout), reported for its task. */
  killReason: string | null;
}

const WORKER_URL = new URL('./worker.js', import.meta.url);

export class RewardPool {
  private readonly spec: RewardSpec;
  private readonly slots: Slot[] = [];
  private readonly queue: Task[] = [];
  private readonly pending = new Map<string | number, Pending>();
  private readonly opts: Required<Omit<RewardPoolOptions, 'chunkSize' | 'timeoutMs'>> & Pick<RewardPoolOptions, 'chunkSize' | 'timeoutMs'>;
  private nextTask = 1;
  private restarts = 0;
  private closed = false;
  private readonly loaded: Promise<void>;
  private settleLoad!: (err: string | null) => void;

  constructor(spec: RewardSpec, options: RewardPoolOptions = {}) {
    const workers = options.workers ?? Math.min(2, availableParallelism());
    if (!Number.isInteger(workers) || workers < 1) throw new Error(`RewardPool: workers = ${workers}, expected an integer >= 1`);
    if (options.chunkSize !== undefined && !(Number.isInteger(options.chunkSize) && options.chunkSize >= 1)) throw new Error(`RewardPool: chunkSize = ${options.chunkSize}, expected an integer >= 1`);
    this.opts = { workers, isolate: options.isolate ?? true, maxRestarts: options.maxRestarts ?? 16, chunkSize: options.chunkSize, timeoutMs: options.timeoutMs };
    this.spec = resolveSpec(spec);
    this.loaded = new Promise<void>((resolve, reject) => {
      let done = false;
      this.settleLoad = (err) => {
        if (done) return;
        done = true;
        if (err) reject(new Error(`RewardPool: ${err}`)); else resolve();
      };
    });
    this.loaded.catch(() => {}); // reported through ready() and per-sample drop reasons
    for (let i = 0; i < workers; i++) this.slots.push(this.spawn());
  }

  /** Resolves once a worker has loaded the reward; rejects if loading failed (bad path or export). */
  ready(): Promise<void> {
    return this.loaded;
  }

  /** Number of batches submitted and not yet finished. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** Scores a batch; resolves to one reward per sample, NaN for dropped samples. */
  async submit(batchId: string | number, images: ImageBatch, prompts: string[], metadata?: Metadata[]): Promise<number[]> {
    return (await this.submitDetailed(batchId, images, prompts, metadata)).rewards;
  }

  /**
   * As submit, with the reasons samples were dropped. `deadline` (a performance.now() time in ms)
   * bounds the whole batch, the wait for a worker included: at that time its chunks still queued
   * are dropped and the workers still scoring it are replaced, their samples dropped with
   * `timeoutReason`.
   */
  submitDetailed(batchId: string | number, images: ImageBatch, prompts: string[], metadata?: Metadata[], opts: { deadline?: number; timeoutReason?: string } = {}): Promise<PoolResult> {
    const meta = metadata ?? prompts.map(() => ({}));
    if (this.closed) return Promise.reject(new Error(`RewardPool.submit(${batchId}): the pool is closed`));
    if (this.pending.has(batchId)) return Promise.reject(new Error(`RewardPool.submit: batch ${batchId} is already being scored`));
    try {
      checkBatch(`RewardPool.submit(${batchId})`, images, prompts, meta);
    } catch (e) {
      return Promise.reject(e);
    }
    const n = images.n;
    return new Promise<PoolResult>((resolve, reject) => {
      const batch: Pending = { batchId, timer: null, rewards: new Array(n).fill(NaN), dropped: [], remaining: 0, resolve, reject };
      if (n === 0) { resolve({ batchId, rewards: [], dropped: [] }); return; }
      this.pending.set(batchId, batch);
      if (opts.deadline !== undefined) {
        const reason = opts.timeoutReason ?? 'reward timed out';
        batch.timer = setTimeout(() => this.expire(batch, reason), Math.max(0, opts.deadline - performance.now()));
      }
      const chunk = this.opts.chunkSize ?? Math.ceil(n / this.slots.length);
      const per = images.c * images.h * images.w;
      for (let offset = 0; offset < n; offset += chunk) {
        const m = Math.min(chunk, n - offset);
        batch.remaining++;
        this.queue.push({
          id: this.nextTask++, batch, offset, n: m,
          // A copy: the caller may reuse its buffer while we score; the copy is transferred.
          images: { data: images.data.slice(offset * per, (offset + m) * per), n: m, c: images.c, h: images.h, w: images.w },
          prompts: prompts.slice(offset, offset + m),
          metadata: meta.slice(offset, offset + m),
        });
      }
      this.pump();
    });
  }

  /** Terminates the workers; batches still being scored are rejected. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new Error('RewardPool closed before the batch was scored');
    for (const b of this.pending.values()) { if (b.timer) clearTimeout(b.timer); b.reject(err); }
    this.pending.clear();
    this.queue.length = 0;
    this.settleLoad('closed before the reward loaded');
    await Promise.all(this.slots.map((s) => { if (s.timer) clearTimeout(s.timer); return s.worker.terminate(); }));
  }

  // ------------------------------------------------------------------ internals

  private spawn(): Slot {
    const worker = new Worker(WORKER_URL, { workerData: { spec: this.spec } });
    const slot: Slot = { worker, task: null, timer: null, killReason: null };
    worker.on('message', (msg: WorkerReply) => this.onMessage(slot, msg));
    // An uncaught error ends the worker; 'exit' follows and does the accounting.
    worker.on('error', (e) => { slot.killReason ??= `worker crashed: ${e instanceof Error ? e.message : String(e)}`; });
    worker.on('exit', (code) => this.onExit(slot, code));
    return slot;
  }

  private onMessage(slot: Slot, msg: WorkerReply): void {
    if (msg.type === 'ready') { this.settleLoad(null); return; }
    if (msg.type === 'load-error') { this.settleLoad(msg.message); return; }
    const task = slot.task;
    if (!task || task.id !== msg.taskId) return; // a late answer for a task we gave up on
    this.release(slot);
    this.finish(task, msg.rewards, msg.dropped);
    this.pump();
  }

  private onExit(slot: Slot, code: number): void {
    const task = slot.task;
    this.release(slot);
    if (this.closed) return;
    const reason = slot.killReason ?? `worker exited with code ${code}`;
    const i = this.slots.indexOf(slot);
    if (task) this.dropTask(task, reason);
    if (i >= 0) {
      if (this.restarts < this.opts.maxRestarts) {
        this.restarts++;
        this.slots[i] = this.spawn();
      } else {
        this.slots.splice(i, 1);
        if (!this.slots.length) {
          this.settleLoad(`every worker died (last: ${reason})`);
          for (const t of this.queue.splice(0)) this.dropTask(t, `no workers left after ${this.restarts} restarts (last: ${reason})`);
        }
      }
    }
    this.pump();
  }

  private release(slot: Slot): void {
    if (slot.timer) clearTimeout(slot.timer);
    slot.timer = null;
    slot.task = null;
  }

  private pump(): void {
    if (!this.slots.length) {
      for (const t of this.queue.splice(0)) this.dropTask(t, `no workers left after ${this.restarts} restarts`);
      return;
    }
    for (const slot of this.slots) {
      if (slot.task || !this.queue.length || this.closed) continue;
      const task = this.queue.shift()!;
      slot.task = task;
      slot.killReason = null;
      const req: ScoreRequest = { type: 'score', taskId: task.id, images: task.images, prompts: task.prompts, metadata: task.metadata, isolate: this.opts.isolate };
      try {
        slot.worker.postMessage(req, [task.images.data.buffer as ArrayBuffer]);
      } catch (e) {
        // Typically metadata that cannot be cloned to another thread.
        this.release(slot);
        this.dropTask(task, `could not send the chunk to a worker: ${e instanceof Error ? e.message : String(e)}`);
        continue;
      }
      const ms = this.opts.timeoutMs;
      if (ms !== undefined) {
        slot.timer = setTimeout(() => {
          slot.killReason = `reward timed out after ${ms} ms`;
          void slot.worker.terminate();
        }, ms);
      }
    }
  }

  /** A batch's deadline passed: drop its queued chunks, replace the workers still scoring it. */
  private expire(batch: Pending, reason: string): void {
    batch.timer = null;
    if (this.pending.get(batch.batchId) !== batch) return;
    for (let i = this.queue.length - 1; i >= 0; i--) {
      if (this.queue[i].batch === batch) this.dropTask(this.queue.splice(i, 1)[0], reason);
    }
    for (const slot of this.slots) {
      if (slot.task?.batch !== batch) continue;
      slot.killReason = reason;
      void slot.worker.terminate(); // 'exit' drops the task and spawns a replacement
    }
  }

  private dropTask(task: Task, reason: string): void {
    this.finish(task, new Array(task.n).fill(NaN), Array.from({ length: task.n }, (_, index) => ({ index, reason })));
  }

  private finish(task: Task, rewards: number[], dropped: Dropped[]): void {
    const b = task.batch;
    if (this.pending.get(b.batchId) !== b) return;
    for (let i = 0; i < task.n; i++) b.rewards[task.offset + i] = rewards[i];
    for (const d of dropped) b.dropped.push({ index: task.offset + d.index, reason: d.reason });
    if (--b.remaining === 0) {
      this.pending.delete(b.batchId);
      if (b.timer) clearTimeout(b.timer);
      b.dropped.sort((x, y) => x.index - y.index);
      b.resolve({ batchId: b.batchId, rewards: b.rewards, dropped: b.dropped });
    }
  }
}
