// Advantages from rewards, as the DDPO reference code computes them (its PerPromptStatTracker):
// each prompt keeps a buffer of its last `bufferSize` rewards, and a sample's advantage is its
// reward standardised by its prompt's buffer, A = (r − mean) / (std + 1e-6), population std. Until
// a prompt has `minCount` rewards, the whole current batch's mean and std stand in. Per-prompt
// baselines matter because prompts differ in how much reward they can get (a "whale" is easier to
// make compressible than a "zebra"); a global mean would mostly teach the model about prompts.
//
// Dropped samples (NaN rewards) get advantage 0 (no gradient) and enter no statistics.
//
// epochAdvantages turns an epoch's rewards into what the update trains on, for every algorithm:
// DDPO's advantages from the tracker, or RWR's weights (rl/losses.ts).

import type { ResolvedConfig } from './config.js';
import { isDDPO } from './config.js';
import { rwrSparseWeights, rwrWeights } from './losses.js';
import { Stats, statsOf } from './record.js';

export interface StatTrackerOptions {
  /** 'perPrompt' (the reference code's default) or 'global': standardise over the batch only. */
  mode?: 'perPrompt' | 'global';
  /** Rewards kept per prompt (default 32). */
  bufferSize?: number;
  /** Below this many buffered rewards a prompt uses the batch statistics (default 16). */
  minCount?: number;
  /**
   * Added to the std. Default 1e-6 per prompt (as the reference's tracker) and 1e-8 in global mode
   * (as the reference's training script does without the tracker).
   */
  eps?: number;
}

export interface PromptStats {
  mean: number;
  std: number;
  count: number;
}

/** JSON-serialisable state, for checkpoints. */
export interface StatTrackerState {
  version: 1;
  mode: 'perPrompt' | 'global';
  bufferSize: number;
  minCount: number;
  eps: number;
  buffers: Record<string, number[]>;
}

function meanStd(xs: readonly number[]): { mean: number; std: number } {
  const n = xs.length;
  if (!n) return { mean: NaN, std: NaN };
  let s = 0;
  for (const x of xs) s += x;
  const mean = s / n;
  let v = 0;
  for (const x of xs) v += (x - mean) * (x - mean);
  return { mean, std: Math.sqrt(v / n) };
}

export class StatTracker {
  readonly mode: 'perPrompt' | 'global';
  readonly bufferSize: number;
  readonly minCount: number;
  readonly eps: number;
  private buffers = new Map<string, number[]>();

  constructor(opts: StatTrackerOptions = {}) {
    this.mode = opts.mode ?? 'perPrompt';
    if (this.mode !== 'perPrompt' && this.mode !== 'global') throw new Error(`StatTracker: mode "${String(this.mode)}" is not 'perPrompt' or 'global'`);
    this.bufferSize = opts.bufferSize ?? 32;
    this.minCount = opts.minCount ?? 16;
    this.eps = opts.eps ?? (this.mode === 'global' ? 1e-8 : 1e-6);
    if (!Number.isInteger(this.bufferSize) || this.bufferSize < 1) throw new Error(`StatTracker: bufferSize ${this.bufferSize} must be an integer >= 1`);
    if (!Number.isInteger(this.minCount) || this.minCount < 0) throw new Error(`StatTracker: minCount ${this.minCount} must be an integer >= 0`);
    if (!(this.eps >= 0)) throw new Error(`StatTracker: eps ${this.eps} must be >= 0`);
  }

  /** Records a batch's rewards and returns their advantages (same order). */
  update(prompts: readonly string[], rewards: ArrayLike<number>): Float64Array {
    if (prompts.length !== rewards.length) throw new Error(`StatTracker.update: ${prompts.length} prompts for ${rewards.length} rewards`);
    const n = rewards.length;
    const adv = new Float64Array(n);
    const valid: number[] = [];
    for (let i = 0; i < n; i++) if (Number.isFinite(rewards[i])) valid.push(rewards[i]);
    const batch = meanStd(valid);
    if (this.mode === 'global') {
      for (let i = 0; i < n; i++) adv[i] = Number.isFinite(rewards[i]) ? (rewards[i] - batch.mean) / (batch.std + this.eps) : 0;
      return adv;
    }
    // Group indices by prompt, keeping the batch order within each prompt (the buffer's order).
    const groups = new Map<string, number[]>();
    for (let i = 0; i < n; i++) {
      if (!Number.isFinite(rewards[i])) continue;
      const g = groups.get(prompts[i]);
      if (g) g.push(i); else groups.set(prompts[i], [i]);
    }
    for (const [prompt, idx] of groups) {
      let buf = this.buffers.get(prompt);
      if (!buf) this.buffers.set(prompt, (buf = []));
      for (const i of idx) buf.push(rewards[i]);
      if (buf.length > this.bufferSize) buf.splice(0, buf.length - this.bufferSize);
      const { mean, std } = buf.length < this.minCount ? batch : meanStd(buf);
      for (const i of idx) adv[i] = (rewards[i] - mean) / (std + this.eps);
    }
    return adv;
  }

  /** Mean, std (population) and count of every prompt's buffer. */
  getStats(): Record<string, PromptStats> {
    const out: Record<string, PromptStats> = {};
    for (const [p, buf] of this.buffers) out[p] = { ...meanStd(buf), count: buf.length };
    return out;
  }

  /** Forgets every buffer (the reference code never does; useful between tasks). */
  clear(): void {
    this.buffers.clear();
  }

  getState(): StatTrackerState {
    return { version: 1, mode: this.mode, bufferSize: this.bufferSize, minCount: this.minCount, eps: this.eps, buffers: Object.fromEntries([...this.buffers].map(([k, v]) => [k, [...v]])) };
  }

  toJSON(): StatTrackerState {
    return this.getState();
  }

  /** A tracker restored from getState() (or its JSON). */
  static fromState(state: StatTrackerState): StatTracker {
    if (!state || state.version !== 1) throw new Error(`StatTracker.fromState: unknown state version ${state?.version}`);
    const t = new StatTracker({ mode: state.mode, bufferSize: state.bufferSize, minCount: state.minCount, eps: state.eps });
    for (const [k, v] of Object.entries(state.buffers ?? {})) {
      if (!Array.isArray(v) || v.some((x) => typeof x !== 'number')) throw new Error(`StatTracker.fromState: buffer of "${k}" is not a list of numbers`);
      t.buffers.set(k, v.slice(-t.bufferSize));
    }
    return t;
  }
}

/** The tracker a config asks for. */
export function statTrackerFor(c: ResolvedConfig): StatTracker {
  return new StatTracker({ mode: c.stat_tracking.per_prompt ? 'perPrompt' : 'global', bufferSize: c.stat_tracking.buffer_size, minCount: c.stat_tracking.min_count });
}

/**
 * An epoch's training signal from its rewards: DDPO's advantages from the tracker (0 for dropped
 * samples) or RWR's weights, of the negated rewards for the negative control (train.negate_advantages);
 * with their statistics after DDPO's clipping to ±train.adv_clip_max.
 */
export function epochAdvantages(c: ResolvedConfig, tracker: StatTracker, prompts: readonly string[], rewards: readonly number[]): { advantages: Float64Array; stats: Stats & { clippedFraction: number } } {
  const n = rewards.length;
  const ddpo = isDDPO(c.algorithm);
  const sign = c.train.negate_advantages ? -1 : 1;
  let adv: Float64Array;
  if (ddpo) {
    adv = tracker.update(prompts, rewards);
    for (let i = 0; i < n; i++) adv[i] = Number.isFinite(adv[i]) ? sign * adv[i] : 0;
  } else {
    const r = rewards.map((x) => sign * x);
    const perPrompt = c.rwr.per_prompt ? [...prompts] : undefined;
    adv = c.algorithm === 'rwr'
      ? rwrWeights(r, { temperature: c.rwr.temperature, perPrompt, standardise: c.rwr.standardise })
      : rwrSparseWeights(r, { quantile: c.rwr.quantile, perPrompt });
  }
  const max = c.train.adv_clip_max;
  const clipped = ddpo ? Array.from(adv, (a) => Math.max(-max, Math.min(max, a))) : Array.from(adv);
  const clippedFraction = ddpo ? Array.from(adv).filter((a) => Math.abs(a) > max).length / n : 0;
  return { advantages: adv, stats: { ...statsOf(clipped), clippedFraction } };
}
