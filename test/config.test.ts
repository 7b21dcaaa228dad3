// The run configuration: the defaults, error messages, command-line coercion, docs.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { RESUMABLE_KEYS, configDocs, configKeys, coerceOverride, defaultConfig, describeReward, optimizerStepsPerEpoch, parseSetArgs, resolveConfig, resumeConfig, rewardSpec, samplesPerEpoch, trainedTimesteps } from '../rl/config.js';
import { promptFn } from '../rl/prompts-file.js';
import { PromptRng } from '../rl/prompts.js';
import { repoRoot } from './helpers.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { resolveRunConfig } from '../cli/train.js';

const s = suite('config');

const throwsWith = (fn: () => unknown, ...patterns: RegExp[]) => {
  let msg = '';
  try { fn(); } catch (e) { msg = (e as Error).message; }
  assert.ok(msg, 'expected an error');
  for (const p of patterns) assert.match(msg, p);
  return msg;
};

s('defaults are the issue\'s', () => {
  const c = resolveConfig();
  assert.is(c.algorithm, 'ddpo-is');
  assert.equal(c.sample, { steps: 50, eta: 1.0, guidance: 5.0, negative_prompt: '', batch_size: 8, batches_per_epoch: 4, decode_batch: 2 });
  assert.equal(c.train, {
    batch_size: 4, gradient_accumulation_steps: 2, inner_epochs: 1, timestep_fraction: 1.0, clip_range: 1e-4, adv_clip_max: 5,
    lr: 3e-4, adam_beta1: 0.9, adam_beta2: 0.999, weight_decay: 1e-4, eps: 1e-8, max_grad_norm: 1.0, kl_coef: 0, negate_advantages: false, max_skipped_steps: 3,
  });
  assert.equal(c.lora, { enabled: true, rank: 4 });
  assert.equal(c.stat_tracking, { per_prompt: true, buffer_size: 32, min_count: 16 });
  assert.is(c.rwr.temperature, 0.2);
  assert.is(c.rwr.quantile, 0.9);
  assert.is(c.reward, 'jpeg_compressibility');
  assert.is(c.prompts, 'simple_animals');
  assert.is(c.model, 'tiny');
  // full fine-tuning gets its own learning rate unless one is given
  assert.is(resolveConfig({ lora: { enabled: false } }).train.lr, 1e-5);
  assert.is(resolveConfig({ lora: { enabled: false }, train: { lr: 2e-5 } }).train.lr, 2e-5);
  // every leaf has a default (null only where resolveConfig derives it)
  const d = defaultConfig() as unknown as Record<string, Record<string, unknown>>;
  for (const k of configKeys()) {
    const v = k.split('.').reduce<unknown>((o, p) => (o as Record<string, unknown>)[p], d);
    assert.ok(v !== undefined, `${k} has a default`);
  }
  assert.ok(configKeys().includes('train.lr'));
});

s('one config: the derived counts the trainer uses; resume changes only RESUMABLE_KEYS', () => {
  const c = resolveConfig({ sample: { steps: 10, batch_size: 4, batches_per_epoch: 3 }, train: { batch_size: 6, timestep_fraction: 0.55, inner_epochs: 2, gradient_accumulation_steps: 1 } });
  assert.is(samplesPerEpoch(c), 12);
  assert.is(trainedTimesteps(c), 5);
  assert.is(optimizerStepsPerEpoch(c), 4);
  // resolving a resolved config changes nothing (the trainer re-checks what it is given)
  assert.equal(resolveConfig(JSON.parse(JSON.stringify(c))), c);
  const r = resumeConfig(c, [['epochs', 7], ['reward_options.max_retries', 0]]);
  assert.is(r.epochs, 7); assert.is(r.reward_options.max_retries, 0); assert.equal(r.train, c.train);
  assert.ok(RESUMABLE_KEYS.includes('save_every'));
  throwsWith(() => resumeConfig(c, { 'train.lr': 1, seed: 2 }, 'resume x'), /resume x: train.lr, seed cannot change when resuming/, /only epochs, out/);
});

s('ddpo-sf defaults to one optimizer step per sampling round and rejects more', () => {
  const c = resolveConfig({ algorithm: 'ddpo-sf' });
  assert.is(c.train.gradient_accumulation_steps, 8); // 8×4 samples / train batch 4
  throwsWith(() => resolveConfig({ algorithm: 'ddpo-sf', train: { gradient_accumulation_steps: 2 } }), /ddpo-sf/, /set it to 8/);
  throwsWith(() => resolveConfig({ algorithm: 'ddpo-sf', train: { inner_epochs: 2 } }), /inner_epochs = 2/);
  throwsWith(() => resolveConfig({ sample: { eta: 0 } }), /eta = 0/);
  assert.is(resolveConfig({ algorithm: 'rwr', sample: { eta: 0 } }).sample.eta, 0);
  throwsWith(() => resolveConfig({ train: { batch_size: 3 } }), /does not divide the 32 samples/);
  throwsWith(() => resolveConfig({ train: { gradient_accumulation_steps: 3 } }), /divisor of 8/);
  throwsWith(() => resolveConfig({ lora: { enabled: false }, train: { kl_coef: 0.1 } }), /lora.enabled/);
  throwsWith(() => resolveConfig({ algorithm: 'rwr', train: { kl_coef: 0.1 } }), /DDPO algorithms only/);
});

s('unknown keys list the valid ones, with nesting', () => {
  const msg = throwsWith(() => resolveConfig({ train: { lrr: 1 } }), /unknown config key "train.lrr"/, /did you mean train.lr/, /train.batch_size/, /train.max_grad_norm/);
  assert.not.match(msg, /sample.steps/); // a section's error lists that section
  throwsWith(() => resolveConfig({ lr: 1 }), /unknown config key "lr"/, /did you mean train.lr/, /sample\.steps/, /lora\.rank/, /eval\.seed/);
  throwsWith(() => resolveConfig({ sampel: {} }), /did you mean sample/);
  // every problem is reported at once
  throwsWith(() => resolveConfig({ foo: 1, bar: 2 }), /"foo"/, /"bar"/);
  throwsWith(() => resolveConfig({}, { 'train.nope': '1' }), /unknown config key "train.nope"/, /train.lr/);
  throwsWith(() => resolveConfig({ reward: { module: './r.js', export: 'r', extra: 1 } }), /reward: unknown key\(s\) extra/);
});

s('wrong types name the key and the expected type', () => {
  throwsWith(() => resolveConfig({ train: { batch_size: 'x' } }), /train.batch_size: expected integer, got "x"/);
  throwsWith(() => resolveConfig({ train: { batch_size: 2.5 } }), /train.batch_size: expected integer/);
  throwsWith(() => resolveConfig({ lora: { enabled: 'yes' } }), /lora.enabled: expected boolean/);
  throwsWith(() => resolveConfig({ algorithm: 'ppo' }), /algorithm: expected 'ddpo-is' \| 'ddpo-sf' \| 'rwr' \| 'rwr-sparse'/);
  throwsWith(() => resolveConfig({ train: 3 }), /train: expected an object/);
  throwsWith(() => resolveConfig({ train: { lr: 0 } }), /train.lr: 0 must be greater than 0/);
  throwsWith(() => resolveConfig({ train: { timestep_fraction: 1.5 } }), /above the maximum 1/);
  throwsWith(() => resolveConfig({ reward: 'aesthetic' }), /unknown reward 'aesthetic'/, /jpeg_compressibility/);
  throwsWith(() => resolveConfig({ prompts: { file: 'x.txt', from: 5, to: 2 } }), /from \(5\) must be below to \(2\)/);
  throwsWith(() => resolveConfig({ reward: { combine: [{ reward: 'jpeg_compressibility', weight: 'a' }] } }), /combine\[0\]\.weight: expected a finite number/);
  throwsWith(() => resolveConfig({ eval: { prompts: [] } }), /eval.prompts: expected a non-empty list/);
});

s('overrides coerce strings to each key\'s type; later ones win', () => {
  const c = resolveConfig({ train: { lr: 1e-3 } }, parseSetArgs([
    'train.lr=1e-4', 'sample.steps=20', 'lora.enabled=true', 'sample.guidance=7.5', 'eval.prompts=cat, dog',
    'prompts=/tmp/classes.txt:0-398', 'reward={"combine":[{"reward":"jpeg_compressibility","weight":1},{"reward":{"module":"./m.js","export":"r"},"weight":0.1}]}',
    'reward_options.workers=null', 'rwr={"temperature":0.5}', 'epochs=3', 'epochs=4',
  ]));
  assert.is(c.train.lr, 1e-4);
  assert.is(c.sample.steps, 20);
  assert.is(c.sample.guidance, 7.5);
  assert.is(c.lora.enabled, true);
  assert.equal(c.eval.prompts, ['cat', 'dog']);
  assert.equal(c.prompts, { file: '/tmp/classes.txt', from: 0, to: 398 });
  assert.is(c.reward_options.workers, null);
  assert.is(c.rwr.temperature, 0.5);
  assert.is(c.rwr.quantile, 0.9, 'a section given as JSON merges into the defaults');
  assert.is(c.epochs, 4);
  assert.is(describeReward(c.reward), '1·jpeg_compressibility + 0.1·./m.js#r');
  // direct flags come as an object of dotted keys; non-strings pass through
  assert.is(resolveConfig({}, { epochs: 7, 'train.lr': '2e-4', out: undefined }).epochs, 7);
  assert.equal(coerceOverride('prompts', 'animal_activities'), 'animal_activities');
  assert.equal(coerceOverride('prompts', 'list.txt'), { file: 'list.txt' });
  assert.equal(coerceOverride('prompts', 'list.txt:10-'), { file: 'list.txt', from: 10 });
  assert.is(coerceOverride('lora.enabled', 'no'), false);
  throwsWith(() => resolveConfig({}, [['sample.steps', 'ten']]), /sample.steps=ten: expected an integer/);
  throwsWith(() => resolveConfig({}, [['sample.steps', '2.5']]), /sample.steps: expected integer/);
  throwsWith(() => resolveConfig({}, [['lora.enabled', 'maybe']]), /expected a boolean/);
  throwsWith(() => resolveConfig({}, [['train.batch_size', 'null']]), /train.batch_size=null: expected an integer/);
  assert.is(resolveConfig({ train: { lr: 1 } }, [['train.lr', 'null']]).train.lr, 3e-4, 'null restores a derived default');
  throwsWith(() => parseSetArgs(['train.lr']), /expected KEY=VALUE/);
});

s('the config names rewards and prompts the trainer can use', () => {
  const spec = rewardSpec({ combine: [{ reward: 'jpeg_incompressibility', weight: 2 }] });
  assert.ok('combine' in spec && 'module' in spec.combine[0].spec && spec.combine[0].spec.export === 'jpegIncompressibility');
  const fn = promptFn('animal_activities');
  assert.match(fn(new PromptRng(1)).prompt, /^an? .+ (washing the dishes|riding a bike|playing chess)$/);
  throwsWith(() => promptFn({ file: '/nonexistent/prompts.txt' }), /cannot read/);
});

s('docs/config.md is up to date (regenerate: node dist/cli/ddpo.js config --docs > docs/config.md)', () => {
  const path = join(repoRoot(), 'docs', 'config.md');
  assert.ok(existsSync(path), `${path} is missing`);
  const docs = configDocs();
  assert.ok(readFileSync(path, 'utf8') === docs, 'docs/config.md differs from configDocs(): regenerate it');
  for (const k of configKeys()) assert.ok(docs.includes(`\`${k}\``), `${k} documented`);
  assert.ok(docs.includes('| `train.clip_range` | number | `1e-4` |') || docs.includes('| `train.clip_range` | number | `0.0001` |'));
});

s('ddpo train flags: file < --set < direct flags; --resume keeps the run\'s config', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ddpo-config-'));
  try {
    const file = join(dir, 'run.json');
    writeFileSync(file, JSON.stringify({ epochs: 5, train: { lr: 1e-3 }, sample: { steps: 10 } }));
    const c = resolveRunConfig({ config: file, set: ['train.lr=2e-4', 'epochs=6'], epochs: 7, model: 'tiny', out: join(dir, 'run') });
    assert.is(c.train.lr, 2e-4); assert.is(c.epochs, 7); assert.is(c.sample.steps, 10); assert.is(c.out, join(dir, 'run'));
    throwsWith(() => resolveRunConfig({ config: join(dir, 'missing.json') }), /cannot read config file/, /--config/);
    writeFileSync(join(dir, 'bad.json'), '{"epochs": 3,}');
    throwsWith(() => resolveRunConfig({ config: join(dir, 'bad.json') }), /bad.json is not valid JSON/);
    // resume: the saved config.json is the base; out defaults to the run folder; only safe keys change
    writeFileSync(join(dir, 'config.json'), JSON.stringify(c));
    const r = resolveRunConfig({ resume: dir, epochs: 9 });
    assert.is(r.epochs, 9); assert.is(r.out, dir); assert.is(r.train.lr, 2e-4);
    throwsWith(() => resolveRunConfig({ resume: dir, set: ['train.lr=1'] }), /train.lr cannot change when resuming/);
    throwsWith(() => resolveRunConfig({ resume: join(dir, 'nope') }), /no config.json there/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

s('every shipped `ddpo train` config in configs/ (not pretrain-*.json) resolves, and the model and prompt files it names exist (paths relative to the repo root)', () => {
  const dir = join(repoRoot(), 'configs');
  const files = readdirSync(dir).filter((f) => f.endsWith('.json') && !f.startsWith('pretrain-'));
  assert.ok(files.includes('emoji-jpeg.json') && files.includes('tiny-brightness.json'), `configs/: ${files.join(', ')}`);
  for (const f of files) {
    const c = resolveConfig(JSON.parse(readFileSync(join(dir, f), 'utf8')));
    if (c.model !== 'tiny') assert.ok(existsSync(join(repoRoot(), c.model, 'model_index.json')), `${f}: model ${c.model} has no model_index.json`);
    const p = c.prompts;
    if (typeof p === 'object' && p && 'file' in p) assert.ok(existsSync(join(repoRoot(), p.file)), `${f}: prompts file ${p.file} is missing`);
  }
  // The main job (scripts/setup.sh) is the paper's task on the shipped model, not the brightness demo.
  const main = resolveConfig(JSON.parse(readFileSync(join(dir, 'emoji-jpeg.json'), 'utf8')));
  assert.equal(main.reward, { jpeg_compressibility: { size: 64 } });
  assert.is(main.algorithm, 'ddpo-is');
  assert.match(readFileSync(join(repoRoot(), 'scripts', 'setup.sh'), 'utf8'), /--config configs\/emoji-jpeg\.json/);
});

s.run();
