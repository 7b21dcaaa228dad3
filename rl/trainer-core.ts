// The Node-free core of a DDPO run: the parts an epoch needs, built from a resolved config, and
// one epoch: rollout (sample trajectories, score their images) → advantages → policy update →
// the epoch's record. rl/trainer.ts (Node: reward worker pools, checkpoints, signals, resume)
// and the browser page (web/fine-tune.ts: the reward in a Web Worker) both run epochs through
// runEpochCore, so the loop exists once. The reward comes in as an EpochScorer: Node's
// RewardScorer (rewards/scorer.ts) or the page's worker scorer.

import type { Device } from '../engine/device.js';
import type { StableDiffusion } from '../diffusion/load-folder.js';
import { TextEmbeddingCache } from '../diffusion/pipeline.js';
import { StatTracker, epochAdvantages, statTrackerFor } from './advantages.js';
import type { ResolvedConfig } from './config.js';
import { PromptFn, PromptRng, samplePrompts } from './prompts.js';
import { EpochRecord, FailedEpoch, rewardDetails } from './record.js';
import { deriveSeed } from './rng.js';
import { BatchScorer, Sampler, collate, disposeSamples } from './rollout.js';
import { PolicyUpdate, UpdateMetrics, prepareUnet } from './update.js';

/** What an epoch needs of a reward beyond scoring batches. */
export interface EpochScorer extends BatchScorer {
  /** Between sampling and training: main-thread rewards free their transient memory. */
  endEpoch(): Promise<void>;
  /** Counters kept since the last call (a service's requests and retries), for the record. */
  takeStats(): Record<string, number>;
}

/** The state one run carries from epoch to epoch. */
export interface RunParts {
  config: ResolvedConfig;
  sd: StableDiffusion;
  device: Device;
  sampler: Sampler;
  update: PolicyUpdate;
  cache: TextEmbeddingCache;
  tracker: StatTracker;
}

/**
 * Builds the run's parts (the config as rl/config.ts resolveConfig returns it): prepares the UNet
 * (LoRA adapters injected, or every f32 parameter unfrozen for full fine-tuning), the optimizer,
 * the text cache, the stat tracker and the sampler with its seeded prompt streams.
 */
export function createRunParts(sd: StableDiffusion, config: ResolvedConfig, prompts: PromptFn, scorer: BatchScorer): RunParts {
  const tracker = statTrackerFor(config);
  const update = new PolicyUpdate(sd, config, prepareUnet(sd, config));
  const cache = new TextEmbeddingCache(sd);
  const evalRng = new PromptRng(deriveSeed(config.eval.seed, 7));
  const evalPrompts = config.eval.prompts?.length ? [...config.eval.prompts] : samplePrompts(prompts, evalRng, Math.max(config.eval.n, 1)).prompts;
  const sampler = new Sampler(sd, config, prompts, evalPrompts, scorer, cache, new PromptRng(deriveSeed(config.seed, 1)));
  return { config, sd, device: sd.unet.device, sampler, update, cache, tracker };
}

/** What the epoch knew when it failed (for onEpochFailed). */
export type EpochKnown = Pick<FailedEpoch, 'rewards' | 'prompts' | 'dropped' | 'droppedReasons' | 'skippedSteps'>;

export type EpochOutcome =
  | { status: 'ok'; record: EpochRecord }
  | { status: 'stopped'; known: EpochKnown }
  | { status: 'reward-failure' | 'non-finite'; message: string; known: EpochKnown };

/** A fresh EpochKnown (nothing known yet). */
export function emptyKnown(): EpochKnown {
  return { rewards: [], prompts: [], dropped: 0, droppedReasons: [], skippedSteps: 0 };
}

export interface EpochHooks {
  /** Filled in as the epoch learns things, so a caller still has them when an Error propagates. */
  known?: EpochKnown;
  /** Polled between sampling batches: true stops the epoch (its draws are redone on resume). */
  stopRequested?: () => boolean;
  onProgress?: (phase: 'sampling' | 'training', done: number, total: number) => void;
  log?: (message: string) => void;
}

/**
 * Epoch `epoch` (1-based) of a run: samples, scores, computes advantages and trains. Returns the
 * record (status 'ok'), or why it stopped (a stop request, too many samples the reward dropped,
 * NaN/Inf samples or a diverged update) with what it knew; an Error propagates.
 */
export async function runEpochCore(p: RunParts, scorer: EpochScorer, epoch: number, hooks: EpochHooks = {}): Promise<EpochOutcome> {
  const c = p.config;
  const log = (m: string) => hooks.log?.(m);
  const tStart = performance.now();
  const known: EpochKnown = hooks.known ?? emptyKnown();
  const progress = (phase: 'sampling' | 'training') => (done: number, total: number) => hooks.onProgress?.(phase, done, total);
  const outcome = await p.sampler.sampleEpoch(epoch, () => hooks.stopRequested?.() ?? false, progress('sampling'));
  // The reward's transient memory (and, if asked, its weights) goes back before training.
  await scorer.endEpoch();
  if (outcome.status === 'stopped') return { status: 'stopped', known };
  if (outcome.status === 'non-finite') {
    const f = outcome.found;
    Object.assign(known, { dropped: f.length, droppedReasons: f.slice(0, 10).map((x) => `${x.kind} sample ${x.index} ("${x.prompt}"): ${x.message}`) });
    const msg = `epoch ${epoch}: ${f.length} ${f[0].kind === 'eval' ? 'evaluation ' : ''}sample${f.length > 1 ? 's' : ''} of a batch went non-finite (first: ${known.droppedReasons[0]}). The model produces NaN/Inf: its weights are NaN/Inf (check them with \`ddpo inspect --check-values\`) or training diverged (lower train.lr). The run stops without saving.`;
    log(msg);
    return { status: 'non-finite', message: msg, known };
  }
  const r = outcome.rollout;
  const tRewarded = performance.now();
  const { rewards, prompts, droppedReasons } = r;
  const n = rewards.length;
  const dropped = rewards.filter((x) => !Number.isFinite(x)).length;
  Object.assign(known, { rewards, prompts, dropped, droppedReasons: droppedReasons.slice(0, 10) });
  if (dropped) log(`epoch ${epoch}: ${dropped} of ${n} samples dropped by the reward after ${c.reward_options.max_retries} retries; first reason: ${droppedReasons[0] ?? '?'}`);
  if (dropped > c.reward_options.max_dropped_fraction * n) {
    p.sampler.discard(r);
    const msg = `epoch ${epoch}: ${dropped} of ${n} samples dropped by the reward after ${c.reward_options.max_retries} retries (limit ${c.reward_options.max_dropped_fraction}); first reason: ${droppedReasons[0] ?? '?'}`;
    log(msg);
    return { status: 'reward-failure', message: msg, known };
  }

  const samples = await collate(r, c);
  const adv = epochAdvantages(c, p.tracker, prompts, rewards);
  let m: UpdateMetrics;
  try {
    m = await p.update.train(samples, adv.advantages, progress('training'));
  } finally {
    disposeSamples(samples);
  }
  known.skippedSteps = m.skipped;
  if (m.skipped) log(`epoch ${epoch}: ${m.skipped} optimizer step${m.skipped > 1 ? 's' : ''} skipped (loss or gradient norm NaN/Inf; ${p.update.skippedSteps} of train.max_skipped_steps = ${c.train.max_skipped_steps} in the run)`);
  if (m.diverged) {
    const msg = `epoch ${epoch}: ${p.update.skippedSteps} optimizer steps had a NaN/Inf loss or gradient norm (train.max_skipped_steps = ${c.train.max_skipped_steps}): training diverged (lower train.lr, or raise train.max_skipped_steps). The run stops without saving.`;
    log(msg);
    return { status: 'non-finite', message: msg, known };
  }
  const tTrained = performance.now();

  const mem = p.device.memory();
  const record: EpochRecord = {
    epoch, status: 'ok', algorithm: c.algorithm, rewards, prompts, advantages: adv.stats,
    loss: m.loss, approxKl: m.approxKl, clipfrac: m.clipfrac, gradNorm: m.gradNorm,
    lr: p.update.optimizer.lr, optimizerSteps: m.steps, skippedSteps: m.skipped, globalStep: p.update.globalStep, globalSample: p.sampler.globalSample,
    seconds: { ...r.seconds, training: (tTrained - tRewarded) / 1000, total: (tTrained - tStart) / 1000 },
    samplesPerSecond: n / ((tTrained - tStart) / 1000),
    memory: { liveBytes: mem.liveBytes, peakTotalBytes: mem.peakTotalBytes },
    dropped, droppedReasons: droppedReasons.slice(0, 10),
    ...rewardDetails(r.rewardParts, scorer.takeStats()),
  };
  if (c.train.kl_coef > 0) record.kl = m.kl;
  if (r.eval) {
    const ev = r.eval;
    record.evalImages = ev.images;
    record.evalRewards = ev.rewards;
    record.evalPrompts = ev.prompts;
    record.gridCaptions = ev.prompts.map((q, i) => [q, Number.isFinite(ev.rewards[i]) ? `reward ${ev.rewards[i].toFixed(4)}` : 'reward dropped']);
  }
  return { status: 'ok', record };
}
