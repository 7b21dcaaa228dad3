// The reward service under faults, with real HTTP servers on 127.0.0.1: a scripted fault server
// (500s, malformed JSON, wrong lengths, another id, a hang past the timeout, a dropped connection,
// a slow answer arriving after its retry started, persistent failure, a 4xx) against the client,
// checking that no sample is lost without being counted and none is counted twice; the reference
// server (any reward, repeated ids scored once, 400s that name the problem, images grouped by
// size); and the trainer with a service reward (a flaky service is survived, a dead one stops the
// run with a checkpoint, an unreachable one is an Error before sampling).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createServer, IncomingMessage, ServerResponse } from 'node:http';
import { AddressInfo } from 'node:net';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ServiceClient, ServiceClientOptions, createServiceReward } from '../rewards/service/client.js';
import { decodeImages, encodeImage, ScoreRequest } from '../rewards/service/protocol.js';
import { startRewardServer } from '../rewards/service/server.js';
import { brightness } from '../rewards/brightness.js';
import { builtinReward } from '../rewards/load.js';
import { ImageBatch, Metadata } from '../rewards/types.js';
import { disposeStableDiffusion } from '../diffusion/load.js';
import { promptsFromLines } from '../rl/prompts.js';
import { createTinyPipeline } from '../rl/tiny-model.js';
import { resolveConfig } from '../rl/config.js';
import { EpochRecord, Trainer } from '../rl/trainer.js';
import { assertClose, assertThrows, randArray, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('reward-service');
const scratch = mkdtempSync(join(tmpdir(), 'reward-service-'));

type Behaviour = 'ok' | 'malformed' | 'wrong-length' | 'wrong-id' | 'hang' | 'drop' | { status: number } | { slowMs: number; offset: number };

interface FaultServer {
  url: string;
  /** Every request, in arrival order. */
  seen: { id: string; n: number; prompts: string[]; behaviour: Behaviour }[];
  /** Most requests in flight at once. */
  maxInFlight: number;
  /** Late answers the server tried to write after the client had gone. */
  lateWritesRefused: number;
  close(): Promise<void>;
}

/** The "true" reward of a sample: its prompt is "sample K", its reward K (so misordered or foreign answers show). */
const valueOf = (prompt: string) => Number(prompt.split(' ')[1]);

/** A server answering POST /score as `script` says for the n-th request (0-based) and GET /health with ok. */
async function faultServer(script: (n: number, req: ScoreRequest) => Behaviour): Promise<FaultServer> {
  const fs: FaultServer = { url: '', seen: [], maxInFlight: 0, lateWritesRefused: 0, close: async () => {} };
  let inFlight = 0;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (req.url === '/health') { res.end(JSON.stringify({ status: 'ok', protocol: 1, reward: 'fault server' })); return; }
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = JSON.parse(Buffer.concat(chunks).toString()) as ScoreRequest;
      const b = script(fs.seen.length, r);
      fs.seen.push({ id: r.id, n: r.images.length, prompts: r.prompts, behaviour: b });
      inFlight++;
      fs.maxInFlight = Math.max(fs.maxInFlight, inFlight);
      const answer = (body: unknown, status = 200) => {
        inFlight--;
        if (res.destroyed) { fs.lateWritesRefused++; return; }
        res.writeHead(status, { 'content-type': 'application/json' });
        res.end(typeof body === 'string' ? body : JSON.stringify(body));
      };
      const rewards = r.prompts.map(valueOf);
      // The hold keeps requests overlapping, so the concurrency limit is visible.
      const hold = (f: () => void) => setTimeout(f, 15);
      if (b === 'ok') hold(() => answer({ id: r.id, rewards, details: {} }));
      else if (b === 'malformed') hold(() => answer('{"id": "' + r.id + '", "rewards": [1, 2'));
      else if (b === 'wrong-length') hold(() => answer({ id: r.id, rewards: rewards.slice(1) }));
      else if (b === 'wrong-id') hold(() => answer({ id: `${r.id}-other`, rewards }));
      else if (b === 'hang') { req.socket.on('close', () => { inFlight--; }); /* never answers */ }
      else if (b === 'drop') { inFlight--; req.socket.destroy(); }
      else if ('status' in b) hold(() => answer({ error: `scripted ${b.status}` }, b.status));
      else setTimeout(() => answer({ id: r.id, rewards: rewards.map((v) => v + b.offset) }), b.slowMs);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  fs.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  fs.close = () => new Promise<void>((r) => { server.closeAllConnections(); server.close(() => r()); });
  return fs;
}

/** n tiny images with prompts "sample 0", "sample 1", ... */
function batchOf(n: number, seed = 1): { images: ImageBatch; prompts: string[]; metadata: Metadata[] } {
  const images = { data: Float32Array.from(randArray(n * 3 * 8 * 8, seed, 0, 1)), n, c: 3, h: 8, w: 8 };
  return { images, prompts: Array.from({ length: n }, (_, i) => `sample ${i}`), metadata: Array.from({ length: n }, (_, i) => ({ i })) };
}

const FAST: Omit<ServiceClientOptions, 'url'> = { batch_size: 8, concurrency: 2, timeout_s: 1, retries: 3, backoff_s: 0.02, max_backoff_s: 0.1, encoderWorkers: 1, random: () => 0.5 };
// (JPEG encoding on a worker thread, as in the trainer: encoding on this thread would block it and
// eat into the other requests' timeouts. 1 s per attempt: short enough for the hang cases, long
// enough that the suite's loaded two cores do not time out a healthy request.)
const expected = (n: number) => Array.from({ length: n }, (_, i) => i);

// fetch loads and compiles its HTTP stack on first use (a few hundred ms on a busy 2-core machine):
// do that before the timed tests, so their 1 s timeouts measure the server.
{
  const warm = await faultServer(() => 'ok');
  await (await fetch(`${warm.url}/health`)).text();
  await warm.close();
}

s('happy path: requests of batch_size, answers in order, at most `concurrency` in flight, one id per request', async () => {
  // Answers held 0.8 s, longer than encoding the next request takes, so requests overlap.
  const fs = await faultServer(() => ({ slowMs: 800, offset: 0 }));
  const c = new ServiceClient({ url: fs.url, ...FAST, timeout_s: 10 });
  const { images, prompts, metadata } = batchOf(37);
  const r = await c.scoreDetailed(images, prompts, metadata);
  assert.equal(r.rewards, expected(37));
  assert.equal(r.dropped, []);
  assert.equal(fs.seen.map((x) => x.n).sort((p, q) => p - q), [5, 8, 8, 8, 8]);
  assert.is(new Set(fs.seen.map((x) => x.id)).size, 5, 'a distinct id per request');
  assert.is(fs.maxInFlight, 2, 'concurrency limit 2');
  assert.equal(c.takeStats(), { requests: 5, attempts: 5, retries: 0, timeouts: 0, failed_requests: 0, dropped_samples: 0 });
  await c.close(); await fs.close();
});

s('each fault once, then an answer: retried with the same id, every sample counted once, none lost', async () => {
  const faults: Behaviour[] = [{ status: 500 }, { status: 503 }, { status: 429 }, 'malformed', 'wrong-length', 'wrong-id', 'hang', 'drop'];
  for (const fault of faults) {
    const fs = await faultServer((n) => (n === 0 ? fault : 'ok'));
    const c = new ServiceClient({ url: fs.url, ...FAST, batch_size: 16 });
    const { images, prompts } = batchOf(5);
    const t0 = performance.now();
    const r = await c.scoreDetailed(images, prompts);
    const what = JSON.stringify(fault);
    assert.equal(r.rewards, expected(5), `${what}: the retry's answer`);
    assert.equal(r.dropped, [], `${what}: nothing dropped`);
    assert.equal(fs.seen.map((x) => x.id), [fs.seen[0].id, fs.seen[0].id], `${what}: two attempts with the same id`);
    const st = c.takeStats();
    assert.equal([st.requests, st.attempts, st.retries, st.timeouts], [1, 2, 1, fault === 'hang' ? 1 : 0], `${what}: counters`);
    if (fault === 'hang') assert.ok(performance.now() - t0 >= 1000, 'the hang was cut at the 1 s timeout');
    await c.close(); await fs.close();
  }
});

s('a slow answer that arrives after its retry started is never read; the retry\'s answer is counted once', async () => {
  // Attempt 1 answers after 1.5 s (past the 1 s timeout) with values +1000; attempt 2 at once.
  const fs = await faultServer((n) => (n === 0 ? { slowMs: 1500, offset: 1000 } : 'ok'));
  const c = new ServiceClient({ url: fs.url, ...FAST, batch_size: 16 });
  const { images, prompts } = batchOf(6);
  const r = await c.scoreDetailed(images, prompts);
  assert.equal(r.rewards, expected(6), 'the values of the retry, not of the late answer');
  await new Promise((res) => setTimeout(res, 900)); // let the late answer come (1.5 s after attempt 1)
  assert.is(fs.lateWritesRefused, 1, 'the late answer found its connection closed');
  assert.equal(r.rewards, expected(6), 'and nothing changed afterwards');
  assert.equal(fs.seen.map((x) => x.id), [fs.seen[0].id, fs.seen[0].id]);
  const st = c.takeStats();
  assert.equal([st.attempts, st.retries, st.timeouts, st.dropped_samples], [2, 1, 1, 0]);
  await c.close(); await fs.close();
});

s('persistent failure: the samples are dropped with the reason and counted; a 4xx is not retried', async () => {
  const fs = await faultServer((n, r) => (r.prompts.includes('sample 0') ? { status: 500 } : 'ok'));
  const c = new ServiceClient({ url: fs.url, ...FAST, batch_size: 4 });
  const { images, prompts } = batchOf(10);
  const r = await c.scoreDetailed(images, prompts);
  assert.ok(r.rewards.slice(0, 4).every(Number.isNaN), 'the failing request\'s 4 samples are NaN');
  assert.equal(r.rewards.slice(4), [4, 5, 6, 7, 8, 9], 'the other requests are unaffected');
  assert.equal(r.dropped.map((d) => d.index), [0, 1, 2, 3]);
  assert.match(r.dropped[0].reason, /HTTP 500: .*scripted 500.* \(after 3 retries\)/);
  const st = c.takeStats();
  assert.equal([st.requests, st.failed_requests, st.dropped_samples, st.retries], [3, 1, 4, 3]);
  const failing = fs.seen.find((x) => x.prompts.includes('sample 0'))!.id;
  assert.is(fs.seen.filter((x) => x.id === failing).length, 4, '1 + 3 retries, all with the same id');
  await c.close(); await fs.close();
  const fs4 = await faultServer(() => ({ status: 400 }));
  const c4 = new ServiceClient({ url: fs4.url, ...FAST });
  const r4 = await c4.scoreDetailed(batchOf(3).images, batchOf(3).prompts);
  assert.ok(r4.rewards.every(Number.isNaN));
  assert.is(fs4.seen.length, 1, 'a 400 is the request\'s fault: not retried');
  assert.match(r4.dropped[0].reason, /HTTP 400/);
  await c4.close(); await fs4.close();
});

s('overlap: requests are in flight while the caller goes on (the trainer samples the next batch meanwhile)', async () => {
  const fs = await faultServer(() => ({ slowMs: 1000, offset: 0 }));
  const c = new ServiceClient({ url: fs.url, ...FAST, timeout_s: 20 });
  let settled = false;
  const pending = c.scoreDetailed(batchOf(16).images, batchOf(16).prompts).then((r) => { settled = true; return r; });
  // "Sampling": this code keeps running while both requests are at the server.
  for (let t = 0; fs.seen.length < 2 && t < 200; t++) await new Promise((res) => setTimeout(res, 25));
  assert.is(fs.seen.length, 2, 'both requests reached the server while the caller went on');
  assert.is(settled, false, 'and their answers were still to come');
  assert.equal((await pending).rewards, expected(16));
  await c.close(); await fs.close();
});

s('start-up: an unreachable service, or a server not speaking the protocol, is an Error naming the URL', async () => {
  const fs = await faultServer(() => 'ok');
  const url = fs.url;
  await fs.close();
  await assertThrows(() => createServiceReward({ url, ...FAST, health_timeout_s: 2 }), new RegExp(`reward service ${url}: not reachable \\(ECONNREFUSED`));
  const other = createServer((_req, res) => { res.writeHead(404); res.end('nope'); });
  await new Promise<void>((r) => other.listen(0, '127.0.0.1', r));
  const ourl = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
  await assertThrows(() => createServiceReward({ url: ourl, ...FAST }), /GET \/health answered HTTP 404/);
  await new Promise<void>((r) => other.close(() => r()));
  await assertThrows(() => createServiceReward({ url: 'ftp://x', ...FAST }), /reward\.service\.url: expected an http/);
});

s('reference server: serves a worker reward (brightness of the JPEG it receives); a repeated id is scored once; bad requests are 400 naming the problem', async () => {
  let calls = 0, samples = 0;
  const counting = (images: ImageBatch, prompts: string[]) => { calls++; samples += images.n; return prompts.map(valueOf); };
  const srv = await startRewardServer({ reward: counting, label: 'counting' });
  const health = await (await fetch(`${srv.url}/health`)).json();
  assert.equal(health, { status: 'ok', protocol: 1, reward: 'counting' });
  const { images, prompts } = batchOf(5);
  const body = JSON.stringify({ id: 'batch-1', images: Array.from({ length: 5 }, (_, i) => encodeImage(images, i, 80)), prompts, metadata: prompts.map(() => ({})) });
  const post = (b: string) => fetch(`${srv.url}/score`, { method: 'POST', body: b, headers: { 'content-type': 'application/json' } });
  const a1 = await (await post(body)).json() as { rewards: number[]; details: Record<string, unknown> };
  const a2 = await (await post(body)).json() as { rewards: number[]; details: Record<string, unknown> };
  assert.equal(a1.rewards, expected(5));
  assert.equal(a2.rewards, a1.rewards);
  assert.is(a2.details.repeated_id, true);
  assert.equal([calls, samples, srv.stats.repeatedIds], [1, 5, 1], 'the repeated id was answered from the cache, not scored again');
  const bad = async (b: string, status: number, re: RegExp) => {
    const r = await post(b);
    assert.is(r.status, status);
    assert.match(((await r.json()) as { error: string }).error, re);
  };
  await bad('{"id": 1', 400, /not JSON/);
  await bad(JSON.stringify({ id: 'x', images: ['abc'], prompts: [] }), 400, /"prompts" must be a list of 1 strings/);
  await bad(JSON.stringify({ id: 'x', images: ['bm90IGEganBlZw=='], prompts: ['p'] }), 400, /images\[0\]: not a JPEG/);
  assert.is((await fetch(`${srv.url}/nope`)).status, 404);
  await srv.close();

  // A built-in worker reward through the whole protocol: the client gets what the server computed
  // on the decoded JPEGs (quality 80: close to, not equal to, the originals' brightness).
  const bsrv = await startRewardServer({ reward: builtinReward('brightness'), pool: { workers: 1 } });
  const c = new ServiceClient({ url: bsrv.url, ...FAST, timeout_s: 10 });
  const mixed = batchOf(6, 9);
  const got = await c.scoreDetailed(mixed.images, mixed.prompts);
  const decoded = decodeImages(Array.from({ length: 6 }, (_, i) => encodeImage(mixed.images, i, 80)))[0].batch;
  assertClose(got.rewards, await brightness(decoded), 1e-6, 1e-7, 'the server\'s brightness of the decoded JPEGs');
  assertClose(got.rewards, await brightness(mixed.images), 0, 0.02, 'close to the originals');
  await c.close(); await bsrv.close();
});

s('trainer with a service reward: a flaky service is survived (each sample counted once), a dead one stops the run with a checkpoint, an unreachable one fails before sampling', async () => {
  const cfg = (url: string, over: Record<string, unknown> = {}) => resolveConfig({
    seed: 5, epochs: 2, sample: { steps: 2, guidance: 1, batch_size: 4, batches_per_epoch: 1 }, train: { batch_size: 4, gradient_accumulation_steps: 1, lr: 0.01 },
    eval: { every: 0 }, stat_tracking: { min_count: 4 }, lora: { enabled: false },
    reward: { service: { url, batch_size: 2, concurrency: 2, timeout_s: 1.5, retries: 3, backoff_s: 0.01 } }, ...over,
  });
  const prompts = promptsFromLines(['sample 1', 'sample 2']);
  const run = async (url: string, over: Record<string, unknown> = {}) => {
    const sd = createTinyPipeline({ device: dev, seed: 0, folder: mkdtempSync(join(scratch, 'tiny-')) });
    const records: EpochRecord[] = [];
    const ckpt = join(mkdtempSync(join(scratch, 'run-')), 'checkpoint');
    let t: Trainer | null = null;
    try {
      t = await Trainer.create(cfg(url, over), { sd, prompts, checkpointDir: ckpt, onEpoch: (r) => { records.push(r); } });
      return { result: await t.run(), records, ckpt };
    } finally {
      await t?.close();
      disposeStableDiffusion(sd);
    }
  };
  // Flaky: requests 1, 2 and 4 fail (a 500, a hang past the timeout, a dropped connection); their retries succeed.
  const faults = new Map<number, Behaviour>([[1, { status: 500 }], [2, 'hang'], [4, 'drop']]);
  const flaky = await faultServer((n) => faults.get(n) ?? 'ok');
  const a = await run(flaky.url);
  assert.is(a.result.status, 'done');
  assert.is(a.records.length, 2);
  for (const r of a.records) {
    assert.equal(r.rewards, r.prompts.map(valueOf), 'each sample has its own prompt\'s value');
    assert.is(r.dropped, 0);
    assert.ok(r.rewardCounters && r.rewardCounters.requests === 2, 'two requests of two samples per epoch');
  }
  const ids = flaky.seen.filter((x) => x.behaviour === 'ok').map((x) => x.id);
  assert.is(new Set(ids).size, ids.length, 'no id was answered twice');
  assert.is(ids.length * 2, 8, 'every sample answered exactly once over the two epochs');
  assert.is(flaky.seen.length, 7, '4 requests, 3 of them twice');
  await flaky.close();
  // Dead after start-up: every request fails, so the first epoch loses all samples.
  const dead = await faultServer(() => ({ status: 500 }));
  const b = await run(dead.url);
  assert.is(b.result.status, 'reward-failure');
  assert.match(b.result.message ?? '', /4 of 4 samples dropped.*HTTP 500/);
  assert.is(b.result.checkpoint, b.ckpt);
  assert.ok(existsSync(b.ckpt), 'a checkpoint of the state before the failed epoch');
  await dead.close();
  // Unreachable at start: Trainer.create throws before any sampling.
  await assertThrows(() => run(dead.url), /reward createServiceReward: reward service http:\/\/127\.0\.0\.1:\d+: not reachable/);
});

s.after(() => { rmSync(scratch, { recursive: true, force: true }); });
s.run();
