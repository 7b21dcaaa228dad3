// The Node-free trainer core as the browser page runs it (web/fine-tune.ts: runEpochCore with a
// RunnerScorer), here with the JPEG reward in this thread: one DDPO-IS + LoRA epoch on the
// shipped model gives finite rewards and loss and moves the LoRA weights; and the runner scorer
// rescores a dropped sample as Node's RewardScorer does.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { join } from 'node:path';
import { disposeStableDiffusion, loadStableDiffusion } from '../diffusion/load.js';
import { FINE_TUNE_DEFAULTS, FineTuner, fineTuneConfig } from '../web/fine-tune.js';
import { RunnerScorer } from '../rewards/runner-scorer.js';
import { scoreBatch } from '../rewards/score.js';
import { jpegCompressibility } from '../rewards/jpeg.js';
import { REPO_ROOT } from '../web/serve.js';
import { testDevice } from './helpers.js';

const s = suite('trainer-core');
const dev = await testDevice();

s('one page epoch on models/emoji-16: finite rewards and loss, two optimizer steps, LoRA weights move', async () => {
  const sd = await loadStableDiffusion(join(REPO_ROOT, 'models', 'emoji-16'), { device: dev });
  try {
    const tuner = new FineTuner(sd, { ...FINE_TUNE_DEFAULTS, prompt: 'a fox' }, (im, p, m) => scoreBatch(jpegCompressibility, im, p, m));
    const phases = new Set<string>();
    const r = await tuner.epoch((p) => phases.add(p.phase));
    assert.equal([...phases].sort(), ['sampling', 'training']);
    assert.is(r.rewards.length, 4);
    assert.ok(r.rewards.every((x) => Number.isFinite(x) && x < 0), `rewards ${r.rewards}`);
    assert.ok(Number.isFinite(r.loss) && Number.isFinite(r.approxKl));
    assert.is(r.optimizerSteps, 2);
    assert.ok(r.loraChange > 0, 'LoRA weights changed');
    assert.equal(r.shape, [3, 16, 16]);
    // A second epoch continues the same run (LoRA injected once).
    assert.is((await tuner.epoch()).epoch, 2);
  } finally {
    disposeStableDiffusion(sd);
  }
});

s('the page config resolves (DDPO-IS, LoRA, one batch, no eval)', () => {
  const c = fineTuneConfig(FINE_TUNE_DEFAULTS);
  assert.is(c.algorithm, 'ddpo-is');
  assert.ok(c.lora.enabled);
  assert.is(c.sample.batch_size, 4);
  assert.is(c.train.batch_size, 2);
});

s('RunnerScorer rescores a sample the runner dropped, and drops it with the reason when it keeps failing', async () => {
  let calls = 0;
  const images = { data: new Float32Array(2 * 3 * 4 * 4).fill(0.5), n: 2, c: 3, h: 4, w: 4 };
  const flaky = new RunnerScorer(async (im) => {
    calls++;
    if (calls === 1) return { rewards: [1, NaN], dropped: [{ index: 1, reason: 'busy' }] };
    return { rewards: new Array(im.n).fill(2), dropped: [] };
  });
  assert.equal((await flaky.score('b', images, ['x', 'y'], [{}, {}])).rewards, [1, 2]);
  const broken = new RunnerScorer(async (im) => ({ rewards: new Array(im.n).fill(NaN), dropped: Array.from({ length: im.n }, (_, index) => ({ index, reason: 'broken' })) }), 1);
  const r = await broken.score('b', images, ['x', 'y'], [{}, {}]);
  assert.ok(r.rewards.every(Number.isNaN));
  assert.equal(r.dropped.map((d) => d.reason), ['broken', 'broken']);
});

s.run();
