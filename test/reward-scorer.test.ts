// RewardScorer: a combined reward scored part by part (worker and main-thread parts together),
// each part's values reported, a failing part retried alone, a dropped part dropping the sample
// with the part's name in the reason; main-thread factories get the device; endEpoch releases;
// the trainer logs each part's mean per epoch (record, metrics.jsonl); `ddpo reward-server`'s
// --reward forms.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { RewardScorer } from '../rewards/scorer.js';
import { builtinReward } from '../rewards/load.js';
import { brightness } from '../rewards/brightness.js';
import { RewardSpec } from '../rewards/types.js';
import { parseRewardArg, startRewardServerCommand } from '../cli/reward-server.js';
import { metricsRow } from '../cli/report.js';
import { disposeStableDiffusion } from '../diffusion/load.js';
import { promptsFromLines } from '../rl/prompts.js';
import { createTinyPipeline } from '../rl/tiny-model.js';
import { resolveConfig, rewardSpec } from '../rl/config.js';
import { EpochRecord, Trainer } from '../rl/trainer.js';
import { assertClose, assertThrows, randArray, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('reward-scorer');
const scratch = mkdtempSync(join(tmpdir(), 'reward-scorer-'));

// A main-thread factory in its own module, as a user would write one: it records what it was
// given and fails sample 2 on its first call.
const modPath = join(scratch, 'main-reward.mjs');
writeFileSync(modPath, `
export const log = { calls: 0, releases: 0, device: null, args: null };
export function make(offset, ctx) {
  log.device = ctx.device ?? null; log.args = offset;
  return {
    score(images) {
      log.calls++;
      const out = [];
      for (let i = 0; i < images.n; i++) out.push(i === 2 && log.calls === 1 ? NaN : offset + images.data[i * 3 * images.h * images.w]);
      return out;
    },
    release() { log.releases++; },
    takeStats() { return { calls: log.calls }; },
  };
}
`);
const MOD = pathToFileURL(modPath).href;
const images = (n: number) => ({ data: Float32Array.from(randArray(n * 3 * 4 * 4, 3, 0, 1)), n, c: 3, h: 4, w: 4 });

s('combine: worker and main-thread parts together, per-part values, a failed part retried alone, endEpoch releases', async () => {
  const spec: RewardSpec = { combine: [
    { spec: builtinReward('brightness'), weight: 2, name: 'brightness' },
    { spec: { module: MOD, export: 'make', args: [10], thread: 'main' }, weight: -1, name: 'first pixel' },
  ] };
  const sc = new RewardScorer(spec, { retries: 1, pool: { workers: 2 }, context: { device: dev } });
  await sc.ready();
  const log = (await import(MOD)).log as { calls: number; releases: number; device: unknown; args: unknown };
  assert.is(log.device, dev, 'the factory got the training device');
  assert.is(log.args, 10);
  const b = images(5);
  const r = await sc.score('b0', b, ['p', 'p', 'p', 'p', 'p'], [{}, {}, {}, {}, {}]);
  const bright = await brightness(b);
  const first = Array.from({ length: 5 }, (_, i) => 10 + b.data[i * 48]);
  assert.equal(r.parts!.map((p) => [p.name, p.weight]), [['brightness', 2], ['first pixel', -1]]);
  assertClose(r.parts![0].rewards, bright, 1e-7, 0, 'brightness part');
  assert.equal(r.parts![1].rewards, first, 'the main-thread part, sample 2 rescored after its NaN');
  assertClose(r.rewards, bright.map((v, i) => 2 * v - first[i]), 1e-6, 0, 'total = Σ weight·part');
  assert.equal(r.dropped, []);
  assert.is(log.calls, 2, 'one call, then one retry of the failed sample only');
  assert.equal(sc.takeStats(), { 'first pixel.calls': 2 });
  await sc.endEpoch();
  assert.is(log.releases, 1);
  await sc.close();
});

s('combine: a part that keeps failing drops the sample, naming the part', async () => {
  const failing = (_im: unknown, prompts: string[]) => prompts.map((p) => (p === 'b' ? NaN : 1));
  const mod2 = join(scratch, 'failing.mjs');
  writeFileSync(mod2, `export function make() { return ${failing.toString()}; }`);
  const sc = new RewardScorer({ combine: [
    { spec: builtinReward('brightness'), weight: 1, name: 'brightness' },
    { spec: { module: pathToFileURL(mod2).href, export: 'make', args: [], thread: 'main' }, weight: 1, name: 'picky' },
  ] }, { retries: 2, pool: { workers: 1 } });
  await sc.ready();
  const r = await sc.score('b', images(3), ['a', 'b', 'c'], [{}, {}, {}]);
  assert.ok(Number.isNaN(r.rewards[1]) && Number.isFinite(r.rewards[0]) && Number.isFinite(r.rewards[2]));
  assert.equal(r.dropped.map((d) => d.index), [1]);
  assert.match(r.dropped[0].reason, /^picky: reward returned NaN/);
  await sc.close();
});

s('trainer: a combined reward\'s parts are logged per epoch (record, log line, metrics.jsonl)', async () => {
  const sd = createTinyPipeline({ device: dev, seed: 0, folder: mkdtempSync(join(scratch, 'tiny-')) });
  const records: EpochRecord[] = [];
  const lines: string[] = [];
  const cfg = resolveConfig({
    seed: 2, epochs: 1, sample: { steps: 2, guidance: 1, batch_size: 4, batches_per_epoch: 1 }, train: { batch_size: 4, gradient_accumulation_steps: 1, lr: 0.01 },
    eval: { every: 0 }, stat_tracking: { min_count: 4 }, lora: { enabled: false },
    reward: { combine: [{ reward: 'brightness', weight: 1 }, { reward: 'jpeg_compressibility', weight: 0.1 }] },
  });
  const t = await Trainer.create(cfg, { sd, prompts: promptsFromLines(['a']), onEpoch: (r) => { records.push(r); }, log: (m) => lines.push(m) });
  try { await t.run(); } finally { await t.close(); disposeStableDiffusion(sd); }
  const rec = records[0];
  assert.equal(Object.keys(rec.rewardParts!), ['brightness', 'jpeg_compressibility']);
  const [b, j] = Object.values(rec.rewardParts!);
  assert.ok(b > 0 && b < 1 && j < 0, `brightness ${b} in (0, 1), −JPEG kB ${j} < 0`);
  const mean = rec.rewards.reduce((x, y) => x + y, 0) / rec.rewards.length;
  assertClose([mean], [b + 0.1 * j], 1e-6, 1e-9, 'the total\'s mean is the weighted sum of the parts\' means');
  assert.match(lines.find((l) => l.startsWith('epoch 1')) ?? '', /\(brightness 0\.\d{4}, jpeg_compressibility -\d\.\d{4}\)/);
  assert.equal(Object.keys(metricsRow(rec).reward_parts!), ['brightness', 'jpeg_compressibility']);
});

s('reward-server --reward: a name, JSON, PATH#EXPORT (with --args / --thread); the server answers /health', async () => {
  assert.equal(parseRewardArg('brightness'), builtinReward('brightness'));
  assert.equal(parseRewardArg('{"combine": [{"reward": "brightness", "weight": 1}]}'), rewardSpec({ combine: [{ reward: 'brightness', weight: 1 }] }));
  const m = parseRewardArg(`${modPath}#make`, '[3]', 'main') as { module: string; export: string; args: unknown[]; thread: string };
  assert.equal([m.export, m.args, m.thread], ['make', [3], 'main']);
  await assertThrows(() => Promise.resolve(parseRewardArg('aesthetic')), /'aesthetic' takes options/);
  // The same checks guard run configs: before anything loads.
  await assertThrows(() => Promise.resolve(resolveConfig({ reward: { combine: [{ reward: { aesthetic: { clip: 'c', head: 'h', batch_size: 0 } }, weight: 1 }] } })), /reward\.combine\[0\]\.reward\.aesthetic\.batch_size: expected an integer ≥ 1/);
  await assertThrows(() => Promise.resolve(resolveConfig({ reward: { service: { url: 'http://x', timeout_s: -1 } } })), /reward\.service\.timeout_s: expected a positive number/);
  await assertThrows(() => Promise.resolve(parseRewardArg('{"aesthetic": {"clip": "x"}}')), /reward\.aesthetic\.head: missing/);
  await assertThrows(() => Promise.resolve(parseRewardArg(`${modPath}#make`, 'nope')), /--args: not valid JSON/);
  const { server, device } = await startRewardServerCommand({ reward: `${modPath}#make`, args: '[0]', thread: 'main', port: 0 }, () => {}, dev);
  assert.is(device, null, 'the given device is used, none created');
  const h = await (await fetch(`${server.url}/health`)).json();
  assert.equal(h, { status: 'ok', protocol: 1, reward: `${modPath}#make` });
  await server.close();
});

s.after(() => { rmSync(scratch, { recursive: true, force: true }); });
s.run();
