// The DDPO trainer end to end on a tiny random SD-architecture pipeline (rl/tiny-model.ts) with
// the JPEG-compressibility reward in worker threads: each algorithm raises the reward (and a
// negative control lowers it), DDPO-SF refuses configs that would take more than one optimizer
// step per sampling round, a run stopped after an epoch and resumed is bit-identical to an
// uninterrupted one, live GPU memory is flat across epochs, and failing rewards drop samples,
// then stop the run with a checkpoint.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { disposeStableDiffusion, loadStableDiffusion, saveStableDiffusion } from '../diffusion/load.js';
import { builtinReward } from '../rewards/index.js';
import { ImageBatch } from '../rewards/types.js';
import { promptsFromLines } from '../rl/prompts.js';
import { createTinyPipeline, referenceTokenizerDir } from '../rl/tiny-model.js';
import { Overrides, optimizerStepsPerEpoch, resolveConfig } from '../rl/config.js';
import { EpochRecord, RunResult, Trainer, TrainerOptions, resume } from '../rl/trainer.js';
import { assertThrows, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('trainer');
const scratch = mkdtempSync(join(tmpdir(), 'ddpo-trainer-test-'));

/** Small and fast: 16×16 images, 2 denoising steps, no guidance, 8 samples per epoch. */
const SMALL = {
  seed: 3, sample: { steps: 2, guidance: 1, batch_size: 4, batches_per_epoch: 2 }, train: { batch_size: 4, gradient_accumulation_steps: 2, lr: 0.01 },
  eval: { every: 0 }, stat_tracking: { min_count: 4 }, lora: { enabled: false },
};
/** SMALL with dotted-key overrides ({ 'train.lr': 1e-3 }). */
const small = (over: Overrides = {}) => resolveConfig(SMALL, over);
const PROMPTS = promptsFromLines(['cat', 'dog']);
const JPEG = builtinReward('jpeg_compressibility');

interface Run {
  records: EpochRecord[];
  result: RunResult;
  weights: Map<string, Float32Array>;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

async function train(config: Overrides, extra: Partial<TrainerOptions> = {}, hook?: (t: Trainer, r: EpochRecord) => void, from?: string): Promise<Run> {
  const sd = createTinyPipeline({ device: dev, seed: 0, folder: mkdtempSync(join(scratch, 'tiny-')) });
  const records: EpochRecord[] = [];
  let trainer: Trainer | null = null;
  const opts: TrainerOptions = {
    sd, reward: JPEG, prompts: PROMPTS, ...extra,
    onEpoch: (r) => { records.push(r); hook?.(trainer!, r); },
  };
  try {
    trainer = from ? await resume(from, opts, config) : await Trainer.create(small(config), opts);
    const result = await trainer.run();
    const weights = new Map<string, Float32Array>();
    for (const [n, t] of trainer.trainedTensors()) weights.set(n, new Float32Array(await t.data()));
    return { records, result, weights };
  } finally {
    await trainer?.close();
    disposeStableDiffusion(sd);
  }
}

s('config: optimizer steps per epoch; DDPO-SF refuses more than one per sampling round; DDPO must train some timestep', () => {
  assert.is(optimizerStepsPerEpoch(resolveConfig()), 4); // the defaults: 32 samples, batches of 4, 2 per step
  assert.is(optimizerStepsPerEpoch(resolveConfig({ algorithm: 'ddpo-sf' })), 1);
  assert.throws(() => resolveConfig({ algorithm: 'ddpo-sf', train: { gradient_accumulation_steps: 4 } }), /ddpo-sf.*2 steps per epoch/s);
  assert.throws(() => resolveConfig({ algorithm: 'ddpo-sf', train: { inner_epochs: 2 } }), /inner_epochs = 2/);
  assert.throws(() => resolveConfig({ sample: { steps: 4 }, train: { timestep_fraction: 0.2 } }), /trains no timestep/);
  assert.is(resolveConfig({ algorithm: 'rwr', sample: { steps: 4 }, train: { timestep_fraction: 0.2 } }).algorithm, 'rwr');
});

s('DDPO-SF: a run whose config takes two steps per round is refused before anything starts', async () => {
  const sd = createTinyPipeline({ device: dev, seed: 0, folder: mkdtempSync(join(scratch, 'tiny-')) });
  try {
    // A config that did not go through resolveConfig is checked again by Trainer.create.
    const cfg = { ...small({ algorithm: 'ddpo-sf' }), train: { ...small().train, gradient_accumulation_steps: 1 } };
    await Trainer.create(cfg, { sd, reward: JPEG, prompts: PROMPTS })
      .then(() => assert.unreachable('should throw'), (e: Error) => assert.match(e.message, /one optimizer step per sampling round/));
  } finally {
    disposeStableDiffusion(sd);
  }
});


s('tiny pipeline: seeded, SD-architecture, and saveStableDiffusion/loadStableDiffusion round-trip it (both tokenizers)', async () => {
  for (const byteTokenizer of [false, true]) {
    const a = createTinyPipeline({ device: dev, seed: 5, byteTokenizer, folder: mkdtempSync(join(scratch, 'tiny-')) });
    const b = createTinyPipeline({ device: dev, seed: 5, byteTokenizer, folder: mkdtempSync(join(scratch, 'tiny-')) });
    const out = join(scratch, `saved-${byteTokenizer}`);
    try {
      assert.is(a.tokenizer.vocabSize, byteTokenizer || !referenceTokenizerDir() ? 514 : 49408);
      assert.equal([a.unet.config.blockOutChannels, a.unet.config.sampleSize, a.vae.config.latentChannels], [[16, 32], 8, 4]);
      await saveStableDiffusion(a, out);
      const c = await loadStableDiffusion(out, { device: dev });
      try {
        assert.equal([...c.tokenizer.encodeBatch(['a cat riding a bike']).ids], [...a.tokenizer.encodeBatch(['a cat riding a bike']).ids]);
        for (const [m1, m2, m3] of [[a.unet, b.unet, c.unet], [a.vae, b.vae, c.vae], [a.textEncoder, b.textEncoder, c.textEncoder]] as const) {
          const s1 = m1.stateDict(), s2 = m2.stateDict(), s3 = m3.stateDict();
          assert.equal([...s1.keys()].sort(), [...s3.keys()].sort());
          for (const k of [...s1.keys()].slice(0, 6)) {
            const x = await s1.get(k)!.data();
            assert.equal([...await s2.get(k)!.data()], [...x], `${k}: the same seed gives the same weights`);
            assert.equal([...await s3.get(k)!.data()], [...x], `${k}: saved and loaded`);
          }
        }
      } finally {
        disposeStableDiffusion(c);
      }
    } finally {
      disposeStableDiffusion(a);
      disposeStableDiffusion(b);
    }
  }
});

s('an f16 UNet trains f32 LoRA adapters (frozen f16 base); full fine-tuning of it is refused', async () => {
  if (!dev.hasF16) return;
  const sd = createTinyPipeline({ device: dev, seed: 0, folder: mkdtempSync(join(scratch, 'tiny-')), dtype: 'f16' });
  let t: Trainer | null = null;
  try {
    assert.is(sd.unet.dtype, 'f16');
    const records: EpochRecord[] = [];
    t = await Trainer.create(small({ epochs: 1, 'lora.enabled': true, 'train.lr': 1e-2 }), { sd, reward: JPEG, prompts: PROMPTS, onEpoch: (r) => { records.push(r); } });
    await t.run();
    const trained = [...t.trainedTensors()];
    assert.ok(trained.length > 0 && trained.every(([, p]) => p.dtype === 'f32'), 'adapters are f32');
    assert.ok([...sd.unet.namedParameters()].filter(([n]) => !n.includes('.lora_')).every(([, p]) => p.dtype === 'f16' && !p.requiresGrad), 'the base stays f16 and frozen');
    const b = trained.find(([n]) => n.endsWith('lora_B.weight'))![1];
    assert.ok((await b.data()).some((v) => v !== 0), 'lora_B moved from its zero init');
    assert.ok(Number.isFinite(records[0].loss) && records[0].gradNorm > 0, `loss ${records[0].loss}, grad norm ${records[0].gradNorm}`);
  } finally {
    await t?.close();
    disposeStableDiffusion(sd);
  }
  const sd2 = createTinyPipeline({ device: dev, seed: 0, folder: mkdtempSync(join(scratch, 'tiny-')), dtype: 'f16' });
  try {
    await assertThrows(() => Trainer.create(small({ 'lora.enabled': false }), { sd: sd2, reward: JPEG, prompts: PROMPTS }), /full fine-tuning needs an f32 UNet/);
  } finally {
    disposeStableDiffusion(sd2);
  }
});

s('DDPO-IS warns once when nearly every ratio leaves the clip range after the first step', async () => {
  const lines: string[] = [];
  const run = await train({ epochs: 2, 'train.gradient_accumulation_steps': 1 }, { log: (m) => lines.push(m) }); // 2 steps per epoch, full FT at lr 0.01
  assert.ok(run.records[0].clipfrac > 0.45, `clipfrac ${run.records[0].clipfrac}`);
  const warnings = lines.filter((l) => l.startsWith('warning: clipfrac'));
  assert.is(warnings.length, 1, lines.join('\n'));
  assert.match(warnings[0], /train\.lr/);
});

s('DDPO-IS update direction: one step raises the surrogate mean(A·ratio) on the true advantages; the negative control lowers it', async () => {
  // Two inner epochs with one optimizer step each and no clipping: the first pass has ratio = 1
  // exactly, so its loss is −mean(A); the epoch's mean loss then gives the second pass's loss.
  // LoRA at lr 1e-3 keeps the step small (approx_kl ~1e-5), where the first-order gain dominates.
  const cfg = { epochs: 1, 'train.inner_epochs': 2, 'train.clip_range': 1e9, 'lora.enabled': true, 'train.lr': 1e-3 };
  const surrogate = async (negate: boolean) => {
    const r = (await train({ ...cfg, 'train.negate_advantages': negate })).records[0];
    const before = r.advantages.mean; // mean(A_trained · 1)
    const after = -(2 * r.loss + r.advantages.mean); // mean(A_trained · ratio) after the first step
    return negate ? { before: -before, after: -after } : { before, after };
  };
  const up = await surrogate(false), down = await surrogate(true);
  assert.is(up.before, down.before, 'both runs start from the same samples and advantages');
  assert.ok(up.after > up.before + 1e-3, `surrogate ${up.before} → ${up.after} should rise`);
  assert.ok(down.after < down.before - 1e-3, `negated: surrogate ${down.before} → ${down.after} should fall`);
});

s('resume (LoRA, KL penalty): stopped while sampling epoch 2 and resumed, the run is bit-identical to an uninterrupted one; memory is flat', async () => {
  const cfg = { algorithm: 'ddpo-is', epochs: 2, 'lora.enabled': true, 'train.lr': 0.01, 'train.kl_coef': 0.1 };
  const dirA = join(scratch, 'ckpt-a'), dirB = join(scratch, 'ckpt-b');
  const a = await train(cfg, { checkpointDir: dirA });
  // Stopped while sampling epoch 2: the checkpoint must be the state after epoch 1 (the partly
  // drawn epoch's prompt and noise draws are rolled back).
  let stopB: (() => void) | null = null;
  const b = await train(cfg, { checkpointDir: dirB, onProgress: (p) => { if (p.epoch === 2) stopB?.(); } }, (t) => { stopB = () => t.requestStop(); });
  assert.is(a.result.status, 'done');
  assert.is(b.result.status, 'stopped');
  assert.is(b.result.epoch, 1);
  assert.is(b.records.length, 1);
  assert.is(b.result.checkpoint, dirB);
  const saved = JSON.parse(readFileSync(join(dirB, 'trainer.json'), 'utf8'));
  assert.is(saved.state.epoch, 1);
  assert.is(saved.state.globalSample, 8);
  assert.ok(Object.keys(saved.state.statTracker.buffers).length > 0, 'the stat tracker is saved');
  const c = await train({}, { checkpointDir: dirB }, undefined, dirB);
  assert.is(c.result.status, 'done');
  assert.is(c.records.length, 1);
  const ra = a.records[1], rc = c.records[0];
  const strip = (r: EpochRecord) => ({ ...r, seconds: null, samplesPerSecond: null, memory: null });
  assert.equal(strip(rc), strip(ra), 'every non-timing metric of epoch 2 is identical');
  assert.is(ra.optimizerSteps, 1);
  for (const [n, w] of a.weights) {
    const wc = c.weights.get(n)!;
    assert.ok(w.every((v, i) => Object.is(v, wc[i])), `weights "${n}" are bit-identical`);
  }
  // One optimizer step per epoch: each trains the weights that sampled, so every ratio is exactly
  // 1 (re-evaluation reproduces the recorded log-probabilities bit for bit); the fresh adapters
  // (lora_B = 0) are exactly the reference model, so epoch 1's KL is 0 too.
  for (const r of a.records) assert.is(r.approxKl, 0, `epoch ${r.epoch}: re-evaluated log-probs equal the recorded ones`);
  assert.is(a.records[0].clipfrac, 0);
  assert.is(a.records[0].kl, 0);
  assert.ok(ra.kl! > 0, 'after an update the adapters pay a KL penalty');
  assert.is(a.records[0].memory.liveBytes, a.records[1].memory.liveBytes, 'live GPU memory after epoch 2 equals that after epoch 1');
  const moved = [...b.weights].some(([n, w]) => w.some((v, i) => v !== a.weights.get(n)![i]));
  assert.ok(moved, 'epoch 2 changed the weights (the comparison is not vacuous)');
});

s('rewards that fail: retried, then dropped and counted; too many drops stop the run with a checkpoint', async () => {
  // NaN the first time an image is seen (a retry succeeds), and always NaN for "dog".
  const seen = new Set<string>();
  const flaky = (images: ImageBatch, prompts: string[]) => {
    const per = images.c * images.h * images.w;
    return prompts.map((p, i) => {
      const img = images.data.subarray(i * per, (i + 1) * per);
      const key = Array.from(img.subarray(0, 16)).join();
      const first = !seen.has(key);
      seen.add(key);
      if (p === 'dog' || first) return NaN;
      let sum = 0;
      for (const v of img) sum += v;
      return -sum / per;
    });
  };
  const four = promptsFromLines(['cat', 'dog', 'cow', 'owl']);
  const ok = await train({ epochs: 1, 'reward_options.max_retries': 1 }, { reward: flaky, prompts: four });
  const r = ok.records[0];
  const dogs = r.prompts.filter((p) => p === 'dog').length;
  assert.ok(dogs > 0 && dogs < 4, `some dogs among ${r.prompts.join(', ')}`);
  assert.is(r.dropped, dogs, 'only the always-failing samples are dropped');
  assert.ok(r.prompts.every((p, i) => (p === 'dog') === !Number.isFinite(r.rewards[i])), 'retried samples got their rewards');
  assert.match(r.droppedReasons[0], /NaN/);
  assert.is(ok.result.status, 'done');

  seen.clear();
  const dir = join(scratch, 'ckpt-fail');
  const bad = await train({ epochs: 3, 'reward_options.max_retries': 0 }, { reward: flaky, prompts: four, checkpointDir: dir });
  assert.is(bad.result.status, 'reward-failure');
  assert.match(bad.result.message!, /8 of 8 samples dropped/);
  assert.is(bad.records.length, 0, 'the failed epoch did not train');
  assert.ok(existsSync(join(dir, 'weights.safetensors')), 'a checkpoint was saved');
  const saved = JSON.parse(readFileSync(join(dir, 'trainer.json'), 'utf8'));
  assert.is(saved.state.epoch, 0);
  assert.is(saved.state.globalSample, 0, 'the checkpoint is the state before the failed epoch (resume redraws it)');
});

s.after(() => rmSync(scratch, { recursive: true, force: true }));

s.run();
