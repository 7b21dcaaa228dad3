// The DDPO trainer (Black et al. 2023), as a loop over epochs. Each epoch:
//
//   rollout   sample trajectories from the current model and score their images with the reward
//             off the main thread (rl/rollout.ts, rl/scoring.ts)
//   signal    rewards → advantages (DDPO) or weights (RWR) (rl/advantages.ts)
//   update    train the UNet (LoRA adapters or all of it) on the trajectories (rl/update.ts)
//   record    an EpochRecord for onEpoch (rl/record.ts); a checkpoint every save_every epochs,
//             at the end, and on a stop request (rl/checkpoint.ts)
//
// The trainer takes the run config rl/config.ts resolves (every default and cross-field rule is
// there). A run stops early on a stop request (between sampling batches or after an epoch's
// training; the first SIGINT, see stopOnSignals) or when more than reward_options.
// max_dropped_fraction of an epoch's samples is dropped; either way it saves a checkpoint of the
// state before the unfinished epoch.
//
// Determinism and resume: every random stream is seeded from config.seed and has its state in the
// checkpoint with the stat tracker, the optimizer and the weights, so a resumed run is
// bit-identical to an uninterrupted one.

import { Device } from '../engine/device.js';
import { Tensor } from '../engine/tensor.js';
import { StableDiffusion } from '../diffusion/load.js';
import { TextEmbeddingCache } from '../diffusion/pipeline.js';
import { RewardPoolOptions } from '../rewards/pool.js';
import { Reward, RewardSpec } from '../rewards/types.js';
import { StatTracker, StatTrackerState, epochAdvantages, statTrackerFor } from './advantages.js';
import { Overrides, ResolvedConfig, promptFn, resolveConfig, resumeConfig, rewardSpec } from './config.js';
import { CheckpointFile, loadCheckpointWeights, loadOptimizerState, readCheckpoint, saveCheckpoint } from './checkpoint.js';
import { PromptFn, PromptRng, PromptRngState, samplePrompts } from './prompts.js';
import { EpochRecord, RunResult, rewardDetails, statsOf } from './record.js';
import { deriveSeed } from './rng.js';
import { Sampler, collate, disposeSamples } from './rollout.js';
import { RewardScorer } from './scoring.js';
import { PolicyUpdate, UpdateMetrics, prepareUnet } from './update.js';

export type { EpochRecord, RunResult, RunStatus, Stats } from './record.js';

export interface TrainerOptions {
  sd: StableDiffusion;
  /**
   * The reward (default: the config's `reward`). A spec runs in a RewardPool of worker threads;
   * a function runs in this thread (tests, browsers).
   */
  reward?: RewardSpec | Reward;
  /** The training prompts (default: the config's `prompts`). */
  prompts?: PromptFn;
  /** Called after every epoch. */
  onEpoch?: (record: EpochRecord) => void | Promise<void>;
  /** Checkpoint folder (replaced atomically at each save); none: no checkpoints. */
  checkpointDir?: string;
  onProgress?: (p: { epoch: number; phase: 'sampling' | 'training'; done: number; total: number }) => void;
  log?: (message: string) => void;
  /** Reward pool settings over those of the config's reward_options (workers, timeout_s). */
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
  config: ResolvedConfig;
}

export class Trainer {
  readonly config: ResolvedConfig;
  readonly sd: StableDiffusion;
  readonly device: Device;
  /** Completed epochs. */
  epoch = 0;
  private tracker: StatTracker;
  private readonly sampler: Sampler;
  private readonly update: PolicyUpdate;
  private readonly scorer: RewardScorer;
  private readonly cache: TextEmbeddingCache;
  private readonly opts: TrainerOptions;
  /** The clip-range warning (see runEpoch) has been given. */
  private warnedClip = false;
  private stopRequested = false;
  private closed = false;

  private constructor(config: ResolvedConfig, opts: TrainerOptions, lora: ReturnType<typeof prepareUnet>) {
    this.config = config;
    this.opts = opts;
    this.sd = opts.sd;
    this.device = opts.sd.unet.device;
    const prompts = opts.prompts ?? promptFn(config.prompts);
    this.tracker = statTrackerFor(config);
    this.update = new PolicyUpdate(this.sd, config, lora);
    this.cache = new TextEmbeddingCache(this.sd);
    const ro = config.reward_options;
    this.scorer = new RewardScorer(opts.reward ?? rewardSpec(config.reward), {
      retries: ro.max_retries,
      pool: { workers: ro.workers ?? undefined, timeoutMs: ro.timeout_s * 1000, ...opts.rewardPool },
      // Main-thread rewards (GPU models, service clients) run on the training device.
      context: { device: this.device, log: (m) => this.log(m) },
    });
    const evalRng = new PromptRng(deriveSeed(config.eval.seed, 7));
    const evalPrompts = config.eval.prompts?.length ? [...config.eval.prompts] : samplePrompts(prompts, evalRng, Math.max(config.eval.n, 1)).prompts;
    this.sampler = new Sampler(this.sd, config, prompts, evalPrompts, this.scorer, this.cache, new PromptRng(deriveSeed(config.seed, 1)));
  }

  /**
   * A new run (the config as rl/config.ts resolveConfig returns it; it is checked again here):
   * prepares the UNet (LoRA adapters injected, or every f32 parameter unfrozen for full
   * fine-tuning) and starts the reward workers.
   */
  static async create(config: ResolvedConfig, opts: TrainerOptions): Promise<Trainer> {
    const c = resolveConfig(config);
    return Trainer.start(new Trainer(c, opts, prepareUnet(opts.sd, c)), async () => {});
  }

  /**
   * Continues a run from a checkpoint folder: the same config (with `overrides` of the keys a
   * resume may change, rl/config.ts RESUMABLE_KEYS, e.g. a larger epochs), weights, optimizer,
   * RNG states, stat tracker and counters. `opts.sd` must be the same base model the run started
   * from (without adapters).
   */
  static async resume(folder: string, opts: TrainerOptions, overrides: Overrides = {}): Promise<Trainer> {
    const file: CheckpointFile<TrainerState> = await readCheckpoint<TrainerState>(folder);
    const st = file.state;
    const c = resumeConfig(st.config, overrides, `resume ${folder}`);
    if ((file.weights.kind === 'lora') !== c.lora.enabled) throw new Error(`resume ${folder}: the checkpoint holds ${file.weights.kind} weights but the config says lora.enabled: ${c.lora.enabled}`);
    return Trainer.start(new Trainer(c, opts, prepareUnet(opts.sd, c)), async (t) => {
      await loadCheckpointWeights(folder, file, t.update.trained);
      await loadOptimizerState(folder, file, t.update.optimizer, t.update.trained);
      t.epoch = st.epoch;
      t.sampler.setState({ globalSample: st.globalSample, prompt: st.rng.prompt });
      t.update.setState({ globalStep: st.globalStep, rwrNoiseCounter: st.rwrNoiseCounter, shuffle: st.rng.shuffle, timestep: st.rng.timestep });
      t.tracker = StatTracker.fromState(st.statTracker);
    });
  }

  /** Runs `restore`, then waits for the reward workers; on failure frees what the trainer holds. */
  private static async start(t: Trainer, restore: (t: Trainer) => Promise<void>): Promise<Trainer> {
    try {
      await restore(t);
      await t.scorer.ready();
    } catch (e) {
      await t.close();
      throw e;
    }
    return t;
  }

  /** Samples drawn since the run began. */
  get globalSample(): number { return this.sampler.globalSample; }
  /** Optimizer steps since the run began. */
  get globalStep(): number { return this.update.globalStep; }

  /** Asks the run to stop at the next safe point (between sampling batches or after an epoch's training); it saves a checkpoint and run() resolves with 'stopped'. */
  requestStop(): void {
    this.stopRequested = true;
  }

  get stopping(): boolean {
    return this.stopRequested;
  }

  /** The optimizer's learning rate (may be changed between epochs). */
  get lr(): number { return this.update.optimizer.lr; }
  set lr(v: number) { this.update.optimizer.lr = v; }

  /** The trained tensors by state-dict name (do not dispose). */
  trainedTensors(): Map<string, Tensor> {
    return new Map(this.update.trained);
  }

  private state(): TrainerState {
    const s = this.sampler.getState(), u = this.update.getState();
    return {
      epoch: this.epoch, globalSample: s.globalSample, globalStep: u.globalStep, rwrNoiseCounter: u.rwrNoiseCounter,
      rng: { prompt: s.prompt, shuffle: u.shuffle, timestep: u.timestep },
      statTracker: this.tracker.getState(), config: this.config,
    };
  }

  /** Writes a checkpoint of the current state (default: the checkpointDir). Returns the folder. */
  async saveCheckpoint(folder = this.opts.checkpointDir): Promise<string> {
    if (!folder) throw new Error('Trainer.saveCheckpoint: no folder (set checkpointDir)');
    await saveCheckpoint(folder, { state: this.state(), weightKind: this.config.lora.enabled ? 'lora' : 'full', weights: this.update.trained, optimizer: this.update.optimizer });
    return folder;
  }

  private log(m: string): void {
    this.opts.log?.(m);
  }

  /** Runs epochs until `epochs`, a stop request, or too many dropped samples. */
  async run(): Promise<RunResult> {
    let checkpoint: string | null = null;
    const save = async () => {
      if (this.opts.checkpointDir) checkpoint = await this.saveCheckpoint();
    };
    while (this.epoch < this.config.epochs) {
      const r = await this.runEpoch();
      if (r.status === 'aborted') {
        await save();
        return { status: 'stopped', epoch: this.epoch, checkpoint, message: 'stopped during sampling; the checkpoint is the state before the epoch' };
      }
      if (r.status === 'reward-failure') {
        await save();
        return { status: 'reward-failure', epoch: this.epoch, checkpoint, message: r.message };
      }
      const last = this.epoch >= this.config.epochs;
      if (this.stopRequested || last || (this.config.save_every > 0 && this.epoch % this.config.save_every === 0)) await save();
      if (this.stopRequested && !last) return { status: 'stopped', epoch: this.epoch, checkpoint };
    }
    return { status: 'done', epoch: this.epoch, checkpoint };
  }

  /** One epoch: rollout → advantages → update → record. */
  private async runEpoch(): Promise<{ status: 'ok' } | { status: 'aborted' } | { status: 'reward-failure'; message: string }> {
    const c = this.config;
    const epoch = this.epoch + 1;
    const tStart = performance.now();
    const progress = (phase: 'sampling' | 'training') => (done: number, total: number) => this.opts.onProgress?.({ epoch, phase, done, total });
    const r = await this.sampler.sampleEpoch(epoch, () => this.stopRequested, progress('sampling'));
    // The reward's transient memory (and, if asked, its weights) goes back before training.
    await this.scorer.endEpoch();
    if (!r) return { status: 'aborted' };
    const tRewarded = performance.now();
    const { rewards, prompts, droppedReasons } = r;
    const n = rewards.length;
    const dropped = rewards.filter((x) => !Number.isFinite(x)).length;
    if (dropped > c.reward_options.max_dropped_fraction * n) {
      this.sampler.discard(r);
      const msg = `epoch ${epoch}: ${dropped} of ${n} samples dropped by the reward after ${c.reward_options.max_retries} retries (limit ${c.reward_options.max_dropped_fraction}); first reason: ${droppedReasons[0] ?? '?'}`;
      this.log(msg);
      return { status: 'reward-failure', message: msg };
    }

    const samples = await collate(r, c);
    const adv = epochAdvantages(c, this.tracker, prompts, rewards);
    let m: UpdateMetrics;
    try {
      m = await this.update.train(samples, adv.advantages, progress('training'));
    } finally {
      disposeSamples(samples);
    }
    const tTrained = performance.now();
    this.epoch = epoch;

    const mem = this.device.memory();
    const steps = m.steps;
    const record: EpochRecord = {
      epoch, algorithm: c.algorithm, rewards, prompts, advantages: adv.stats,
      loss: m.loss, approxKl: m.approxKl, clipfrac: m.clipfrac, gradNorm: m.gradNorm,
      lr: this.lr, optimizerSteps: steps, globalStep: this.globalStep, globalSample: this.globalSample,
      seconds: { sampling: r.seconds.sampling, reward: r.seconds.reward, training: (tTrained - tRewarded) / 1000, total: (tTrained - tStart) / 1000 },
      samplesPerSecond: n / ((tTrained - tStart) / 1000),
      memory: { liveBytes: mem.liveBytes, peakTotalBytes: mem.peakTotalBytes },
      dropped, droppedReasons: droppedReasons.slice(0, 10),
      ...rewardDetails(r.rewardParts, this.scorer.takeStats()),
    };
    if (c.train.kl_coef > 0) record.kl = m.kl;
    if (r.eval) {
      const ev = r.eval;
      record.evalImages = ev.images;
      record.evalRewards = ev.rewards;
      record.evalPrompts = ev.prompts;
      record.gridCaptions = ev.prompts.map((p, i) => [p, Number.isFinite(ev.rewards[i]) ? `reward ${ev.rewards[i].toFixed(4)}` : 'reward dropped']);
    }
    const rs = statsOf(rewards);
    const parts = record.rewardParts ? ` (${Object.entries(record.rewardParts).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')})` : '';
    this.log(`epoch ${epoch}: reward ${rs.mean.toFixed(4)} ± ${rs.std.toFixed(4)}${parts}, loss ${record.loss.toExponential(3)}, ${record.seconds.total.toFixed(1)} s`);
    // Past the first optimizer step of a round, a ratio outside the clip range passes gradient only
    // when its sample moved against its advantage: if nearly all are outside, the later steps mostly
    // undo the first (measured in test/learning-setup.ts). Say so once. (The first step's ratios
    // are exactly 1, so the epoch's clipfrac is at most (steps − 1)/steps.)
    if (c.algorithm === 'ddpo-is' && steps > 1 && record.clipfrac > 0.9 * (steps - 1) / steps && !this.warnedClip) {
      this.warnedClip = true;
      this.log(`warning: clipfrac ${record.clipfrac.toFixed(2)} with ${steps} optimizer steps per epoch: each step moves the policy far beyond clip_range ${c.train.clip_range}, so the steps after the first mostly undo it. Lower train.lr, use LoRA, raise train.clip_range, or take one step per epoch (train.gradient_accumulation_steps = samples per epoch / train.batch_size).`);
    }
    await this.opts.onEpoch?.(record);
    return { status: 'ok' };
  }

  /** Stops the reward workers and frees the optimizer state and text cache (the model stays). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.scorer.close();
    this.update.dispose();
    this.cache.dispose();
  }
}

/** Trainer.resume as a function: continues the run saved in `folder`. */
export function resume(folder: string, opts: TrainerOptions, overrides: Overrides = {}): Promise<Trainer> {
  return Trainer.resume(folder, opts, overrides);
}

/**
 * Wires Ctrl-C to trainer.requestStop(): the first SIGINT lets the run save a checkpoint and
 * return 'stopped' at its next safe point; a second one exits at once (exit code 130) and leaves
 * the last checkpoint as it was. Returns a function that removes the handler.
 */
export function stopOnSignals(trainer: Trainer, log: (m: string) => void = (m) => process.stderr.write(`${m}\n`)): () => void {
  const handler = () => {
    if (trainer.stopping) {
      log('quitting without saving; the last checkpoint is intact');
      process.exit(130);
    }
    log('\nstopping: finishing the current step, then saving a checkpoint (Ctrl-C again to quit without saving)');
    trainer.requestStop();
  };
  process.on('SIGINT', handler);
  return () => { process.off('SIGINT', handler); };
}
