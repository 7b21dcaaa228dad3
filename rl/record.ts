// What a run reports: one EpochRecord per finished epoch (handed to onEpoch; cli/report.ts writes
// it as a metrics.jsonl row, a grid and charts), one FailedEpoch per epoch that started and did
// not finish (onEpochFailed: it still gets its row), the run's result, and the statistics they use.

import type { ImageBatch } from '../rewards/types.js';
import type { Algorithm } from './config.js';
import { percentile } from './losses.js';

export interface Stats {
  mean: number;
  std: number;
  min: number;
  max: number;
}

export interface RewardStats extends Stats {
  n: number;
  p10: number;
  p50: number;
  p90: number;
}

/** Statistics over the finite values (dropped samples, NaN, are left out); std is the population std. */
export function rewardStats(values: ArrayLike<number>): RewardStats {
  const xs = Array.from(values).filter(Number.isFinite);
  const n = xs.length;
  if (!n) return { n: 0, mean: NaN, std: NaN, min: NaN, max: NaN, p10: NaN, p50: NaN, p90: NaN };
  const mean = xs.reduce((s, x) => s + x, 0) / n;
  const std = Math.sqrt(xs.reduce((s, x) => s + (x - mean) * (x - mean), 0) / n);
  return { n, mean, std, min: Math.min(...xs), max: Math.max(...xs), p10: percentile(xs, 0.1), p50: percentile(xs, 0.5), p90: percentile(xs, 0.9) };
}

/** Mean, std, min and max of the finite values. */
export function statsOf(values: ArrayLike<number>): Stats {
  const { mean, std, min, max } = rewardStats(values);
  return { mean, std, min, max };
}

/** How an epoch ended. */
export type EpochStatus = 'ok' | 'stopped' | 'reward-failure' | 'non-finite' | 'error';

/** One epoch's results, handed to onEpoch (plain data, JSON-friendly apart from the eval images). */
export interface EpochRecord {
  /** 1-based number of the epoch just finished. */
  epoch: number;
  status: 'ok';
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
  /** Optimizer steps taken (skipped ones not counted). */
  optimizerSteps: number;
  /** Optimizer steps skipped because their loss or gradient norm was NaN/Inf. */
  skippedSteps: number;
  /** Optimizer steps since the run began. */
  globalStep: number;
  /** Samples drawn since the run began. */
  globalSample: number;
  /**
   * sampling: until the last batch was sampled; reward: the wait for rewards after that;
   * rewardCompute: each batch's scoring from submission to result, summed (it overlaps sampling).
   */
  seconds: { sampling: number; reward: number; rewardCompute: number; training: number; total: number };
  samplesPerSecond: number;
  memory: { liveBytes: number; peakTotalBytes: number };
  /** Samples dropped this epoch (reward NaN or threw after retries). */
  dropped: number;
  droppedReasons: string[];
  /** A combined reward's parts: each part's mean over the epoch's samples it scored (before weighting). */
  rewardParts?: Record<string, number>;
  /** Counters the reward keeps (e.g. a service's requests, retries, failed samples), by part. */
  rewardCounters?: Record<string, number>;
  /** Fixed-seed evaluation samples from the model that sampled this epoch (eval.every), NCHW in [0, 1]. */
  evalImages?: ImageBatch;
  /** [prompt, reward] under each evaluation image. */
  gridCaptions?: string[][];
  evalRewards?: number[];
  evalPrompts?: string[];
}

/** An epoch that started and did not finish: what is known of it, and why it ended. */
export interface FailedEpoch {
  epoch: number;
  status: Exclude<EpochStatus, 'ok'>;
  /** What ended it. */
  error: string;
  algorithm: Algorithm;
  /** Per sample, when the epoch got as far as scoring (NaN where dropped). */
  rewards: number[];
  prompts: string[];
  dropped: number;
  droppedReasons: string[];
  skippedSteps: number;
  seconds: { total: number };
}

/**
 * 'stopped': a stop request; 'reward-failure': too many samples dropped by the reward;
 * 'non-finite': NaN/Inf in samples, in too many optimizer steps, or in the weights (nothing saved).
 */
export type RunStatus = 'done' | 'stopped' | 'reward-failure' | 'non-finite';

export interface RunResult {
  status: RunStatus;
  /** Completed epochs. */
  epoch: number;
  /** The checkpoint written last (if any). */
  checkpoint: string | null;
  message?: string;
}

/** The record's rewardParts (per-part means) and rewardCounters, when there are any. */
export function rewardDetails(parts: readonly { name: string; rewards: readonly number[] }[] | undefined, counters: Record<string, number>): Pick<EpochRecord, 'rewardParts' | 'rewardCounters'> {
  const out: Pick<EpochRecord, 'rewardParts' | 'rewardCounters'> = {};
  if (parts?.length) out.rewardParts = Object.fromEntries(parts.map((p) => [p.name, rewardStats(p.rewards).mean]));
  if (Object.keys(counters).length) out.rewardCounters = counters;
  return out;
}
