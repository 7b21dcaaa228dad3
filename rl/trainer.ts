// The DDPO trainer (Black et al. 2023): epochs of sampling trajectories from the current model,
// scoring their images with a reward off the main thread, turning rewards into advantages, then
// updating the UNet (LoRA adapters or all of it) with one of four algorithms:
//
//   ddpo-is     PPO's clipped importance-sampling surrogate on each trained denoising step,
//               ratio = exp(log p − log p_old) against the log-probabilities recorded at sampling
//   ddpo-sf     the score-function (REINFORCE) loss −A·log p; unbiased only on-policy, so exactly
//               one optimizer step per sampling round (a config that would take more is an Error)
//   rwr         reward-weighted regression: the ordinary ε-prediction loss on the sampled x₀ at a
//               uniformly random t with fresh noise, conditioned on the prompt (no guidance),
//               weighted by w = N·softmax(r̃/T), r̃ the batch-standardised reward (see rwrWeights)
//   rwr-sparse  the same with w = 1 at or above the 90th reward percentile, 0 below
//
// Losses are means over samples and trained timesteps, whatever the batch split: a train batch's
// step k loss over its m samples is scaled by m / (pairs per optimizer step) before backward, so
// the accumulated gradient is that of the mean over every (sample, timestep) pair of the step.
//
// Timesteps: each sample trains a random timestep_fraction of its steps in its own random order
// (as the reference code). The optimizer steps only after all of a window's pairs, so the pairs
// are regrouped by timestep: one batched, guided forward per distinct step k in a train batch.
// stepEval computes exactly what sampling computed (guidedNoise + ddimStep on the stored x_t and
// x_{t−1}), so the first ratio of an epoch is exactly 1.
//
// Determinism and resume: sampling noise is Philox addressed by (seed, global sample index);
// prompts, shuffles, timestep permutations and RWR's timesteps each have their own PromptRng;
// RWR's noise is Philox addressed by a counter. All of it, the stat tracker, the optimizer and
// the weights go into checkpoints (rl/checkpoint.ts), so a resumed run is bit-identical to an
// uninterrupted one.

import { noGrad, backward } from '../engine/autograd.js';
import { Device } from '../engine/device.js';
import { AdamW, clipGradNorm } from '../engine/optim.js';
import { add, cast, mul, mulScalar, square, sub } from '../engine/ops/elementwise.js';
import { concat } from '../engine/ops/movement.js';
import { mean as meanOp } from '../engine/ops/reduce.js';
import { indexSelect } from '../engine/ops/gather.js';
import { randomNormal } from '../engine/ops/random.js';
import { keep, tidy } from '../engine/scope.js';
import { Tensor, tensor } from '../engine/tensor.js';
import { LoRALinear } from '../engine/nn/lora.js';
import { StableDiffusion } from '../diffusion/load.js';
import { TextEmbeddingCache, Trajectory, guidedNoise, sample } from '../diffusion/pipeline.js';
import { ddimStep } from '../diffusion/ddim.js';
import { InjectedLoRA } from '../engine/nn/lora.js';
import { injectUnetLoRA, unetLoRAStateDict } from '../diffusion/models/unet.js';
import { RewardPool, RewardPoolOptions } from '../rewards/pool.js';
import { Dropped, scoreBatch } from '../rewards/score.js';
import { ImageBatch, Metadata, Reward, RewardSpec } from '../rewards/types.js';
import { StatTracker, StatTrackerState } from './advantages.js';
import { klPenalty, ppoClipLoss, rwrSparseWeights, rwrWeights, scoreFunctionLoss, weightedMean } from './losses.js';
import { PromptFn, PromptRng, PromptRngState, samplePrompts } from './prompts.js';
import { deriveSeed, permutation } from './rng.js';
import { CheckpointFile, loadCheckpointWeights, loadOptimizerState, readCheckpoint, saveCheckpoint } from './checkpoint.js';
import type { RGBImage } from '../cli/images.js';

// ------------------------------------------------------------------ config

export type Algorithm = 'ddpo-is' | 'ddpo-sf' | 'rwr' | 'rwr-sparse';
export const ALGORITHMS: readonly Algorithm[] = ['ddpo-is', 'ddpo-sf', 'rwr', 'rwr-sparse'];

/**
 * A run's settings (JSON keys; rl/config.ts validates files and flags into this type). Defaults
 * are the issue's / the DDPO paper's (TRAIN_DEFAULTS).
 */
export interface TrainConfig {
  algorithm: Algorithm;
  /** Seeds every random stream of the run. */
  seed: number;
  num_epochs: number;
  // sampling
  steps: number;
  eta: number;
  guidance: number;
  negative_prompt: string;
  sample_batch_size: number;
  num_batches_per_epoch: number;
  /** VAE decode micro-batch. */
  decode_batch: number;
  // training
  train_batch_size: number;
  gradient_accumulation_steps: number;
  num_inner_epochs: number;
  timestep_fraction: number;
  clip_range: number;
  adv_clip_max: number;
  /** Per-prompt advantages (the reference's stat tracker); false standardises over the epoch. */
  per_prompt_stat_tracking: boolean;
  buffer_size: number;
  min_count: number;
  /** true: LoRA adapters on the UNet's attention projections; false: full fine-tuning. */
  lora: boolean;
  lora_rank: number;
  /** null: 3e-4 with LoRA, 1e-5 for full fine-tuning. */
  learning_rate: number | null;
  adam_beta1: number;
  adam_beta2: number;
  adam_weight_decay: number;
  adam_epsilon: number;
  max_grad_norm: number;
  /** Weight of the KL penalty to the starting model (0 = off; DDPO algorithms with LoRA only). */
  kl_coef: number;
  // RWR
  rwr_temperature: number;
  /** Normalise the RWR weights (and the sparse threshold) within each prompt's samples. */
  rwr_per_prompt: boolean;
  /** Standardise rewards before the temperature (true; false applies T to raw rewards as the paper's code). */
  rwr_standardise: boolean;
  rwr_quantile: number;
  // rewards
  /** Times a failed sample is rescored before it is dropped. */
  reward_retries: number;
  /** The run stops (checkpoint saved) when more than this fraction of an epoch's samples is dropped. */
  max_dropped_fraction: number;
  /** Negative control: train on −advantages (DDPO) / −rewards (RWR); the reward should fall. */
  negate_advantages: boolean;
  // outputs
  /** Save a checkpoint every this many epochs (0: only at the end and on stop). */
  save_every: number;
  /** Fixed-seed evaluation samples (grid) every this many epochs (0: never). */
  eval_every: number;
  /** Number of evaluation samples (prompts cycle through the eval prompts). */
  eval_num: number;
  eval_seed: number;
}

export const TRAIN_DEFAULTS: Readonly<TrainConfig> = Object.freeze({
  algorithm: 'ddpo-is',
  seed: 0,
  num_epochs: 100,
  steps: 50,
  eta: 1.0,
  guidance: 5.0,
  negative_prompt: '',
  sample_batch_size: 8,
  num_batches_per_epoch: 4,
  decode_batch: 2,
  train_batch_size: 4,
  gradient_accumulation_steps: 2,
  num_inner_epochs: 1,
  timestep_fraction: 1.0,
  clip_range: 1e-4,
  adv_clip_max: 5,
  per_prompt_stat_tracking: true,
  buffer_size: 32,
  min_count: 16,
  lora: true,
  lora_rank: 4,
  learning_rate: null,
  adam_beta1: 0.9,
  adam_beta2: 0.999,
  adam_weight_decay: 1e-4,
  adam_epsilon: 1e-8,
  max_grad_norm: 1.0,
  kl_coef: 0,
  rwr_temperature: 0.2,
  rwr_per_prompt: false,
  rwr_standardise: true,
  rwr_quantile: 0.9,
  reward_retries: 2,
  max_dropped_fraction: 0.5,
  negate_advantages: false,
  save_every: 1,
  eval_every: 1,
  eval_num: 8,
  eval_seed: 1234,
});

/** Samples drawn per epoch. */
export function samplesPerEpoch(c: TrainConfig): number {
  return c.sample_batch_size * c.num_batches_per_epoch;
}

/** Denoising steps each sample trains on (DDPO): ⌊steps · timestep_fraction⌋. */
export function trainedTimesteps(c: TrainConfig): number {
  return Math.floor(c.steps * c.timestep_fraction);
}

/** Optimizer steps one epoch takes. */
export function optimizerStepsPerEpoch(c: TrainConfig): number {
  return (c.num_inner_epochs * samplesPerEpoch(c)) / (c.train_batch_size * c.gradient_accumulation_steps);
}

/** The learning rate in effect (learning_rate, or the LoRA / full fine-tuning default). */
export function effectiveLearningRate(c: TrainConfig): number {
  return c.learning_rate ?? (c.lora ? 3e-4 : 1e-5);
}

/** Defaults filled in and every constraint checked; throws an Error listing all problems. */
export function resolveTrainConfig(partial: Partial<TrainConfig> = {}): TrainConfig {
  const c: TrainConfig = { ...TRAIN_DEFAULTS, ...partial };
  for (const [k, v] of Object.entries(partial)) if (v === undefined) (c as unknown as Record<string, unknown>)[k] = (TRAIN_DEFAULTS as unknown as Record<string, unknown>)[k];
  const bad: string[] = [];
  const int = (k: keyof TrainConfig, min: number) => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min) bad.push(`${k} = ${JSON.stringify(v)} must be an integer ≥ ${min}`);
  };
  const num = (k: keyof TrainConfig, min: number, max = Infinity, minOpen = false) => {
    const v = c[k];
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || (minOpen && v === min) || v > max) bad.push(`${k} = ${JSON.stringify(v)} must be a number ${minOpen ? '>' : '≥'} ${min}${max < Infinity ? ` and ≤ ${max}` : ''}`);
  };
  if (!ALGORITHMS.includes(c.algorithm)) bad.push(`algorithm = ${JSON.stringify(c.algorithm)} must be one of ${ALGORITHMS.join(', ')}`);
  int('seed', 0); int('num_epochs', 0); int('steps', 1); int('sample_batch_size', 1); int('num_batches_per_epoch', 1);
  int('decode_batch', 1); int('train_batch_size', 1); int('gradient_accumulation_steps', 1); int('num_inner_epochs', 1);
  int('buffer_size', 1); int('min_count', 0); int('lora_rank', 1); int('reward_retries', 0); int('save_every', 0);
  int('eval_every', 0); int('eval_num', 0); int('eval_seed', 0);
  num('eta', 0); num('guidance', 0); num('timestep_fraction', 0, 1, true); num('clip_range', 0); num('adv_clip_max', 0, Infinity, true);
  num('adam_beta1', 0, 1); num('adam_beta2', 0, 1); num('adam_weight_decay', 0); num('adam_epsilon', 0); num('max_grad_norm', 0);
  num('kl_coef', 0); num('rwr_temperature', 0, Infinity, true); num('rwr_quantile', 0, 1); num('max_dropped_fraction', 0, 1);
  if (c.learning_rate !== null) num('learning_rate', 0);
  for (const k of ['per_prompt_stat_tracking', 'lora', 'rwr_per_prompt', 'rwr_standardise', 'negate_advantages'] as const) {
    if (typeof c[k] !== 'boolean') bad.push(`${k} = ${JSON.stringify(c[k])} must be true or false`);
  }
  if (typeof c.negative_prompt !== 'string') bad.push(`negative_prompt = ${JSON.stringify(c.negative_prompt)} must be a string`);
  if (!bad.length) {
    const n = samplesPerEpoch(c);
    const ddpo = c.algorithm === 'ddpo-is' || c.algorithm === 'ddpo-sf';
    if (n % c.train_batch_size) bad.push(`train_batch_size ${c.train_batch_size} must divide the ${n} samples per epoch (sample_batch_size ${c.sample_batch_size} × num_batches_per_epoch ${c.num_batches_per_epoch})`);
    else if ((n / c.train_batch_size) % c.gradient_accumulation_steps) bad.push(`gradient_accumulation_steps ${c.gradient_accumulation_steps} must divide the ${n / c.train_batch_size} train batches per inner epoch (a partial window would leave gradients behind)`);
    if (ddpo && !(c.eta > 0)) bad.push(`eta = ${c.eta}: DDPO needs η > 0 (a deterministic step has no log-probability)`);
    if (ddpo && trainedTimesteps(c) < 1) bad.push(`timestep_fraction ${c.timestep_fraction} × steps ${c.steps} trains no timestep`);
    if (c.kl_coef > 0 && !ddpo) bad.push(`kl_coef = ${c.kl_coef}: the KL penalty applies to the DDPO algorithms (per denoising step), not ${c.algorithm}`);
    if (c.kl_coef > 0 && !c.lora) bad.push(`kl_coef = ${c.kl_coef} needs lora: true (the reference model is the base with adapters disabled; a frozen full copy is not kept)`);
    if (!bad.length && c.algorithm === 'ddpo-sf' && optimizerStepsPerEpoch(c) !== 1) {
      bad.push(`ddpo-sf takes exactly one optimizer step per sampling round (its gradient is only unbiased on-policy), but num_inner_epochs ${c.num_inner_epochs} × ${n} samples / (train_batch_size ${c.train_batch_size} × gradient_accumulation_steps ${c.gradient_accumulation_steps}) = ${optimizerStepsPerEpoch(c)} steps; set num_inner_epochs 1 and gradient_accumulation_steps ${n / c.train_batch_size}`);
    }
  }
  if (bad.length) throw new Error(`train config:\n  ${bad.join('\n  ')}`);
  return c;
}

// ------------------------------------------------------------------ records

export interface Stats {
  mean: number;
  std: number;
  min: number;
  max: number;
}

/** One epoch's results, handed to onEpoch (plain data: JSON-friendly apart from the grid images). */
export interface EpochRecord {
  /** 1-based number of the epoch just finished. */
  epoch: number;
  algorithm: Algorithm;
  /** Per sample (NaN where dropped), in sampling order. */
  rewards: number[];
  prompts: string[];
  /** The advantages trained on (after negation and clipping; RWR: the weights). */
  advantages: Stats & { clippedFraction: number };
  /** Mean loss over the epoch's optimizer steps (each the mean over its samples and timesteps). */
  loss: number;
  /** ½·mean((log p − log p_old)²) (DDPO; 0 for RWR). */
  approxKl: number;
  /** Fraction of pairs whose ratio left [1 − ε, 1 + ε] (ddpo-is; 0 otherwise). */
  clipfrac: number;
  /** Mean KL penalty term (before kl_coef), when kl_coef > 0. */
  kl?: number;
  /** Mean gradient norm before clipping. */
  gradNorm: number;
  lr: number;
  optimizerSteps: number;
  /** Optimizer steps since the run began. */
  globalStep: number;
  /** Samples drawn since the run began. */
  globalSample: number;
  seconds: { sampling: number; reward: number; training: number; total: number };
  samplesPerSecond: number;
  memory: { liveBytes: number; peakTotalBytes: number };
  /** Samples dropped this epoch (reward NaN or threw after retries). */
  dropped: number;
  droppedReasons: string[];
  /** Fixed-seed evaluation samples from the model that sampled this epoch (eval_every). */
  gridImages?: RGBImage[];
  /** [prompt, reward] under each grid image. */
  gridCaptions?: string[][];
  evalRewards?: number[];
  evalPrompts?: string[];
}

export type RunStatus = 'done' | 'stopped' | 'reward-failure';

export interface RunResult {
  status: RunStatus;
  /** Completed epochs. */
  epoch: number;
  /** The checkpoint written last (if any). */
  checkpoint: string | null;
  message?: string;
}

export interface TrainerOptions {
  sd: StableDiffusion;
  /** A spec runs in a RewardPool of worker threads; a function runs in this thread (tests, browsers). */
  reward: RewardSpec | Reward;
  prompts: PromptFn;
  /** Prompts of the evaluation grid (default: drawn once from `prompts` with eval_seed). */
  evalPrompts?: string[];
  /** Called after every epoch. */
  onEpoch?: (record: EpochRecord) => void | Promise<void>;
  /** Checkpoint folder (replaced atomically at each save); none: no checkpoints. */
  checkpointDir?: string;
  onProgress?: (p: { epoch: number; phase: 'sampling' | 'training'; done: number; total: number }) => void;
  log?: (message: string) => void;
  rewardPool?: RewardPoolOptions;
}

/** The part of a checkpoint the trainer owns. */
export interface TrainerState {
  epoch: number;
  globalSample: number;
  globalStep: number;
  rwrNoiseCounter: number;
  rng: { prompt: PromptRngState; shuffle: PromptRngState; timestep: PromptRngState };
  statTracker: StatTrackerState;
  config: TrainConfig;
}

// ------------------------------------------------------------------ helpers

function statsOf(xs: ArrayLike<number>): Stats {
  const v = Array.from(xs).filter(Number.isFinite);
  if (!v.length) return { mean: NaN, std: NaN, min: NaN, max: NaN };
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) * (b - mean), 0) / v.length);
  return { mean, std, min: Math.min(...v), max: Math.max(...v) };
}

/** Running sums of scalar tensors on the GPU, read back once per epoch. */
class GpuSums {
  private sums = new Map<string, Tensor>();
  add(name: string, x: Tensor, scale = 1): void {
    const v = noGrad(() => (scale === 1 ? mulScalar(x, 1) : mulScalar(x, scale)));
    const prev = this.sums.get(name);
    if (prev) {
      const s = noGrad(() => add(prev, v));
      prev.dispose();
      v.dispose();
      this.sums.set(name, keep(s));
    } else {
      this.sums.set(name, keep(v));
    }
  }
  async read(): Promise<Record<string, number>> {
    const out: Record<string, number> = {};
    for (const [k, t] of this.sums) out[k] = (await t.data())[0];
    return out;
  }
  dispose(): void {
    for (const t of this.sums.values()) t.dispose();
    this.sums.clear();
  }
}

/** The epoch's samples, concatenated over its sampling batches. */
interface EpochSamples {
  n: number;
  prompts: string[];
  /** DDPO: every step's latents [N, C, h, w]; RWR: only the last (x₀) is kept (the others null). */
  latents: (Tensor | null)[];
  promptEmbeds: Tensor;
  negativeEmbeds: Tensor;
  /** [N × steps] recorded log-probabilities (DDPO). */
  logProbs: Float32Array | null;
  timesteps: number[];
}

function disposeSamples(s: EpochSamples): void {
  for (const t of s.latents) t?.dispose();
  s.promptEmbeds.dispose();
  s.negativeEmbeds.dispose();
}

/** A trajectory view of rows `idx` of the epoch's samples at step k (for the training forward). */
function subTrajectory(s: EpochSamples, idx: readonly number[], k: number, c: TrainConfig): Trajectory {
  const latents: Tensor[] = [];
  latents[k] = indexSelect(s.latents[k]!, 0, idx);
  latents[k + 1] = indexSelect(s.latents[k + 1]!, 0, idx);
  return {
    prompts: idx.map((i) => s.prompts[i]), seed: c.seed, firstSample: 0, eta: c.eta, guidance: c.guidance, numSteps: c.steps,
    timesteps: s.timesteps, latents, logProbs: null,
    promptEmbeds: indexSelect(s.promptEmbeds, 0, idx), negativeEmbeds: indexSelect(s.negativeEmbeds, 0, idx),
    dispose() { /* tidy owns the views */ },
  };
}

/**
 * Step k of a trajectory re-evaluated under the current weights: the log-probability of the
 * stored x_{t−1} and the step's mean — exactly the computation sampling did (the same
 * guidedNoise and ddimStep calls as stepLogProb). Differentiable when grad is enabled.
 */
export function stepEval(sd: StableDiffusion, traj: Trajectory, k: number): { logProb: Tensor; mean: Tensor; std: number } {
  return tidy(() => {
    const x = traj.latents[k], xPrev = traj.latents[k + 1];
    const eps = guidedNoise(sd, x, traj.timesteps[k], { cond: traj.promptEmbeds, uncond: traj.negativeEmbeds, guidance: traj.guidance });
    const r = ddimStep(sd.schedule, eps, traj.timesteps[k], x, { numSteps: traj.numSteps, eta: traj.eta, prevSample: xPrev });
    if (!r.logProb) throw new Error('stepEval: η = 0 trajectories have no log-probability');
    r.prevSample.dispose();
    return { logProb: r.logProb, mean: r.mean, std: r.std };
  });
}

function toImageBatch(data: Float32Array, shape: readonly number[]): ImageBatch {
  const [n, c, h, w] = shape;
  return { data, n, c, h, w };
}

function rgbImages(b: ImageBatch): RGBImage[] {
  const per = b.c * b.h * b.w;
  return Array.from({ length: b.n }, (_, i) => ({ data: b.data.slice(i * per, (i + 1) * per), height: b.h, width: b.w }));
}

// ------------------------------------------------------------------ trainer

export class Trainer {
  readonly config: TrainConfig;
  readonly sd: StableDiffusion;
  readonly device: Device;
  /** Completed epochs. */
  epoch = 0;
  globalSample = 0;
  globalStep = 0;
  private rwrNoiseCounter = 0;
  private promptRng: PromptRng;
  private shuffleRng: PromptRng;
  private timestepRng: PromptRng;
  private tracker: StatTracker;
  private readonly optimizer: AdamW;
  /** name → trained tensor (LoRA adapters or the whole UNet) */
  private readonly trained: Map<string, Tensor>;
  private readonly loraLayers: LoRALinear[];
  /** The clip-range warning (see runEpoch) has been given. */
  private warnedClip = false;
  private readonly cache: TextEmbeddingCache;
  private readonly pool: RewardPool | null;
  private readonly rewardFn: Reward | null;
  private readonly opts: TrainerOptions;
  private evalPromptList: string[];
  private stopRequested = false;
  private batchCounter = 0;
  private closed = false;

  private constructor(config: TrainConfig, opts: TrainerOptions, lora: InjectedLoRA | null) {
    this.config = config;
    this.opts = opts;
    this.sd = opts.sd;
    this.device = opts.sd.unet.device;
    const seed = config.seed;
    this.promptRng = new PromptRng(deriveSeed(seed, 1));
    this.shuffleRng = new PromptRng(deriveSeed(seed, 2));
    this.timestepRng = new PromptRng(deriveSeed(seed, 3));
    this.tracker = new StatTracker({ mode: config.per_prompt_stat_tracking ? 'perPrompt' : 'global', bufferSize: config.buffer_size, minCount: config.min_count });
    this.loraLayers = lora?.layers ?? [];
    this.trained = lora ? unetLoRAStateDict(this.sd.unet) : new Map([...this.sd.unet.namedParameters()].filter(([, t]) => t.requiresGrad));
    if (!this.trained.size) throw new Error('Trainer: the UNet has no trainable parameters');
    this.optimizer = new AdamW([...this.trained.values()], {
      lr: effectiveLearningRate(config), betas: [config.adam_beta1, config.adam_beta2], eps: config.adam_epsilon, weightDecay: config.adam_weight_decay,
    });
    this.cache = new TextEmbeddingCache(this.sd);
    if (typeof opts.reward === 'function') {
      this.rewardFn = opts.reward;
      this.pool = null;
    } else {
      this.rewardFn = null;
      this.pool = new RewardPool(opts.reward, opts.rewardPool);
    }
    const evalRng = new PromptRng(deriveSeed(config.eval_seed, 7));
    this.evalPromptList = opts.evalPrompts?.length ? [...opts.evalPrompts] : samplePrompts(opts.prompts, evalRng, Math.max(config.eval_num, 1)).prompts;
  }

  /**
   * A new run: resolves the config, prepares the UNet (LoRA adapters injected, or every f32
   * parameter unfrozen for full fine-tuning) and starts the reward workers.
   */
  static async create(config: Partial<TrainConfig>, opts: TrainerOptions): Promise<Trainer> {
    const c = resolveTrainConfig(config);
    const t = new Trainer(c, opts, Trainer.prepareUnet(opts.sd, c));
    try {
      await t.ready();
    } catch (e) {
      await t.close();
      throw e;
    }
    return t;
  }

  /**
   * Continues a run from a checkpoint folder: the same config (with `overrides`, e.g. a larger
   * num_epochs), weights, optimizer, RNG states, stat tracker and counters. `opts.sd` must be the
   * same base model the run started from (without adapters).
   */
  static async resume(folder: string, opts: TrainerOptions, overrides: Partial<TrainConfig> = {}): Promise<Trainer> {
    const file: CheckpointFile<TrainerState> = await readCheckpoint<TrainerState>(folder);
    const st = file.state;
    const c = resolveTrainConfig({ ...st.config, ...overrides });
    if ((file.weights.kind === 'lora') !== c.lora) throw new Error(`resume ${folder}: the checkpoint holds ${file.weights.kind} weights but the config says lora: ${c.lora}`);
    const t = new Trainer(c, opts, Trainer.prepareUnet(opts.sd, c));
    try {
      await loadCheckpointWeights(folder, file, t.trained);
      await loadOptimizerState(folder, file, t.optimizer, t.trained);
      if (overrides.learning_rate !== undefined) t.optimizer.lr = effectiveLearningRate(c);
      t.epoch = st.epoch;
      t.globalSample = st.globalSample;
      t.globalStep = st.globalStep;
      t.rwrNoiseCounter = st.rwrNoiseCounter;
      t.promptRng = PromptRng.fromState(st.rng.prompt);
      t.shuffleRng = PromptRng.fromState(st.rng.shuffle);
      t.timestepRng = PromptRng.fromState(st.rng.timestep);
      t.tracker = StatTracker.fromState(st.statTracker);
      await t.ready();
    } catch (e) {
      await t.close();
      throw e;
    }
    return t;
  }

  private static prepareUnet(sd: StableDiffusion, c: TrainConfig): InjectedLoRA | null {
    const unet = sd.unet;
    if ([...unet.namedParameters()].some(([n]) => n.includes('.lora_A.'))) throw new Error('Trainer: the UNet already has LoRA adapters; pass the base model');
    if (c.lora) return injectUnetLoRA(unet, { rank: c.lora_rank, seed: deriveSeed(c.seed, 5) });
    if (unet.dtype !== 'f32') throw new Error(`Trainer: full fine-tuning needs an f32 UNet (this one is ${unet.dtype}); load with dtype f32 or use LoRA`);
    unet.unfreeze();
    return null;
  }

  private async ready(): Promise<void> {
    if (this.pool) await this.pool.ready();
  }

  /** Asks the run to stop at the next safe point (between sampling batches or after an epoch's training); it saves a checkpoint and run() resolves with 'stopped'. */
  requestStop(): void {
    this.stopRequested = true;
  }

  get stopping(): boolean {
    return this.stopRequested;
  }

  /** The optimizer's learning rate (may be changed between epochs). */
  get lr(): number { return this.optimizer.lr; }
  set lr(v: number) { this.optimizer.lr = v; }

  /** The trained tensors by state-dict name (do not dispose). */
  trainedTensors(): Map<string, Tensor> {
    return new Map(this.trained);
  }

  private state(): TrainerState {
    return {
      epoch: this.epoch, globalSample: this.globalSample, globalStep: this.globalStep, rwrNoiseCounter: this.rwrNoiseCounter,
      rng: { prompt: this.promptRng.getState(), shuffle: this.shuffleRng.getState(), timestep: this.timestepRng.getState() },
      statTracker: this.tracker.getState(), config: this.config,
    };
  }

  /** Writes a checkpoint of the current state (default: the checkpointDir). Returns the folder. */
  async saveCheckpoint(folder = this.opts.checkpointDir): Promise<string> {
    if (!folder) throw new Error('Trainer.saveCheckpoint: no folder (set checkpointDir)');
    await saveCheckpoint(folder, { state: this.state(), weightKind: this.config.lora ? 'lora' : 'full', weights: this.trained, optimizer: this.optimizer });
    return folder;
  }

  private log(m: string): void {
    this.opts.log?.(m);
  }

  /** Runs epochs until num_epochs, a stop request, or too many dropped samples. */
  async run(): Promise<RunResult> {
    let checkpoint: string | null = null;
    const save = async () => {
      if (this.opts.checkpointDir) checkpoint = await this.saveCheckpoint();
    };
    while (this.epoch < this.config.num_epochs) {
      const r = await this.runEpoch();
      if (r.status === 'aborted') {
        await save();
        return { status: 'stopped', epoch: this.epoch, checkpoint, message: 'stopped during sampling; the checkpoint is the state before the epoch' };
      }
      if (r.status === 'reward-failure') {
        await save();
        return { status: 'reward-failure', epoch: this.epoch, checkpoint, message: r.message };
      }
      const last = this.epoch >= this.config.num_epochs;
      if (this.stopRequested || last || (this.config.save_every > 0 && this.epoch % this.config.save_every === 0)) await save();
      if (this.stopRequested && !last) return { status: 'stopped', epoch: this.epoch, checkpoint };
    }
    return { status: 'done', epoch: this.epoch, checkpoint };
  }

  // ---------------------------------------------------------------- rewards

  private async scoreOnce(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[]): Promise<{ rewards: number[]; dropped: Dropped[] }> {
    if (this.pool) return this.pool.submitDetailed(id, images, prompts, metadata);
    return scoreBatch(this.rewardFn!, images, prompts, metadata);
  }

  /** Scores a batch, rescoring failed samples up to reward_retries times. */
  private async score(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[]): Promise<{ rewards: number[]; dropped: Dropped[] }> {
    const res = await this.scoreOnce(id, images, prompts, metadata);
    const rewards = [...res.rewards];
    let dropped = res.dropped;
    const per = images.c * images.h * images.w;
    for (let attempt = 1; attempt <= this.config.reward_retries && dropped.length; attempt++) {
      const idx = dropped.map((d) => d.index);
      const data = new Float32Array(idx.length * per);
      idx.forEach((i, j) => data.set(images.data.subarray(i * per, (i + 1) * per), j * per));
      const again = await this.scoreOnce(`${id}/retry${attempt}`, { data, n: idx.length, c: images.c, h: images.h, w: images.w }, idx.map((i) => prompts[i]), idx.map((i) => metadata[i]));
      const still: Dropped[] = [];
      idx.forEach((i, j) => {
        if (Number.isFinite(again.rewards[j])) rewards[i] = again.rewards[j];
        else still.push({ index: i, reason: again.dropped.find((d) => d.index === j)?.reason ?? 'reward failed' });
      });
      dropped = still;
    }
    return { rewards, dropped };
  }

  // ---------------------------------------------------------------- one epoch

  private async runEpoch(): Promise<{ status: 'ok' } | { status: 'aborted' } | { status: 'reward-failure'; message: string }> {
    const c = this.config;
    const epoch = this.epoch + 1;
    const tStart = performance.now();
    const snapshot = { globalSample: this.globalSample, prompt: this.promptRng.getState() };
    const ddpo = c.algorithm === 'ddpo-is' || c.algorithm === 'ddpo-sf';
    const doEval = c.eval_every > 0 && c.eval_num > 0 && (epoch - 1) % c.eval_every === 0;
    const pending: Promise<{ rewards: number[]; dropped: Dropped[] }>[] = [];
    const batches: { traj: Trajectory; prompts: string[] }[] = [];
    let evalPending: Promise<{ rewards: number[]; dropped: Dropped[] }> | null = null;
    let evalImages: ImageBatch | null = null;
    const evalPrompts = Array.from({ length: c.eval_num }, (_, i) => this.evalPromptList[i % this.evalPromptList.length]);
    const abort = async () => {
      for (const b of batches) b.traj.dispose();
      await Promise.allSettled([...pending, ...(evalPending ? [evalPending] : [])]);
      this.globalSample = snapshot.globalSample;
      this.promptRng = PromptRng.fromState(snapshot.prompt);
      return { status: 'aborted' as const };
    };

    // Sampling; each batch's rewards are computed by the workers while the next batch samples.
    const sampleOpts = { steps: c.steps, eta: c.eta, guidance: c.guidance, negativePrompt: c.negative_prompt, cache: this.cache, decodeBatch: c.decode_batch };
    if (doEval) {
      const r = sample(this.sd, { ...sampleOpts, prompts: evalPrompts, seed: c.eval_seed, firstSample: 0 });
      r.trajectory.dispose();
      evalImages = toImageBatch(new Float32Array(await r.images!.data()), r.images!.shape);
      r.images!.dispose();
      evalPending = this.score(`eval-${epoch}-${this.batchCounter++}`, evalImages, evalPrompts, evalPrompts.map(() => ({})));
    }
    const metadata: Metadata[] = [];
    for (let b = 0; b < c.num_batches_per_epoch; b++) {
      if (this.stopRequested) return abort();
      const drawn = samplePrompts(this.opts.prompts, this.promptRng, c.sample_batch_size);
      const r = sample(this.sd, {
        ...sampleOpts, prompts: drawn.prompts, seed: c.seed, firstSample: this.globalSample,
        onStep: (k, total) => this.opts.onProgress?.({ epoch, phase: 'sampling', done: b * total + k, total: total * c.num_batches_per_epoch }),
      });
      this.globalSample += drawn.prompts.length;
      const images = toImageBatch(new Float32Array(await r.images!.data()), r.images!.shape);
      r.images!.dispose();
      pending.push(this.score(`train-${epoch}-${this.batchCounter++}`, images, drawn.prompts, drawn.metadata));
      batches.push({ traj: r.trajectory, prompts: drawn.prompts });
      metadata.push(...drawn.metadata);
    }
    const tSampled = performance.now();
    const scored = await Promise.all(pending);
    const evalScored = evalPending ? await evalPending : null;
    const tRewarded = performance.now();

    const rewards: number[] = [];
    const droppedReasons: string[] = [];
    scored.forEach((s) => {
      for (const d of s.dropped) droppedReasons.push(d.reason);
      rewards.push(...s.rewards);
    });
    const prompts = batches.flatMap((b) => b.prompts);
    const n = rewards.length;
    const dropped = rewards.filter((r) => !Number.isFinite(r)).length;
    if (dropped > c.max_dropped_fraction * n) {
      for (const b of batches) b.traj.dispose();
      this.globalSample = snapshot.globalSample;
      this.promptRng = PromptRng.fromState(snapshot.prompt);
      const msg = `epoch ${epoch}: ${dropped} of ${n} samples dropped by the reward after ${c.reward_retries} retries (limit ${c.max_dropped_fraction}); first reason: ${droppedReasons[0] ?? '?'}`;
      this.log(msg);
      return { status: 'reward-failure', message: msg };
    }

    // Gather the epoch's samples into one set of tensors.
    const samples: EpochSamples = noGrad(() => {
      const keepAll = (xs: Tensor[]) => keep(xs.length === 1 ? mulScalar(xs[0], 1) : concat(xs, 0));
      const latents: (Tensor | null)[] = [];
      for (let s = 0; s <= c.steps; s++) latents.push(ddpo || s === c.steps ? keepAll(batches.map((b) => b.traj.latents[s])) : null);
      return {
        n, prompts, latents,
        promptEmbeds: keepAll(batches.map((b) => b.traj.promptEmbeds)),
        negativeEmbeds: keepAll(batches.map((b) => b.traj.negativeEmbeds)),
        logProbs: null, timesteps: batches[0].traj.timesteps,
      };
    });
    if (ddpo) {
      const lp = new Float32Array(n * c.steps);
      let at = 0;
      for (const b of batches) { const d = await b.traj.logProbs!.data(); lp.set(d, at); at += d.length; }
      samples.logProbs = lp;
    }
    for (const b of batches) b.traj.dispose();

    // Advantages (DDPO) or weights (RWR).
    let adv: Float64Array;
    const sign = c.negate_advantages ? -1 : 1;
    if (ddpo) {
      adv = this.tracker.update(prompts, rewards);
      for (let i = 0; i < n; i++) adv[i] = Number.isFinite(adv[i]) ? sign * adv[i] : 0;
    } else {
      const r = rewards.map((x) => sign * x);
      const perPrompt = c.rwr_per_prompt ? prompts : undefined;
      adv = c.algorithm === 'rwr'
        ? rwrWeights(r, { temperature: c.rwr_temperature, perPrompt, standardise: c.rwr_standardise })
        : rwrSparseWeights(r, { quantile: c.rwr_quantile, perPrompt });
    }
    const clipped = ddpo ? Array.from(adv, (a) => Math.max(-c.adv_clip_max, Math.min(c.adv_clip_max, a))) : Array.from(adv);
    const advStats = { ...statsOf(clipped), clippedFraction: ddpo ? Array.from(adv).filter((a) => Math.abs(a) > c.adv_clip_max).length / n : 0 };

    // Training.
    const sums = new GpuSums();
    let steps = 0;
    let m: Record<string, number>;
    try {
      steps = this.train(samples, adv, sums, epoch);
      m = await sums.read();
    } finally {
      disposeSamples(samples);
      sums.dispose();
    }
    const tTrained = performance.now();
    this.epoch = epoch;

    const mem = this.device.memory();
    const record: EpochRecord = {
      epoch, algorithm: c.algorithm, rewards, prompts, advantages: advStats,
      loss: steps ? (m.loss ?? 0) / steps : 0,
      approxKl: steps ? (m.approxKl ?? 0) / steps : 0,
      clipfrac: steps ? (m.clipfrac ?? 0) / steps : 0,
      gradNorm: steps ? (m.gradNorm ?? 0) / steps : 0,
      lr: this.optimizer.lr, optimizerSteps: steps, globalStep: this.globalStep, globalSample: this.globalSample,
      seconds: { sampling: (tSampled - tStart) / 1000, reward: (tRewarded - tSampled) / 1000, training: (tTrained - tRewarded) / 1000, total: (tTrained - tStart) / 1000 },
      samplesPerSecond: n / ((tTrained - tStart) / 1000),
      memory: { liveBytes: mem.liveBytes, peakTotalBytes: mem.peakTotalBytes },
      dropped, droppedReasons: droppedReasons.slice(0, 10),
    };
    if (c.kl_coef > 0) record.kl = steps ? (m.kl ?? 0) / steps : 0;
    if (evalImages && evalScored) {
      record.gridImages = rgbImages(evalImages);
      record.evalRewards = evalScored.rewards;
      record.evalPrompts = evalPrompts;
      record.gridCaptions = evalPrompts.map((p, i) => [p, Number.isFinite(evalScored.rewards[i]) ? `reward ${evalScored.rewards[i].toFixed(4)}` : 'reward dropped']);
    }
    this.log(`epoch ${epoch}: reward ${statsOf(rewards).mean.toFixed(4)} ± ${statsOf(rewards).std.toFixed(4)}, loss ${record.loss.toExponential(3)}, ${record.seconds.total.toFixed(1)} s`);
    // Past the first optimizer step of a round, a ratio outside the clip range passes gradient only
    // when its sample moved against its advantage: if nearly all are outside, the later steps mostly
    // undo the first (measured in test/learning-setup.ts). Say so once. (The first step's ratios
    // are exactly 1, so the epoch's clipfrac is at most (steps − 1)/steps.)
    if (c.algorithm === 'ddpo-is' && steps > 1 && record.clipfrac > 0.9 * (steps - 1) / steps && !this.warnedClip) {
      this.warnedClip = true;
      this.log(`warning: clipfrac ${record.clipfrac.toFixed(2)} with ${steps} optimizer steps per epoch: each step moves the policy far beyond clip_range ${c.clip_range}, so the steps after the first mostly undo it. Lower train.lr, use LoRA, raise train.clip_range, or take one step per epoch (train.gradient_accumulation_steps = samples per epoch / train.batch_size).`);
    }
    await this.opts.onEpoch?.(record);
    return { status: 'ok' };
  }

  /** num_inner_epochs passes over the samples; returns the optimizer steps taken. */
  private train(s: EpochSamples, adv: Float64Array, sums: GpuSums, epoch: number): number {
    const c = this.config;
    const ddpo = c.algorithm === 'ddpo-is' || c.algorithm === 'ddpo-sf';
    const B = c.train_batch_size, accum = c.gradient_accumulation_steps;
    const F = trainedTimesteps(c);
    const batchesPerInner = s.n / B;
    let steps = 0;
    const params = [...this.trained.values()];
    for (let inner = 0; inner < c.num_inner_epochs; inner++) {
      const perm = permutation(this.shuffleRng, s.n);
      // Timestep permutations per sample, drawn in shuffled order (as the reference code).
      const tperm = new Map<number, number[]>();
      if (ddpo) for (const i of perm) tperm.set(i, permutation(this.timestepRng, c.steps).slice(0, F));
      for (let tb = 0; tb < batchesPerInner; tb++) {
        const idx = perm.slice(tb * B, (tb + 1) * B);
        if (ddpo) this.trainDDPO(s, idx, tperm, adv, sums, accum * B * F);
        else this.trainRWR(s, idx, adv, sums, accum * B);
        if ((tb + 1) % accum === 0) {
          tidy(() => {
            const norm = clipGradNorm(params, c.max_grad_norm);
            sums.add('gradNorm', norm);
            this.optimizer.step();
            this.optimizer.zeroGrad();
          });
          steps++;
          this.globalStep++;
        }
        this.opts.onProgress?.({ epoch, phase: 'training', done: inner * batchesPerInner + tb + 1, total: c.num_inner_epochs * batchesPerInner });
      }
    }
    return steps;
  }

  /** DDPO: one guided forward per distinct timestep of the batch's (sample, step) pairs. */
  private trainDDPO(s: EpochSamples, idx: number[], tperm: Map<number, number[]>, adv: Float64Array, sums: GpuSums, pairsPerStep: number): void {
    const c = this.config;
    const groups = new Map<number, number[]>();
    for (const i of idx) for (const k of tperm.get(i)!) { const g = groups.get(k); if (g) g.push(i); else groups.set(k, [i]); }
    const ks = [...groups.keys()].sort((a, b) => a - b);
    for (const k of ks) {
      const rows = groups.get(k)!;
      const w = rows.length / pairsPerStep;
      tidy(() => {
        const traj = subTrajectory(s, rows, k, c);
        const ev = stepEval(this.sd, traj, k);
        const old = rows.map((i) => s.logProbs![i * c.steps + k]);
        const a = rows.map((i) => adv[i]);
        let loss: Tensor;
        if (c.algorithm === 'ddpo-is') {
          const r = ppoClipLoss(ev.logProb, old, a, c.clip_range, c.adv_clip_max);
          loss = r.loss;
          sums.add('approxKl', r.approxKl, w);
          sums.add('clipfrac', r.clipfrac, w);
        } else {
          loss = scoreFunctionLoss(ev.logProb, a, c.adv_clip_max);
          const d = noGrad(() => sub(ev.logProb, tensor(old, [rows.length], 'f32', this.device)));
          sums.add('approxKl', noGrad(() => mulScalar(meanOp(square(d)), 0.5)), w);
        }
        sums.add('loss', loss, w);
        let total = loss;
        if (c.kl_coef > 0) {
          const ref = this.referenceMean(traj, k);
          const kl = klPenalty(ev.mean, ref, ev.std);
          sums.add('kl', kl, w);
          total = add(loss, mulScalar(kl, c.kl_coef));
        }
        backward(mulScalar(total, w));
      });
    }
  }

  /** The frozen starting model's step mean: the same forward with every adapter disabled. */
  private referenceMean(traj: Trajectory, k: number): Tensor {
    for (const l of this.loraLayers) l.enabled = false;
    try {
      return noGrad(() => stepEval(this.sd, traj, k).mean);
    } finally {
      for (const l of this.loraLayers) l.enabled = true;
    }
  }

  /** RWR: weighted ε-prediction loss on x₀ at uniformly random t with fresh noise, prompt-conditioned. */
  private trainRWR(s: EpochSamples, idx: number[], weights: Float64Array, sums: GpuSums, samplesPerStep: number): void {
    const c = this.config;
    const sched = this.sd.schedule;
    const m = idx.length;
    const x0All = s.latents[c.steps]!;
    const [, C, h, w] = x0All.shape;
    const ts = idx.map(() => this.timestepRng.int(sched.numTrainTimesteps));
    const offset = this.rwrNoiseCounter;
    this.rwrNoiseCounter += m * C * h * w;
    tidy(() => {
      const x0 = indexSelect(x0All, 0, idx);
      const cond = indexSelect(s.promptEmbeds, 0, idx);
      const noise = randomNormal([m, C, h, w], deriveSeed(c.seed, 4), { offset, device: this.device });
      const sa = tensor(ts.map((t) => Math.sqrt(sched.alphaAt(t))), [m, 1, 1, 1], 'f32', this.device);
      const s1a = tensor(ts.map((t) => Math.sqrt(1 - sched.alphaAt(t))), [m, 1, 1, 1], 'f32', this.device);
      const xt = add(mul(x0, sa), mul(noise, s1a));
      let out = this.sd.unet.forward(xt, tensor(ts, [m], 'f32', this.device), cond);
      if (out.dtype !== 'f32') out = cast(out, 'f32');
      const target = sched.predictionType === 'epsilon' ? noise : sub(mul(noise, sa), mul(x0, s1a));
      const perSample = meanOp(square(sub(out, target)), [1, 2, 3]);
      const loss = weightedMean(perSample, idx.map((i) => weights[i]));
      const scale = m / samplesPerStep;
      sums.add('loss', loss, scale);
      backward(mulScalar(loss, scale));
    });
  }

  /** Stops the reward workers and frees the optimizer state and text cache (the model stays). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool?.close();
    this.optimizer.dispose();
    this.cache.dispose();
  }
}

/** Trainer.resume as a function: continues the run saved in `folder`. */
export function resume(folder: string, opts: TrainerOptions, overrides: Partial<TrainConfig> = {}): Promise<Trainer> {
  return Trainer.resume(folder, opts, overrides);
}

/**
 * Wires Ctrl-C to trainer.requestStop(): the first SIGINT lets the run save a checkpoint and
 * return 'stopped' at its next safe point; a second one exits at once (exit code 130). Returns a
 * function that removes the handler.
 */
export function stopOnSigint(trainer: Trainer, log: (m: string) => void = (m) => process.stderr.write(`${m}\n`)): () => void {
  const handler = () => {
    if (trainer.stopping) {
      log('second interrupt: exiting without a checkpoint');
      process.exit(130);
    }
    log('interrupt: finishing the current step, saving a checkpoint, then stopping (Ctrl-C again to quit now)');
    trainer.requestStop();
  };
  process.on('SIGINT', handler);
  return () => { process.off('SIGINT', handler); };
}
