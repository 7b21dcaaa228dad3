// The policy update on one epoch's samples (rl/rollout.ts), for the four algorithms:
//
//   ddpo-is     PPO's clipped importance-sampling surrogate on each trained denoising step,
//               ratio = exp(log p − log p_old) against the log-probabilities recorded at sampling
//   ddpo-sf     the score-function (REINFORCE) loss −A·log p; unbiased only on-policy, so exactly
//               one optimizer step per sampling round (rl/config.ts refuses configs that take more)
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
// stepLogProb computes exactly what sampling computed (guidedNoise + ddimStep on the stored x_t
// and x_{t−1}), so the first ratio of an epoch is exactly 1.
//
// NaN and Inf: before each optimizer step the window's loss and the gradient norm are read back;
// a non-finite one skips the step (gradients dropped, weights and optimizer state unchanged) and
// is counted. When the run has skipped train.max_skipped_steps, the update stops (the trainer then
// stops the run without saving, so its last checkpoint stays as it was). Weights whose last
// window was skipped are `suspect`, and the trainer does not save them.
//
// Determinism: shuffles and timestep permutations each have their own PromptRng; RWR's
// timesteps share the timestep rng and its noise is Philox addressed by a counter. The
// optimizer, those rngs and the counters are the update's part of a checkpoint.

import { noGrad, backward } from '../engine/autograd.js';
import { Device } from '../engine/device.js';
import { AdamW, clipGradNorm } from '../engine/optim.js';
import { add, cast, mulScalar, square, sub } from '../engine/ops/elementwise.js';
import { mean as meanOp } from '../engine/ops/reduce.js';
import { indexSelect } from '../engine/ops/gather.js';
import { randomNormal } from '../engine/ops/random.js';
import { keep, tidy } from '../engine/scope.js';
import { Tensor, tensor } from '../engine/tensor.js';
import { InjectedLoRA, LoRALinear } from '../engine/nn/lora.js';
import type { StableDiffusion } from '../diffusion/load-folder.js';
import { Trajectory, stepLogProb } from '../diffusion/pipeline.js';
import { injectUnetLoRA, unetLoRAStateDict } from '../diffusion/models/unet-model.js';
import { ResolvedConfig, isDDPO, trainedTimesteps } from './config.js';
import { klPenalty, ppoClipLoss, scoreFunctionLoss, weightedMean } from './losses.js';
import { PromptRng, PromptRngState } from './prompts.js';
import { deriveSeed, permutation } from './rng.js';
import { EpochSamples, subTrajectory } from './rollout.js';

/** Running sums of scalar tensors on the GPU, read back once per epoch. */
export class GpuSums {
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
  /** Adds every sum of `other` to this one's. */
  addAll(other: GpuSums): void {
    for (const [k, t] of other.sums) this.add(k, t);
  }
  /** Whether `x` and every sum are finite (one scalar read back). */
  async finiteWith(x: Tensor): Promise<boolean> {
    const total = noGrad(() => tidy(() => [...this.sums.values()].reduce((a, b) => add(a, b), mulScalar(x, 1))));
    const v = (await total.data())[0];
    total.dispose();
    return Number.isFinite(v);
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

/** The update's part of a checkpoint. */
export interface UpdateState {
  globalStep: number;
  /** Optimizer steps skipped since the run began (non-finite loss or gradient norm). */
  skippedSteps: number;
  rwrNoiseCounter: number;
  shuffle: PromptRngState;
  timestep: PromptRngState;
}

/** Per-epoch means over the optimizer steps of the update's metrics. */
export interface UpdateMetrics {
  /** Optimizer steps taken. */
  steps: number;
  /** Steps skipped this epoch because the loss or the gradient norm was NaN/Inf. */
  skipped: number;
  /** The run reached train.max_skipped_steps: the epoch's update was abandoned there. */
  diverged: boolean;
  loss: number;
  approxKl: number;
  clipfrac: number;
  gradNorm: number;
  kl: number;
}

export type UpdateProgress = (done: number, total: number) => void;

/**
 * Prepares the UNet for training: LoRA adapters injected (lora.enabled), or every f32 parameter
 * unfrozen for full fine-tuning. Returns the injected adapters, or null.
 */
export function prepareUnet(sd: StableDiffusion, c: ResolvedConfig): InjectedLoRA | null {
  const unet = sd.unet;
  if ([...unet.namedParameters()].some(([n]) => n.includes('.lora_A.'))) throw new Error('Trainer: the UNet already has LoRA adapters; pass the base model');
  if (c.lora.enabled) return injectUnetLoRA(unet, { rank: c.lora.rank, seed: deriveSeed(c.seed, 5) });
  if (unet.dtype !== 'f32') throw new Error(`Trainer: full fine-tuning needs an f32 UNet (this one is ${unet.dtype}); load with dtype f32 or use LoRA`);
  unet.unfreeze();
  return null;
}

export class PolicyUpdate {
  readonly optimizer: AdamW;
  /** name → trained tensor (LoRA adapters or the whole UNet) */
  readonly trained: Map<string, Tensor>;
  /** Optimizer steps since the run began. */
  globalStep = 0;
  /** Optimizer steps skipped since the run began. */
  skippedSteps = 0;
  /**
   * The weights as they are now gave a non-finite loss or gradient norm (the last step was
   * skipped and none was taken since): they are not saved (a lr far too large leaves finite
   * weights that already compute NaN).
   */
  suspect = false;
  private rwrNoiseCounter = 0;
  private shuffleRng: PromptRng;
  private timestepRng: PromptRng;
  private readonly loraLayers: LoRALinear[];
  private readonly device: Device;

  constructor(private readonly sd: StableDiffusion, private readonly config: ResolvedConfig, lora: InjectedLoRA | null) {
    this.device = sd.unet.device;
    this.shuffleRng = new PromptRng(deriveSeed(config.seed, 2));
    this.timestepRng = new PromptRng(deriveSeed(config.seed, 3));
    this.loraLayers = lora?.layers ?? [];
    this.trained = lora ? unetLoRAStateDict(sd.unet) : new Map([...sd.unet.namedParameters()].filter(([, t]) => t.requiresGrad));
    if (!this.trained.size) throw new Error('Trainer: the UNet has no trainable parameters');
    const t = config.train;
    this.optimizer = new AdamW([...this.trained.values()], { lr: t.lr, betas: [t.adam_beta1, t.adam_beta2], eps: t.eps, weightDecay: t.weight_decay });
  }

  getState(): UpdateState {
    return { globalStep: this.globalStep, skippedSteps: this.skippedSteps, rwrNoiseCounter: this.rwrNoiseCounter, shuffle: this.shuffleRng.getState(), timestep: this.timestepRng.getState() };
  }

  setState(s: UpdateState): void {
    this.globalStep = s.globalStep;
    this.skippedSteps = s.skippedSteps ?? 0;
    this.rwrNoiseCounter = s.rwrNoiseCounter;
    this.shuffleRng = PromptRng.fromState(s.shuffle);
    this.timestepRng = PromptRng.fromState(s.timestep);
  }

  /** train.inner_epochs passes over the samples; the epoch's mean metrics over the steps taken. */
  async train(s: EpochSamples, adv: Float64Array, onProgress?: UpdateProgress): Promise<UpdateMetrics> {
    const sums = new GpuSums();
    try {
      const r = await this.passes(s, adv, sums, onProgress);
      const m = await sums.read();
      const per = (k: string) => (r.steps ? (m[k] ?? 0) / r.steps : 0);
      return { ...r, loss: per('loss'), approxKl: per('approxKl'), clipfrac: per('clipfrac'), gradNorm: per('gradNorm'), kl: per('kl') };
    } finally {
      sums.dispose();
    }
  }

  private async passes(s: EpochSamples, adv: Float64Array, sums: GpuSums, onProgress?: UpdateProgress): Promise<{ steps: number; skipped: number; diverged: boolean }> {
    const c = this.config;
    const ddpo = isDDPO(c.algorithm);
    const B = c.train.batch_size, accum = c.train.gradient_accumulation_steps;
    const F = trainedTimesteps(c);
    const batchesPerInner = s.n / B;
    let steps = 0, skipped = 0;
    const params = [...this.trained.values()];
    // The metrics of the current accumulation window: added to the epoch's sums when its step is taken.
    const window = new GpuSums();
    try {
      for (let inner = 0; inner < c.train.inner_epochs; inner++) {
        const perm = permutation(this.shuffleRng, s.n);
        // Timestep permutations per sample, drawn in shuffled order (as the reference code).
        const tperm = new Map<number, number[]>();
        if (ddpo) for (const i of perm) tperm.set(i, permutation(this.timestepRng, c.sample.steps).slice(0, F));
        for (let tb = 0; tb < batchesPerInner; tb++) {
          const idx = perm.slice(tb * B, (tb + 1) * B);
          if (ddpo) this.trainDDPO(s, idx, tperm, adv, window, accum * B * F);
          else this.trainRWR(s, idx, adv, window, accum * B);
          if ((tb + 1) % accum === 0) {
            const norm = tidy(() => clipGradNorm(params, c.train.max_grad_norm));
            if (await window.finiteWith(norm)) {
              tidy(() => {
                sums.add('gradNorm', norm);
                sums.addAll(window);
                this.optimizer.step();
              });
              steps++;
              this.globalStep++;
              this.suspect = false;
            } else {
              this.suspect = true;
              skipped++;
              this.skippedSteps++;
            }
            norm.dispose();
            window.dispose();
            this.optimizer.zeroGrad();
            if (this.skippedSteps >= c.train.max_skipped_steps) return { steps, skipped, diverged: true };
          }
          onProgress?.(inner * batchesPerInner + tb + 1, c.train.inner_epochs * batchesPerInner);
        }
      }
      return { steps, skipped, diverged: false };
    } finally {
      window.dispose();
    }
  }

  /** DDPO: one guided forward per distinct timestep of the batch's (sample, step) pairs. */
  private trainDDPO(s: EpochSamples, idx: number[], tperm: Map<number, number[]>, adv: Float64Array, sums: GpuSums, pairsPerStep: number): void {
    const c = this.config;
    const steps = c.sample.steps;
    const groups = new Map<number, number[]>();
    for (const i of idx) for (const k of tperm.get(i)!) { const g = groups.get(k); if (g) g.push(i); else groups.set(k, [i]); }
    const ks = [...groups.keys()].sort((a, b) => a - b);
    for (const k of ks) {
      const rows = groups.get(k)!;
      const w = rows.length / pairsPerStep;
      tidy(() => {
        const traj = subTrajectory(s, rows, k, c);
        const ev = stepLogProb(this.sd, traj, k);
        const old = rows.map((i) => s.logProbs![i * steps + k]);
        const a = rows.map((i) => adv[i]);
        let loss: Tensor;
        if (c.algorithm === 'ddpo-is') {
          const r = ppoClipLoss(ev.logProb, old, a, c.train.clip_range, c.train.adv_clip_max);
          loss = r.loss;
          sums.add('approxKl', r.approxKl, w);
          sums.add('clipfrac', r.clipfrac, w);
        } else {
          loss = scoreFunctionLoss(ev.logProb, a, c.train.adv_clip_max);
          const d = noGrad(() => sub(ev.logProb, tensor(old, [rows.length], 'f32', this.device)));
          sums.add('approxKl', noGrad(() => mulScalar(meanOp(square(d)), 0.5)), w);
        }
        sums.add('loss', loss, w);
        let total = loss;
        if (c.train.kl_coef > 0) {
          const ref = this.referenceMean(traj, k);
          const kl = klPenalty(ev.mean, ref, ev.std);
          sums.add('kl', kl, w);
          total = add(loss, mulScalar(kl, c.train.kl_coef));
        }
        backward(mulScalar(total, w));
      });
    }
  }

  /** The frozen starting model's step mean: the same forward with every adapter disabled. */
  private referenceMean(traj: Trajectory, k: number): Tensor {
    for (const l of this.loraLayers) l.enabled = false;
    try {
      const ref = noGrad(() => stepLogProb(this.sd, traj, k));
      ref.logProb.dispose();
      return ref.mean;
    } finally {
      for (const l of this.loraLayers) l.enabled = true;
    }
  }

  /** RWR: weighted ε-prediction loss on x₀ at uniformly random t with fresh noise, prompt-conditioned. */
  private trainRWR(s: EpochSamples, idx: number[], weights: Float64Array, sums: GpuSums, samplesPerStep: number): void {
    const c = this.config;
    const sched = this.sd.schedule;
    const m = idx.length;
    const x0All = s.latents[c.sample.steps]!;
    const [, C, h, w] = x0All.shape;
    const ts = idx.map(() => this.timestepRng.int(sched.numTrainTimesteps));
    const offset = this.rwrNoiseCounter;
    this.rwrNoiseCounter += m * C * h * w;
    tidy(() => {
      const x0 = indexSelect(x0All, 0, idx);
      const cond = indexSelect(s.promptEmbeds, 0, idx);
      const noise = randomNormal([m, C, h, w], deriveSeed(c.seed, 4), { offset, device: this.device });
      const xt = sched.addNoise(x0, noise, ts);
      let out = this.sd.unet.forward(xt, tensor(ts, [m], 'f32', this.device), cond);
      if (out.dtype !== 'f32') out = cast(out, 'f32');
      const perSample = meanOp(square(sub(out, sched.trainingTarget(x0, noise, ts))), [1, 2, 3]);
      const loss = weightedMean(perSample, idx.map((i) => weights[i]));
      const scale = m / samplesPerStep;
      sums.add('loss', loss, scale);
      backward(mulScalar(loss, scale));
    });
  }

  dispose(): void {
    this.optimizer.dispose();
  }
}
