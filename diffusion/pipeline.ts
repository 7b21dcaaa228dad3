// Text-to-image sampling with classifier-free guidance, recording the trajectory DDPO trains on.
//
// prompts → tokens → text embeddings (cached per prompt) → N DDIM steps with η, each a Gaussian
// policy step whose log-probability is recorded → latents → VAE decode (micro-batched) → images.
//
// NaN and Inf: every step's latents and the decoded images (before their clamp to [0, 1], which
// would turn NaN into 0) are checked per sample on the GPU; SampleResult.nonFinite says which
// samples went non-finite and where, so no NaN reaches an image unnoticed.
//
// Determinism: sample j's noise comes from its own counter range of the seed's Philox stream
// (initial latents and every step's z), so the same seed gives the same images whatever the batch
// size; and every op is batch independent, so re-evaluating a stored trajectory at another batch
// size gives bit-identical log-probabilities.

import { Tensor } from '../engine/tensor.js';
import { keep, tidy } from '../engine/scope.js';
import { noGrad } from '../engine/autograd.js';
import { add, clamp, mulScalar, sub } from '../engine/ops/elementwise.js';
import { concat, slice, stack } from '../engine/ops/movement.js';
import { randomNormal } from '../engine/ops/random.js';
import { countNonFinite } from '../engine/finite.js';
import { tensor } from '../engine/tensor.js';
import type { StableDiffusion } from './load-folder.js';
import { ddimStep } from './ddim.js';

/** Text embeddings per prompt, computed once and kept (the negative prompt too). */
export class TextEmbeddingCache {
  private cache = new Map<string, Tensor>();
  constructor(private readonly sd: StableDiffusion) {}

  /** [B, 77, D] for the prompts, in order. */
  embed(prompts: readonly string[]): Tensor {
    const todo = [...new Set(prompts.filter((p) => !this.cache.has(p)))];
    if (todo.length) {
      noGrad(() => tidy(() => {
        const enc = this.sd.tokenizer.encodeBatch(todo);
        const ids = tensor(enc.ids, [todo.length, enc.length], 'i32', this.sd.unet.device);
        const h = this.sd.textEncoder.forward(ids).lastHiddenState;
        todo.forEach((p, i) => this.cache.set(p, keep(slice(h, [i], [i + 1]))));
      }));
    }
    return noGrad(() => concat(prompts.map((p) => this.cache.get(p)!), 0));
  }

  get size(): number { return this.cache.size; }

  dispose(): void {
    for (const t of this.cache.values()) t.dispose();
    this.cache.clear();
  }
}

export interface GuidanceInputs {
  /** [B, 77, D] prompt embeddings */
  cond: Tensor;
  /** [B, 77, D] negative / empty prompt embeddings (ignored when guidance is 1) */
  uncond: Tensor;
  guidance: number;
}

/**
 * The guided noise prediction ε̂ = ε(x, ∅) + g·(ε(x, c) − ε(x, ∅)) with one batched UNet call over
 * both halves. Sampling and training both call this, so their numbers agree bit for bit.
 */
export function guidedNoise(sd: StableDiffusion, latents: Tensor, t: number, g: GuidanceInputs): Tensor {
  return tidy(() => {
    if (g.guidance === 1) return sd.unet.forward(latents, t, g.cond);
    const B = latents.shape[0];
    const both = sd.unet.forward(concat([latents, latents], 0), t, concat([g.uncond, g.cond], 0));
    const u = slice(both, [0], [B]), c = slice(both, [B], [2 * B]);
    return add(u, mulScalar(sub(c, u), g.guidance));
  });
}

export interface SampleOptions {
  prompts: readonly string[];
  /** Used for the unconditional half of guidance (default ''). */
  negativePrompt?: string;
  steps?: number;
  eta?: number;
  guidance?: number;
  seed?: number;
  /** Index of the first sample in the seed's stream (so batch k of a run gets fresh noise). */
  firstSample?: number;
  /** Latent height and width (default: the UNet's sample_size). */
  latentSize?: [number, number];
  /** Decode to images (default true). */
  decode?: boolean;
  /** VAE micro-batch (default 2). */
  decodeBatch?: number;
  cache?: TextEmbeddingCache;
  onStep?: (done: number, total: number) => void;
}

export interface Trajectory {
  prompts: string[];
  seed: number;
  firstSample: number;
  eta: number;
  guidance: number;
  numSteps: number;
  /** t of each step (the step goes from latents[k] at timesteps[k] to latents[k+1]). */
  timesteps: number[];
  /** numSteps + 1 tensors [B, C, h, w] f32: x_T … x_0 */
  latents: Tensor[];
  /** [B, numSteps] f32 log p(latents[k+1] | latents[k]) (mean over elements), or null when η = 0 */
  logProbs: Tensor | null;
  /** [B, 77, D] */
  promptEmbeds: Tensor;
  negativeEmbeds: Tensor;
  dispose(): void;
}

/** A sample whose latents or decoded image held NaN or ±Inf. */
export interface NonFiniteSample {
  /** Index in the batch. */
  index: number;
  prompt: string;
  /** The first DDIM step (1-based) whose output latents were non-finite, or 'decode' (the VAE's output). */
  at: number | 'decode';
  /** Timestep of that step (when `at` is a step). */
  t?: number;
  /** "NaN/Inf in the latents after DDIM step 1 of 50 (t=981)" or "… in the decoded image (before the clamp to [0, 1])". */
  message: string;
}

export interface SampleResult {
  trajectory: Trajectory;
  /** [B, 3, H, W] f32 in [0, 1], or null when decode is false */
  images: Tensor | null;
  /**
   * The samples that went non-finite (empty when all are finite). It reads back a small count
   * tensor, which it frees itself, so ignoring it leaks nothing.
   */
  nonFinite: Promise<NonFiniteSample[]>;
}

/** Offsets in the Philox stream: stream k (0 = initial latents, k = step k's z) of sample j. */
const SAMPLES_PER_STREAM = 2 ** 20;
export function noiseOffset(stream: number, sample: number, perSample: number): number {
  return (stream * SAMPLES_PER_STREAM + sample) * perSample;
}

export function latentShape(sd: StableDiffusion, size?: [number, number]): [number, number, number] {
  const ss = sd.unet.config.sampleSize;
  const [h, w] = size ?? (Array.isArray(ss) ? [ss[0], ss[1]] : [ss ?? 64, ss ?? 64]);
  return [sd.unet.config.inChannels, h, w];
}

/** Latents → images in [0, 1]: x / scaling_factor → VAE decode → (x + 1) / 2, clamped. */
export function decodeLatents(sd: StableDiffusion, latents: Tensor, microBatch = 2): Tensor {
  const r = decodeChecked(sd, latents, microBatch);
  r.nonFinite.dispose();
  return r.images;
}

/** decodeLatents, with the per-sample count [B] of non-finite values before the clamp. */
function decodeChecked(sd: StableDiffusion, latents: Tensor, microBatch: number): { images: Tensor; nonFinite: Tensor } {
  return noGrad(() => tidy(() => {
    const img = add(mulScalar(sd.vae.decode(mulScalar(latents, 1 / sd.vae.config.scalingFactor), { microBatch }), 0.5), 0.5);
    return { images: clamp(img, 0, 1), nonFinite: countNonFinite(img, [1, 2, 3]) };
  }));
}

/** Reads the [rows, B] counts of sample(): for each sample the first non-finite step (or the decode). */
async function readNonFinite(counts: Tensor, prompts: readonly string[], timesteps: readonly number[], decoded: boolean): Promise<NonFiniteSample[]> {
  try {
    const c = await counts.data();
    const B = prompts.length, steps = timesteps.length;
    const out: NonFiniteSample[] = [];
    for (let i = 0; i < B; i++) {
      for (let row = 0; row < counts.shape[0]; row++) {
        if (c[row * B + i] === 0) continue;
        const at = decoded && row === steps ? 'decode' as const : row + 1;
        const message = at === 'decode'
          ? 'NaN/Inf in the decoded image (before the clamp to [0, 1]), though the latents were finite: the VAE decoder\'s weights may be NaN/Inf'
          : `NaN/Inf in the latents after DDIM step ${at} of ${steps} (t=${timesteps[at - 1]})`;
        out.push({ index: i, prompt: prompts[i], at, ...(at === 'decode' ? {} : { t: timesteps[at - 1] }), message });
        break;
      }
    }
    return out;
  } finally {
    counts.dispose();
  }
}

/**
 * The sampling loop as a generator: yields after each DDIM step (the number done) and returns the
 * result. sample() runs it straight through; sampleAsync() waits for the GPU between steps so a
 * page can show progress. One loop for both, so they give the same bits.
 */
function* sampleSteps(sd: StableDiffusion, opts: SampleOptions): Generator<number, SampleResult> {
  const prompts = [...opts.prompts];
  const B = prompts.length;
  if (!B) throw new Error('sample: no prompts');
  const steps = opts.steps ?? 50, eta = opts.eta ?? 1, guidance = opts.guidance ?? 5, seed = opts.seed ?? 0;
  const firstSample = opts.firstSample ?? 0;
  if (firstSample + B > SAMPLES_PER_STREAM) throw new Error(`sample: sample indices beyond ${SAMPLES_PER_STREAM} per seed; use another seed`);
  const [C, h, w] = latentShape(sd, opts.latentSize);
  const per = C * h * w;
  const timesteps = sd.schedule.timesteps(steps);
  const ownCache = !opts.cache;
  const cache = opts.cache ?? new TextEmbeddingCache(sd);
  const dev = sd.unet.device;
  const { cond, uncond, latents } = noGrad(() => ({
    cond: keep(cache.embed(prompts)),
    uncond: keep(cache.embed(new Array(B).fill(opts.negativePrompt ?? ''))),
    latents: [keep(randomNormal([B, C, h, w], seed, { offset: noiseOffset(0, firstSample, per), device: dev }))],
  }));
  const logProbs: Tensor[] = [];
  for (let k = 0; k < timesteps.length; k++) {
    const t = timesteps[k];
    const [next, lp] = noGrad(() => tidy(() => {
      const x = latents[k];
      const eps = guidedNoise(sd, x, t, { cond, uncond, guidance });
      const z = eta > 0 ? randomNormal([B, C, h, w], seed, { offset: noiseOffset(k + 1, firstSample, per), device: dev }) : undefined;
      const r = ddimStep(sd.schedule, eps, t, x, { numSteps: steps, eta, noise: z });
      return [r.prevSample, r.logProb] as const;
    }));
    latents.push(keep(next));
    if (lp) logProbs.push(keep(lp));
    yield k + 1;
  }
  return noGrad(() => {
    const lpAll = logProbs.length ? keep(stack(logProbs, 1)) : null;
    for (const t of logProbs) t.dispose();
    const decoded = opts.decode === false ? null : decodeChecked(sd, latents[steps], opts.decodeBatch ?? 2);
    const images = decoded ? keep(decoded.images) : null;
    // Non-finite counts per sample: rows 0..steps−1 the latents after each step, then the decode.
    const counts = keep(tidy(() => stack([...latents.slice(1).map((x) => countNonFinite(x, [1, 2, 3])), ...(decoded ? [decoded.nonFinite] : [])], 0)));
    decoded?.nonFinite.dispose();
    const nonFinite = readNonFinite(counts, prompts, timesteps, !!decoded);
    nonFinite.catch(() => {}); // a caller that never awaits it must not see an unhandled rejection
    if (ownCache) cache.dispose();
    const trajectory: Trajectory = {
      prompts, seed, firstSample, eta, guidance, numSteps: steps, timesteps, latents, logProbs: lpAll,
      promptEmbeds: cond, negativeEmbeds: uncond,
      dispose() {
        for (const t of latents) t.dispose();
        lpAll?.dispose(); cond.dispose(); uncond.dispose();
      },
    };
    return { trajectory, images, nonFinite };
  });
}

export function sample(sd: StableDiffusion, opts: SampleOptions): SampleResult {
  const steps = opts.steps ?? 50;
  const run = sampleSteps(sd, opts);
  for (;;) {
    const r = run.next();
    if (r.done) return r.value;
    opts.onStep?.(r.value, steps);
  }
}

/**
 * sample(), waiting for the GPU after each step before calling onStep (and letting the page
 * repaint), so a progress bar follows the real work. The same loop and bits as sample().
 */
export async function sampleAsync(sd: StableDiffusion, opts: SampleOptions): Promise<SampleResult> {
  const steps = opts.steps ?? 50;
  const run = sampleSteps(sd, opts);
  for (;;) {
    const r = run.next();
    if (r.done) return r.value;
    await sd.unet.device.sync();
    opts.onStep?.(r.value, steps);
  }
}

export interface StepEval {
  /** [B] log p(x_{t−1} | x_t) of the stored step under the current weights. */
  logProb: Tensor;
  /** The step's Gaussian mean [B, C, h, w] (the KL penalty compares it with a reference model's). */
  mean: Tensor;
  /** σ_t of the step. */
  std: number;
}

/**
 * Re-evaluates stored step k under the current weights: for samples `rows` of a trajectory, the
 * exact computation sampling did (the same guidedNoise and ddimStep calls), so with unchanged
 * weights the log-probability equals the recorded one bit for bit. Differentiable w.r.t. the
 * UNet's trainable parameters (call it with grad enabled to train). The caller owns the tensors.
 */
export function stepLogProb(sd: StableDiffusion, traj: Trajectory, k: number, rows?: [number, number]): StepEval {
  const [r0, r1] = rows ?? [0, traj.prompts.length];
  return tidy(() => {
    const pick = (t: Tensor) => (r0 === 0 && r1 === t.shape[0] ? t : slice(t, [r0], [r1]));
    const x = pick(traj.latents[k]), xPrev = pick(traj.latents[k + 1]);
    const eps = guidedNoise(sd, x, traj.timesteps[k], { cond: pick(traj.promptEmbeds), uncond: pick(traj.negativeEmbeds), guidance: traj.guidance });
    const r = ddimStep(sd.schedule, eps, traj.timesteps[k], x, { numSteps: traj.numSteps, eta: traj.eta, prevSample: xPrev });
    if (!r.logProb) throw new Error('stepLogProb: η = 0 trajectories have no log-probability');
    return { logProb: r.logProb, mean: r.mean, std: r.std };
  });
}
