// The reference reward server: serves any reward (a built-in, a user module, a combination; worker
// or main-thread, e.g. a GPU model) through the protocol of rewards/service/README.md.
//
// - A repeated id is answered from a cache of recent answers (or joins the computation still
//   running for it), so a client's retry after a timeout or a dropped connection never scores,
//   and never counts, the same batch twice.
// - Bad requests (not JSON, missing fields, images that are not JPEG, wrong list lengths) are
//   400 with the reason; they are not retried by the client. A failure of the reward for some
//   samples is not an HTTP error: those samples are null in `rewards` with a reason in
//   details.dropped.
// - Images of different sizes in one request are scored as one batch per size.
// - After `idleReleaseMs` without requests the reward's transient memory is released (as the
//   trainer does between epochs).

import { createServer, IncomingMessage, Server, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import type { RewardContext } from '../hosted.js';
import type { RewardPoolOptions } from '../pool.js';
import { RewardScorer, specLabel } from '../scorer.js';
import { Reward, RewardSpec } from '../types.js';
import { HealthResponse, PROTOCOL_VERSION, ScoreRequest, ScoreResponse, decodeImages, parseScoreRequest } from './protocol.js';

export interface RewardServerOptions {
  reward: RewardSpec | Reward;
  /** 0 (default): any free port. */
  port?: number;
  /** Default 127.0.0.1 (only this machine); 0.0.0.0 to serve others. */
  host?: string;
  /** For main-thread rewards (the device). */
  context?: RewardContext;
  pool?: RewardPoolOptions;
  /** Rescoring rounds for samples the reward drops (default 1). */
  retries?: number;
  /** Name in GET /health (default: from the spec). */
  label?: string;
  /** Answers kept for repeated ids (default 1000). */
  cacheSize?: number;
  /** Largest request body (default 512 MiB). */
  maxBodyBytes?: number;
  /** Release the reward's transient memory after this long without requests (default 2000 ms; 0: never). */
  idleReleaseMs?: number;
  log?: (message: string) => void;
}

export interface RewardServerStats {
  requests: number;
  /** Samples the reward scored (each id once). */
  scoredSamples: number;
  /** Requests answered from the cache (repeated ids). */
  repeatedIds: number;
  badRequests: number;
}

export interface RewardServer {
  url: string;
  port: number;
  readonly stats: RewardServerStats;
  close(): Promise<void>;
}

class BadRequest extends Error {
  constructor(message: string, readonly status = 400) { super(message); }
}

function readBody(req: IncomingMessage, limit: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) { reject(new BadRequest(`the body exceeds ${limit} bytes`, 413)); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.destroyed) return; // the client gave up (timeout); its retry gets the cached answer
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

export async function startRewardServer(o: RewardServerOptions): Promise<RewardServer> {
  const scorer = new RewardScorer(o.reward, { retries: o.retries ?? 1, pool: o.pool, context: o.context });
  try {
    await scorer.ready();
  } catch (e) {
    await scorer.close();
    throw e;
  }
  const label = o.label ?? (typeof o.reward === 'function' ? (o.reward.name || 'reward function') : specLabel(o.reward));
  const cacheSize = o.cacheSize ?? 1000, limit = o.maxBodyBytes ?? 512 * 2 ** 20, idleMs = o.idleReleaseMs ?? 2000;
  const cache = new Map<string, Promise<ScoreResponse>>();
  const stats: RewardServerStats = { requests: 0, scoredSamples: 0, repeatedIds: 0, badRequests: 0 };
  let idle: ReturnType<typeof setTimeout> | null = null;
  let active = 0;

  const compute = async (r: ScoreRequest): Promise<ScoreResponse> => {
    const t0 = performance.now();
    let groups;
    try { groups = decodeImages(r.images); } catch (e) { throw new BadRequest((e as Error).message); }
    const rewards: (number | null)[] = new Array(r.images.length).fill(null);
    const dropped: { index: number; reason: string }[] = [];
    for (const [k, g] of groups.entries()) {
      const s = await scorer.score(`${r.id}/${k}`, g.batch, g.indices.map((i) => r.prompts[i]), g.indices.map((i) => r.metadata[i]));
      stats.scoredSamples += g.batch.n;
      g.indices.forEach((i, j) => { if (Number.isFinite(s.rewards[j])) rewards[i] = s.rewards[j]; });
      for (const d of s.dropped) dropped.push({ index: g.indices[d.index], reason: d.reason });
    }
    dropped.sort((a, b) => a.index - b.index);
    return { id: r.id, rewards, details: { dropped, seconds: (performance.now() - t0) / 1000 } };
  };

  const score = async (req: IncomingMessage, res: ServerResponse) => {
    const text = await readBody(req, limit);
    let body: unknown;
    try { body = JSON.parse(text); } catch (e) { throw new BadRequest(`the body is not JSON: ${(e as Error).message}`); }
    let r: ScoreRequest;
    try { r = parseScoreRequest(body); } catch (e) { throw new BadRequest((e as Error).message); }
    let answer = cache.get(r.id);
    const repeated = !!answer;
    if (answer) stats.repeatedIds++;
    else {
      answer = compute(r);
      cache.set(r.id, answer);
      // A failed computation is not cached: the retry computes again.
      answer.catch(() => cache.delete(r.id));
      while (cache.size > cacheSize) cache.delete(cache.keys().next().value!);
    }
    const out = await answer;
    send(res, 200, repeated ? { ...out, details: { ...out.details, repeated_id: true } } : out);
  };

  const server: Server = createServer((req, res) => {
    stats.requests++;
    active++;
    if (idle) { clearTimeout(idle); idle = null; }
    const done = () => {
      if (--active === 0 && idleMs > 0) idle = setTimeout(() => { void scorer.endEpoch(); }, idleMs);
    };
    const path = (req.url ?? '/').split('?')[0];
    const work = (async () => {
      if (path === '/health') {
        if (req.method !== 'GET') throw new BadRequest('use GET /health', 405);
        send(res, 200, { status: 'ok', protocol: PROTOCOL_VERSION, reward: label } satisfies HealthResponse);
      } else if (path === '/score') {
        if (req.method !== 'POST') throw new BadRequest('use POST /score', 405);
        await score(req, res);
      } else {
        throw new BadRequest(`no such endpoint ${path} (GET /health, POST /score)`, 404);
      }
    })();
    work.catch((e: unknown) => {
      if (e instanceof BadRequest) { stats.badRequests++; send(res, e.status, { error: e.message }); return; }
      o.log?.(`reward server: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
      send(res, 500, { error: e instanceof Error ? e.message : String(e) });
    }).finally(done);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port ?? 0, o.host ?? '127.0.0.1', () => { server.off('error', reject); resolve(); });
  }).catch(async (e: Error) => {
    await scorer.close();
    throw new Error(`reward server: cannot listen on ${o.host ?? '127.0.0.1'}:${o.port ?? 0}: ${e.message}`);
  });
  const port = (server.address() as AddressInfo).port;
  const host = o.host && o.host !== '0.0.0.0' ? o.host : '127.0.0.1';
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    stats,
    async close() {
      if (idle) clearTimeout(idle);
      server.closeAllConnections?.();
      await new Promise<void>((r) => server.close(() => r()));
      await scorer.close();
    },
  };
}
