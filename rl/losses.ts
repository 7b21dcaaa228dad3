// DDPO's policy-gradient losses and reward-weighted regression (RWR) weights.
// Loss functions are differentiable compositions of engine ops; constants (old log-probabilities,
// advantages, reference means) never receive gradients, whatever their requiresGrad says.
// Weights and percentiles are host float64 arithmetic on reward lists.

import { noGrad } from '../engine/autograd.js';
import { abs, cast, clamp, div, exp, full, gt, maximum, mean, mul, mulScalar, reshape, square, sub, sum } from '../engine/ops/index.js';
import { tidy } from '../engine/scope.js';
import { Tensor, tensor } from '../engine/tensor.js';

/** A value the loss treats as a constant: a tensor, or host numbers (uploaded with `like`'s shape). */
export type Constant = Tensor | ArrayLike<number>;

/** A gradient-free f32/f16 copy of `c` shaped like `like` (the op's name and shapes in errors). */
function constant(op: string, what: string, c: Constant, like: Tensor, likeName = 'logProb'): Tensor {
  if (c instanceof Tensor) {
    if (c.shape.join() !== like.shape.join()) throw new Error(`${op}: ${what} ${c.describe()} does not match ${likeName} ${like.describe()}`);
    return noGrad(() => (c.dtype === like.dtype ? mulScalar(c, 1) : cast(c, like.dtype)));
  }
  if (c.length !== like.size) throw new Error(`${op}: ${what} has ${c.length} values, ${likeName} ${like.describe()} has ${like.size}`);
  return tensor(c, like.shape, like.dtype, like.device);
}

function requireFloat(op: string, x: Tensor): void {
  if (x.dtype !== 'f32' && x.dtype !== 'f16') throw new Error(`${op}: logProb ${x.describe()} is not a float tensor`);
}

export interface PPOLossResult {
  /** mean(max(−A·ratio, −A·clip(ratio, 1 − ε, 1 + ε))): a scalar, differentiable w.r.t. logProb. */
  loss: Tensor;
  /** ½·mean((logp − logp_old)²), no gradient: the reference code's KL estimate. */
  approxKl: Tensor;
  /** mean(|ratio − 1| > ε), no gradient: how often the clip was active. */
  clipfrac: Tensor;
}

/**
 * DDPO-IS: PPO's clipped surrogate (as the DDPO reference code), with ratio = exp(logp − logp_old)
 * and the advantages clipped to ±advClipMax. All inputs share logProb's shape (one log-probability
 * per sample and timestep, typically [B]); results are scalars (shape []).
 */
export function ppoClipLoss(logProb: Tensor, oldLogProb: Constant, adv: Constant, clipRange = 1e-4, advClipMax = 5): PPOLossResult {
  const op = `ppoClipLoss(logProb ${logProb.describe()}, clipRange ${clipRange}, advClipMax ${advClipMax})`;
  requireFloat(op, logProb);
  if (!(clipRange >= 0)) throw new Error(`${op}: clipRange must be >= 0`);
  if (!(advClipMax > 0)) throw new Error(`${op}: advClipMax must be > 0`);
  return tidy(() => {
    const old = constant(op, 'oldLogProb', oldLogProb, logProb);
    const a = constant(op, 'adv', adv, logProb);
    const negA = noGrad(() => mulScalar(clamp(a, -advClipMax, advClipMax), -1));
    const diff = sub(logProb, old);
    const ratio = exp(diff);
    const unclipped = mul(negA, ratio);
    const clipped = mul(negA, clamp(ratio, 1 - clipRange, 1 + clipRange));
    const loss = mean(maximum(unclipped, clipped));
    const stats = noGrad(() => ({
      approxKl: mulScalar(mean(square(diff)), 0.5),
      clipfrac: mean(gt(abs(sub(ratio, 1)), full([], clipRange, ratio.dtype, ratio.device))),
    }));
    return { loss, ...stats };
  });
}

/**
 * DDPO-SF: the score-function (REINFORCE) estimator, mean(−A·logp); its gradient is
 * −mean(A·∇logp). Advantages may be clipped like PPO's (default: not clipped).
 */
export function scoreFunctionLoss(logProb: Tensor, adv: Constant, advClipMax = Infinity): Tensor {
  const op = `scoreFunctionLoss(logProb ${logProb.describe()})`;
  requireFloat(op, logProb);
  if (!(advClipMax > 0)) throw new Error(`${op}: advClipMax must be > 0`);
  return tidy(() => {
    const a = constant(op, 'adv', adv, logProb);
    const negA = noGrad(() => mulScalar(Number.isFinite(advClipMax) ? clamp(a, -advClipMax, advClipMax) : a, -1));
    return mean(mul(negA, logProb));
  });
}

/**
 * RWR's loss: mean over samples of weight·loss, for per-sample diffusion losses [B] (e.g. the
 * denoising MSE of each sample) and weights from rwrWeights / rwrSparseWeights.
 */
export function weightedMean(perSample: Tensor, weights: Constant): Tensor {
  const op = `weightedMean(perSample ${perSample.describe()})`;
  requireFloat(op, perSample);
  return tidy(() => mean(mul(constant(op, 'weights', weights, perSample, 'perSample'), perSample)));
}

export interface KLPenaltyOptions {
  /**
   * How each sample's squared distance is reduced over its non-batch dimensions: 'mean' (default,
   * as DDPO's log-probabilities are averaged over them, so the penalty and the loss share a
   * scale) or 'sum' (the exact KL of the two Gaussians).
   */
  reduce?: 'mean' | 'sum';
}

/**
 * KL(N(μθ, σ²) ‖ N(μref, σ²)) = ‖μθ − μref‖² / (2σ²) for the two policies' step means [B, ...],
 * reduced per sample as the log-probabilities are (see reduce), then averaged over the batch as
 * the loss is. σ is the step's std: a number, or one per sample. Differentiable w.r.t. meanTheta;
 * meanRef is a constant.
 */
export function klPenalty(meanTheta: Tensor, meanRef: Tensor, std: number | Constant, opts: KLPenaltyOptions = {}): Tensor {
  const op = `klPenalty(meanTheta ${meanTheta.describe()}, meanRef ${meanRef.describe()})`;
  requireFloat(op, meanTheta);
  if (meanTheta.rank < 1) throw new Error(`${op}: needs a batch dimension`);
  const reduce = opts.reduce ?? 'mean';
  if (reduce !== 'mean' && reduce !== 'sum') throw new Error(`${op}: reduce must be 'mean' or 'sum', got ${String(reduce)}`);
  const b = meanTheta.shape[0];
  return tidy(() => {
    const ref = constant(op, 'meanRef', meanRef, meanTheta, 'meanTheta');
    const sq = square(sub(meanTheta, ref));
    const axes = Array.from({ length: meanTheta.rank - 1 }, (_, i) => i + 1);
    const perSample = axes.length ? (reduce === 'sum' ? sum(sq, axes) : mean(sq, axes)) : sq;
    if (typeof std === 'number') {
      if (!(std > 0)) throw new Error(`${op}: std ${std} must be > 0`);
      return mulScalar(mean(perSample), 1 / (2 * std * std));
    }
    const stdT = std instanceof Tensor ? reshapeStd(op, std, b) : std;
    const host = stdT instanceof Tensor ? null : Array.from(stdT);
    if (host && host.length !== b) throw new Error(`${op}: ${host.length} stds for a batch of ${b}`);
    if (host && host.some((s) => !(s > 0))) throw new Error(`${op}: every std must be > 0`);
    if (host) return mean(mul(perSample, tensor(host.map((s) => 1 / (2 * s * s)), [b], perSample.dtype, meanTheta.device)));
    const twoVar = noGrad(() => mulScalar(square(cast(stdT as Tensor, perSample.dtype)), 2));
    return mean(div(perSample, twoVar));
  });
}

function reshapeStd(op: string, std: Tensor, b: number): Tensor {
  if (std.size !== b) throw new Error(`${op}: std ${std.describe()} must hold one value per sample (${b})`);
  return noGrad(() => reshape(std, [b]));
}

// ------------------------------------------------------------------ host-side RWR weights

/** The q-quantile (0..1) of finite values, by NumPy's default linear interpolation. */
export function percentile(values: ArrayLike<number>, q: number): number {
  if (!(q >= 0 && q <= 1)) throw new Error(`percentile: q = ${q} must lie in [0, 1]`);
  const xs = Array.from(values).filter(Number.isFinite).sort((x, y) => x - y);
  if (!xs.length) return NaN;
  const h = (xs.length - 1) * q;
  const lo = Math.floor(h);
  const hi = Math.min(lo + 1, xs.length - 1);
  return xs[lo] + (h - lo) * (xs[hi] - xs[lo]);
}

/** Sample indices grouped by prompt (one group of all samples when no prompts are given). */
function groupsOf(n: number, prompts: readonly string[] | undefined, op: string): number[][] {
  if (!prompts) return [Array.from({ length: n }, (_, i) => i)];
  if (prompts.length !== n) throw new Error(`${op}: ${prompts.length} prompts for ${n} rewards`);
  const m = new Map<string, number[]>();
  prompts.forEach((p, i) => { const g = m.get(p); if (g) g.push(i); else m.set(p, [i]); });
  return [...m.values()];
}

export interface RWRWeightOptions {
  /** Softmax temperature (default 0.2). */
  temperature?: number;
  /** Normalise within each prompt's samples instead of over the whole batch. */
  perPrompt?: readonly string[];
  /** Standardise rewards over the batch before dividing by T (default true; see rwrWeights). */
  standardise?: boolean;
}

/**
 * Dense RWR weights: w = N·softmax(r̃ / T) over the N samples (over each prompt's N samples with
 * perPrompt), so the weights average 1 and the weighted loss keeps the plain loss's scale.
 * r̃ is the reward standardised over the batch, (r − mean) / std: then T means the same whatever
 * the reward's units (kB of JPEG, aesthetic score, ...), whereas the paper's code applies T to
 * raw rewards, where T = 0.2 on kB-scale rewards would put all weight on one sample. Pass
 * standardise: false for that behaviour. Dropped samples (NaN) get weight 0 and are not counted.
 */
export function rwrWeights(rewards: ArrayLike<number>, opts: RWRWeightOptions = {}): Float64Array {
  const T = opts.temperature ?? 0.2;
  if (!(T > 0)) throw new Error(`rwrWeights: temperature ${T} must be > 0`);
  const n = rewards.length;
  const r = Float64Array.from(rewards);
  if (opts.standardise ?? true) {
    const valid = Array.from(r).filter(Number.isFinite);
    const m = valid.reduce((s, x) => s + x, 0) / Math.max(valid.length, 1);
    const sd = Math.sqrt(valid.reduce((s, x) => s + (x - m) * (x - m), 0) / Math.max(valid.length, 1));
    // A batch of equal rewards carries no preference: all r̃ = 0, all weights 1.
    for (let i = 0; i < n; i++) r[i] = sd > 0 ? (r[i] - m) / sd : r[i] - m;
  }
  const w = new Float64Array(n);
  for (const g of groupsOf(n, opts.perPrompt, 'rwrWeights')) {
    const idx = g.filter((i) => Number.isFinite(r[i]));
    if (!idx.length) continue;
    let top = -Infinity;
    for (const i of idx) top = Math.max(top, r[i] / T);
    let z = 0;
    for (const i of idx) z += Math.exp(r[i] / T - top);
    for (const i of idx) w[i] = (idx.length * Math.exp(r[i] / T - top)) / z;
  }
  return w;
}

export interface SparseRWROptions {
  /** Keep samples at or above this quantile (default 0.9: the 90th percentile). */
  quantile?: number;
  /** Threshold within each prompt's samples instead of over the whole batch. */
  perPrompt?: readonly string[];
}

/**
 * Sparse RWR weights: 1 for samples whose reward is at or above the batch's (or the prompt's)
 * 90th percentile (NumPy's linear interpolation, see percentile), else 0. NaN rewards get 0.
 */
export function rwrSparseWeights(rewards: ArrayLike<number>, opts: SparseRWROptions = {}): Float64Array {
  const q = opts.quantile ?? 0.9;
  const n = rewards.length;
  const w = new Float64Array(n);
  for (const g of groupsOf(n, opts.perPrompt, 'rwrSparseWeights')) {
    const t = percentile(g.map((i) => rewards[i]), q);
    for (const i of g) w[i] = Number.isFinite(rewards[i]) && rewards[i] >= t ? 1 : 0;
  }
  return w;
}

