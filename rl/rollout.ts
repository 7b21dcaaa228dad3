// An epoch's rollouts: batches of trajectories sampled from the current model, their images
// scored by the reward (each batch while the next one samples), the fixed-seed evaluation
// samples, and the batches collated into one set of tensors for the update (rl/update.ts).
//
// NaN and Inf: sample() reports the samples whose latents or decoded images went non-finite; the
// first batch (or evaluation batch) that has one ends the epoch's sampling at once ('non-finite'),
// as nothing sound can be trained on it and the model itself is what has gone wrong.
//
// Determinism and resume: sampling noise is Philox addressed by (seed, global sample index) and
// prompts come from their own PromptRng, so the Sampler's state is that rng and the sample
// counter; an epoch that is abandoned (a stop request while sampling, too many dropped samples)
// rolls both back, so that a resumed run redraws the same epoch.

import { noGrad } from '../engine/autograd.js';
import { mulScalar } from '../engine/ops/elementwise.js';
import { concat } from '../engine/ops/movement.js';
import { indexSelect } from '../engine/ops/gather.js';
import { keep } from '../engine/scope.js';
import { Tensor } from '../engine/tensor.js';
import type { StableDiffusion } from '../diffusion/load-folder.js';
import { SampleOptions, SampleResult, TextEmbeddingCache, Trajectory, sample } from '../diffusion/pipeline.js';
import { ImageBatch, Metadata } from '../rewards/types.js';
import { ResolvedConfig, isDDPO } from './config.js';
import { PromptFn, PromptRng, PromptRngState, samplePrompts } from './prompts.js';
import type { PartScores, Scored } from '../rewards/scorer.js';
import { concatParts } from '../rewards/parts.js';

/** The epoch's samples, concatenated over its sampling batches. */
export interface EpochSamples {
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

export function disposeSamples(s: EpochSamples): void {
  for (const t of s.latents) t?.dispose();
  s.promptEmbeds.dispose();
  s.negativeEmbeds.dispose();
}

/** A trajectory view of rows `idx` of the epoch's samples at step k (for the training forward; tidy owns its tensors). */
export function subTrajectory(s: EpochSamples, idx: readonly number[], k: number, c: ResolvedConfig): Trajectory {
  const latents: Tensor[] = [];
  latents[k] = indexSelect(s.latents[k]!, 0, idx);
  latents[k + 1] = indexSelect(s.latents[k + 1]!, 0, idx);
  return {
    prompts: idx.map((i) => s.prompts[i]), seed: c.seed, firstSample: 0, eta: c.sample.eta, guidance: c.sample.guidance, numSteps: c.sample.steps,
    timesteps: s.timesteps, latents, logProbs: null,
    promptEmbeds: indexSelect(s.promptEmbeds, 0, idx), negativeEmbeds: indexSelect(s.negativeEmbeds, 0, idx),
    dispose() { /* tidy owns the views */ },
  };
}

/** A [B, 3, H, W] image tensor's values as an ImageBatch (the tensor is disposed). */
async function readImages(images: Tensor): Promise<ImageBatch> {
  const [n, c, h, w] = images.shape;
  const data = new Float32Array(await images.data());
  images.dispose();
  return { data, n, c, h, w };
}

export interface EvalSamples {
  images: ImageBatch;
  prompts: string[];
  rewards: number[];
}

/** What one epoch's sampling produced, before collation. */
export interface Rollout {
  /** The sampling batches' trajectories (collate() consumes them; discard() frees them). */
  batches: { traj: Trajectory; prompts: string[] }[];
  prompts: string[];
  metadata: Metadata[];
  /** Per sample, NaN where dropped. */
  rewards: number[];
  /** A combined reward's parts, per sample. */
  rewardParts?: PartScores[];
  droppedReasons: string[];
  eval: EvalSamples | null;
  /** sampling: until the last batch was sampled; reward: the wait for rewards after that; rewardCompute: the scoring's own time, summed over batches (it overlaps sampling). */
  seconds: { sampling: number; reward: number; rewardCompute: number };
}

/** A sample that went non-finite while sampling an epoch. */
export interface NonFiniteFound {
  /** 'train' sample index in the epoch, or 'eval' sample index. */
  kind: 'train' | 'eval';
  index: number;
  prompt: string;
  message: string;
}

/** What sampling an epoch came to. */
export type SampleOutcome =
  | { status: 'ok'; rollout: Rollout }
  /** A stop was requested between batches; the draws are rolled back. */
  | { status: 'stopped'; seconds: number }
  /** A batch had non-finite samples (the draws are rolled back). */
  | { status: 'non-finite'; found: NonFiniteFound[]; seconds: number };

export type RolloutProgress = (done: number, total: number) => void;

export interface SamplerState {
  globalSample: number;
  prompt: PromptRngState;
}

/**
 * What sampling needs of a reward: score one batch. Node's RewardScorer (rewards/scorer.ts:
 * worker threads, main-thread rewards) and the page's Web Worker scorer (web/) both fit.
 */
export interface BatchScorer {
  score(id: string, images: ImageBatch, prompts: string[], metadata: Metadata[]): Promise<Scored>;
}

export class Sampler {
  /** Samples drawn since the run began. */
  globalSample = 0;
  private promptRng: PromptRng;
  private batchCounter = 0;
  private snapshot: SamplerState | null = null;

  constructor(
    private readonly sd: StableDiffusion,
    private readonly config: ResolvedConfig,
    private readonly prompts: PromptFn,
    private readonly evalPrompts: readonly string[],
    private readonly scorer: BatchScorer,
    private readonly cache: TextEmbeddingCache,
    promptRng: PromptRng,
  ) {
    this.promptRng = promptRng;
  }

  getState(): SamplerState {
    return { globalSample: this.globalSample, prompt: this.promptRng.getState() };
  }

  setState(s: SamplerState): void {
    this.globalSample = s.globalSample;
    this.promptRng = PromptRng.fromState(s.prompt);
  }

  /** Forgets the last epoch's draws (its prompts and sample indices will be drawn again). */
  rollback(): void {
    if (this.snapshot) this.setState(this.snapshot);
    this.snapshot = null;
  }

  /** Frees a rollout's trajectories without training on them, and rolls the draws back. */
  discard(r: Rollout): void {
    for (const b of r.batches) b.traj.dispose();
    r.batches = [];
    this.rollback();
  }

  private score(kind: string, epoch: number, images: ImageBatch, prompts: string[], metadata: Metadata[]): Promise<Scored> {
    return this.scorer.score(`${kind}-${epoch}-${this.batchCounter++}`, images, prompts, metadata);
  }

  /**
   * Samples epoch `epoch` (1-based): the evaluation samples when eval.every says so, then
   * sample.batches_per_epoch batches, each scored while the next one samples. Ends early, with
   * the draws rolled back, when `stop()` turns true between batches or a batch went non-finite.
   */
  async sampleEpoch(epoch: number, stop: () => boolean, onProgress?: RolloutProgress): Promise<SampleOutcome> {
    const c = this.config;
    const tStart = performance.now();
    this.snapshot = this.getState();
    const doEval = c.eval.every > 0 && c.eval.n > 0 && (epoch - 1) % c.eval.every === 0;
    const pending: Promise<Scored>[] = [];
    const batches: Rollout['batches'] = [];
    let evalPending: Promise<Scored> | null = null;
    let evalImages: ImageBatch | null = null;
    const evalPrompts = Array.from({ length: c.eval.n }, (_, i) => this.evalPrompts[i % this.evalPrompts.length]);
    const opts: Omit<SampleOptions, 'prompts'> = {
      steps: c.sample.steps, eta: c.sample.eta, guidance: c.sample.guidance, negativePrompt: c.sample.negative_prompt, cache: this.cache, decodeBatch: c.sample.decode_batch,
    };
    const end = async (): Promise<number> => {
      for (const x of batches) x.traj.dispose();
      await Promise.allSettled([...pending, ...(evalPending ? [evalPending] : [])]);
      this.rollback();
      return (performance.now() - tStart) / 1000;
    };
    /** The batch's images, or the samples that went non-finite (the result's tensors then freed). */
    const finished = async (r: SampleResult, kind: NonFiniteFound['kind'], first: number): Promise<ImageBatch | NonFiniteFound[]> => {
      const images = await readImages(r.images!);
      const bad = await r.nonFinite;
      if (!bad.length) return images;
      r.trajectory.dispose();
      return bad.map((b) => ({ kind, index: first + b.index, prompt: b.prompt, message: b.message }));
    };
    let scoringTime = 0;
    const timed = (p: Promise<Scored>) => {
      const t0 = performance.now();
      return p.then((x) => { scoringTime += (performance.now() - t0) / 1000; return x; });
    };
    if (doEval) {
      const r = sample(this.sd, { ...opts, prompts: evalPrompts, seed: c.eval.seed, firstSample: 0 });
      const got = await finished(r, 'eval', 0);
      if (Array.isArray(got)) return { status: 'non-finite', found: got, seconds: await end() };
      r.trajectory.dispose();
      evalImages = got;
      evalPending = timed(this.score('eval', epoch, evalImages, evalPrompts, evalPrompts.map(() => ({}))));
    }
    const metadata: Metadata[] = [];
    for (let b = 0; b < c.sample.batches_per_epoch; b++) {
      if (stop()) return { status: 'stopped', seconds: await end() };
      const drawn = samplePrompts(this.prompts, this.promptRng, c.sample.batch_size);
      const first = b * c.sample.batch_size;
      const r = sample(this.sd, {
        ...opts, prompts: drawn.prompts, seed: c.seed, firstSample: this.globalSample,
        onStep: (k, total) => onProgress?.(b * total + k, total * c.sample.batches_per_epoch),
      });
      this.globalSample += drawn.prompts.length;
      const got = await finished(r, 'train', first);
      if (Array.isArray(got)) return { status: 'non-finite', found: got, seconds: await end() };
      pending.push(timed(this.score('train', epoch, got, drawn.prompts, drawn.metadata)));
      batches.push({ traj: r.trajectory, prompts: drawn.prompts });
      metadata.push(...drawn.metadata);
    }
    const tSampled = performance.now();
    const scored = await Promise.all(pending);
    const evalScored = evalPending ? await evalPending : null;
    const tRewarded = performance.now();
    return {
      status: 'ok',
      rollout: {
        batches, metadata,
        prompts: batches.flatMap((x) => x.prompts),
        rewards: scored.flatMap((x) => x.rewards),
        rewardParts: concatParts(scored),
        droppedReasons: scored.flatMap((x) => x.dropped.map((d) => d.reason)),
        eval: evalImages && evalScored ? { images: evalImages, prompts: evalPrompts, rewards: evalScored.rewards } : null,
        seconds: { sampling: (tSampled - tStart) / 1000, reward: (tRewarded - tSampled) / 1000, rewardCompute: scoringTime },
      },
    };
  }
}

/**
 * Gathers a rollout's batches into one set of tensors (DDPO keeps every step's latents and the
 * recorded log-probabilities; RWR only x₀) and frees the trajectories.
 */
export async function collate(r: Rollout, c: ResolvedConfig): Promise<EpochSamples> {
  const ddpo = isDDPO(c.algorithm);
  const batches = r.batches;
  const steps = c.sample.steps;
  const samples: EpochSamples = noGrad(() => {
    const keepAll = (xs: Tensor[]) => keep(xs.length === 1 ? mulScalar(xs[0], 1) : concat(xs, 0));
    const latents: (Tensor | null)[] = [];
    for (let s = 0; s <= steps; s++) latents.push(ddpo || s === steps ? keepAll(batches.map((b) => b.traj.latents[s])) : null);
    return {
      n: r.rewards.length, prompts: r.prompts, latents,
      promptEmbeds: keepAll(batches.map((b) => b.traj.promptEmbeds)),
      negativeEmbeds: keepAll(batches.map((b) => b.traj.negativeEmbeds)),
      logProbs: null, timesteps: batches[0].traj.timesteps,
    };
  });
  if (ddpo) {
    const lp = new Float32Array(samples.n * steps);
    let at = 0;
    for (const b of batches) { const d = await b.traj.logProbs!.data(); lp.set(d, at); at += d.length; }
    samples.logProbs = lp;
  }
  for (const b of batches) b.traj.dispose();
  r.batches = [];
  return samples;
}
