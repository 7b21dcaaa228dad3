// Pretraining a small Stable Diffusion model from scratch on a captioned image set, in two stages:
//
//   1. AutoencoderKL: images x in [−1, 1] → posterior (μ, log σ²) → z = μ + σ·ε → decode; loss =
//      per-pixel MSE(x̂, x) + kl_weight · mean KL(q ‖ N(0, I)) per latent element. Then its
//      scaling_factor is measured: 1 / std of the posterior samples of every training image (SD's
//      0.18215 was found the same way), written into vae/config.json.
//   2. UNet2DConditionModel + CLIP text encoder, jointly: z0 = scaling_factor · (μ + σ·ε) of a
//      batch, t ~ U{0 … 999}, x_t = √ᾱ_t z0 + √(1 − ᾱ_t) ε' on SD's scaled-linear schedule; loss =
//      MSE(ε̂(x_t, t, text), ε'). Captions are dropped to "" with probability caption_dropout
//      (classifier-free guidance). An EMA of both networks is what grids sample and model/ holds.
//
// Both stages: AdamW, linear warm-up then constant learning rate, global gradient clipping.
//
// Determinism and resume: everything random at step s is a pure function of (seed, s) — the
// batch (per-epoch permutations of the set), caption dropout and timesteps (a host generator
// seeded by (stream, s)), and all noise (Philox at counter s·batch·elements) — so a checkpoint
// needs only the step, the weights (and EMA weights), the optimizer and the EMA update count,
// and a resumed run is bit-identical to an uninterrupted one. Grids use the EMA copy under
// noGrad and change nothing the training reads.
//
// Run folder (runDir): tokenizer/ (learned from the captions at the start), vae/ (after stage 1),
// checkpoint/ (replaced atomically), model/ (the diffusers pipeline, written at the end or on
// stop). Losses are read back every log_every steps only; a non-finite loss stops the run with
// an Error before any checkpoint could take it in.

import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { backward, noGrad } from '../engine/autograd.js';
import { Device } from '../engine/device.js';
import { AdamW, clipGradNorm } from '../engine/optim.js';
import { add, exp, mul, mulScalar, square, sub } from '../engine/ops/elementwise.js';
import { stack } from '../engine/ops/movement.js';
import { mean } from '../engine/ops/reduce.js';
import { indexSelect } from '../engine/ops/gather.js';
import { randomNormal } from '../engine/ops/random.js';
import { keep, tidy } from '../engine/scope.js';
import { Tensor, tensor } from '../engine/tensor.js';
import { manualSeed } from '../engine/nn/module.js';
import { StableDiffusion, disposeStableDiffusion, loadStableDiffusion, saveStableDiffusion } from '../diffusion/load.js';
import { sample } from '../diffusion/pipeline.js';
import { DDIMSchedule } from '../diffusion/schedule.js';
import { ClipTokenizer } from '../diffusion/tokenizer.js';
import { loadClipTokenizer } from '../diffusion/text/load-node.js';
import { clipTokenizerFiles, learnBpeMerges } from '../diffusion/text/bpe-learn.js';
import { ClipTextModel, parseClipTextConfig } from '../diffusion/models/clip-text.js';
import { UNet2DConditionModel } from '../diffusion/models/unet.js';
import { AutoencoderKL, loadVae, parseVaeConfig, saveVae } from '../diffusion/models/vae.js';
import { PromptRng } from '../rl/prompts.js';
import { deriveSeed, permutation } from '../rl/rng.js';
import { CheckpointFile, loadCheckpointWeights, loadOptimizerState, readCheckpoint, saveCheckpoint } from '../rl/checkpoint.js';
import type { RGBImage } from '../cli/images.js';
import { PretrainConfig } from './config.js';
import { ImageSet } from './dataset.js';
import { Ema } from './ema.js';
import { clipConfigJson, schedulerConfigJson, unetConfigJson, vaeConfigJson, vaeFactor } from './models.js';

export type Stage = 1 | 2;

/** One line of metrics.jsonl: the means over the log window ending at `step` (1-based, within the stage). */
export interface PretrainMetrics {
  stage: Stage;
  step: number;
  loss: number;
  /** Stage 1: the reconstruction MSE and the KL per latent element. */
  recon?: number;
  kl?: number;
  grad_norm: number;
  lr: number;
  steps_per_s: number;
  samples_per_s: number;
  time: string;
}

export interface GridRecord {
  step: number;
  prompts: string[];
  images: RGBImage[];
}

/** What trainer.json's `state` holds. */
export interface PretrainState {
  stage: Stage;
  /** Completed steps of the stage. */
  step: number;
  scalingFactor: number | null;
  emaUpdates: number;
  fingerprint: string;
  config: PretrainConfig;
}

export interface PretrainOptions {
  config: PretrainConfig;
  data: ImageSet;
  runDir: string;
  device: Device;
  log?: (message: string) => void;
  onProgress?: (p: { stage: Stage; step: number; total: number }) => void;
  onMetrics?: (rows: PretrainMetrics[]) => void;
  onGrid?: (g: GridRecord) => void;
}

export interface PretrainResult {
  status: 'done' | 'stopped';
  stage: Stage;
  step: number;
  /** The exported pipeline folder (written at the end and on stop). */
  model: string | null;
}

// Random streams (deriveSeed(seed, stream)).
const S_VAE_ORDER = 101, S_VAE_NOISE = 102, S_SCALE_NOISE = 103, S_INIT = 104;
const S_UNET_ORDER = 201, S_UNET_HOST = 202, S_LATENT_NOISE = 203, S_EPS = 204;

/** Dataset indices of step s's batch: items [s·B, (s+1)·B) of the concatenated per-epoch permutations. */
export class BatchOrder {
  private epoch = -1;
  private perm: number[] = [];
  constructor(private readonly seed: number, private readonly n: number, private readonly batch: number) {}

  at(step: number): number[] {
    const out: number[] = [];
    for (let k = step * this.batch; k < (step + 1) * this.batch; k++) {
      const e = Math.floor(k / this.n);
      if (e !== this.epoch) { this.epoch = e; this.perm = permutation(new PromptRng(deriveSeed(this.seed, e)), this.n); }
      out.push(this.perm[k % this.n]);
    }
    return out;
  }
}

const CKPT = 'checkpoint';

/** The learning rate at 0-based step s: linear warm-up to `peak` over `warmup` steps, then constant. */
export function learningRate(peak: number, warmup: number, step: number): number {
  return warmup > 0 ? peak * Math.min(1, (step + 1) / warmup) : peak;
}

/**
 * Per-step scalars of the current log window. They stay on the GPU until read (one sync); a read
 * before the window ends (a checkpoint checking for NaN) moves them to the host and the window
 * goes on, so metrics rows always cover log_every steps.
 */
class Window {
  private pending = new Map<string, Tensor[]>();
  private host = new Map<string, number[]>();
  private started = performance.now();
  steps = 0;
  push(name: string, t: Tensor): void {
    const l = this.pending.get(name);
    if (l) l.push(keep(t)); else this.pending.set(name, [keep(t)]);
  }
  /** Reads what is on the GPU; returns the name and value of a non-finite one, if any. */
  async read(): Promise<[string, number] | null> {
    let bad: [string, number] | null = null;
    for (const [k, ts] of this.pending) {
      const all = noGrad(() => stack(ts, 0));
      const v = [...await all.data()];
      all.dispose();
      for (const t of ts) t.dispose();
      const h = this.host.get(k) ?? [];
      h.push(...v);
      this.host.set(k, h);
      const x = v.find((y) => !Number.isFinite(y));
      if (x !== undefined && !bad) bad = [k, x];
    }
    this.pending.clear();
    return bad;
  }
  /** The window's means and duration, then a new window. */
  close(): { means: Record<string, number>; seconds: number; steps: number } {
    const means: Record<string, number> = {};
    for (const [k, v] of this.host) means[k] = v.reduce((a, b) => a + b, 0) / v.length;
    const out = { means, seconds: (performance.now() - this.started) / 1000, steps: this.steps };
    this.host.clear();
    this.steps = 0;
    this.started = performance.now();
    return out;
  }
  dispose(): void {
    for (const ts of this.pending.values()) for (const t of ts) t.dispose();
    this.pending.clear();
    this.host.clear();
  }
}

export class Pretrainer {
  readonly config: PretrainConfig;
  stage: Stage = 1;
  step = 0;
  tokenizer!: ClipTokenizer;
  vae: AutoencoderKL | null = null;
  unet: UNet2DConditionModel | null = null;
  textEncoder: ClipTextModel | null = null;
  emaUnet: UNet2DConditionModel | null = null;
  emaText: ClipTextModel | null = null;
  private ema: Ema[] = [];
  private optimizer: AdamW | null = null;
  private scalingFactor: number | null = null;
  private readonly window = new Window();
  private stopRequested = false;
  private imagesT: Tensor | null = null;
  private posterior: { mean: Tensor; logvar: Tensor } | null = null;
  private captionIds: Int32Array | null = null;
  private captionIndex: number[] = [];
  private readonly schedule = new DDIMSchedule(schedulerConfigJson());

  private constructor(readonly opts: PretrainOptions) {
    this.config = opts.config;
  }

  private log(m: string): void { this.opts.log?.(m); }
  get device(): Device { return this.opts.device; }
  get checkpointDir(): string { return join(this.opts.runDir, CKPT); }
  get resolution(): number { return this.opts.data.size; }
  get latentSize(): number { return this.resolution / vaeFactor(this.config); }

  /** A fresh run: learns and writes the tokenizer, builds (or loads) the VAE for stage 1. */
  static async start(opts: PretrainOptions): Promise<Pretrainer> {
    const t = new Pretrainer(opts);
    t.checkGeometry();
    if (existsSync(join(t.checkpointDir, 'trainer.json'))) throw new Error(`${opts.runDir} already holds a pretraining run; continue it with \`ddpo pretrain --resume ${opts.runDir}\` or choose another --out`);
    mkdirSync(opts.runDir, { recursive: true });
    t.writeTokenizer();
    if (opts.config.vae.from) {
      await t.useTrainedVae(opts.config.vae.from);
    } else {
      t.buildVae();
      t.makeOptimizer(t.vae!.trainableParameters(), opts.config.vae.lr);
    }
    return t;
  }

  /** Continues the run saved in runDir/checkpoint. */
  static async resume(opts: PretrainOptions): Promise<Pretrainer> {
    const t = new Pretrainer(opts);
    const file = await readCheckpoint<PretrainState>(t.checkpointDir);
    const st = file.state;
    if (st.fingerprint !== opts.data.fingerprint) throw new Error(`resume ${opts.runDir}: the image set ${opts.data.dir} is not the one the run started on (its files or captions changed); a resumed run must train on the same data`);
    t.checkGeometry();
    t.tokenizer = loadClipTokenizer(join(opts.runDir, 'tokenizer'));
    t.stage = st.stage;
    t.step = st.step;
    t.scalingFactor = st.scalingFactor;
    if (st.stage === 1) {
      t.buildVae();
      t.makeOptimizer(t.vae!.trainableParameters(), opts.config.vae.lr);
      await t.restore(file, t.vaeWeights());
    } else {
      t.vae = await loadVae(join(opts.runDir, 'vae'), { device: opts.device });
      t.buildStage2(st.emaUpdates);
      await t.restore(file, t.stage2Weights());
    }
    return t;
  }

  private checkGeometry(): void {
    const c = this.config, f = vaeFactor(c);
    const unetFactor = 2 ** (c.unet.block_out_channels.length - 1);
    const need = f * unetFactor;
    if (this.resolution % need) throw new Error(`image size ${this.resolution} px is not a multiple of ${need} (the VAE halves it ${Math.log2(f)}×, the UNet ${Math.log2(unetFactor)}× more); rebuild the set with a size that is (e.g. --size ${Math.max(need, Math.round(this.resolution / need) * need)}) or use fewer levels`);
  }

  private writeTokenizer(): void {
    const c = this.config.tokenizer;
    const merges = c.merges > 0 ? learnBpeMerges(this.opts.data.captions, { maxMerges: c.merges, minFrequency: 1 }) : [];
    const dir = join(this.opts.runDir, 'tokenizer');
    mkdirSync(dir, { recursive: true });
    for (const [name, text] of Object.entries(clipTokenizerFiles(merges, c.max_length))) writeFileSync(join(dir, name), text);
    this.tokenizer = loadClipTokenizer(dir);
    const long = this.opts.data.captions.filter((cap) => this.tokenizer.encode(cap).length > c.max_length);
    this.log(`tokenizer: ${merges.length} BPE merges learned from ${this.opts.data.captions.length} captions (vocabulary ${this.tokenizer.vocabSize})` +
      (long.length ? `; ${long.length} captions are longer than tokenizer.max_length ${c.max_length} tokens and will be truncated, e.g. "${long[0]}"` : ''));
  }

  private buildVae(): void {
    manualSeed(deriveSeed(this.config.seed, S_INIT));
    this.vae = new AutoencoderKL(parseVaeConfig(vaeConfigJson(this.config, this.resolution)), { device: this.device });
  }

  private async useTrainedVae(from: string): Promise<void> {
    const vae = await loadVae(from, { device: this.device });
    const f = 2 ** (vae.config.blockOutChannels.length - 1);
    if (vae.config.inChannels !== 3 || this.resolution % f) { vae.dispose(); throw new Error(`vae.from ${from}: its ${vae.config.inChannels}-channel, factor-${f} VAE does not fit ${this.resolution} px RGB images`); }
    this.vae = vae;
    this.scalingFactor = vae.config.scalingFactor;
    await saveVae(vae, join(this.opts.runDir, 'vae'));
    this.stage = 2;
    this.step = 0;
    this.buildStage2(0);
  }

  private makeOptimizer(params: Tensor[], lr: number): void {
    const t = this.config.train;
    this.optimizer?.dispose();
    this.optimizer = new AdamW(params, { lr, betas: [t.adam_beta1, t.adam_beta2], eps: t.eps, weightDecay: t.weight_decay });
  }

  private vaeWeights(): Map<string, Tensor> {
    return new Map([...this.vae!.namedParameters()].map(([n, p]) => [`vae.${n}`, p]));
  }

  private stage2Weights(): Map<string, Tensor> {
    const m = new Map<string, Tensor>();
    const add = (prefix: string, mod: { namedParameters(): Iterable<[string, Tensor]> }) => { for (const [n, p] of mod.namedParameters()) m.set(`${prefix}.${n}`, p); };
    add('unet', this.unet!); add('text_encoder', this.textEncoder!); add('ema.unet', this.emaUnet!); add('ema.text_encoder', this.emaText!);
    return m;
  }

  private async restore(file: CheckpointFile<PretrainState>, weights: Map<string, Tensor>): Promise<void> {
    await loadCheckpointWeights(this.checkpointDir, file, weights);
    await loadOptimizerState(this.checkpointDir, file, this.optimizer!, weights);
  }

  /** Builds the UNet, text encoder, their EMA copies and the stage-2 optimizer, and caches the posterior of every image. */
  private buildStage2(emaUpdates: number): void {
    const c = this.config, dev = this.device;
    const textJson = clipConfigJson(c, this.tokenizer);
    const unetJson = unetConfigJson(c, this.latentSize, this.vae!.config.latentChannels, c.text_encoder.hidden_size);
    const textCfg = () => parseClipTextConfig(textJson, 'pretrain text_encoder config');
    this.unet = new UNet2DConditionModel(unetJson, { device: dev, seed: deriveSeed(c.seed, S_INIT + 1) });
    this.textEncoder = new ClipTextModel(textCfg(), { device: dev, seed: deriveSeed(c.seed, S_INIT + 2) });
    this.emaUnet = new UNet2DConditionModel(unetJson, { device: dev, seed: 0 });
    this.emaText = new ClipTextModel(textCfg(), { device: dev, init: 'empty' });
    this.ema = [new Ema(this.unet, this.emaUnet, c.train.ema_decay, emaUpdates), new Ema(this.textEncoder, this.emaText, c.train.ema_decay, emaUpdates)];
    this.vae!.freeze();
    this.makeOptimizer([...this.unet.trainableParameters(), ...this.textEncoder.trainableParameters()], c.train.lr);
    const set = this.opts.data;
    this.posterior = noGrad(() => tidy(() => {
      const x = this.imagesTensor();
      const p = this.vae!.encode(x, { microBatch: 16 });
      return { mean: keep(p.mean), logvar: keep(p.logvar) };
    }));
    // Token ids of every caption, plus the empty prompt last (dropped captions).
    const caps = [...set.captions, ''];
    const enc = this.tokenizer.encodeBatch(caps, { maxLength: c.tokenizer.max_length });
    this.captionIds = enc.ids;
    const capIndex = new Map(set.captions.map((s, i) => [s, i]));
    this.captionIndex = set.records.map((r) => capIndex.get(r.caption)!);
  }

  /** Every image as [N, 3, H, W] in [−1, 1] (uploaded once). */
  private imagesTensor(): Tensor {
    if (!this.imagesT) {
      const imgs = this.opts.data.images;
      const per = 3 * this.resolution * this.resolution;
      const host = new Float32Array(imgs.length * per);
      imgs.forEach((im, i) => { for (let k = 0; k < per; k++) host[i * per + k] = im.data[k] * 2 - 1; });
      this.imagesT = keep(tensor(host, [imgs.length, 3, this.resolution, this.resolution], 'f32', this.device));
    }
    return this.imagesT;
  }

  requestStop(): void { this.stopRequested = true; }
  get stopping(): boolean { return this.stopRequested; }

  /** Runs the remaining steps of both stages (or until requestStop), then exports model/. */
  async run(): Promise<PretrainResult> {
    const c = this.config;
    if (this.stage === 1) {
      const done = await this.runStage(1, c.vae.steps);
      if (!done) return this.stop();
      await this.enterStage2();
    }
    const done = await this.runStage(2, c.train.steps);
    if (!done) return this.stop();
    await this.grid();
    const model = this.exportModel(join(this.opts.runDir, 'model'));
    return { status: 'done', stage: 2, step: this.step, model: await model };
  }

  private async stop(): Promise<PretrainResult> {
    await this.save();
    const model = this.stage === 2 ? await this.exportModel(join(this.opts.runDir, 'model')) : null;
    return { status: 'stopped', stage: this.stage, step: this.step, model };
  }

  /** Steps until `total`; false when stopped early. Checkpoints every checkpoint_every steps and at the end. */
  private async runStage(stage: Stage, total: number): Promise<boolean> {
    const c = this.config;
    const order = stage === 1 ? new BatchOrder(deriveSeed(c.seed, S_VAE_ORDER), this.opts.data.images.length, c.vae.batch_size)
      : new BatchOrder(deriveSeed(c.seed, S_UNET_ORDER), this.opts.data.images.length, c.train.batch_size);
    while (this.step < total) {
      if (this.stopRequested) { await this.flush(); return false; }
      const idx = order.at(this.step);
      if (stage === 1) this.vaeStep(idx); else this.unetStep(idx);
      this.step++;
      this.window.steps++;
      this.opts.onProgress?.({ stage, step: this.step, total });
      if (this.step % c.log_every === 0) await this.flush();
      if (this.step % c.checkpoint_every === 0 && this.step < total) await this.save();
      if (stage === 2 && c.sample.every > 0 && this.step % c.sample.every === 0 && this.step < total) await this.grid();
    }
    await this.flush();
    await this.save();
    return true;
  }

  private vaeStep(idx: number[]): void {
    const c = this.config.vae, vae = this.vae!;
    const lr = learningRate(c.lr, c.warmup_steps, this.step);
    const x0 = this.imagesTensor();
    const out = tidy(() => {
      const x = indexSelect(x0, 0, idx);
      const { mean: mu, logvar } = vae.encode(x, { microBatch: idx.length });
      const per = mu.size;
      const eps = randomNormal(mu.shape, deriveSeed(this.config.seed, S_VAE_NOISE), { offset: this.step * per, device: this.device });
      const z = add(mu, mul(exp(mulScalar(logvar, 0.5)), eps));
      const xr = vae.decode(z, { microBatch: idx.length });
      const recon = mean(square(sub(xr, x)));
      // KL(N(μ, σ²) ‖ N(0, 1)) per element = ½(μ² + σ² − 1 − log σ²).
      const kl = mulScalar(mean(sub(sub(add(square(mu), exp(logvar)), 1), logvar)), 0.5);
      const loss = add(recon, mulScalar(kl, c.kl_weight));
      backward(loss);
      return noGrad(() => ({ loss: mulScalar(loss, 1), recon: mulScalar(recon, 1), kl: mulScalar(kl, 1) }));
    });
    this.window.push('loss', out.loss); this.window.push('recon', out.recon); this.window.push('kl', out.kl);
    this.optimizerStep(lr, c.max_grad_norm, vae.trainableParameters());
  }

  private unetStep(idx: number[]): void {
    const c = this.config, t = c.train, dev = this.device;
    const lr = learningRate(t.lr, t.warmup_steps, this.step);
    const B = idx.length, L = c.tokenizer.max_length;
    // Host draws of this step: caption dropout, then timesteps.
    const rng = new PromptRng(deriveSeed(deriveSeed(c.seed, S_UNET_HOST), this.step));
    const empty = this.opts.data.captions.length;
    const capRows = idx.map((i) => (rng.next() < t.caption_dropout ? empty : this.captionIndex[i]));
    const ts = idx.map(() => rng.int(this.schedule.numTrainTimesteps));
    const ids = new Int32Array(B * L);
    capRows.forEach((r, b) => ids.set(this.captionIds!.subarray(r * L, (r + 1) * L), b * L));
    const loss = tidy(() => {
      const post = this.posterior!;
      const mu = indexSelect(post.mean, 0, idx), lv = indexSelect(post.logvar, 0, idx);
      const per = mu.size;
      const e1 = randomNormal(mu.shape, deriveSeed(c.seed, S_LATENT_NOISE), { offset: this.step * per, device: dev });
      const z0 = noGrad(() => mulScalar(add(mu, mul(exp(mulScalar(lv, 0.5)), e1)), this.scalingFactor!));
      const eps = randomNormal(mu.shape, deriveSeed(c.seed, S_EPS), { offset: this.step * per, device: dev });
      const sa = tensor(ts.map((s) => Math.sqrt(this.schedule.alphaAt(s))), [B, 1, 1, 1], 'f32', dev);
      const s1a = tensor(ts.map((s) => Math.sqrt(1 - this.schedule.alphaAt(s))), [B, 1, 1, 1], 'f32', dev);
      const xt = add(mul(z0, sa), mul(eps, s1a));
      const ctx = this.textEncoder!.forward(tensor(ids, [B, L], 'i32', dev)).lastHiddenState;
      const pred = this.unet!.forward(xt, tensor(ts, [B], 'f32', dev), ctx);
      const l = mean(square(sub(pred, eps)));
      backward(l);
      return noGrad(() => mulScalar(l, 1));
    });
    this.window.push('loss', loss);
    this.optimizerStep(lr, t.max_grad_norm, this.optimizer!.params);
    for (const e of this.ema) e.update();
  }

  private optimizerStep(lr: number, maxNorm: number, params: readonly Tensor[]): void {
    const opt = this.optimizer!;
    opt.lr = lr;
    const norm = tidy(() => {
      const n = clipGradNorm(params, maxNorm);
      opt.step();
      opt.zeroGrad();
      return n;
    });
    this.window.push('grad_norm', norm);
  }

  /** Reads the window's losses and checks they are finite; `emit` ends the window with a metrics row. */
  private async flush(emit = true): Promise<void> {
    if (!this.window.steps) return;
    const bad = await this.window.read();
    if (bad) {
      throw new Error(`pretrain stage ${this.stage}: ${bad[0]} became ${bad[1]} by step ${this.step}; stopped without saving (the checkpoint in ${this.checkpointDir}, if any, is from before). Lower the learning rate (${this.stage === 1 ? 'vae.lr' : 'train.lr'}) or raise its warm-up, then start again or resume`);
    }
    if (!emit) return;
    const w = this.window.close();
    const c = this.config;
    const batch = this.stage === 1 ? c.vae.batch_size : c.train.batch_size;
    const row: PretrainMetrics = {
      stage: this.stage, step: this.step, loss: w.means.loss, grad_norm: w.means.grad_norm,
      lr: this.optimizer!.lr, steps_per_s: w.steps / w.seconds, samples_per_s: (w.steps * batch) / w.seconds, time: new Date().toISOString(),
    };
    if (this.stage === 1) { row.recon = w.means.recon; row.kl = w.means.kl; }
    this.opts.onMetrics?.([row]);
  }

  /** Writes the checkpoint of the current stage (after reading pending losses: a NaN never reaches it). */
  async save(): Promise<void> {
    await this.flush(false);
    const state: PretrainState = {
      stage: this.stage, step: this.step, scalingFactor: this.scalingFactor,
      emaUpdates: this.ema[0]?.updates ?? 0, fingerprint: this.opts.data.fingerprint, config: this.config,
    };
    const weights = this.stage === 1 ? this.vaeWeights() : this.stage2Weights();
    await saveCheckpoint(this.checkpointDir, { state, weightKind: 'full', weights, optimizer: this.optimizer! });
  }

  /** After stage 1: measures scaling_factor, writes vae/, builds stage 2's models and checkpoints. */
  private async enterStage2(): Promise<void> {
    const vae = this.vae!;
    const varT = noGrad(() => tidy(() => {
      const p = vae.encode(this.imagesTensor(), { microBatch: 16 });
      const eps = randomNormal(p.mean.shape, deriveSeed(this.config.seed, S_SCALE_NOISE), { device: this.device });
      const z = add(p.mean, mul(exp(mulScalar(p.logvar, 0.5)), eps));
      return mean(square(sub(z, mean(z))));
    }));
    const variance = await varT.item();
    varT.dispose();
    if (!(variance > 0) || !Number.isFinite(variance)) throw new Error(`pretrain: the VAE's latents have variance ${variance}; stage 1 failed (raise vae.steps or lower vae.kl_weight)`);
    this.scalingFactor = 1 / Math.sqrt(variance);
    vae.config.scalingFactor = this.scalingFactor;
    await saveVae(vae, join(this.opts.runDir, 'vae'));
    this.log(`stage 1 done: latent std ${Math.sqrt(variance).toPrecision(4)}, scaling_factor ${this.scalingFactor.toPrecision(5)}; vae/ written`);
    this.stage = 2;
    this.step = 0;
    this.buildStage2(0);
    await this.save();
  }

  /** The EMA pipeline (shares the trained VAE and tokenizer). */
  emaPipeline(): StableDiffusion {
    const schedulerConfig = schedulerConfigJson();
    return {
      folder: this.opts.runDir, tokenizer: this.tokenizer, textEncoder: this.emaText!, unet: this.emaUnet!, vae: this.vae!,
      schedule: new DDIMSchedule(schedulerConfig), schedulerConfig,
    };
  }

  /** The fixed-seed grid of the EMA model. */
  async grid(): Promise<GridRecord> {
    const s = this.config.sample;
    const base = s.prompts ?? this.opts.data.captions;
    const prompts = Array.from({ length: s.n }, (_, i) => base[i % base.length]);
    const r = sample(this.emaPipeline(), { prompts, steps: s.steps, eta: s.eta, guidance: s.guidance, seed: s.seed, decodeBatch: 16 });
    r.trajectory.dispose();
    const data = new Float32Array(await r.images!.data());
    const [n, C, H, W] = r.images!.shape;
    r.images!.dispose();
    const images = Array.from({ length: n }, (_, i) => ({ data: data.slice(i * C * H * W, (i + 1) * C * H * W), height: H, width: W }));
    const g = { step: this.step, prompts, images };
    this.opts.onGrid?.(g);
    return g;
  }

  /**
   * Writes the EMA pipeline as a diffusers folder. Each component (model_index.json, unet/, vae/,
   * text_encoder/, tokenizer/, scheduler/) is written under a temporary name and renamed into
   * place, so other files in the folder (a model card, a judge/) are kept. dtype 'f16' stores the
   * UNet, text encoder and VAE weights in half precision (the device needs shader-f16).
   */
  async exportModel(folder: string, dtype: 'f32' | 'f16' = 'f32'): Promise<string> {
    if (this.stage !== 2 || !this.emaUnet) throw new Error('exportModel: the run has not reached stage 2 (no UNet yet)');
    const tmp = `${folder}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    await saveStableDiffusion(this.emaPipeline(), tmp);
    if (dtype === 'f16') {
      const half = await loadStableDiffusion(tmp, { device: this.device, dtype: 'f16', vaeDtype: 'f16' });
      const tmp2 = `${tmp}-f16`;
      try { await saveStableDiffusion(half, tmp2); } finally { disposeStableDiffusion(half); }
      rmSync(tmp, { recursive: true, force: true });
      renameSync(tmp2, tmp);
    }
    mkdirSync(folder, { recursive: true });
    for (const part of ['unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler', 'model_index.json']) {
      const dst = join(folder, part), old = `${dst}.old-${process.pid}`;
      const had = existsSync(dst);
      if (had) renameSync(dst, old);
      renameSync(join(tmp, part), dst);
      if (had) rmSync(old, { recursive: true, force: true });
    }
    rmSync(tmp, { recursive: true, force: true });
    return folder;
  }

  dispose(): void {
    this.window.dispose();
    this.optimizer?.dispose();
    for (const m of [this.vae, this.unet, this.textEncoder, this.emaUnet, this.emaText]) m?.dispose();
    this.imagesT?.dispose();
    this.posterior?.mean.dispose(); this.posterior?.logvar.dispose();
  }
}
