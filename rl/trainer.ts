// The DDPO trainer (Black et al. 2023), as a loop over epochs. Each epoch (rl/trainer-core.ts,
// the Node-free part the browser page runs too):
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
// training; the first SIGINT or SIGTERM, see stopOnSignals) or when more than reward_options.
// max_dropped_fraction of an epoch's samples is dropped; either way it saves a checkpoint of the
// state before the unfinished epoch. It also stops on NaN/Inf (samples that went non-finite,
// train.max_skipped_steps optimizer steps with a non-finite loss or gradient norm, or non-finite
// weights at a save), and then saves nothing: the last checkpoint, written from finite weights,
// stays. Every epoch that starts is reported, finished (onEpoch) or not (onEpochFailed).
//
// Determinism and resume: every random stream is seeded from config.seed and has its state in the
// checkpoint with the stat tracker, the optimizer and the weights, so a resumed run is
// bit-identical to an uninterrupted one.

import { Device } from '../engine/device.js';
import { Tensor } from '../engine/tensor.js';
import { StableDiffusion } from '../diffusion/load.js';
import { RewardPoolOptions } from '../rewards/pool.js';
import { Reward, RewardSpec } from '../rewards/types.js';
import { StatTracker, StatTrackerState } from './advantages.js';
import { Overrides, ResolvedConfig, isDDPO, resolveConfig, resumeConfig, rewardSpec } from './config.js';
import { promptFn } from './prompts-file.js';
import { CheckpointFile, loadCheckpointWeights, loadOptimizerState, readCheckpoint, recoverCheckpoint, saveCheckpoint } from './checkpoint.js';
import { PromptFn, PromptRngState } from './prompts.js';
import { EpochRecord, FailedEpoch, RunResult, statsOf } from './record.js';
import { nonFiniteCounts } from '../engine/finite.js';
import { Sampler } from './rollout.js';
import { EpochKnown, RunParts, createRunParts, emptyKnown, runEpochCore } from './trainer-core.js';
import { RewardScorer } from './scoring.js';
import { PolicyUpdate } from './update.js';

export type { EpochRecord, EpochStatus, FailedEpoch, RunResult, RunStatus, Stats } from './record.js';

export interface TrainerOptions {
  sd: StableDiffusion;
  /**
   * The reward (default: the config's `reward`). A spec runs in a RewardPool of worker threads;
   * a function runs in this thread (tests, browsers).
   */
  reward?: RewardSpec | Reward;
  /** The training prompts (default: the config's `prompts`). */
  prompts?: PromptFn;
  /** Called after every epoch that finished. */
  onEpoch?: (record: EpochRecord) => void | Promise<void>;
  /** Called for every epoch that started and did not finish (stopped, reward failure, NaN/Inf, an Error). */
  onEpochFailed?: (record: FailedEpoch) => void | Promise<void>;
  /** Checkpoint folder (replaced atomically at each save); none: no checkpoints. */
  checkpointDir?: string;
  onProgress?: (p: { epoch: number; phase: 'sampling' | 'training'; done: number; total: number }) => void;
  log?: (message: string) => void;
  /** Reward pool settings over the config's reward_options.workers (the timeout is reward_options.timeout_s, see rl/scoring.ts). */
  rewardPool?: RewardPoolOptions;
}

/** The part of a checkpoint the trainer owns. */
export interface TrainerState {
  epoch: number;
  globalSample: number;
  globalStep: number;
  /** Optimizer steps skipped for a non-finite loss or gradient norm (absent in older checkpoints: 0). */
  skippedSteps?: number;
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
  private readonly parts: RunParts;
  private readonly scorer: RewardScorer;
  private readonly opts: TrainerOptions;
  /** The clip-range warning (see runEpoch) has been given. */
  private warnedClip = false;
  private stopRequested = false;
  private closed = false;

  private constructor(config: ResolvedConfig, opts: TrainerOptions) {
    this.config = config;
    this.opts = opts;
    this.sd = opts.sd;
    this.device = opts.sd.unet.device;
    const prompts = opts.prompts ?? promptFn(config.prompts);
    const ro = config.reward_options;
    this.scorer = new RewardScorer(opts.reward ?? rewardSpec(config.reward), {
      retries: ro.max_retries,
      // The whole scoring of a batch, retries included (rewards/scorer.ts).
      timeoutMs: ro.timeout_s * 1000,
      pool: { workers: ro.workers ?? undefined, ...opts.rewardPool },
      // Main-thread rewards (GPU models, service clients) run on the training device.
      context: { device: this.device, log: (m) => this.log(m) },
    });
    this.parts = createRunParts(this.sd, config, prompts, this.scorer);
  }

  private get sampler(): Sampler { return this.parts.sampler; }
  private get update(): PolicyUpdate { return this.parts.update; }

  /**
   * A new run (the config as rl/config.ts resolveConfig returns it; it is checked again here):
   * prepares the UNet (LoRA adapters injected, or every f32 parameter unfrozen for full
   * fine-tuning) and starts the reward workers.
   */
  static async create(config: ResolvedConfig, opts: TrainerOptions): Promise<Trainer> {
    const c = resolveConfig(config);
    checkModelFits(opts.sd, c);
    return Trainer.start(new Trainer(c, opts), async () => {});
  }

  /**
   * Continues a run from a checkpoint folder: the same config (with `overrides` of the keys a
   * resume may change, rl/config.ts RESUMABLE_KEYS, e.g. a larger epochs), weights, optimizer,
   * RNG states, stat tracker and counters. `opts.sd` must be the same base model the run started
   * from (without adapters).
   */
  static async resume(folder: string, opts: TrainerOptions, overrides: Overrides = {}): Promise<Trainer> {
    for (const line of await recoverCheckpoint(folder)) opts.log?.(`resume: ${line}`);
    const file: CheckpointFile<TrainerState> = await readCheckpoint<TrainerState>(folder);
    const st = file.state;
    const c = resumeConfig(st.config, overrides, `resume ${folder}`);
    if (c.epochs < st.epoch) throw new Error(`resume ${folder}: epochs = ${c.epochs} is below the ${st.epoch} epochs the run has done; give epochs > ${st.epoch} to continue it`);
    if ((file.weights.kind === 'lora') !== c.lora.enabled) throw new Error(`resume ${folder}: the checkpoint holds ${file.weights.kind} weights but the config says lora.enabled: ${c.lora.enabled}`);
    checkModelFits(opts.sd, c);
    return Trainer.start(new Trainer(c, opts), async (t) => {
      await loadCheckpointWeights(folder, file, t.update.trained);
      await loadOptimizerState(folder, file, t.update.optimizer, t.update.trained);
      t.epoch = st.epoch;
      t.sampler.setState({ globalSample: st.globalSample, prompt: st.rng.prompt });
      t.update.setState({ globalStep: st.globalStep, skippedSteps: st.skippedSteps ?? 0, rwrNoiseCounter: st.rwrNoiseCounter, shuffle: st.rng.shuffle, timestep: st.rng.timestep });
      t.parts.tracker = StatTracker.fromState(st.statTracker);
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
      epoch: this.epoch, globalSample: s.globalSample, globalStep: u.globalStep, skippedSteps: u.skippedSteps, rwrNoiseCounter: u.rwrNoiseCounter,
      rng: { prompt: s.prompt, shuffle: u.shuffle, timestep: u.timestep },
      statTracker: this.parts.tracker.getState(), config: this.config,
    };
  }

  /**
   * Trained tensors and optimizer moments that hold NaN/Inf, as "name (k of n values)"; empty
   * when every value is finite.
   */
  async nonFiniteState(): Promise<string[]> {
    const named: [string, Tensor][] = [...this.update.trained];
    const names = new Map<Tensor, string>(named.map(([n, t]) => [t, n]));
    for (const e of this.update.optimizer.stateDict()) {
      for (const [k, b] of Object.entries(e.buffers)) named.push([`${names.get(e.param) ?? '?'} (optimizer ${k})`, b]);
    }
    const counts = await nonFiniteCounts(named.map(([, t]) => t));
    return named.flatMap(([n, t], i) => (counts[i] ? [`${n} (${counts[i]} of ${t.size} values)`] : []));
  }

  /** Writes a checkpoint of the current state (default: the checkpointDir), never of non-finite weights. Returns the folder. */
  async saveCheckpoint(folder = this.opts.checkpointDir): Promise<string> {
    if (!folder) throw new Error('Trainer.saveCheckpoint: no folder (set checkpointDir)');
    const bad = await this.nonFiniteState();
    if (bad.length) throw new NonFiniteStateError(bad, folder);
    await saveCheckpoint(folder, { state: this.state(), weightKind: this.config.lora.enabled ? 'lora' : 'full', weights: this.update.trained, optimizer: this.update.optimizer });
    return folder;
  }

  private log(m: string): void {
    this.opts.log?.(m);
  }

  /**
   * Runs epochs until `epochs`, a stop request, too many dropped samples, or NaN/Inf (samples,
   * optimizer steps, weights). Every epoch that starts is reported: onEpoch when it finishes,
   * onEpochFailed when it does not (then a stop saves; a failure of the reward saves the state
   * before the epoch; a non-finite one saves nothing, so the last checkpoint stays good).
   */
  async run(): Promise<RunResult> {
    let checkpoint: string | null = null;
    /** Saves (when there is a checkpoint folder); the refusal message when the state is non-finite. */
    const save = async (): Promise<string | null> => {
      if (!this.opts.checkpointDir) return null;
      if (this.update.suspect) {
        const msg = `not saving a checkpoint after epoch ${this.epoch}: its last optimizer step was skipped (NaN/Inf loss or gradient norm), so the weights as they are compute NaN/Inf; the last checkpoint there is kept as it was`;
        this.log(msg);
        return msg;
      }
      try {
        checkpoint = await this.saveCheckpoint();
        return null;
      } catch (e) {
        if (e instanceof NonFiniteStateError) return e.message;
        throw e;
      }
    };
    const nonFinite = (message: string): RunResult => ({ status: 'non-finite', epoch: this.epoch, checkpoint, message });
    while (this.epoch < this.config.epochs) {
      const r = await this.runEpoch();
      if (r.status === 'stopped') {
        const refused = await save();
        if (refused) return nonFinite(refused);
        return { status: 'stopped', epoch: this.epoch, checkpoint, message: 'stopped during sampling; the checkpoint is the state before the epoch' };
      }
      if (r.status === 'reward-failure') {
        const refused = await save();
        if (refused) return nonFinite(refused);
        return { status: 'reward-failure', epoch: this.epoch, checkpoint, message: r.message };
      }
      if (r.status === 'non-finite') return nonFinite(r.message);
      const last = this.epoch >= this.config.epochs;
      if (this.stopRequested || last || (this.config.save_every > 0 && this.epoch % this.config.save_every === 0)) {
        const suspect = this.update.suspect;
        const refused = await save();
        // Suspect weights skip a periodic save (the next steps may recover); anything else stops the run.
        if (refused && (!suspect || last || this.stopRequested)) return nonFinite(refused);
      }
      if (this.stopRequested && !last) return { status: 'stopped', epoch: this.epoch, checkpoint };
    }
    return { status: 'done', epoch: this.epoch, checkpoint };
  }

  /** One epoch (rl/trainer-core.ts runEpochCore); a failure is reported (onEpochFailed) before it returns or throws. */
  private async runEpoch(): Promise<{ status: 'ok' | 'stopped' } | { status: 'reward-failure' | 'non-finite'; message: string }> {
    const c = this.config;
    const epoch = this.epoch + 1;
    const tStart = performance.now();
    let reported = false;
    const fail = async (status: FailedEpoch['status'], error: string, known: EpochKnown) => {
      reported = true;
      await this.opts.onEpochFailed?.({ epoch, status, error, algorithm: c.algorithm, ...known, seconds: { total: (performance.now() - tStart) / 1000 } });
    };
    const known = emptyKnown();
    try {
      const out = await runEpochCore(this.parts, this.scorer, epoch, {
        known,
        stopRequested: () => this.stopRequested,
        onProgress: (phase, done, total) => this.opts.onProgress?.({ epoch, phase, done, total }),
        log: (m) => this.log(m),
      });
      if (out.status === 'stopped') {
        await fail('stopped', 'stopped while sampling; the epoch is redone on resume', out.known);
        return { status: 'stopped' };
      }
      if (out.status !== 'ok') {
        await fail(out.status, out.message, out.known);
        return { status: out.status, message: out.message };
      }
      const record = out.record;
      this.epoch = epoch;
      this.log(epochLine(record, c));
      // Past the first optimizer step of a round, a ratio outside the clip range passes gradient only
      // when its sample moved against its advantage: if nearly all are outside, the later steps mostly
      // undo the first (measured in test/learning-setup.ts). Say so once. (The first step's ratios
      // are exactly 1, so the epoch's clipfrac is at most (steps − 1)/steps.)
      const steps = record.optimizerSteps;
      if (c.algorithm === 'ddpo-is' && steps > 1 && record.clipfrac > 0.9 * (steps - 1) / steps && !this.warnedClip) {
        this.warnedClip = true;
        this.log(`warning: clipfrac ${record.clipfrac.toFixed(2)} with ${steps} optimizer steps per epoch: each step moves the policy far beyond clip_range ${c.train.clip_range}, so the steps after the first mostly undo it. Lower train.lr, use LoRA, raise train.clip_range, or take one step per epoch (train.gradient_accumulation_steps = samples per epoch / train.batch_size).`);
      }
      await this.opts.onEpoch?.(record);
      return { status: 'ok' };
    } catch (e) {
      if (!reported && this.epoch < epoch) await fail('error', e instanceof Error ? e.message : String(e), known).catch(() => {});
      throw e;
    }
  }

  /** Stops the reward workers and frees the optimizer state and text cache (the model stays). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.scorer.close();
    this.update.dispose();
    this.parts.cache.dispose();
  }
}

/** The config's demands on the model, checked before anything is prepared (the number of DDIM steps its schedule takes). */
function checkModelFits(sd: StableDiffusion, c: ResolvedConfig): void {
  const max = sd.schedule.maxSteps;
  if (c.sample.steps > max) throw new Error(`sample.steps = ${c.sample.steps}: this model's scheduler takes at most ${max} DDIM steps (num_train_timesteps ${sd.schedule.numTrainTimesteps}, steps_offset ${sd.schedule.stepsOffset}); give 1..${max}`);
}

/** Trainer.resume as a function: continues the run saved in `folder`. */
export function resume(folder: string, opts: TrainerOptions, overrides: Overrides = {}): Promise<Trainer> {
  return Trainer.resume(folder, opts, overrides);
}

/**
 * Wires Ctrl-C (SIGINT) and SIGTERM (what schedulers, `docker stop` and `kill` send) to
 * trainer.requestStop(): the first signal lets the run save a checkpoint and return 'stopped' at
 * its next safe point; a second one exits at once (130 for SIGINT, 143 for SIGTERM), leaving the
 * last checkpoint as it was (checkpoints are replaced atomically). Returns a function that
 * removes the handlers.
 */
export function stopOnSignals(trainer: Trainer, log: (m: string) => void = (m) => process.stderr.write(`${m}\n`)): () => void {
  const handler = (signal: NodeJS.Signals) => {
    if (trainer.stopping) {
      log(`${signal} again: quitting without saving; the last checkpoint is intact`);
      process.exit(signal === 'SIGTERM' ? 143 : 130);
    }
    log(`\n${signal}: stopping: finishing the current step, then saving a checkpoint (send it again, or Ctrl-C, to quit without saving)`);
    trainer.requestStop();
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return () => { process.off('SIGINT', handler); process.off('SIGTERM', handler); };
}

/** A checkpoint refused because trained tensors or optimizer moments hold NaN/Inf. */
export class NonFiniteStateError extends Error {
  constructor(readonly tensors: string[], folder: string) {
    super(`not saving a checkpoint to ${folder}: ${tensors.length} trained tensor${tensors.length > 1 ? 's' : ''} or optimizer moments hold NaN/Inf (${tensors.slice(0, 3).join(', ')}${tensors.length > 3 ? ', …' : ''}); training diverged (lower train.lr). The last checkpoint there is kept as it was.`);
    this.name = 'NonFiniteStateError';
  }
}

/**
 * The console line of an epoch: the reward, then what tells how the update went. DDPO's surrogate
 * loss is about 0 by construction on the first step of a round (ratio 1, standardised
 * advantages), so with one step per epoch it shows the gradient norm instead; approx_kl and
 * clipfrac only once a round takes more than one step (before that they are exactly 0).
 */
export function epochLine(r: EpochRecord, c: ResolvedConfig): string {
  const rs = statsOf(r.rewards);
  const rewardParts = r.rewardParts ? ` (${Object.entries(r.rewardParts).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')})` : '';
  const parts = [`reward ${rs.mean.toFixed(4)} ± ${rs.std.toFixed(4)}${rewardParts}`];
  if (r.dropped) parts.push(`${r.dropped} dropped`);
  if (isDDPO(c.algorithm) && r.optimizerSteps <= 1) parts.push(`grad norm ${r.gradNorm.toExponential(3)}`);
  else parts.push(`loss ${r.loss.toExponential(3)}`, `grad norm ${r.gradNorm.toExponential(3)}`);
  if (c.algorithm === 'ddpo-is' && r.optimizerSteps > 1) parts.push(`approx_kl ${r.approxKl.toExponential(2)}`, `clipfrac ${r.clipfrac.toFixed(3)}`);
  if (r.kl !== undefined) parts.push(`kl ${r.kl.toExponential(3)}`);
  if (r.skippedSteps) parts.push(`${r.skippedSteps} step${r.skippedSteps > 1 ? 's' : ''} skipped (NaN/Inf)`);
  const t = r.seconds;
  parts.push(`${t.total.toFixed(1)} s (sampling ${t.sampling.toFixed(1)}, reward wait ${t.reward.toFixed(1)}, training ${t.training.toFixed(1)})`);
  return `epoch ${r.epoch}: ${parts.join(', ')}`;
}
