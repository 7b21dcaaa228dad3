// The alignment reward on our own models: the judge's probability of the prompt's caption
// (pretrain/judge-reward.ts), as `{"judge": {...}}` in a run config — equal to the softmax of the
// judge's logits, unknown prompts and wrong image sizes dropped with the reason, micro-batching
// changing no bit — and end to end behind the reward service: `ddpo reward-server --reward
// '{"judge": ...}'` serving a DDPO run of the tiny model (`reward: {"service": ...}`).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from '../engine/index.js';
import { Judge, JUDGE_FORMAT, saveJudge } from '../pretrain/judge.js';
import { judgeProbabilities } from '../pretrain/judge-reward.js';
import { startRewardServerCommand } from '../cli/reward-server.js';
import { RewardScorer } from '../rewards/scorer.js';
import { disposeStableDiffusion } from '../diffusion/load.js';
import { promptsFromLines } from '../rl/prompts.js';
import { createTinyPipeline } from '../rl/tiny-model.js';
import { resolveConfig, rewardSpec } from '../rl/config.js';
import { EpochRecord, Trainer } from '../rl/trainer.js';
import { assertClose, randArray, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('judge-reward');
const scratch = mkdtempSync(join(tmpdir(), 'judge-reward-'));
const CLASSES = ['a cat', 'a dog', 'a fox'];

/** A judge with random weights for 16 px images (training one takes minutes; the plumbing does not need it). */
async function randomJudge(): Promise<{ judge: Judge; dir: string }> {
  const judge = new Judge({ format: JUDGE_FORMAT, version: 1, classes: CLASSES, size: 16, widths: [24, 48, 96] }, { device: dev, seed: 5 });
  const dir = join(scratch, 'judge');
  await saveJudge(judge, dir);
  return { judge, dir };
}

const batch = (n: number, seed: number, side = 16) => ({ data: Float32Array.from(randArray(n * 3 * side * side, seed, 0, 1)), n, c: 3, h: side, w: side });

s('{"judge": ...}: p(prompt\'s caption | image) = softmax of the judge\'s logits; unknown prompts and wrong sizes dropped with the reason', async () => {
  const { judge, dir } = await randomJudge();
  const sc = new RewardScorer(rewardSpec(resolveConfig({ reward: { judge: { model: dir, batch_size: 2 } } }).reward), { context: { device: dev } });
  await sc.ready();
  const images = batch(5, 3);
  const prompts = ['a dog', 'a cat', 'a fox', 'a horse', 'a cat'];
  const r = await sc.score('j', images, prompts, prompts.map(() => ({})));
  const logits = await judge.forward(E.tensor(images.data, [5, 3, 16, 16])).data();
  const want = prompts.map((p, i) => {
    const c = CLASSES.indexOf(p);
    if (c < 0) return NaN;
    const row = Array.from({ length: 3 }, (_, k) => logits[i * 3 + k]);
    const m = Math.max(...row);
    return Math.exp(row[c] - m) / row.reduce((a, v) => a + Math.exp(v - m), 0);
  });
  assertClose(r.rewards, want, 1e-5, 1e-7, 'judge probabilities');
  assert.equal(r.dropped.map((d) => d.index), [3]);
  assert.match(r.dropped[0].reason, /does not know the prompt "a horse" \(it knows 3 captions/);
  const whole = await judgeProbabilities(judge, images, prompts, 64);
  assert.equal(whole.rewards.filter(Number.isFinite), r.rewards.filter(Number.isFinite), 'micro-batches of 2 vs one batch: identical bits');
  const small = await sc.score('k', batch(2, 4, 8), ['a cat', 'a dog'], [{}, {}]);
  assert.ok(small.rewards.every(Number.isNaN));
  assert.match(small.dropped[0].reason, /images are 8×8; this judge takes 16×16/);
  await sc.close();
  judge.dispose();
});

s('end to end: ddpo reward-server serves the judge, a DDPO run of the tiny model trains on it through {"service": ...}', async () => {
  const { judge, dir } = await randomJudge();
  const { server } = await startRewardServerCommand({ reward: JSON.stringify({ judge: { model: dir } }), port: 0 }, () => {}, dev);
  const sd = createTinyPipeline({ device: dev, seed: 0, folder: mkdtempSync(join(scratch, 'tiny-')) });
  const records: EpochRecord[] = [];
  const cfg = resolveConfig({
    seed: 4, epochs: 1, sample: { steps: 2, guidance: 1, batch_size: 4, batches_per_epoch: 1 }, train: { batch_size: 4, gradient_accumulation_steps: 1, lr: 0.01 },
    eval: { every: 1, n: 3 }, stat_tracking: { min_count: 4 }, lora: { enabled: false },
    reward: { service: { url: server.url, timeout_s: 30 } },
  });
  const t = await Trainer.create(cfg, { sd, prompts: promptsFromLines(CLASSES), onEpoch: (r) => { records.push(r); } });
  try {
    const res = await t.run();
    assert.is(res.status, 'done');
  } finally {
    await t.close();
    disposeStableDiffusion(sd);
    await server.close();
  }
  const rec = records[0];
  assert.is(rec.dropped, 0);
  assert.ok(rec.rewards.every((v) => v > 0 && v < 1), 'probabilities');
  assert.is(server.stats.scoredSamples, 4 + 3, 'the 4 training and 3 eval samples, each scored once');
  // The eval images went through JPEG (quality 80) to the server: its scores are the judge's on
  // the decoded images, close to the judge on the originals.
  const direct = await judgeProbabilities(judge, rec.evalImages!, rec.evalPrompts!);
  assertClose(rec.evalRewards!, direct.rewards, 0, 0.05, 'eval rewards ≈ the judge on the un-compressed images');
  console.log(`  judge through the service (JPEG q80) vs on the originals: largest difference ${Math.max(...direct.rewards.map((v, i) => Math.abs(v - rec.evalRewards![i]))).toExponential(2)}`);
  judge.dispose();
});

s.after(() => { rmSync(scratch, { recursive: true, force: true }); });
s.run();
