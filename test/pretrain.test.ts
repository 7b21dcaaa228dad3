// `ddpo pretrain` end to end on a handful of generated images with toy-sized networks: both
// stages' losses fall, a run stopped in either stage and resumed is bit-identical to an
// uninterrupted one (the exported model's files byte for byte), the output folder loads with
// loadStableDiffusion in f32 and f16 and samples, its configs carry diffusers' fields, a NaN loss
// stops the run before a checkpoint takes it in, and the config checks and docs hold.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generatedImageSet } from '../pretrain/generated.js';
import { PretrainConfig, pretrainConfigDocs, resolvePretrainConfig } from '../pretrain/config.js';
import { PretrainMetrics, Pretrainer, Stage } from '../pretrain/trainer.js';
import { disposeStableDiffusion, loadStableDiffusion } from '../diffusion/load.js';
import { sample } from '../diffusion/pipeline.js';
import { augment, classify, loadJudge, saveJudge, trainJudge } from '../pretrain/judge.js';
import { evaluateModel } from '../pretrain/evaluate.js';
import { PromptRng } from '../rl/prompts.js';
import { assertThrows, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('pretrain');
const scratch = mkdtempSync(join(tmpdir(), 'ddpo-pretrain-test-'));
const data = generatedImageSet(8, 8, 3);

/** Toy sizes: 8 px images, VAE 8/16 (4×4×4 latents), UNet 16/32, text width 16. */
const TOY: [string, unknown][] = [
  ['data', '(generated)'], ['log_every', 2], ['checkpoint_every', 2], ['sample.every', 0], ['sample.n', 2], ['sample.steps', 2],
  ['tokenizer.max_length', 6], ['vae.block_out_channels', [8, 16]], ['vae.norm_num_groups', 4], ['vae.batch_size', 4], ['vae.warmup_steps', 2],
  ['text_encoder.hidden_size', 16], ['text_encoder.layers', 1], ['text_encoder.intermediate_size', 32],
  ['unet.block_out_channels', [16, 32]], ['unet.cross_attention', [true, false]], ['unet.attention_heads', 2], ['unet.norm_num_groups', 8],
  ['unet.mid_block', false], ['train.batch_size', 4], ['train.warmup_steps', 2],
];
const toy = (over: [string, unknown][] = []): PretrainConfig => resolvePretrainConfig(undefined, [...TOY, ...over]);

interface Run { rows: PretrainMetrics[]; dir: string }

async function run(cfg: PretrainConfig, dir: string, stopAt?: { stage: Stage; step: number }, resume = false): Promise<Run & { status: string }> {
  const rows: PretrainMetrics[] = [];
  let t: Pretrainer | null = null;
  const opts = {
    config: cfg, data, runDir: dir, device: dev, onMetrics: (r: PretrainMetrics[]) => rows.push(...r),
    onProgress: (p: { stage: Stage; step: number }) => { if (stopAt && p.stage === stopAt.stage && p.step === stopAt.step) t!.requestStop(); },
  };
  t = resume ? await Pretrainer.resume(opts) : await Pretrainer.start(opts);
  try {
    const r = await t.run();
    return { rows, dir, status: r.status };
  } finally {
    t.dispose();
  }
}

const files = ['unet/diffusion_pytorch_model.safetensors', 'text_encoder/model.safetensors', 'vae/diffusion_pytorch_model.safetensors', 'vae/config.json', 'tokenizer/vocab.json', 'tokenizer/merges.txt'];

s('both stages\' losses fall on generated images', async () => {
  const r = await run(toy([['vae.steps', 24], ['train.steps', 24], ['log_every', 6], ['train.lr', 3e-3], ['vae.lr', 3e-3]]), join(scratch, 'falls'));
  const loss = (stage: Stage) => r.rows.filter((x) => x.stage === stage).map((x) => x.loss);
  const [v, u] = [loss(1), loss(2)];
  assert.is(v.length, 4);
  assert.ok(v[3] < 0.6 * v[0], `VAE loss ${v.map((x) => x.toFixed(4)).join(' → ')}`);
  assert.ok(u[3] < u[0], `UNet loss ${u.map((x) => x.toFixed(4)).join(' → ')}`);
  assert.ok(r.rows.every((x) => x.samples_per_s > 0 && x.lr > 0 && x.grad_norm > 0));
});

s('stopped in stage 1 or stage 2 and resumed: bit-identical to an uninterrupted run', async () => {
  const cfg = toy([['vae.steps', 5], ['train.steps', 5]]);
  const full = await run(cfg, join(scratch, 'full'));
  for (const at of [{ stage: 1 as Stage, step: 3 }, { stage: 2 as Stage, step: 3 }]) {
    const dir = join(scratch, `stopped-${at.stage}`);
    const first = await run(cfg, dir, at);
    assert.is(first.status, 'stopped');
    assert.is(existsSync(join(dir, 'model')), at.stage === 2, 'model/ is exported on a stop in stage 2');
    const rest = await run(cfg, dir, undefined, true);
    assert.is(rest.status, 'done');
    for (const f of files) assert.ok(readFileSync(join(full.dir, 'model', f)).equals(readFileSync(join(dir, 'model', f))), `${f} differs after a stop at stage ${at.stage} step ${at.step}`);
  }
  await assertThrows(() => Pretrainer.start({ config: cfg, data, runDir: full.dir, device: dev }), /already holds a pretraining run/);
  const other = { ...data, fingerprint: 'changed' };
  await assertThrows(() => Pretrainer.resume({ config: cfg, data: other, runDir: full.dir, device: dev }), /is not the one the run started on/);
});

s('the output folder is a diffusers pipeline that loads (f32 and f16) and samples', async () => {
  const dir = join(scratch, 'full', 'model');
  const index = JSON.parse(readFileSync(join(dir, 'model_index.json'), 'utf8'));
  assert.equal(index.unet, ['diffusers', 'UNet2DConditionModel']);
  const vaeCfg = JSON.parse(readFileSync(join(dir, 'vae', 'config.json'), 'utf8'));
  assert.ok(vaeCfg.scaling_factor > 0 && vaeCfg.scaling_factor !== 1, `measured scaling_factor ${vaeCfg.scaling_factor}`);
  const sched = JSON.parse(readFileSync(join(dir, 'scheduler', 'scheduler_config.json'), 'utf8'));
  assert.equal([sched._class_name, sched.beta_schedule, sched.beta_start, sched.beta_end, sched.prediction_type], ['DDIMScheduler', 'scaled_linear', 0.00085, 0.012, 'epsilon']);
  const tokCfg = JSON.parse(readFileSync(join(dir, 'tokenizer', 'tokenizer_config.json'), 'utf8'));
  assert.equal([tokCfg.tokenizer_class, tokCfg.model_max_length], ['CLIPTokenizer', 6]);
  for (const dtype of ['f32', 'f16'] as const) {
    if (dtype === 'f16' && !dev.hasF16) continue;
    const sd = await loadStableDiffusion(dir, { device: dev, dtype });
    try {
      assert.is(sd.tokenizer.modelMaxLength, 6);
      const r = sample(sd, { prompts: [data.captions[0], data.captions[1]], steps: 2, guidance: 3, eta: 0, seed: 1 });
      const img = await r.images!.data();
      r.trajectory.dispose(); r.images!.dispose();
      assert.equal(r.images!.shape, [2, 3, 8, 8]);
      assert.ok([...img].every((v) => v >= 0 && v <= 1), `${dtype}: images in [0, 1]`);
    } finally {
      disposeStableDiffusion(sd);
    }
  }
});

s('judge: trained on the real images it recognises them; saved and loaded it predicts the same; eval-model counts', async () => {
  const a = augment(data.images[0], new PromptRng(5)), b = augment(data.images[0], new PromptRng(5));
  assert.equal([...a], [...b], 'augmentation is a function of the generator');
  assert.ok(a.every((v) => v >= 0 && v <= 1));
  const labels = data.records.map((r) => data.captions.indexOf(r.caption));
  const { judge, loss } = await trainJudge(data.images, labels, data.captions, { device: dev, steps: 60, batch: 32 });
  const dir = join(scratch, 'judge');
  try {
    assert.ok(Number.isFinite(loss));
    const pred = await classify(judge, data.images);
    const acc = pred.filter((p, i) => p === labels[i]).length / labels.length;
    assert.ok(acc >= 0.75, `judge top-1 on its training images ${acc}`);
    await saveJudge(judge, dir, { note: 'test' });
  } finally {
    judge.dispose();
  }
  const again = await loadJudge(dir, dev);
  const sd = await loadStableDiffusion(join(scratch, 'full', 'model'), { device: dev });
  try {
    assert.equal(await classify(again, data.images), await classify(again, data.images));
    const ev = await evaluateModel(sd, again, { n: 2, steps: 2, batch: 3 });
    assert.is(ev.prompts.length, 2 * data.captions.length);
    assert.is(ev.images.length, ev.prompts.length);
    assert.is(ev.chance, 1 / data.captions.length);
    const correct = Object.values(ev.perPrompt).reduce((s, e) => s + e.correct, 0);
    assert.is(ev.accuracy, correct / ev.prompts.length);
    await assertThrows(() => evaluateModel(sd, again, { prompts: ['a unicorn'] }), /the judge does not know "a unicorn"/);
  } finally {
    again.dispose();
    disposeStableDiffusion(sd);
  }
});

s('a loss that becomes non-finite stops the run with an Error and no checkpoint', async () => {
  const dir = join(scratch, 'nan');
  await assertThrows(() => run(toy([['vae.steps', 8], ['vae.lr', 1e30], ['vae.warmup_steps', 0], ['checkpoint_every', 4]]), dir), /pretrain stage 1: \w+ became (NaN|-?Infinity) by step 2; stopped without saving/);
  assert.not.ok(existsSync(join(dir, 'checkpoint', 'trainer.json')), 'no checkpoint holds the non-finite weights');
});

s('config: defaults, checks that name the key, and docs/pretrain-config.md up to date', async () => {
  const c = resolvePretrainConfig({ data: 'x' });
  assert.equal(c.unet.block_out_channels, [32, 64, 64]);
  await assertThrows(() => resolvePretrainConfig({ data: 'x', train: { lr_rate: 1 } }), /unknown config key "train\.lr_rate"/);
  await assertThrows(() => resolvePretrainConfig({ data: 'x', unet: { cross_attention: [true] } }), /unet\.cross_attention has 1 entries but unet\.block_out_channels has 3 levels/);
  await assertThrows(() => resolvePretrainConfig({}), /data: required/);
  await assertThrows(() => resolvePretrainConfig(undefined, [['data', 'x'], ['train.steps', 'many']]), /--set train\.steps=many: expected an integer/);
  assert.equal(resolvePretrainConfig(undefined, [['data', 'x'], ['vae.block_out_channels', '16,32']]).vae.block_out_channels, [16, 32]);
  const docs = readFileSync(new URL('../../docs/pretrain-config.md', import.meta.url), 'utf8');
  assert.ok(docs === pretrainConfigDocs(), 'docs/pretrain-config.md is stale: regenerate it with `node dist/cli/ddpo.js pretrain --docs > docs/pretrain-config.md`');
});

s.after(() => rmSync(scratch, { recursive: true, force: true }));
s.run();
