// Faults and interruptions, in process, on the tiny model: NaN weights (sampling names the step,
// training stops and saves nothing), a diverging run (its skipped steps counted, the last good
// checkpoint untouched), a reward that fails in epoch 2 (every epoch that starts leaves a row),
// rewards that hang (the timeout bounds the whole scoring, retries included), checkpoints a crash
// left half-renamed, resume refusing fewer epochs than done, and the finite check itself.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from '../engine/index.js';
import { copyInto } from '../engine/nn/module.js';
import { nonFiniteCounts } from '../engine/finite.js';
import { AdamW } from '../engine/optim.js';
import { StableDiffusion, disposeStableDiffusion } from '../diffusion/load.js';
import { sample } from '../diffusion/pipeline.js';
import { ImageBatch } from '../rewards/types.js';
import { Overrides, resolveConfig } from '../rl/config.js';
import { promptsFromLines } from '../rl/prompts.js';
import { createTinyPipeline } from '../rl/tiny-model.js';
import { EpochRecord, FailedEpoch, RunResult, Trainer, TrainerOptions, resume } from '../rl/trainer.js';
import { RewardScorer } from '../rl/scoring.js';
import { readCheckpoint, recoverCheckpoint, saveCheckpoint } from '../rl/checkpoint.js';
import { RunReport, readMetrics } from '../cli/report.js';
import { assertThrows, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('reliability');
const scratch = mkdtempSync(join(tmpdir(), 'ddpo-reliability-'));

/** 4 samples per epoch, two optimizer steps of 2 samples each on one of the 2 timesteps; LoRA. */
const SMALL = {
  seed: 3, sample: { steps: 2, guidance: 1, batch_size: 4, batches_per_epoch: 1 },
  train: { batch_size: 2, gradient_accumulation_steps: 1, lr: 0.01, timestep_fraction: 0.5 },
  eval: { every: 0 }, stat_tracking: { min_count: 4 }, lora: { enabled: true },
};
const PROMPTS = promptsFromLines(['cat', 'dog']);
const brightness = (images: ImageBatch) => {
  const per = images.c * images.h * images.w;
  return Array.from({ length: images.n }, (_, i) => images.data.subarray(i * per, (i + 1) * per).reduce((a, v) => a + v, 0) / per);
};
const tiny = () => createTinyPipeline({ device: dev, seed: 0, folder: mkdtempSync(join(scratch, 'tiny-')) });
const fill = (t: E.Tensor, v: number) => copyInto(t, E.tensor(new Float32Array(t.size).fill(v), t.shape, 'f32', dev), 'test');
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');

interface Run { result: RunResult; records: EpochRecord[]; failed: FailedEpoch[]; log: string[] }

/** Trains with SMALL + overrides; `hook` sees the trainer after every finished epoch. */
async function train(sd: StableDiffusion, over: Overrides, extra: Partial<TrainerOptions> = {}, hook?: (t: Trainer, r: EpochRecord) => void): Promise<Run> {
  const run: Run = { result: null as unknown as RunResult, records: [], failed: [], log: [] };
  let t: Trainer | null = null;
  try {
    t = await Trainer.create(resolveConfig(SMALL, over), {
      sd, reward: brightness, prompts: PROMPTS, log: (m) => run.log.push(m), ...extra,
      onEpoch: (r) => { run.records.push(r); hook?.(t!, r); return extra.onEpoch?.(r); },
      onEpochFailed: (f) => { run.failed.push(f); return extra.onEpochFailed?.(f); },
    });
    run.result = await t.run();
    return run;
  } finally {
    await t?.close();
  }
}

s('finite check: NaN, +Inf and −Inf are counted per tensor, finite extremes are not', async () => {
  const a = E.tensor([1, NaN, 3, Infinity, -Infinity, 3.4e38, -0, 1e-45], [8]);
  const b = E.tensor([0, 1], [2]);
  assert.equal(await nonFiniteCounts([a, b]), [3, 0]);
  assert.equal(await nonFiniteCounts([b]), [0]);
  if (dev.hasF16) {
    const h = E.cast(a, 'f16'); // 3.4e38 overflows f16 to Inf
    assert.equal(await nonFiniteCounts([h]), [4]);
    h.dispose();
  }
  a.dispose(); b.dispose();
});

s('NaN weights: sampling reports the sample and the DDIM step (and the decoder separately); training stops at once and writes nothing', async () => {
  const sd = tiny();
  try {
    fill(sd.unet.stateDict().get('conv_in.weight')!, NaN);
    const r = E.noGrad(() => sample(sd, { prompts: ['a', 'b'], steps: 2, guidance: 1, seed: 1 }));
    const bad = await r.nonFinite;
    // The decoder's clamp maps NaN to 0: the images alone would look like black squares.
    assert.ok((await r.images!.data()).every((v) => v === 0), 'the clamped images are all 0');
    r.images!.dispose(); r.trajectory.dispose();
    assert.equal(bad.map((b) => [b.index, b.at, b.t]), [[0, 1, 501], [1, 1, 501]]);
    assert.match(bad[0].message, /NaN\/Inf in the latents after DDIM step 1 of 2 \(t=501\)/);

    const dir = join(scratch, 'ckpt-nan');
    const run = await train(sd, { epochs: 2 }, { checkpointDir: dir });
    assert.is(run.result.status, 'non-finite');
    assert.match(run.result.message!, /sample 0 \("(cat|dog)"\): NaN\/Inf in the latents after DDIM step 1 of 2/);
    assert.match(run.result.message!, /ddpo inspect --check-values/);
    assert.is(run.records.length, 0);
    assert.equal(run.failed.map((f) => [f.epoch, f.status, f.dropped]), [[1, 'non-finite', 4]], 'the failed epoch is reported, its batch dropped');
    assert.ok(!existsSync(dir), 'no checkpoint written from a model that computes NaN');
  } finally {
    disposeStableDiffusion(sd);
  }
  const sd2 = tiny();
  try {
    fill(sd2.vae.stateDict().get('decoder.conv_out.weight')!, Infinity);
    const r = E.noGrad(() => sample(sd2, { prompts: ['a'], steps: 2, guidance: 1, seed: 1 }));
    const bad = await r.nonFinite;
    r.images!.dispose(); r.trajectory.dispose();
    assert.equal(bad.map((b) => b.at), ['decode']);
    assert.match(bad[0].message, /decoded image.*VAE/);
  } finally {
    disposeStableDiffusion(sd2);
  }
});

s('a diverging run (lr 1e30 from epoch 2): its non-finite steps are skipped and counted, suspect weights are not saved, and the epoch-1 checkpoint stays bit for bit', async () => {
  const sd = tiny();
  const dir = join(scratch, 'ckpt-diverge');
  try {
    let before = '';
    const onProgress = (p: { epoch: number }) => { if (p.epoch === 2 && !before) before = sha(join(dir, 'weights.safetensors')); };
    const run = await train(sd, { epochs: 4 }, { checkpointDir: dir, onProgress }, (t, r) => { if (r.epoch === 1) t.lr = 1e30; });
    assert.is(run.result.status, 'non-finite', run.log.join('\n'));
    assert.is(run.records[0].skippedSteps, 0);
    assert.ok(run.records.length >= 1 && run.records.length <= 2, run.log.join('\n'));
    const skipped = run.records.reduce((a, r) => a + r.skippedSteps, 0) + run.failed.reduce((a, f) => a + f.skippedSteps, 0);
    assert.ok(skipped >= 1, `the step after the huge update has a NaN loss or gradient norm: ${run.log.join('\n')}`);
    assert.ok(run.log.some((l) => /not saving a checkpoint after epoch 2: its last optimizer step was skipped/.test(l)), run.log.join('\n'));
    assert.is(run.failed.length, 1);
    assert.is(run.failed[0].status, 'non-finite');
    assert.is(sha(join(dir, 'weights.safetensors')), before, 'the last good checkpoint is untouched');
    assert.is((await readCheckpoint<{ epoch: number }>(dir)).state.epoch, 1);
  } finally {
    disposeStableDiffusion(sd);
  }
  // With train.max_skipped_steps = 1 the first skipped step stops the run, naming the setting.
  const sd2 = tiny();
  try {
    const run = await train(sd2, { epochs: 3, 'train.max_skipped_steps': 1 }, {}, (t, r) => { if (r.epoch === 1) t.lr = 1e30; });
    assert.is(run.result.status, 'non-finite');
    assert.match(run.result.message!, /train\.max_skipped_steps = 1.*training diverged/);
    assert.equal(run.failed.map((f) => [f.epoch, f.skippedSteps]), [[2, 1]]);
  } finally {
    disposeStableDiffusion(sd2);
  }
});

s('a reward that fails in epoch 2: the run stops with the epoch-1 checkpoint, epoch 2 still gets its metrics row (status, dropped, error); resume refuses fewer epochs than done', async () => {
  const sd = tiny();
  const out = join(scratch, 'run-fail2');
  let calls = 0;
  const flaky = (images: ImageBatch) => { calls++; return calls > 1 ? new Array(images.n).fill(NaN) : brightness(images); };
  try {
    const report = new RunReport(out);
    const run = await train(sd, { epochs: 3, 'reward_options.max_retries': 0, 'train.batch_size': 4 }, {
      reward: flaky, checkpointDir: join(out, 'checkpoint'),
      onEpoch: (r) => { report.addEpoch(r); }, onEpochFailed: (f) => { report.addEpoch(f); },
    });
    void run;
    const rows = readMetrics(join(out, 'metrics.jsonl'));
    assert.equal(rows.map((r) => [r.epoch, r.status, r.dropped]), [[1, 'ok', 0], [2, 'reward-failure', 4]]);
    assert.match(rows[1].error!, /4 of 4 samples dropped/);
    assert.is((await readCheckpoint<{ epoch: number }>(join(out, 'checkpoint'))).state.epoch, 1);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    assert.match(html, /epoch 2<\/td><td>reward-failure: epoch 2: 4 of 4 samples dropped/);
    assert.match(html, /dropped samples<\/td><td>4 \(epoch 2: 4\)/);
    // Trainer.resume: epochs below what the checkpoint has done is an Error naming both (before any weights load).
    const ck = join(out, 'checkpoint', 'trainer.json');
    const state = JSON.parse(readFileSync(ck, 'utf8'));
    state.state.epoch = 3;
    writeFileSync(ck, JSON.stringify(state));
    await assertThrows(() => resume(join(out, 'checkpoint'), { sd, reward: brightness, prompts: PROMPTS }, { epochs: 2 }), /epochs = 2 is below the 3 epochs the run has done/);
  } finally {
    disposeStableDiffusion(sd);
  }
});

s('an Error inside an epoch is reported as that epoch\'s failure (status error) before it propagates', async () => {
  const sd = tiny();
  const failed: FailedEpoch[] = [];
  try {
    await assertThrows(() => train(sd, { epochs: 2 }, {
      onProgress: (p) => { if (p.phase === 'training') throw new Error('disk full'); },
      onEpochFailed: (f) => { failed.push(f); },
    }), /disk full/);
    assert.equal(failed.map((f) => [f.epoch, f.status, f.error, f.rewards.length]), [[1, 'error', 'disk full', 4]]);
  } finally {
    disposeStableDiffusion(sd);
  }
});

s('a hanging reward: the timeout bounds the whole scoring (retries included), in a worker and in this thread', async () => {
  const dir = mkdtempSync(join(scratch, 'rw-'));
  writeFileSync(join(dir, 'hang.mjs'), 'export function hang() { for (;;) {} }\n');
  const images: ImageBatch = { data: new Float32Array(2 * 3 * 4 * 4), n: 2, c: 3, h: 4, w: 4 };
  const pool = new RewardScorer({ module: join(dir, 'hang.mjs'), export: 'hang' }, { retries: 2, timeoutMs: 1000, pool: { workers: 1 } });
  try {
    await pool.ready();
    const t0 = performance.now();
    const r = await pool.score('b', images, ['a', 'b'], [{}, {}]);
    const secs = (performance.now() - t0) / 1000;
    assert.ok(secs < 1.8, `${secs.toFixed(2)} s for a 1 s timeout with 2 retries (each attempt timed out on its own before: ~3×)`);
    assert.ok(r.rewards.every(Number.isNaN));
    assert.match(r.dropped[0].reason, /timed out.*timeout_s = 1 s.*every retry/);
    // The worker was replaced: a second batch times out on its own clock, not behind the first.
    const t1 = performance.now();
    await pool.score('c', images, ['a', 'b'], [{}, {}]);
    assert.ok((performance.now() - t1) / 1000 < 1.8);
  } finally {
    await pool.close();
  }
  const inThread = new RewardScorer(() => new Promise<number[]>(() => {}), { retries: 2, timeoutMs: 300 });
  const t2 = performance.now();
  const r2 = await inThread.score('d', images, ['a', 'b'], [{}, {}]);
  assert.ok(performance.now() - t2 < 1000, 'no retry after a timeout');
  assert.match(r2.dropped[1].reason, /timed out/);
});

s('resume finds the checkpoint a crash left: checkpoint.old-PID is put back, temporary folders go', async () => {
  const dir = join(scratch, 'recover');
  const save = async (folder: string, epoch: number) => {
    const w = E.keep(E.tensor([epoch, 2], [2]));
    w.requiresGrad = true;
    const opt = new AdamW([w], { lr: 1 });
    await saveCheckpoint(folder, { state: { epoch }, weightKind: 'lora', weights: new Map([['w', w]]), optimizer: opt });
    opt.dispose(); w.dispose();
  };
  await save(join(dir, 'checkpoint'), 1);
  await save(join(dir, 'newer'), 2);
  // A crash between the two renames of a save: the previous checkpoint renamed aside, the new one complete in a temporary folder.
  renameSync(join(dir, 'checkpoint'), join(dir, 'checkpoint.old-4242'));
  renameSync(join(dir, 'newer'), join(dir, '.checkpoint.tmp-4242-1'));
  mkdirSync(join(dir, '.checkpoint.tmp-77-2')); // a save that never finished
  const done = await recoverCheckpoint(join(dir, 'checkpoint'));
  assert.is(done.length, 3, done.join('\n'));
  assert.is((await readCheckpoint<{ epoch: number }>(join(dir, 'checkpoint'))).state.epoch, 1);
  assert.ok(!existsSync(join(dir, 'checkpoint.old-4242')) && !existsSync(join(dir, '.checkpoint.tmp-77-2')) && !existsSync(join(dir, '.checkpoint.tmp-4242-1')));
  assert.equal(await recoverCheckpoint(join(dir, 'checkpoint')), [], 'nothing left to do');
  // A stale copy beside an intact checkpoint (a crash after the second rename) is removed.
  await save(join(dir, 'checkpoint.old-5'), 0);
  assert.match((await recoverCheckpoint(join(dir, 'checkpoint'))).join(), /removed .*checkpoint\.old-5/);

});

s.after(() => rmSync(scratch, { recursive: true, force: true }));

s.run();
