// The DDPO run configuration, the only one: one declarative table (SCHEMA) gives every option its
// type, its default and its documentation, and drives validation of config files, coercion of
// command-line overrides (`--set train.lr=1e-4`), error messages that list the valid keys, and the
// markdown table in docs/config.md (configDocs). The walking of the table is rl/schema.ts's (shared
// with `ddpo pretrain`'s config); this file adds the reward and prompts value types. Every rule
// that spans several options is in finish(), and the trainer takes the ResolvedConfig this module
// returns (there is no second, flat trainer config).
//
// Defaults are the DDPO issue's (mostly the paper's reference code, ddpo-pytorch), with larger
// batches. Keys are snake_case like the reference code's config, so its users recognise them.

import { builtinReward, BUILTIN_REWARDS } from '../rewards/builtin.js';
import { AestheticOptions, ClipScoreOptions, HOSTED_REWARD_NAMES, JpegRewardOptions, JudgeRewardOptions, ServiceOptions, checkHostedReward, hostedRewardName, hostedRewardSpec } from '../rewards/hosted-options.js';
import type { RewardSpec } from '../rewards/types.js';
import { BUILTIN_PROMPTS } from './prompts.js';
import { ConfigSchema, CustomType, Spec, bool, field as f, int, num, section as sec, show } from './schema.js';

export type Algorithm = 'ddpo-is' | 'ddpo-sf' | 'rwr' | 'rwr-sparse';
export const ALGORITHMS: readonly Algorithm[] = ['ddpo-is', 'ddpo-sf', 'rwr', 'rwr-sparse'];

export type BuiltinRewardName = keyof typeof BUILTIN_REWARDS;
/** A reward: a built-in name, a module export (see rewards/types.ts RewardSpec), or a weighted sum of rewards. */
export type RewardConfig =
  | BuiltinRewardName
  | { module: string; export: string; args?: unknown[]; thread?: 'worker' | 'main' }
  | { aesthetic: AestheticOptions } | { clip_score: ClipScoreOptions } | { service: ServiceOptions } | { judge: JudgeRewardOptions }
  | { jpeg_compressibility: JpegRewardOptions } | { jpeg_incompressibility: JpegRewardOptions }
  | { combine: { reward: RewardConfig; weight: number }[] };

export type BuiltinPromptsName = 'simple_animals' | 'animal_activities';
/** Prompts: a built-in set, or the lines [from, to) of a text file (one prompt per line). */
export type PromptsConfig = BuiltinPromptsName | { file: string; from?: number; to?: number };

export interface SampleConfig {
  steps: number;
  eta: number;
  guidance: number;
  negative_prompt: string;
  batch_size: number;
  batches_per_epoch: number;
  decode_batch: number;
}

export interface TrainSection {
  batch_size: number;
  gradient_accumulation_steps: number | null;
  inner_epochs: number;
  timestep_fraction: number;
  clip_range: number;
  adv_clip_max: number;
  lr: number | null;
  adam_beta1: number;
  adam_beta2: number;
  weight_decay: number;
  eps: number;
  max_grad_norm: number;
  kl_coef: number;
  negate_advantages: boolean;
  max_skipped_steps: number;
}

export interface LoraConfig {
  enabled: boolean;
  rank: number;
}

export interface StatTrackingConfig {
  per_prompt: boolean;
  buffer_size: number;
  min_count: number;
}

export interface RwrConfig {
  temperature: number;
  standardise: boolean;
  per_prompt: boolean;
  quantile: number;
}

export interface RewardOptionsConfig {
  workers: number | null;
  timeout_s: number;
  max_retries: number;
  max_dropped_fraction: number;
}

export interface EvalConfig {
  prompts: string[] | null;
  n: number;
  seed: number;
  every: number;
}

/** A run's configuration as written in run.json; `resolveConfig` fills every default. */
export interface RunConfig {
  algorithm: Algorithm;
  model: string;
  dtype: 'f32' | 'f16';
  adapter: string;
  epochs: number;
  seed: number;
  out: string;
  save_every: number;
  prompts: PromptsConfig;
  reward: RewardConfig;
  reward_options: RewardOptionsConfig;
  sample: SampleConfig;
  train: TrainSection;
  lora: LoraConfig;
  stat_tracking: StatTrackingConfig;
  rwr: RwrConfig;
  eval: EvalConfig;
}

/**
 * The resolved configuration: as RunConfig, with the defaults that depend on other options
 * (train.lr, train.gradient_accumulation_steps) filled in, so never null there.
 */
export interface ResolvedConfig extends RunConfig {
  train: TrainSection & { lr: number; gradient_accumulation_steps: number };
}

/** The two DDPO estimators (per-step log-probabilities); the others are RWR. */
export function isDDPO(algorithm: Algorithm): boolean {
  return algorithm === 'ddpo-is' || algorithm === 'ddpo-sf';
}

/** Samples drawn per epoch. */
export function samplesPerEpoch(c: RunConfig): number {
  return c.sample.batch_size * c.sample.batches_per_epoch;
}

/** Denoising steps each sample trains on (DDPO): ⌊steps · timestep_fraction⌋. */
export function trainedTimesteps(c: RunConfig): number {
  return Math.floor(c.sample.steps * c.train.timestep_fraction);
}

/** Optimizer steps one epoch takes. */
export function optimizerStepsPerEpoch(c: ResolvedConfig): number {
  return (c.train.inner_epochs * samplesPerEpoch(c)) / (c.train.batch_size * c.train.gradient_accumulation_steps);
}

// ---------------------------------------------------------------------------------------------
// The schema table.

export const SCHEMA: Spec<RunConfig, RewardConfig | PromptsConfig> = {
  algorithm: f<Algorithm>('enum', 'ddpo-is', "Policy-gradient estimator: 'ddpo-is' (clipped importance sampling, PPO-style), 'ddpo-sf' (score function, REINFORCE; one optimizer step per sampling round), 'rwr' (reward-weighted regression: diffusion loss weighted by N·softmax(r̃/T)), 'rwr-sparse' (diffusion loss on samples at or above the reward quantile).", { values: ALGORITHMS }),
  model: f<string>('string', 'tiny', "A diffusers-layout Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), or 'tiny' for the built-in small randomly initialised model of the SD architecture (for tests and demos)."),
  dtype: f<'f32' | 'f16'>('enum', 'f32', "Storage type of the frozen base weights (UNet, text encoder). 'f16' halves their memory; LoRA weights, gradients, optimizer state, log-probs and advantages are always f32.", { values: ['f32', 'f16'] }),
  adapter: f<string>('string', 'auto', "WebGPU adapter: 'auto' (a GPU if present, else the software one), 'gpu', 'cpu', or part of an adapter's name."),
  epochs: int(100, 'Epochs to run (each: sampling, reward, then training on those samples). A resumed run continues to this total.', { min: 1 }),
  seed: int(42, 'Seed of every random stream (sampling noise, prompt choice, shuffles, timestep permutations, LoRA initialisation).', { min: 0 }),
  out: f<string>('string', 'runs/ddpo', 'Run folder: metrics.jsonl, grids/, report.html, reward curve, config.json, checkpoints.'),
  save_every: int(1, 'Write a checkpoint (OUT/checkpoint, replaced atomically) every this many epochs; also at the end and on Ctrl-C (0: only then). LoRA checkpoints are small; raise this for full fine-tuning.', { min: 0 }),
  prompts: f<PromptsConfig>('prompts', 'simple_animals', "Training prompts: 'simple_animals' (the paper's 45 animals), 'animal_activities' (\"a(n) ANIMAL ACTIVITY\"), or {\"file\": PATH, \"from\": 0, \"to\": N} for lines [from, to) of a text file, one prompt per line (on the command line: PATH or PATH:FROM-TO)."),
  reward: f<RewardConfig>('reward', 'jpeg_compressibility', "'jpeg_compressibility' (−kB of the JPEG at quality 95), 'jpeg_incompressibility' (+kB), {\"jpeg_compressibility\": {\"size\": 64, \"quality\": 95}} (the same, each image encoded with its longer side resized to size px by Pillow's bicubic: small images' sizes then follow their detail instead of the JPEG header), 'brightness' / 'darkness' (mean pixel value in [0, 1] / 1 − that: not paper tasks, a quick check that training moves the model), {\"aesthetic\": {\"clip\": DIR, \"head\": FILE}} (the LAION aesthetic score of CLIP ViT-L/14's image embedding, on the training device), {\"clip_score\": {\"clip\": DIR, \"scale\": 1}} (cosine of image and prompt embeddings; scale 100 as torchmetrics), {\"service\": {\"url\": URL}} (an HTTP reward server, rewards/service/README.md), {\"judge\": {\"model\": DIR}} (prompt alignment: the probability `ddpo judge`'s classifier gives the prompt's caption), {\"module\": PATH, \"export\": NAME, \"args\": [...], \"thread\": \"worker\"} for your own reward (args: NAME is a factory called with them; thread 'main' runs it in the trainer's thread and passes {device} after the args), or {\"combine\": [{\"reward\": R, \"weight\": W}, ...]} for a weighted sum (each part's mean is logged per epoch). Paths are relative to the current directory."),
  reward_options: sec<RewardOptionsConfig>('How rewards run (on worker threads, overlapping the next sampling batch).', {
    workers: int<number | null>(null, 'Reward worker threads.', { nullable: true, min: 1, defaultDoc: 'null (min(2, CPU cores))' }),
    timeout_s: num(300, 'The time one batch\'s scoring may take, all of it: waiting for a worker, the first attempt and every retry. Samples not scored by then are dropped (reason: timed out); a worker still busy with them is replaced.', { gt: 0 }),
    max_retries: int(2, 'A sample whose reward threw or gave NaN is scored again up to this many times before it is dropped (and counted).', { min: 0 }),
    max_dropped_fraction: num(0.5, 'The run stops, with a checkpoint saved, when more than this fraction of an epoch\'s samples is dropped.', { min: 0, max: 1 }),
  }),
  sample: sec<SampleConfig>('Sampling (the policy rollouts).', {
    steps: int(50, 'DDIM steps per sample (each one an action of the policy).', { min: 1 }),
    eta: num(1.0, 'DDIM η: the noise of each step. DDPO needs η > 0 (a stochastic policy); 1.0 is DDPM-like.', { min: 0 }),
    guidance: num(5.0, 'Classifier-free guidance scale, used alike when sampling and in the training forward.', { min: 0 }),
    negative_prompt: f<string>('string', '', 'Prompt of the unconditional half of guidance (empty: the usual unconditional embedding).', { allowEmpty: true }),
    batch_size: int(8, 'Samples per sampling batch.', { min: 1 }),
    batches_per_epoch: int(4, 'Sampling batches per epoch (samples per epoch = batch_size × batches_per_epoch).', { min: 1 }),
    decode_batch: int(2, 'VAE decode micro-batch (memory only; results do not depend on it).', { min: 1 }),
  }),
  train: sec<TrainSection>('Training on the sampled trajectories.', {
    batch_size: int(4, 'Samples per training batch.', { min: 1 }),
    gradient_accumulation_steps: int<number | null>(null, 'Training batches per optimizer step (gradients accumulate over all their trained timesteps).', { nullable: true, min: 1, defaultDoc: "2; with 'ddpo-sf': samples per epoch / train.batch_size (one step per sampling round)" }),
    inner_epochs: int(1, 'Passes over each epoch\'s samples (shuffled each pass). Must be 1 for ddpo-sf.', { min: 1 }),
    timestep_fraction: num(1.0, 'Fraction of each trajectory\'s timesteps trained on (a random subset, in random order).', { gt: 0, max: 1 }),
    clip_range: num(1e-4, 'ddpo-is: ratio clipped to [1 − ε, 1 + ε].', { min: 0 }),
    adv_clip_max: num(5, 'Advantages clipped to ±this.', { gt: 0 }),
    lr: num<number | null>(null, 'AdamW learning rate.', { nullable: true, gt: 0, defaultDoc: '3e-4 with LoRA, 1e-5 for full fine-tuning' }),
    adam_beta1: num(0.9, 'AdamW β1.', { min: 0, max: 1 }),
    adam_beta2: num(0.999, 'AdamW β2.', { min: 0, max: 1 }),
    weight_decay: num(1e-4, 'AdamW decoupled weight decay.', { min: 0 }),
    eps: num(1e-8, 'AdamW ε.', { gt: 0 }),
    max_grad_norm: num(1.0, 'Gradients clipped to this global L2 norm before each step.', { gt: 0 }),
    kl_coef: num(0, 'Weight of a KL penalty to the frozen starting model (LoRA adapters disabled), ‖μ_θ − μ_ref‖²/(2σ_t²) per step; 0 turns it off. DDPO algorithms with LoRA only.', { min: 0 }),
    negate_advantages: bool(false, 'Negative control: train on −advantages (DDPO) or −rewards (RWR), so the reward should fall.'),
    max_skipped_steps: int(3, 'An optimizer step whose loss or gradient norm is NaN/Inf is skipped (its gradients dropped, the weights unchanged) and counted; when the run has skipped this many it stops without saving, so its last checkpoint stays as it was.', { min: 1 }),
  }),
  lora: sec<LoraConfig>('LoRA adapters on the UNet\'s attention projections.', {
    enabled: bool(true, 'Train LoRA adapters (the base stays frozen); false fine-tunes every UNet weight.'),
    rank: int(4, 'LoRA rank.', { min: 1 }),
  }),
  stat_tracking: sec<StatTrackingConfig>('Advantages: rewards standardised per prompt (the reference code\'s PerPromptStatTracker).', {
    per_prompt: bool(true, 'Standardise by each prompt\'s reward buffer; false: by the whole batch.'),
    buffer_size: int(32, 'Rewards kept per prompt.', { min: 1 }),
    min_count: int(16, 'Below this many buffered rewards, a prompt uses the batch\'s mean and std.', { min: 1 }),
  }),
  rwr: sec<RwrConfig>("Reward-weighted regression ('rwr', 'rwr-sparse').", {
    temperature: num(0.2, "'rwr': weights N·softmax(r̃/T) over the batch's N samples.", { gt: 0 }),
    standardise: bool(true, "'rwr': r̃ is the reward standardised over the batch, so T means the same whatever the reward's units (the paper's code uses raw rewards: set false for that)."),
    per_prompt: bool(false, 'Normalise weights (rwr) or take the quantile (rwr-sparse) within each prompt\'s samples.'),
    quantile: num(0.9, "'rwr-sparse': samples at or above this reward quantile get weight 1, others 0.", { gt: 0, max: 1 }),
  }),
  eval: sec<EvalConfig>('The fixed-seed samples drawn each epoch for the report\'s grid.', {
    prompts: f<string[] | null>('string[]', null, 'Prompts of the grid.', { nullable: true, defaultDoc: 'null (eval.n prompts drawn from the training prompts with eval.seed)' }),
    n: int(8, 'Grid images (prompts cycle through eval.prompts when given); 0: no grid.', { min: 0 }),
    seed: int(1234, 'Seed of the grid\'s prompts and noise (fixed, so epochs compare like for like).', { min: 0 }),
    every: int(1, 'Draw the grid every this many epochs (0: never).', { min: 0 }),
  }),
};

// ---------------------------------------------------------------------------------------------
// The value types the generic schema does not know: rewards and prompt sets.

function checkReward(v: unknown, key: string, problems: string[]): void {
  if (typeof v === 'string') {
    if (!(v in BUILTIN_REWARDS)) problems.push(`${key}: unknown reward '${v}'; built-in rewards: ${Object.keys(BUILTIN_REWARDS).join(', ')} (or give {"module": PATH, "export": NAME})`);
    return;
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) { problems.push(`${key}: expected a reward name, {module, export, args?} or {combine: [...]}, got ${show(v)}`); return; }
  const o = v as Record<string, unknown>;
  if ('combine' in o) {
    const extra = Object.keys(o).filter((k) => k !== 'combine');
    if (extra.length) problems.push(`${key}: unknown key(s) ${extra.join(', ')} beside "combine"`);
    if (!Array.isArray(o.combine) || !o.combine.length) { problems.push(`${key}.combine: expected a non-empty list of {reward, weight}`); return; }
    o.combine.forEach((p: unknown, i: number) => {
      const k = `${key}.combine[${i}]`;
      if (!p || typeof p !== 'object') { problems.push(`${k}: expected {reward, weight}, got ${show(p)}`); return; }
      const q = p as Record<string, unknown>;
      const bad = Object.keys(q).filter((x) => x !== 'reward' && x !== 'weight');
      if (bad.length) problems.push(`${k}: unknown key(s) ${bad.join(', ')}; valid: reward, weight`);
      if (typeof q.weight !== 'number' || !Number.isFinite(q.weight)) problems.push(`${k}.weight: expected a finite number, got ${show(q.weight)}`);
      if (q.reward === undefined) problems.push(`${k}.reward: missing`);
      else checkReward(q.reward, `${k}.reward`, problems);
    });
    return;
  }
  const hosted = hostedRewardName(o);
  if (hosted) { problems.push(...checkHostedReward(hosted, o[hosted], key)); return; }
  const bad = Object.keys(o).filter((k) => !['module', 'export', 'args', 'thread'].includes(k));
  if (bad.length) problems.push(`${key}: unknown key(s) ${bad.join(', ')}; valid: module, export, args (or combine)`);
  if (typeof o.module !== 'string' || !o.module) problems.push(`${key}.module: expected a module path or package name (string), got ${show(o.module)}`);
  if (typeof o.export !== 'string' || !o.export) problems.push(`${key}.export: expected the export's name (string), got ${show(o.export)}`);
  if (o.args !== undefined && !Array.isArray(o.args)) problems.push(`${key}.args: expected a list of arguments, got ${show(o.args)}`);
  if (o.thread !== undefined && o.thread !== 'worker' && o.thread !== 'main') problems.push(`${key}.thread: expected 'worker' or 'main', got ${show(o.thread)}`);
}

function checkPrompts(v: unknown, key: string, problems: string[]): void {
  if (typeof v === 'string') {
    if (!(v in BUILTIN_PROMPTS)) problems.push(`${key}: unknown prompt set '${v}'; built-in: ${Object.keys(BUILTIN_PROMPTS).join(', ')} (or give {"file": PATH, "from": 0, "to": N})`);
    return;
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) { problems.push(`${key}: expected a prompt set name or {file, from?, to?}, got ${show(v)}`); return; }
  const o = v as Record<string, unknown>;
  const bad = Object.keys(o).filter((k) => !['file', 'from', 'to'].includes(k));
  if (bad.length) problems.push(`${key}: unknown key(s) ${bad.join(', ')}; valid: file, from, to`);
  if (typeof o.file !== 'string' || !o.file) problems.push(`${key}.file: expected a file path (string), got ${show(o.file)}`);
  for (const k of ['from', 'to'] as const) {
    if (o[k] !== undefined && !(Number.isInteger(o[k]) && (o[k] as number) >= 0)) problems.push(`${key}.${k}: expected a non-negative integer, got ${show(o[k])}`);
  }
  if (Number.isInteger(o.from) && Number.isInteger(o.to) && (o.from as number) >= (o.to as number)) problems.push(`${key}: from (${o.from}) must be below to (${o.to})`);
}

const REWARD: CustomType = {
  typeName: `reward (${Object.keys(BUILTIN_REWARDS).map((v) => `'${v}'`).join(' | ')} | {${HOSTED_REWARD_NAMES.join(' | ')}: {...}} | {module, export, args?, thread?} | {combine: [{reward, weight}]})`,
  check: checkReward,
  coerce: (s, _key, json) => (s.startsWith('{') ? json(s) : s),
};

const PROMPTS: CustomType = {
  typeName: `prompts (${Object.keys(BUILTIN_PROMPTS).map((v) => `'${v}'`).join(' | ')} | {file, from?, to?})`,
  check: checkPrompts,
  coerce: (s, _key, json) => {
    if (s.startsWith('{')) return json(s);
    if (s in BUILTIN_PROMPTS) return s;
    const m = /^(.+):(\d*)-(\d*)$/.exec(s);
    if (m) return { file: m[1], ...(m[2] ? { from: Number(m[2]) } : {}), ...(m[3] ? { to: Number(m[3]) } : {}) };
    return { file: s };
  },
};

export const RUN_CONFIG = new ConfigSchema<RunConfig, RewardConfig | PromptsConfig>(SCHEMA, 'docs/config.md (or `ddpo config --docs`)', { reward: REWARD, prompts: PROMPTS });

/** Every leaf key in dotted form, in table order: ['algorithm', ..., 'train.lr', ...]. */
export function configKeys(): string[] {
  return RUN_CONFIG.keys();
}

/** Every default, as a fresh object (train.lr and train.gradient_accumulation_steps stay null: resolveConfig fills them). */
export function defaultConfig(): RunConfig {
  return RUN_CONFIG.defaults();
}

function fail(problems: string[], what: string): never {
  return RUN_CONFIG.fail(problems, what);
}

/**
 * Checks a partial config (a run.json's contents): unknown keys (listing the valid ones, with
 * nesting) and wrong types (naming the key and the expected type). Throws one Error listing every problem.
 */
export function validatePartialConfig(json: unknown, what = 'invalid config'): void {
  RUN_CONFIG.validatePartial(json, what);
}

/**
 * A command-line string as the value the key's type needs: numbers (1e-4), booleans
 * (true/false/yes/no/1/0), null (for nullable keys), string lists (JSON or comma-separated),
 * rewards (a name or JSON), prompts (a name, JSON, or FILE[:FROM-TO]); a section takes a JSON
 * object that is merged into it. Non-string values are returned as they are (checked later).
 */
export function coerceOverride(key: string, value: unknown): unknown {
  return RUN_CONFIG.coerce(key, value);
}

/** Parses `--set` arguments ("train.lr=1e-4") into [key, raw value] pairs. */
export function parseSetArgs(args: readonly string[]): [string, string][] {
  return args.map((a) => {
    const i = a.indexOf('=');
    if (i <= 0) throw new Error(`--set ${a}: expected KEY=VALUE, e.g. --set train.lr=1e-4`);
    return [a.slice(0, i).trim(), a.slice(i + 1)];
  });
}

/** Fills the defaults that depend on other options and checks rules that span several options. */
function finish(c: RunConfig): ResolvedConfig {
  const problems: string[] = [];
  const t = c.train;
  const lr = t.lr ?? (c.lora.enabled ? 3e-4 : 1e-5);
  const perEpoch = c.sample.batch_size * c.sample.batches_per_epoch;
  const batches = perEpoch / t.batch_size;
  const accum = t.gradient_accumulation_steps ?? (c.algorithm === 'ddpo-sf' && Number.isInteger(batches) ? batches : 2);
  if (!Number.isInteger(batches)) {
    problems.push(`train.batch_size = ${t.batch_size} does not divide the ${perEpoch} samples per epoch (sample.batch_size ${c.sample.batch_size} × sample.batches_per_epoch ${c.sample.batches_per_epoch}); choose a divisor`);
  } else if (batches % accum !== 0) {
    problems.push(`train.gradient_accumulation_steps = ${accum} does not divide the ${batches} training batches per epoch (${perEpoch} samples / train.batch_size ${t.batch_size}), so a step would be partial; choose a divisor of ${batches}`);
  }
  if (c.algorithm === 'ddpo-sf') {
    // The score-function gradient is unbiased only on-policy: the samples must come from the
    // weights being differentiated, so one optimizer step per sampling round.
    if (c.train.inner_epochs !== 1) problems.push(`algorithm 'ddpo-sf' takes one optimizer step per sampling round (it is only unbiased on-policy), but train.inner_epochs = ${c.train.inner_epochs}; set it to 1, or use 'ddpo-is'`);
    if (Number.isInteger(batches) && accum !== batches) problems.push(`algorithm 'ddpo-sf' takes one optimizer step per sampling round (it is only unbiased on-policy), but train.gradient_accumulation_steps = ${accum} makes ${batches / accum} steps per epoch; set it to ${batches} (samples per epoch / train.batch_size), or leave it unset, or use 'ddpo-is'`);
  }
  if (isDDPO(c.algorithm) && c.sample.eta === 0) {
    problems.push(`sample.eta = 0 makes sampling deterministic, so there is no policy log-probability for ${c.algorithm}; use eta > 0 (default 1.0), or algorithm 'rwr'`);
  }
  if (isDDPO(c.algorithm) && trainedTimesteps(c) < 1) {
    problems.push(`train.timestep_fraction = ${c.train.timestep_fraction} × sample.steps = ${c.sample.steps} trains no timestep (⌊${c.train.timestep_fraction * c.sample.steps}⌋ = 0); raise train.timestep_fraction to at least ${1 / c.sample.steps}`);
  }
  if (c.train.kl_coef > 0 && !isDDPO(c.algorithm)) {
    problems.push(`train.kl_coef > 0: the KL penalty applies per denoising step, so to the DDPO algorithms only, not ${c.algorithm}; set train.kl_coef = 0`);
  }
  if (c.train.kl_coef > 0 && !c.lora.enabled) {
    problems.push('train.kl_coef > 0 compares with the frozen starting model, which is the base with the LoRA adapters disabled; set lora.enabled = true, or train.kl_coef = 0');
  }
  if (c.stat_tracking.min_count > c.stat_tracking.buffer_size) {
    problems.push(`stat_tracking.min_count = ${c.stat_tracking.min_count} exceeds stat_tracking.buffer_size = ${c.stat_tracking.buffer_size}, so per-prompt statistics would never be used`);
  }
  if (problems.length) fail(problems, 'inconsistent config');
  return { ...c, train: { ...t, lr, gradient_accumulation_steps: accum } };
}

export type { Overrides } from './schema.js';
import type { Overrides } from './schema.js';

/**
 * The run's configuration: defaults, then the config file's values (`fileJson`, e.g. the parsed
 * run.json, or undefined), then `overrides` (dotted keys → values; strings are coerced to the
 * key's type, so `[['train.lr', '1e-4']]` and `{ 'train.lr': 1e-4 }` are the same; later
 * overrides win). Throws an Error listing every unknown key (with the valid ones), every value of
 * the wrong type (with the key and the expected type) and every inconsistency (with what to change).
 */
export function resolveConfig(fileJson?: unknown, overrides: Overrides = {}): ResolvedConfig {
  return finish(RUN_CONFIG.resolve(fileJson, overrides));
}

/**
 * The options a resumed run may change without computing anything other than the uninterrupted
 * run would: how long it runs, where it writes, the adapter, how often it saves, how rewards run.
 */
export const RESUMABLE_KEYS: readonly string[] = ['epochs', 'out', 'adapter', 'save_every', 'reward_options.workers', 'reward_options.timeout_s', 'reward_options.max_retries'];

/**
 * A saved run's config (a checkpoint's, or the run folder's config.json) with `overrides` of
 * RESUMABLE_KEYS applied; overriding any other key is an Error that names it.
 */
export function resumeConfig(saved: unknown, overrides: Overrides = {}, what = 'resume'): ResolvedConfig {
  const pairs = Array.isArray(overrides) ? overrides : Object.entries(overrides);
  const changed = pairs.filter(([k, v]) => v !== undefined && !RESUMABLE_KEYS.includes(k)).map(([k]) => k);
  if (changed.length) {
    throw new Error(`${what}: ${changed.join(', ')} cannot change when resuming (the run would no longer match an uninterrupted one); only ${RESUMABLE_KEYS.join(', ')} can. Start a new run with --out instead`);
  }
  return resolveConfig(saved, pairs);
}

// ---------------------------------------------------------------------------------------------
// What the config names, as the objects the trainer uses.

/** The reward as a RewardSpec (rewards/types.ts) a RewardPool can load: names become their built-in specs. */
export function rewardSpec(r: RewardConfig): RewardSpec {
  if (typeof r === 'string') return builtinReward(r);
  if ('combine' in r) return { combine: r.combine.map((p) => ({ spec: rewardSpec(p.reward), weight: p.weight, name: describeReward(p.reward) })) };
  const hosted = hostedRewardName(r);
  if (hosted) return hostedRewardSpec(hosted, (r as Record<string, unknown>)[hosted]);
  const m = r as { module: string; export: string; args?: unknown[]; thread?: 'worker' | 'main' };
  return { module: m.module, export: m.export, ...(m.args ? { args: m.args } : {}), ...(m.thread ? { thread: m.thread } : {}) };
}

/** A short human description of the reward, for reports. */
export function describeReward(r: RewardConfig): string {
  if (typeof r === 'string') return r;
  if ('combine' in r) return r.combine.map((p) => `${p.weight}·${describeReward(p.reward)}`).join(' + ');
  const hosted = hostedRewardName(r);
  if (hosted === 'service') return `service(${(r as { service: ServiceOptions }).service.url})`;
  if (hosted?.startsWith('jpeg_')) {
    const o = (r as Record<string, JpegRewardOptions>)[hosted];
    const parts = [o.size ? `${o.size} px` : '', o.quality ? `quality ${o.quality}` : ''].filter(Boolean);
    return parts.length ? `${hosted} (${parts.join(', ')})` : hosted;
  }
  if (hosted) return hosted;
  const m = r as { module: string; export: string; args?: unknown[] };
  return `${m.module}#${m.export}${m.args ? `(${m.args.map((a) => JSON.stringify(a)).join(', ')})` : ''}`;
}

// ---------------------------------------------------------------------------------------------
// Documentation.

/** Every option, its type, default and meaning, as markdown tables (one per section): docs/config.md. */
export function configDocs(): string {
  return RUN_CONFIG.docs('`ddpo train` configuration', [
    '<!-- Generated from rl/config.ts (SCHEMA) by `ddpo config --docs > docs/config.md`; test/config.test.ts checks it is up to date. -->',
    '',
    'A run is configured by a JSON file (`ddpo train --config run.json`) holding any of the keys below; every key',
    'has a default, so `{}` is a valid config. Any key can be overridden on the command line with',
    '`--set KEY=VALUE` using its dotted name (`--set train.lr=1e-4 --set sample.steps=20`); common ones also',
    'have their own flags (`--epochs`, `--out`, `--model`, `--algorithm`, `--prompts`, `--reward`, `--seed`).',
    'Command-line values are converted to the key\'s type; JSON is accepted for lists, rewards, prompts and',
    'whole sections (`--set train=\'{"lr":1e-4}\'` merges into `train`). Unknown keys and wrong types are errors',
    'that name the key, the expected type and the valid keys. The resolved config is written to the run folder',
    'as `config.json`.',
    '',
    'Example:',
    '',
    '```json',
    JSON.stringify({ algorithm: 'ddpo-is', model: 'tiny', epochs: 20, prompts: 'simple_animals', reward: 'jpeg_compressibility', sample: { steps: 20 }, train: { lr: 3e-4 } }, null, 2),
    '```',
  ]);
}
