// DDIM noise schedules built from a diffusers scheduler config (SD v1 folders ship a
// PNDMScheduler config; DDIM only needs its betas and step conventions).
//
// ᾱ (alphas_cumprod) is computed as diffusers does it, in float32: betas in f32, then a running
// f32 product, so our coefficients match the reference to the last bit of f32.
//
// Besides the sampling steps, the schedule gives the forward process the training losses need,
// named as diffusers' schedulers name them: addNoise (add_noise: x_t from x₀ and ε) and velocity
// (get_velocity: the v-prediction target), one timestep per sample.

import { add, mul, sub } from '../engine/ops/elementwise.js';
import { tidy } from '../engine/scope.js';
import { Tensor, tensor } from '../engine/tensor.js';

export type PredictionType = 'epsilon' | 'v_prediction';

export interface SchedulerConfig {
  num_train_timesteps?: number;
  beta_start?: number;
  beta_end?: number;
  beta_schedule?: string;
  trained_betas?: number[] | null;
  set_alpha_to_one?: boolean;
  steps_offset?: number;
  prediction_type?: string;
  clip_sample?: boolean;
  clip_sample_range?: number;
  timestep_spacing?: string;
  [key: string]: unknown;
}

/** Keys we read; others (PNDM's skip_prk_steps, _class_name, ...) do not change DDIM. */
const KNOWN = new Set(['num_train_timesteps', 'beta_start', 'beta_end', 'beta_schedule', 'trained_betas', 'set_alpha_to_one',
  'steps_offset', 'prediction_type', 'clip_sample', 'clip_sample_range', 'timestep_spacing']);
const IGNORED = new Set(['_class_name', '_diffusers_version', 'skip_prk_steps', 'thresholding', 'dynamic_thresholding_ratio',
  'sample_max_value', 'rescale_betas_zero_snr', 'variance_type', 'interpolation_type', 'use_karras_sigmas']);

/**
 * torch.linspace(start, end, n, dtype=float32)[i]: torch fills the first half forwards from start
 * and the second half backwards from end, with an f32 step. Reproducing it gives bit-equal betas.
 */
function linspaceF32(start: number, end: number, n: number, i: number): number {
  const f = Math.fround;
  if (n === 1) return f(start);
  const step = (end - start) / (n - 1);
  return i < n / 2 ? f(f(start) + f(step) * i) : f(f(end) - f(step) * (n - 1 - i));
}

export class DDIMSchedule {
  readonly numTrainTimesteps: number;
  /** ᾱ_t for t = 0 … T−1 (f32 values). */
  readonly alphasCumprod: Float64Array;
  /** ᾱ used when the previous timestep falls below 0: 1 if set_alpha_to_one, else ᾱ₀. */
  readonly finalAlphaCumprod: number;
  readonly stepsOffset: number;
  readonly predictionType: PredictionType;
  readonly clipSample: boolean;
  readonly clipSampleRange: number;

  constructor(config: SchedulerConfig = {}) {
    for (const key of Object.keys(config)) {
      if (!KNOWN.has(key) && !IGNORED.has(key)) throw new Error(`scheduler config: unsupported key "${key}" (value ${JSON.stringify(config[key])})`);
    }
    if (config.thresholding) throw new Error('scheduler config: thresholding=true is not supported');
    if (config.rescale_betas_zero_snr) throw new Error('scheduler config: rescale_betas_zero_snr=true is not supported');
    const T = this.numTrainTimesteps = config.num_train_timesteps ?? 1000;
    const start = config.beta_start ?? 0.0001, end = config.beta_end ?? 0.02;
    const f = Math.fround;
    const betas = new Float64Array(T);
    if (config.trained_betas) {
      if (config.trained_betas.length !== T) throw new Error(`scheduler config: trained_betas has ${config.trained_betas.length} values, num_train_timesteps is ${T}`);
      config.trained_betas.forEach((b, i) => { betas[i] = f(b); });
    } else {
      const schedule = config.beta_schedule ?? 'linear';
      for (let i = 0; i < T; i++) {
        if (schedule === 'linear') betas[i] = linspaceF32(start, end, T, i);
        else if (schedule === 'scaled_linear') { const s = linspaceF32(Math.sqrt(start), Math.sqrt(end), T, i); betas[i] = f(s * s); }
        else if (schedule === 'squaredcos_cap_v2') {
          const ab = (x: number) => Math.cos(((x + 0.008) / 1.008) * Math.PI / 2) ** 2;
          betas[i] = f(Math.min(1 - ab((i + 1) / T) / ab(i / T), 0.999));
        } else throw new Error(`scheduler config: beta_schedule "${schedule}" is not supported (linear, scaled_linear, squaredcos_cap_v2)`);
      }
    }
    this.alphasCumprod = new Float64Array(T);
    // torch's float32 cumprod accumulates in double on the CPU; rounding each output to f32.
    let prod = 1;
    for (let i = 0; i < T; i++) { prod *= f(1 - betas[i]); this.alphasCumprod[i] = f(prod); }
    this.finalAlphaCumprod = (config.set_alpha_to_one ?? true) ? 1 : this.alphasCumprod[0];
    this.stepsOffset = config.steps_offset ?? 0;
    const pt = config.prediction_type ?? 'epsilon';
    if (pt !== 'epsilon' && pt !== 'v_prediction') throw new Error(`scheduler config: prediction_type "${pt}" is not supported (epsilon, v_prediction)`);
    this.predictionType = pt;
    this.clipSample = config.clip_sample ?? true;
    this.clipSampleRange = config.clip_sample_range ?? 1;
    if ((config.timestep_spacing ?? 'leading') !== 'leading') throw new Error(`scheduler config: timestep_spacing "${config.timestep_spacing}" is not supported (leading)`);
  }

  /**
   * The most inference steps this schedule takes: with steps_offset the first timestep of N steps
   * is (N−1)·⌊T/N⌋ + offset, which must stay below T (SD, T = 1000, offset 1: 999 steps).
   */
  get maxSteps(): number {
    const T = this.numTrainTimesteps;
    for (let n = T; n > 1; n--) if ((n - 1) * Math.floor(T / n) + this.stepsOffset <= T - 1) return n;
    return 1;
  }

  /** Leading spacing: N steps are (N−1)·r … 0 in steps of r = T // N, plus steps_offset (SD, 50 steps: 981 … 1). */
  timesteps(numSteps: number): number[] {
    const T = this.numTrainTimesteps;
    const max = this.maxSteps;
    if (!Number.isInteger(numSteps) || numSteps < 1 || numSteps > max) {
      throw new Error(`DDIM: ${numSteps} steps: this schedule takes an integer number of steps in 1..${max}${max < T ? ` (with steps_offset ${this.stepsOffset}, ${max + 1} steps would start at timestep ${max * Math.floor(T / (max + 1)) + this.stepsOffset}, past the last, ${T - 1})` : ''}`);
    }
    const ratio = Math.floor(T / numSteps);
    return Array.from({ length: numSteps }, (_, i) => (numSteps - 1 - i) * ratio + this.stepsOffset);
  }

  /** The timestep a DDIM step from t lands on (t − T//N), which may be negative (see alphaPrev). */
  prevTimestep(t: number, numSteps: number): number {
    return t - Math.floor(this.numTrainTimesteps / numSteps);
  }

  alphaAt(t: number): number {
    if (!Number.isInteger(t) || t < 0 || t >= this.numTrainTimesteps) throw new Error(`DDIM: timestep ${t} is outside 0..${this.numTrainTimesteps - 1}`);
    return this.alphasCumprod[t];
  }

  /** [B, 1, …, 1] per-sample coefficients f(ᾱ_t) that broadcast against x [B, …]. */
  private perSample(x: Tensor, t: readonly number[], f: (alpha: number) => number): Tensor {
    if (t.length !== x.shape[0]) throw new Error(`DDIMSchedule: ${t.length} timesteps for a batch of ${x.shape[0]} (${x.describe()})`);
    return tensor(t.map((ti) => f(this.alphaAt(ti))), [t.length, ...x.shape.slice(1).map(() => 1)], 'f32', x.device);
  }

  /** x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, sample i at timestep t[i] (diffusers' add_noise). */
  addNoise(x0: Tensor, noise: Tensor, t: readonly number[]): Tensor {
    return tidy(() => add(mul(x0, this.perSample(x0, t, Math.sqrt)), mul(noise, this.perSample(x0, t, (a) => Math.sqrt(1 - a)))));
  }

  /** v = √ᾱ_t·ε − √(1−ᾱ_t)·x₀, the v-prediction target (diffusers' get_velocity). */
  velocity(x0: Tensor, noise: Tensor, t: readonly number[]): Tensor {
    return tidy(() => sub(mul(noise, this.perSample(x0, t, Math.sqrt)), mul(x0, this.perSample(x0, t, (a) => Math.sqrt(1 - a)))));
  }

  /** What the model learns to predict at x_t: ε, or v for v-prediction. */
  trainingTarget(x0: Tensor, noise: Tensor, t: readonly number[]): Tensor {
    return this.predictionType === 'epsilon' ? noise : this.velocity(x0, noise, t);
  }

  /** ᾱ of the previous timestep; below 0 it is finalAlphaCumprod (ᾱ₀ for SD: the DDPO code's clamp at 0). */
  alphaPrev(t: number, numSteps: number): number {
    const p = this.prevTimestep(t, numSteps);
    return p >= 0 ? this.alphaAt(p) : this.finalAlphaCumprod;
  }
}
