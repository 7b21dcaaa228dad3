// One short DDPO epoch on a loaded model, the way the demo page runs it: DDPO-IS with LoRA on a
// few samples of one prompt, rewarded for JPEG compressibility. The loop is the trainer's own
// (rl/trainer-core.ts); the reward comes from an injected runner (the page: a Web Worker,
// web/worker-runner.ts; Node tests: the same reward in-thread). No Node here.

import type { StableDiffusion } from '../diffusion/load-folder.js';
import { unetLoRAStateDict } from '../diffusion/models/unet-model.js';
import { resolveConfig } from '../rl/config.js';
import type { ResolvedConfig } from '../rl/config.js';
import { RunParts, createRunParts, runEpochCore } from '../rl/trainer-core.js';
import { RewardRunner, RunnerScorer } from '../rewards/runner-scorer.js';
import type { ImageBatch } from '../rewards/types.js';

export interface FineTuneOptions {
  prompt: string;
  /** Samples in the epoch (one batch). */
  samples: number;
  /** DDIM steps per sample (each one a training timestep). */
  steps: number;
  guidance: number;
  lr: number;
  seed: number;
}

export const FINE_TUNE_DEFAULTS: Omit<FineTuneOptions, 'prompt'> = { samples: 4, steps: 4, guidance: 3, lr: 3e-4, seed: 0 };

export interface FineTuneResult {
  epoch: number;
  rewards: number[];
  meanReward: number;
  loss: number;
  approxKl: number;
  clipfrac: number;
  optimizerSteps: number;
  /** Largest |Δ| of any LoRA weight over the epoch (0: nothing was learnt). */
  loraChange: number;
  ms: number;
  /** The scored samples, CHW floats in [0, 1], and their shape. */
  images: number[][];
  shape: [number, number, number];
}

export type FineTuneProgress = (p: { phase: 'sampling' | 'training'; done: number; total: number }) => void;

/**
 * The run config of the page's epoch: DDPO-IS with LoRA (rank 4), one batch of `samples` at η 1,
 * two optimizer steps (train.batch_size = samples / 2), so approx KL and clipfrac mean something.
 */
export function fineTuneConfig(o: Omit<FineTuneOptions, 'prompt'>): ResolvedConfig {
  return resolveConfig({
    algorithm: 'ddpo-is', epochs: 1, seed: o.seed, reward: 'jpeg_compressibility',
    sample: { steps: o.steps, eta: 1, guidance: o.guidance, batch_size: o.samples, batches_per_epoch: 1 },
    train: { batch_size: Math.max(1, o.samples / 2), gradient_accumulation_steps: 1, lr: o.lr },
    lora: { enabled: true, rank: 4 },
    eval: { every: 0 },
  });
}

/** A run on one model: LoRA is injected once, and each epoch() continues it. */
export class FineTuner {
  private epochs = 0;
  private seen: ImageBatch[] = [];
  private readonly scorer: RunnerScorer;
  private readonly parts: RunParts;

  constructor(readonly sd: StableDiffusion, readonly options: FineTuneOptions, runner: RewardRunner) {
    // The scorer sees every image it scores: the page shows them beside their rewards.
    this.scorer = new RunnerScorer((images, prompts, metadata) => { this.seen.push(images); return runner(images, prompts, metadata); });
    this.parts = createRunParts(sd, fineTuneConfig(options), () => ({ prompt: options.prompt, metadata: {} }), this.scorer);
  }

  async epoch(progress?: FineTuneProgress): Promise<FineTuneResult> {
    const t = performance.now();
    const before = await loraValues(this.sd);
    this.seen = [];
    const out = await runEpochCore(this.parts, this.scorer, this.epochs + 1, { onProgress: (phase, done, total) => progress?.({ phase, done, total }) });
    if (out.status !== 'ok') throw new Error(out.status === 'stopped' ? 'the epoch was stopped' : out.message);
    this.epochs++;
    const after = await loraValues(this.sd);
    let change = 0;
    for (const [k, v] of before) {
      const w = after.get(k)!;
      for (let i = 0; i < v.length; i++) change = Math.max(change, Math.abs(w[i] - v[i]));
    }
    const r = out.record;
    const last = this.seen[this.seen.length - 1];
    const per = last.c * last.h * last.w;
    return {
      epoch: r.epoch, rewards: r.rewards, meanReward: r.rewards.reduce((a, b) => a + b, 0) / r.rewards.length,
      loss: r.loss, approxKl: r.approxKl, clipfrac: r.clipfrac, optimizerSteps: r.optimizerSteps, loraChange: change,
      ms: Math.round(performance.now() - t),
      images: Array.from({ length: last.n }, (_, i) => Array.from(last.data.subarray(i * per, (i + 1) * per))),
      shape: [last.c, last.h, last.w],
    };
  }
}

async function loraValues(sd: StableDiffusion): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [k, t] of unetLoRAStateDict(sd.unet)) out.set(k, new Float32Array(await t.data()));
  return out;
}
