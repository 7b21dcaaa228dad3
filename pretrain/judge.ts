// The recognisability judge: a small image classifier over a model's captions, trained by the
// engine on the real images of its training set, so "does the model draw a fox when asked for a
// fox" is a number (top-1 accuracy of the judge on the model's samples) and not only a picture.
//
// Network: three 3×3 conv + SiLU layers (24, 48, 96 channels), 2×2 average pooling after the first
// two, a global average, and a linear layer to one logit per caption. Input: RGB in [0, 1] at the
// set's resolution (mapped to [−1, 1]).
//
// With two or so real images per caption, the judge must not learn the exact pixels: every
// training image is augmented on the host (shift by up to `shift` px with white fill, contrast and
// brightness jitter, a random blur, Gaussian noise), which also makes it tolerant of a diffusion
// model's soft, noisy samples. Augmentations are drawn from a seeded generator: training is
// reproducible.
//
// Folder: config.json (format, classes, size, architecture, training facts) and
// model.safetensors (the weights by their module names).

import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { backward, noGrad } from '../engine/autograd.js';
import { Device } from '../engine/device.js';
import { AdamW } from '../engine/optim.js';
import { add, mul, mulScalar, neg, silu } from '../engine/ops/elementwise.js';
import { avgPool2d } from '../engine/ops/layers.js';
import { mean, sum } from '../engine/ops/reduce.js';
import { logSoftmax } from '../engine/ops/softmax.js';
import { tidy } from '../engine/scope.js';
import { Tensor, tensor } from '../engine/tensor.js';
import { Conv2d, Linear } from '../engine/nn/layers.js';
import { Module, manualSeed } from '../engine/nn/module.js';
import { loadSafetensors, saveSafetensors } from '../engine/safetensors.js';
import type { RGBImage } from '../cli/images.js';
import { PromptRng } from '../rl/prompts.js';
import { deriveSeed } from '../rl/rng.js';

export const JUDGE_FORMAT = 'ddpo-webgpu-judge';
const WIDTHS = [24, 48, 96];

export interface JudgeConfig {
  format: typeof JUDGE_FORMAT;
  version: 1;
  classes: string[];
  size: number;
  widths: number[];
  [key: string]: unknown;
}

export class Judge extends Module {
  constructor(readonly config: JudgeConfig, opts: { device?: Device; seed?: number } = {}) {
    super();
    if (opts.seed !== undefined) manualSeed(opts.seed);
    const [a, b, c] = config.widths;
    const o = { padding: 1, device: opts.device };
    this.registerModule('conv1', new Conv2d(3, a, 3, o));
    this.registerModule('conv2', new Conv2d(a, b, 3, o));
    this.registerModule('conv3', new Conv2d(b, c, 3, o));
    this.registerModule('head', new Linear(c, config.classes.length, { device: opts.device }));
  }

  get device(): Device { return (this.child('conv1') as Conv2d).weight.device; }

  /** images [B, 3, H, W] in [0, 1] → logits [B, classes]. */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const conv = (n: string, h: Tensor) => silu((this.child(n) as Conv2d).forward(h));
      let h = conv('conv1', add(mulScalar(x, 2), -1));
      h = conv('conv2', avgPool2d(h, 2));
      h = conv('conv3', avgPool2d(h, 2));
      return (this.child('head') as Linear).forward(mean(h, [2, 3]));
    });
  }
}

/** Host augmentation of one CHW image (see the header). */
export function augment(img: RGBImage, rng: PromptRng, opts: { shift?: number; noise?: number } = {}): Float32Array {
  const { height: h, width: w, data } = img;
  const n = h * w;
  const s = opts.shift ?? 1;
  const dx = rng.int(2 * s + 1) - s, dy = rng.int(2 * s + 1) - s;
  const contrast = 0.75 + 0.5 * rng.next(), bright = (rng.next() - 0.5) * 0.3;
  const blur = rng.next() < 0.5 ? rng.next() : 0;
  const sigma = (opts.noise ?? 0.15) * rng.next();
  const out = new Float32Array(3 * n);
  const at = (c: number, y: number, x: number) => (y < 0 || x < 0 || y >= h || x >= w ? 1 : data[c * n + y * w + x]);
  for (let c = 0; c < 3; c++) for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    let v = at(c, y - dy, x - dx);
    if (blur > 0) {
      let b = 0;
      for (let j = -1; j <= 1; j++) for (let i = -1; i <= 1; i++) b += at(c, y - dy + j, x - dx + i);
      v = (1 - blur) * v + blur * (b / 9);
    }
    // Box–Muller from two uniforms of the same generator.
    const g = Math.sqrt(-2 * Math.log(1 - rng.next())) * Math.cos(2 * Math.PI * rng.next());
    out[c * n + y * w + x] = Math.min(1, Math.max(0, (v - 0.5) * contrast + 0.5 + bright + sigma * g));
  }
  return out;
}

export interface TrainJudgeOptions {
  device: Device;
  steps?: number;
  batch?: number;
  lr?: number;
  seed?: number;
  onStep?: (step: number, total: number) => void;
}

/** Trains a judge on (image, caption index) pairs; returns it with its final training loss. */
export async function trainJudge(images: readonly RGBImage[], labels: readonly number[], classes: readonly string[], opts: TrainJudgeOptions): Promise<{ judge: Judge; loss: number }> {
  if (!images.length) throw new Error('trainJudge: no images');
  const size = images[0].height;
  const steps = opts.steps ?? 400, B = opts.batch ?? 64, seed = opts.seed ?? 0;
  const judge = new Judge({ format: JUDGE_FORMAT, version: 1, classes: [...classes], size, widths: WIDTHS }, { device: opts.device, seed: deriveSeed(seed, 1) });
  const opt = new AdamW(judge.trainableParameters(), { lr: opts.lr ?? 3e-3, weightDecay: 1e-4 });
  const rng = new PromptRng(deriveSeed(seed, 2));
  const per = 3 * size * size, C = classes.length;
  let last: Tensor | null = null;
  try {
    for (let s = 0; s < steps; s++) {
      const x = new Float32Array(B * per), y = new Float32Array(B * C);
      for (let b = 0; b < B; b++) {
        const i = rng.int(images.length);
        x.set(augment(images[i], rng), b * per);
        y[b * C + labels[i]] = 1;
      }
      // Cosine decay to zero over the run: the last steps settle instead of jittering.
      opt.lr = (opts.lr ?? 3e-3) * 0.5 * (1 + Math.cos(Math.PI * s / steps));
      last?.dispose();
      last = tidy(() => {
        const logits = judge.forward(tensor(x, [B, 3, size, size], 'f32', opts.device));
        const loss = mulScalar(neg(sum(mul(logSoftmax(logits, 1), tensor(y, [B, C], 'f32', opts.device)))), 1 / B);
        backward(loss);
        opt.step();
        opt.zeroGrad();
        return noGrad(() => mulScalar(loss, 1));
      });
      // A read now and then keeps the progress rate honest (the GPU otherwise runs far behind).
      if ((s + 1) % 50 === 0) await last.item();
      opts.onStep?.(s + 1, steps);
    }
    const loss = last ? await last.item() : NaN;
    if (!Number.isFinite(loss)) throw new Error(`trainJudge: the loss became ${loss}; lower the learning rate`);
    return { judge, loss };
  } finally {
    last?.dispose();
    opt.dispose();
  }
}

/** Class probabilities' argmax per image (batched). */
export async function classify(judge: Judge, images: readonly RGBImage[], batch = 64): Promise<number[]> {
  const size = judge.config.size, per = 3 * size * size, C = judge.config.classes.length;
  const out: number[] = [];
  for (let i = 0; i < images.length; i += batch) {
    const part = images.slice(i, i + batch);
    const x = new Float32Array(part.length * per);
    part.forEach((im, k) => {
      if (im.height !== size || im.width !== size) throw new Error(`judge: image ${i + k} is ${im.height}×${im.width}; this judge takes ${size}×${size}`);
      x.set(im.data, k * per);
    });
    const logits = noGrad(() => judge.forward(tensor(x, [part.length, 3, size, size], 'f32', judge.device)));
    const v = await logits.data();
    logits.dispose();
    for (let k = 0; k < part.length; k++) {
      let best = 0;
      for (let c = 1; c < C; c++) if (v[k * C + c] > v[k * C + best]) best = c;
      out.push(best);
    }
  }
  return out;
}

/** Writes config.json and model.safetensors into folder (atomically: a temporary sibling renamed). */
export async function saveJudge(judge: Judge, folder: string, extra: Record<string, unknown> = {}): Promise<void> {
  const tmp = `${folder}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  await saveSafetensors(join(tmp, 'model.safetensors'), judge.stateDict(), { format: 'pt' });
  writeFileSync(join(tmp, 'config.json'), JSON.stringify({ ...judge.config, ...extra }, null, 2) + '\n');
  if (existsSync(folder)) rmSync(folder, { recursive: true, force: true });
  renameSync(tmp, folder);
}

export async function loadJudge(folder: string, device: Device): Promise<Judge> {
  const cfgPath = join(folder, 'config.json');
  if (!existsSync(cfgPath)) throw new Error(`judge ${folder}: no config.json (train one with \`ddpo judge --data DIR --out ${folder}\`)`);
  const cfg = JSON.parse(readFileSync(cfgPath, 'utf8')) as JudgeConfig;
  if (cfg.format !== JUDGE_FORMAT) throw new Error(`judge ${cfgPath}: not a ${JUDGE_FORMAT} config`);
  if (!Array.isArray(cfg.classes) || !cfg.classes.length || !Number.isInteger(cfg.size) || !Array.isArray(cfg.widths) || cfg.widths.length !== 3) {
    throw new Error(`judge ${cfgPath}: needs classes (a list), size and widths (three numbers)`);
  }
  const judge = new Judge(cfg, { device });
  const w = await loadSafetensors(join(folder, 'model.safetensors'), { device });
  try {
    judge.loadStateDict(w);
  } catch (e) {
    judge.dispose();
    throw new Error(`judge ${folder}: ${(e as Error).message}`);
  } finally {
    for (const t of w.values()) t.dispose();
  }
  return judge;
}
