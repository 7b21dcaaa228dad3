// One DDIM step as a Gaussian policy with an exact log-likelihood (DDPO, Black et al. 2023):
//
//   x̂₀   = (x_t − √(1−ᾱ_t)·ε)/√ᾱ_t            (ε-prediction; v-prediction converts first)
//   σ_t  = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev)
//   mean = √ᾱ_prev·x̂₀ + √(1−ᾱ_prev−σ_t²)·ε
//   x_prev = mean + σ_t·z   (sampling)   or a stored x_prev (re-evaluating a trajectory)
//   log N(x_prev; mean, σ_t²) per element, reduced per sample by the mean over the non-batch
//   dims (the DDPO code's choice, which its clip range and learning rates assume) or the sum
//   (the exact log-density of the step).
//
// Everything is differentiable with respect to the model output and computed in f32 (an f16
// model output is cast first). Coefficients are computed on the host in float64. Per-sample
// results do not depend on the batch: every op here is elementwise or a per-sample reduction.

import { Tensor } from '../engine/tensor.js';
import { isFloat } from '../engine/dtype.js';
import { add, cast, clamp, mulScalar, square, sub } from '../engine/ops/elementwise.js';
import { noGrad } from '../engine/autograd.js';
import { tidy } from '../engine/scope.js';
import { mean as meanOp, sum as sumOp } from '../engine/ops/reduce.js';
import { DDIMSchedule } from './schedule.js';

export interface DDIMStepOptions {
  /** The number of inference steps N of the trajectory (fixes prev = t − T//N). */
  numSteps: number;
  /** 0 is deterministic DDIM (no density); 1 gives DDPM's posterior variance. */
  eta: number;
  /** Re-evaluate the density of this stored x_prev instead of sampling one. */
  prevSample?: Tensor;
  /** Standard normal noise z for sampling (same shape as x_t); required when prevSample is absent and η > 0. */
  noise?: Tensor;
  /** How the per-element log-density is reduced per sample (default 'mean'). */
  reduce?: 'mean' | 'sum';
}

export interface DDIMStepResult {
  /** x_prev: sampled, or the given prevSample (detached). */
  prevSample: Tensor;
  /** The Gaussian's mean (differentiable w.r.t. the model output). */
  mean: Tensor;
  /** log p(x_prev | x_t) per sample [B] in f32, or null when η = 0 (a deterministic step has no density). */
  logProb: Tensor | null;
  /** σ_t */
  std: number;
}

export interface StepCoefficients {
  alpha: number;
  alphaPrev: number;
  std: number;
  /** mean = cx·x_t + ce·ε (ε-prediction, without clipping) */
  cx: number;
  ce: number;
}

/** The step's scalars, in float64 (the reference computes them the same way). */
export function stepCoefficients(schedule: DDIMSchedule, t: number, numSteps: number, eta: number): StepCoefficients {
  if (!(eta >= 0)) throw new Error(`DDIM step: eta ${eta} must be ≥ 0`);
  const a = schedule.alphaAt(t);
  const ap = schedule.alphaPrev(t, numSteps);
  const variance = ((1 - ap) / (1 - a)) * (1 - a / ap);
  const std = eta * Math.sqrt(Math.max(variance, 0));
  const dir = Math.sqrt(Math.max(1 - ap - std * std, 0));
  return { alpha: a, alphaPrev: ap, std, cx: Math.sqrt(ap) / Math.sqrt(a), ce: dir - (Math.sqrt(ap) * Math.sqrt(1 - a)) / Math.sqrt(a) };
}

const LOG_SQRT_2PI = 0.5 * Math.log(2 * Math.PI);

/**
 * One DDIM step from x_t at timestep t with the model's output. Returns x_prev, the mean and the
 * log-probability of x_prev. The caller owns every returned tensor.
 */
export function ddimStep(schedule: DDIMSchedule, modelOutput: Tensor, t: number, sample: Tensor, opts: DDIMStepOptions): DDIMStepResult {
  const label = `ddimStep(t=${t}, model output ${modelOutput.describe()}, sample ${sample.describe()})`;
  if (modelOutput.shape.join() !== sample.shape.join()) throw new Error(`${label}: model output and sample shapes differ`);
  if (sample.rank < 1) throw new Error(`${label}: sample needs a batch dimension`);
  if (!isFloat(modelOutput.dtype) || !isFloat(sample.dtype)) throw new Error(`${label}: float tensors expected`);
  const c = stepCoefficients(schedule, t, opts.numSteps, opts.eta);
  // tidy frees every intermediate; the graph behind mean and logProb stays for backward().
  return tidy(() => {
    const f32 = (x: Tensor) => (x.dtype === 'f32' ? x : cast(x, 'f32'));
    const out = f32(modelOutput), x = f32(sample);
    // ε and x̂₀ from the model output.
    let eps: Tensor, x0: Tensor;
    const sa = Math.sqrt(c.alpha), s1a = Math.sqrt(1 - c.alpha);
    if (schedule.predictionType === 'epsilon') {
      eps = out;
      x0 = mulScalar(sub(x, mulScalar(eps, s1a)), 1 / sa);
    } else {
      // v-prediction: x̂₀ = √ᾱ·x − √(1−ᾱ)·v, ε = √ᾱ·v + √(1−ᾱ)·x
      x0 = sub(mulScalar(x, sa), mulScalar(out, s1a));
      eps = add(mulScalar(out, sa), mulScalar(x, s1a));
    }
    // diffusers' DDIM (and the DDPO code) clip x̂₀ but keep ε for the direction term.
    if (schedule.clipSample) x0 = clamp(x0, -schedule.clipSampleRange, schedule.clipSampleRange);
    const dir = Math.sqrt(Math.max(1 - c.alphaPrev - c.std * c.std, 0));
    const mean = add(mulScalar(x0, Math.sqrt(c.alphaPrev)), mulScalar(eps, dir));
    let prev: Tensor;
    if (opts.prevSample) {
      if (opts.prevSample.shape.join() !== sample.shape.join()) throw new Error(`${label}: prevSample ${opts.prevSample.describe()} does not match the sample`);
      const given = opts.prevSample;
      prev = noGrad(() => (given.dtype === 'f32' ? mulScalar(given, 1) : cast(given, 'f32')));
    } else if (c.std > 0) {
      if (!opts.noise) throw new Error(`${label}: sampling with eta ${opts.eta} needs noise (or pass prevSample to re-evaluate)`);
      prev = add(detached(mean), mulScalar(f32(opts.noise), c.std));
    } else {
      prev = detached(mean);
    }
    let logProb: Tensor | null = null;
    if (c.std > 0) {
      const e = mulScalar(square(sub(prev, mean)), -1 / (2 * c.std * c.std));
      const lp = add(e, -Math.log(c.std) - LOG_SQRT_2PI);
      const axes = Array.from({ length: sample.rank - 1 }, (_, i) => i + 1);
      logProb = axes.length ? ((opts.reduce ?? 'mean') === 'sum' ? sumOp(lp, axes) : meanOp(lp, axes)) : mulScalar(lp, 1);
    }
    return { prevSample: prev, mean, logProb, std: c.std };
  });
}

/** A copy that autograd does not track (x_prev is an action, not a function of the parameters). */
function detached(x: Tensor): Tensor {
  return noGrad(() => mulScalar(x, 1));
}
