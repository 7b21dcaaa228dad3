// Scoring batches with a run's reward, wherever its parts run: specs in worker threads (a
// RewardPool each), main-thread specs in this thread on the training device (GPU models,
// service clients; rewards/hosted.ts), functions in this thread (tests, browsers). A combine
// spec is scored part by part, so every part's values are reported (per-epoch means in the
// logs), a failing part is retried alone, and parts in different places work together.
//
// Failures: a sample whose part threw or was not finite is rescored up to `retries` times (by
// that part only; a part that retries on its own, as the service client does, is not rescored
// again), then dropped with its reason. A dropped part drops the sample.
//
// Timeout: `timeoutMs` bounds a batch's whole scoring, the wait for a worker, the first attempt
// and every retry together. What is not scored by then is dropped as timed out (and not
// retried); a worker still busy with it is replaced.

import { RewardPool, RewardPoolOptions } from './pool.js';
import { HostedReward, MainThreadSpec, RewardContext, isMainThreadSpec, loadHostedReward } from './hosted.js';
import { Dropped, scoreBatch } from './score.js';
import { Deadline, NO_DEADLINE, withRetries } from './retries.js';
import { ImageBatch, Metadata, Reward, RewardSpec } from './types.js';

export interface PartScores {
  name: string;
  weight: number;
  /** One per sample; NaN where this part dropped it. */
  rewards: number[];
}

export interface Scored {
  /** One per sample; NaN where dropped. */
  rewards: number[];
  dropped: Dropped[];
  /** For a combine reward: each part's own values (before weighting). */
  parts?: PartScores[];
}

export interface ScorerOptions {
  /** Rescoring rounds for dropped samples (default 2). */
  retries?: number;
  /** Worker pools (a combine reward's worker parts share `workers` between them). */
  pool?: RewardPoolOptions;
  /** Given to main-thread factories: the training device. */
  context?: RewardContext;
  /** The whole scoring of one batch, retries included (default: no limit). */
  timeoutMs?: number;
}

interface Unit {
  ready(): Promise<void>;
  score(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[], deadline: Deadline): Promise<Scored>;
  release(): Promise<void>;
  close(): Promise<void>;
  stats(into: Record<string, number>, prefix: string): void;
}

/** `p`, or at the deadline every sample dropped as timed out (an in-thread reward cannot be interrupted; its late result is ignored). */
async function racing(p: Promise<Scored>, n: number, deadline: Deadline): Promise<Scored> {
  if (!Number.isFinite(deadline.at)) return p;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<Scored>((resolve) => {
    timer = setTimeout(() => resolve({ rewards: new Array(n).fill(NaN), dropped: Array.from({ length: n }, (_, index) => ({ index, reason: deadline.reason })) }), Math.max(0, deadline.at - performance.now()));
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

class PoolUnit implements Unit {
  private readonly pool: RewardPool;
  constructor(spec: RewardSpec, private readonly retries: number, opts: RewardPoolOptions) {
    this.pool = new RewardPool(spec, opts);
  }
  ready() { return this.pool.ready(); }
  score(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[], deadline: Deadline) {
    const opts = Number.isFinite(deadline.at) ? { deadline: deadline.at, timeoutReason: deadline.reason } : {};
    return withRetries((i, im, p, m) => this.pool.submitDetailed(i, im, p, m, opts), this.retries, id, images, prompts, metadata, deadline);
  }
  async release() {}
  close() { return this.pool.close(); }
  stats() {}
}

/** A reward in this thread: a function, or a hosted reward built by a main-thread factory in ready(). */
class LocalUnit implements Unit {
  private hosted: HostedReward | null;
  constructor(private readonly source: Reward | { spec: MainThreadSpec; context: RewardContext; label: string }, private readonly retries: number) {
    this.hosted = typeof source === 'function' ? { score: source } : null;
  }
  async ready() {
    if (this.hosted || typeof this.source === 'function') return;
    try {
      this.hosted = await loadHostedReward(this.source.spec, this.source.context);
    } catch (e) {
      throw new Error(`reward ${this.source.label}: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  score(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[], deadline: Deadline) {
    const h = this.hosted;
    if (!h) return Promise.reject(new Error('RewardScorer: score() before ready()'));
    const once = h.scoreDetailed
      ? (_i: string, im: ImageBatch, p: string[], m: Metadata[]) => h.scoreDetailed!(im, p, m).catch((e: unknown): Scored => ({
        rewards: new Array(im.n).fill(NaN),
        dropped: Array.from({ length: im.n }, (_, index) => ({ index, reason: `reward threw: ${e instanceof Error ? e.message : String(e)}` })),
      }))
      : (_i: string, im: ImageBatch, p: string[], m: Metadata[]) => scoreBatch(h.score, im, p, m);
    const timed = (i: string, im: ImageBatch, p: string[], m: Metadata[]) => racing(once(i, im, p, m), im.n, deadline);
    return withRetries(timed, h.retriesInternally ? 0 : this.retries, id, images, prompts, metadata, deadline);
  }
  async release() { await this.hosted?.release?.(); }
  async close() {
    const h = this.hosted;
    this.hosted = null;
    await h?.close?.();
  }
  stats(into: Record<string, number>, prefix: string) {
    for (const [k, v] of Object.entries(this.hosted?.takeStats?.() ?? {})) into[`${prefix}${k}`] = v;
  }
}

class CombineUnit implements Unit {
  constructor(private readonly parts: { unit: Unit; weight: number; name: string }[]) {}
  async ready() { for (const p of this.parts) await p.unit.ready(); }
  async score(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[], deadline: Deadline): Promise<Scored> {
    const n = images.n;
    const live = this.parts.filter((p) => p.weight !== 0);
    const results = await Promise.all(live.map((p) => p.unit.score(id, images, prompts, metadata, deadline)));
    const rewards = new Array<number>(n).fill(0);
    const reasons = new Map<number, string[]>();
    results.forEach((r, k) => {
      for (let i = 0; i < n; i++) rewards[i] += live[k].weight * r.rewards[i];
      for (const d of r.dropped) {
        if (!reasons.has(d.index)) reasons.set(d.index, []);
        reasons.get(d.index)!.push(`${live[k].name}: ${d.reason}`);
      }
    });
    const dropped: Dropped[] = [];
    for (let i = 0; i < n; i++) {
      if (Number.isFinite(rewards[i])) continue;
      rewards[i] = NaN;
      dropped.push({ index: i, reason: reasons.get(i)?.join('; ') ?? 'a part was not finite' });
    }
    return { rewards, dropped, parts: results.map((r, k) => ({ name: live[k].name, weight: live[k].weight, rewards: r.rewards })) };
  }
  async release() { for (const p of this.parts) await p.unit.release(); }
  async close() { await Promise.all(this.parts.map((p) => p.unit.close())); }
  stats(into: Record<string, number>, prefix: string) { for (const p of this.parts) p.unit.stats(into, `${prefix}${p.name}.`); }
}

/** A short label of a spec for logs and errors. */
export function specLabel(spec: RewardSpec): string {
  if ('combine' in spec) return spec.combine.map((p) => `${p.weight}·${p.name ?? specLabel(p.spec)}`).join(' + ');
  return spec.export;
}

/** Worker threads in the spec (how many pools it needs). */
function workerParts(spec: RewardSpec): number {
  if ('combine' in spec) return spec.combine.reduce((n, p) => n + workerParts(p.spec), 0);
  return isMainThreadSpec(spec) ? 0 : 1;
}

function build(spec: RewardSpec, o: Required<Pick<ScorerOptions, 'retries'>> & ScorerOptions, pools: number): Unit {
  if ('combine' in spec) {
    if (!spec.combine.length) throw new Error('RewardScorer: a combine reward needs at least one part');
    return new CombineUnit(spec.combine.map((p, k) => {
      if (!Number.isFinite(p.weight)) throw new Error(`RewardScorer: part ${k} (${p.name ?? specLabel(p.spec)}) has weight ${p.weight}`);
      return { unit: build(p.spec, o, pools), weight: p.weight, name: p.name ?? `${k}:${specLabel(p.spec)}` };
    }));
  }
  if (isMainThreadSpec(spec)) return new LocalUnit({ spec, context: o.context ?? {}, label: specLabel(spec) }, o.retries);
  const pool = { ...o.pool };
  // Worker parts share the thread budget instead of multiplying it.
  if (pools > 1 && pool.workers !== undefined) pool.workers = Math.max(1, Math.floor(pool.workers / pools));
  else if (pools > 1) pool.workers = 1;
  return new PoolUnit(spec, o.retries, pool);
}

export class RewardScorer {
  private readonly root: Unit;
  private readonly timeoutMs?: number;

  /**
   * `reward`: a spec (worker parts start their threads now; main-thread parts load in ready()),
   * or a function run in this thread. `retries` may be given as a number (the older signature).
   */
  constructor(reward: RewardSpec | Reward, retriesOrOptions: number | ScorerOptions = {}, poolOptions: RewardPoolOptions = {}) {
    const o = typeof retriesOrOptions === 'number' ? { retries: retriesOrOptions, pool: poolOptions } : { ...retriesOrOptions, retries: retriesOrOptions.retries ?? 2 };
    this.root = typeof reward === 'function' ? new LocalUnit(reward, o.retries) : build(reward, o, workerParts(reward));
    this.timeoutMs = typeof retriesOrOptions === 'number' ? undefined : retriesOrOptions.timeoutMs;
  }

  /**
   * Resolves once every part can score: workers have loaded their reward, main-thread factories
   * have built theirs (models loaded, services answering). Throws naming the part otherwise.
   */
  ready(): Promise<void> {
    return this.root.ready();
  }

  /** Scores a batch (retrying dropped samples, all within timeoutMs); never throws for a reward's failure. */
  score(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[]): Promise<Scored> {
    const t = this.timeoutMs;
    const deadline: Deadline = t === undefined ? NO_DEADLINE : {
      at: performance.now() + t,
      reason: `reward timed out: scoring the batch took longer than reward_options.timeout_s = ${t / 1000} s (which covers waiting for a worker and every retry)`,
    };
    return this.root.score(id, images, prompts, metadata, deadline);
  }

  /** Lets main-thread rewards free what they hold until the next epoch's scoring. */
  endEpoch(): Promise<void> {
    return this.root.release();
  }

  /** Counters the parts kept since the last call (e.g. a service's requests and retries), by part. */
  takeStats(): Record<string, number> {
    const out: Record<string, number> = {};
    this.root.stats(out, '');
    return out;
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}

export { concatParts } from './parts.js';
