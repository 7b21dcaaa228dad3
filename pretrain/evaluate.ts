// A model's recognisability: samples for each prompt the judge knows, at fixed seeds, classified
// by the judge; top-1 accuracy overall and per prompt (chance is 1 / number of prompts).

import { StableDiffusion } from '../diffusion/load.js';
import { TextEmbeddingCache, sample } from '../diffusion/pipeline.js';
import type { RGBImage } from '../cli/images.js';
import { Judge, classify } from './judge.js';

export interface EvaluateOptions {
  /** Samples per prompt (default 4). */
  n?: number;
  seed?: number;
  steps?: number;
  guidance?: number;
  eta?: number;
  batch?: number;
  /** Prompts to draw (default: the judge's classes); each must be one of the judge's classes. */
  prompts?: readonly string[];
  onBatch?: (done: number, total: number) => void;
}

export interface Evaluation {
  accuracy: number;
  chance: number;
  perPrompt: Record<string, { n: number; correct: number; accuracy: number; predicted: Record<string, number> }>;
  prompts: string[];
  predictions: string[];
  images: RGBImage[];
  settings: { n: number; seed: number; steps: number; guidance: number; eta: number };
}

export async function evaluateModel(sd: StableDiffusion, judge: Judge, opts: EvaluateOptions = {}): Promise<Evaluation> {
  const classes = judge.config.classes;
  const known = opts.prompts ?? classes;
  const bad = known.filter((p) => !classes.includes(p));
  if (bad.length) throw new Error(`evaluateModel: the judge does not know ${bad.map((p) => `"${p}"`).join(', ')} (it knows ${classes.length} captions, e.g. "${classes[0]}")`);
  const size = sd.vae.config.sampleSize;
  if (judge.config.size !== size) throw new Error(`evaluateModel: the judge takes ${judge.config.size} px images, the model makes ${size} px`);
  const n = opts.n ?? 4, seed = opts.seed ?? 0, steps = opts.steps ?? 25, guidance = opts.guidance ?? 3, eta = opts.eta ?? 0, batch = opts.batch ?? 32;
  const prompts = known.flatMap((p) => new Array<string>(n).fill(p));
  const images: RGBImage[] = [];
  const cache = new TextEmbeddingCache(sd);
  try {
    for (let i = 0; i < prompts.length; i += batch) {
      const ps = prompts.slice(i, i + batch);
      const r = sample(sd, { prompts: ps, steps, eta, guidance, seed, firstSample: i, cache, decodeBatch: 16 });
      r.trajectory.dispose();
      const data = new Float32Array(await r.images!.data());
      const [b, C, H, W] = r.images!.shape;
      r.images!.dispose();
      for (let k = 0; k < b; k++) images.push({ data: data.slice(k * C * H * W, (k + 1) * C * H * W), height: H, width: W });
      opts.onBatch?.(Math.min(i + batch, prompts.length), prompts.length);
    }
  } finally {
    cache.dispose();
  }
  const predictions = (await classify(judge, images)).map((c) => classes[c]);
  const perPrompt: Evaluation['perPrompt'] = {};
  prompts.forEach((p, i) => {
    const e = perPrompt[p] ??= { n: 0, correct: 0, accuracy: 0, predicted: {} };
    e.n++;
    if (predictions[i] === p) e.correct++;
    e.predicted[predictions[i]] = (e.predicted[predictions[i]] ?? 0) + 1;
  });
  for (const e of Object.values(perPrompt)) e.accuracy = e.correct / e.n;
  const correct = predictions.filter((p, i) => p === prompts[i]).length;
  return { accuracy: correct / prompts.length, chance: 1 / classes.length, perPrompt, prompts, predictions, images, settings: { n, seed, steps, guidance, eta } };
}
