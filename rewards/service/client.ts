// The trainer's client of a reward service (protocol: rewards/service/README.md). It runs in the
// trainer's thread (JPEG encoding on worker threads), so its requests are in flight while the
// next sampling batch runs on the GPU.
//
// - Batching: a scored batch is sent as requests of `batch_size` images, at most `concurrency`
//   in flight at once across all batches.
// - Timeouts: each attempt has `timeout_s`; past it the connection is dropped (so a late answer
//   is never read) and the request retried.
// - Retries: 5xx, 408, 429, connection failures, timeouts and malformed answers (not JSON, another
//   id, the wrong number of rewards) are retried up to `retries` times, waiting
//   uniform(0, min(max_backoff_s, backoff_s·2^(k−1))) before retry k ("full jitter"). Other 4xx
//   mean the request itself is wrong: not retried.
// - Request ids: every attempt of a request carries the same id, and each request's result is
//   taken once (attempts are sequential and a response must echo its id), so a retried batch is
//   never counted twice; the reference server also answers a repeated id from its cache.
// - Failure: when a request's attempts are used up, its samples are dropped with the last error
//   as the reason, and counted like any reward failure (reward_options.max_dropped_fraction).
// - Start-up: createServiceReward checks GET /health first, so an unreachable service is an
//   Error naming its URL before sampling starts.

import { randomUUID } from 'node:crypto';
import { Dropped, ScoredBatch } from '../score.js';
import { ImageBatch, Metadata, checkBatch, sliceBatch } from '../types.js';
import type { HostedReward, RewardContext } from '../hosted.js';
import { SERVICE_DEFAULTS, ServiceOptions, checkHostedReward } from '../hosted-options.js';
import { JpegEncoder } from './encoder.js';
import { HealthResponse, PROTOCOL_VERSION, ScoreRequest, droppedReasons, encodeImage, parseScoreResponse } from './protocol.js';

export interface ServiceClientOptions extends ServiceOptions {
  /** Jitter source in [0, 1) (default Math.random; tests pass their own). */
  random?: () => number;
  /** Request ids are PREFIX-1, PREFIX-2, ... (default: the process id and a random tag). */
  idPrefix?: string;
  /** JPEG encoder threads (default min(2, cores); 0 encodes on this thread). */
  encoderWorkers?: number;
}

/** A failed attempt; `retry` false when retrying cannot help (a 4xx other than 408/429). */
class AttemptError extends Error {
  constructor(message: string, readonly retry = true) { super(message); }
}

/** Counters since the last takeStats(). */
const ZERO = { requests: 0, attempts: 0, retries: 0, timeouts: 0, failed_requests: 0, dropped_samples: 0 };

/** A counting semaphore: at most `limit` holders. */
class Limit {
  private active = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async run<T>(f: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>((r) => this.waiting.push(r));
    this.active++;
    try { return await f(); } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

/** What fetch's errors mean, in a line (its TypeError says only "fetch failed"; the cause says why). */
function describeFetchError(e: unknown): string {
  const err = e as { message?: string; cause?: { code?: string; message?: string } };
  const cause = err?.cause;
  if (cause) return `${cause.code ?? ''}${cause.code && cause.message ? ': ' : ''}${cause.message ?? ''}`.trim() || String(e);
  return err?.message ?? String(e);
}

export class ServiceClient {
  readonly url: string;
  private readonly o: Required<Omit<ServiceOptions, 'url'>>;
  private readonly random: () => number;
  private readonly idPrefix: string;
  private readonly limit: Limit;
  private readonly encoder: JpegEncoder | null;
  private counter = 0;
  private counts = { ...ZERO };

  constructor(options: ServiceClientOptions) {
    // The programmatic options (random, idPrefix, encoderWorkers) are not config keys.
    const { random, idPrefix, encoderWorkers, ...config } = options;
    void random; void idPrefix; void encoderWorkers;
    const problems = checkHostedReward('service', config, 'reward');
    if (problems.length) throw new Error(problems.join('; '));
    this.url = options.url.replace(/\/+$/, '');
    this.o = { ...SERVICE_DEFAULTS, ...Object.fromEntries(Object.entries(options).filter(([k, v]) => k in SERVICE_DEFAULTS && v !== undefined)) };
    this.random = options.random ?? Math.random;
    this.idPrefix = options.idPrefix ?? `${process.pid}-${randomUUID().slice(0, 8)}`;
    this.limit = new Limit(this.o.concurrency);
    this.encoder = options.encoderWorkers === 0 ? null : new JpegEncoder(options.encoderWorkers);
  }

  /** GET /health; throws naming the URL when the service is unreachable or not speaking the protocol. */
  async health(): Promise<HealthResponse> {
    const where = `reward service ${this.url}`;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), this.o.health_timeout_s * 1000);
    try {
      const res = await fetch(`${this.url}/health`, { signal: ac.signal });
      const text = await res.text();
      if (res.status !== 200) throw new Error(`${where}: GET /health answered HTTP ${res.status} (${text.slice(0, 200)})`);
      let body: HealthResponse;
      try { body = JSON.parse(text) as HealthResponse; } catch { throw new Error(`${where}: GET /health did not answer JSON (${text.slice(0, 80)})`); }
      if (body?.status !== 'ok') throw new Error(`${where}: GET /health says ${JSON.stringify(body).slice(0, 200)}`);
      if (body.protocol !== PROTOCOL_VERSION) throw new Error(`${where}: speaks protocol ${body.protocol}, this client ${PROTOCOL_VERSION}`);
      return body;
    } catch (e) {
      if (ac.signal.aborted) throw new Error(`${where}: GET /health did not answer within ${this.o.health_timeout_s} s`);
      if ((e as Error).message?.startsWith(where)) throw e;
      throw new Error(`${where}: not reachable (${describeFetchError(e)}); start it (e.g. ddpo reward-server --reward NAME --port P) or fix reward.service.url`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Scores a batch: one reward per sample, NaN (with a reason) for the samples that could not be scored. */
  async scoreDetailed(images: ImageBatch, prompts: string[], metadata?: Metadata[]): Promise<ScoredBatch> {
    const meta = metadata ?? prompts.map(() => ({}));
    checkBatch('service reward', images, prompts, meta);
    const n = images.n;
    const rewards = new Array<number>(n).fill(NaN);
    const dropped: Dropped[] = [];
    const jobs: Promise<void>[] = [];
    for (let from = 0; from < n; from += this.o.batch_size) {
      const to = Math.min(n, from + this.o.batch_size);
      jobs.push(this.limit.run(async () => {
        const id = `${this.idPrefix}-${++this.counter}`;
        this.counts.requests++;
        try {
          const chunk = sliceBatch(images, from, to);
          const b64 = this.encoder ? await this.encoder.encode(chunk, this.o.jpeg_quality) : Array.from({ length: chunk.n }, (_, i) => encodeImage(chunk, i, this.o.jpeg_quality));
          const req: ScoreRequest = { id, images: b64, prompts: prompts.slice(from, to), metadata: meta.slice(from, to) };
          const res = await this.request(id, JSON.stringify(req), to - from);
          const why = droppedReasons(res.details);
          res.rewards.forEach((v, k) => {
            if (typeof v === 'number' && Number.isFinite(v)) rewards[from + k] = v;
            else dropped.push({ index: from + k, reason: `service dropped it: ${why.get(k) ?? 'reward null'}` });
          });
        } catch (e) {
          this.counts.failed_requests++;
          for (let i = from; i < to; i++) dropped.push({ index: i, reason: `service request ${id}: ${(e as Error).message}` });
        }
      }));
    }
    await Promise.all(jobs);
    dropped.sort((a, b) => a.index - b.index);
    this.counts.dropped_samples += dropped.length;
    return { rewards, dropped };
  }

  /** One request: attempts until one succeeds, retrying what may succeed later, with backoff and jitter. */
  private async request(id: string, body: string, n: number) {
    let last: AttemptError | null = null;
    for (let attempt = 0; attempt <= this.o.retries; attempt++) {
      if (attempt > 0) {
        this.counts.retries++;
        const cap = Math.min(this.o.max_backoff_s, this.o.backoff_s * 2 ** (attempt - 1));
        await new Promise((r) => setTimeout(r, this.random() * cap * 1000));
      }
      try {
        return await this.attempt(id, body, n);
      } catch (e) {
        last = e instanceof AttemptError ? e : new AttemptError(String(e));
        if (!last.retry) break;
      }
    }
    throw new Error(`${last!.message} (after ${this.o.retries} retries)`);
  }

  private async attempt(id: string, body: string, n: number) {
    this.counts.attempts++;
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(), this.o.timeout_s * 1000);
    try {
      const res = await fetch(`${this.url}/score`, { method: 'POST', body, headers: { 'content-type': 'application/json' }, signal: ac.signal });
      const text = await res.text();
      if (res.status !== 200) {
        const retry = res.status >= 500 || res.status === 408 || res.status === 429;
        throw new AttemptError(`HTTP ${res.status}${text ? `: ${text.slice(0, 200)}` : ''}`, retry);
      }
      let json: unknown;
      try { json = JSON.parse(text); } catch { throw new AttemptError(`the answer is not JSON (${JSON.stringify(text.slice(0, 60))}…)`); }
      try { return parseScoreResponse(json, id, n); } catch (e) { throw new AttemptError(`malformed answer: ${(e as Error).message}`); }
    } catch (e) {
      if (e instanceof AttemptError) throw e;
      if (ac.signal.aborted) { this.counts.timeouts++; throw new AttemptError(`no answer within ${this.o.timeout_s} s (connection dropped)`); }
      throw new AttemptError(`connection failed (${describeFetchError(e)})`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Counters since the last call: requests, attempts, retries, timeouts, failed_requests, dropped_samples. */
  takeStats(): Record<string, number> {
    const c = this.counts;
    this.counts = { ...ZERO };
    return { ...c };
  }

  async close(): Promise<void> {
    await this.encoder?.close();
  }
}

/** The `{"service": {...}}` reward (a main-thread factory): checks the service's health first. */
export async function createServiceReward(options: ServiceClientOptions, ctx: RewardContext = {}): Promise<HostedReward> {
  const client = new ServiceClient(options);
  try {
    const h = await client.health();
    ctx.log?.(`reward service ${client.url}: up (${h.reward ?? 'reward not named'})`);
  } catch (e) {
    await client.close();
    throw e;
  }
  return {
    score: async (images, prompts, metadata) => (await client.scoreDetailed(images, prompts, metadata)).rewards,
    scoreDetailed: (images, prompts, metadata) => client.scoreDetailed(images, prompts, metadata),
    retriesInternally: true,
    takeStats: () => client.takeStats(),
    close: () => client.close(),
  };
}
