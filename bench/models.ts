// Stable Diffusion's networks end to end: UNet forward, UNet forward + LoRA backward, VAE decode,
// text encoder, and a full text-to-image sample, with random weights at a named config.
//
// Two modes:
//   default (`node dist/bench/run.js models`): the `tiny` and `small` configs on the current
//     device; bench-results/models.json. A full 50-step CFG sample is measured when the device is
//     fast enough; on a software adapter it runs 2 steps and the 50-step time is extrapolated
//     (and labelled so): t50 = t(2 steps) + 48 × t(UNet forward, CFG batch 2). --quick (and a
//     software adapter) time each figure once after the warm-up.
//   --sd-v1 (`node dist/bench/models.js --sd-v1 [--budget-s 330] [--out DIR]`), for a real GPU:
//     SD v1 sizes with random weights (they cannot travel), f16 where the device has shader-f16:
//     UNet forward at 64×64 latents, batch 2 and 16; forward + LoRA (r 4, to_q/k/v/out.0) backward
//     batch 2 (f32 adapters on the same base dtype); VAE decode 64×64 → 512²; text
//     encoder batch 2 × 77. Each figure is appended to DIR/models-sd-v1.jsonl (DIR = --out, else
//     $OUT, else bench-results) and the summary DIR/models-sd-v1.json rewritten as soon as it is
//     known, and the run stops before the budget (a watchdog exits at the budget whatever runs).
//     `--config tiny` runs the same code path on another config (a check on a software adapter).
//
// Timing: one untimed warm-up call (shader compiles), then the median of n calls, each awaited
// on the device (dev.sync()).

import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Device } from '../engine/device.js';
import { backward, noGrad } from '../engine/autograd.js';
import { tidy } from '../engine/scope.js';
import { Tensor, tensor } from '../engine/tensor.js';
import { mean, mul, randomNormal } from '../engine/ops/index.js';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import { createPipelineFromConfig, namedConfig } from '../diffusion/configs.js';
import { UNet2DConditionModel, injectUnetLoRA } from '../diffusion/models/unet.js';
import { AutoencoderKL, parseVaeConfig } from '../diffusion/models/vae.js';
import { ClipTextModel, parseClipTextConfig } from '../diffusion/models/clip-text.js';
import { disposeStableDiffusion } from '../diffusion/load.js';
import { sample } from '../diffusion/pipeline.js';
import { isSoftwareName } from './matmul.js';

export interface ModelsBenchOptions {
  quick?: boolean;
  out?: string;
  log?: (line: string) => void;
  /** Configs of the default mode (default tiny, small). */
  configs?: string[];
}

export interface Figure {
  config: string;
  what: string;
  dtype: string;
  batch: number;
  ms: number;
  samples: number;
  /** images/s for sampling figures */
  imagesPerSecond?: number;
  note?: string;
}

/** Median ms of `n` awaited calls after one warm-up; stops early (≥ 1 sample) past `deadline` (performance.now()). */
async function timeIt(dev: Device, n: number, fn: () => void | Promise<void>, deadline = Infinity, warmup = true): Promise<{ ms: number; samples: number }> {
  if (warmup) {
    await fn();
    await dev.sync();
  }
  const ts: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    await dev.sync();
    ts.push(performance.now() - t0);
    if (performance.now() > deadline) break;
  }
  ts.sort((a, b) => a - b);
  return { ms: ts[Math.floor(ts.length / 2)], samples: ts.length };
}

interface Inputs { latents: Tensor; ctx: Tensor; ids: Tensor }

function inputs(dev: Device, batch: number, latent: number, ctxDim: number, dtype: 'f32' | 'f16'): Inputs {
  const ids = new Int32Array(batch * 77).fill(49407);
  for (let b = 0; b < batch; b++) { ids[b * 77] = 49406; ids[b * 77 + 1] = 320 + b; }
  return {
    latents: randomNormal([batch, 4, latent, latent], 1, { device: dev, dtype }),
    ctx: randomNormal([batch, 77, ctxDim], 2, { device: dev, dtype }),
    ids: tensor(ids, [batch, 77], 'i32', dev),
  };
}
const disposeInputs = (i: Inputs) => { i.latents.dispose(); i.ctx.dispose(); i.ids.dispose(); };

const unetForward = (u: UNet2DConditionModel, i: Inputs) => () => { noGrad(() => u.forward(i.latents, 500, i.ctx)).dispose(); };

/** Forward + backward of mean(ε̂²) into the LoRA adapters only (the UNet is frozen). */
const unetLoraStep = (u: UNet2DConditionModel, i: Inputs) => () => {
  tidy(() => {
    const out = u.forward(i.latents, 500, i.ctx);
    backward(mean(mul(out, out)));
  });
  u.zeroGrad();
};

const textForward = (t: ClipTextModel, i: Inputs) => () => { noGrad(() => tidy(() => { t.forward(i.ids); })); };
const vaeDecode = (v: AutoencoderKL, z: Tensor) => () => { noGrad(() => v.decode(z, { microBatch: z.shape[0] })).dispose(); };

const fmtRow = (f: Figure) => `${f.config.padEnd(6)} ${f.what.padEnd(44)} ${f.dtype.padEnd(4)} ${String(f.batch).padStart(3)} ${f.ms.toFixed(1).padStart(10)} ms${f.imagesPerSecond !== undefined ? `  ${f.imagesPerSecond.toPrecision(3)} images/s` : ''}${f.note ? `  (${f.note})` : ''}`;

// ------------------------------------------------------------------ default mode: tiny and small

export async function runModelsBench(dev: Device, opts: ModelsBenchOptions = {}): Promise<{ figures: Figure[] }> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const software = isSoftwareName(dev.adapterName);
  const n = opts.quick ? 1 : software ? 2 : 5;
  const figures: Figure[] = [];
  const out = opts.out ?? 'bench-results/models.json';
  mkdirSync(dirname(out), { recursive: true });
  const write = (done: boolean) => writeFileSync(out, JSON.stringify({ bench: 'models', date: new Date().toISOString(), adapter: dev.adapterName, software, done, figures }, null, 2) + '\n');
  // Written after every figure: a slow device's partial results survive an interrupted run.
  const add = (f: Figure) => { figures.push(f); log(fmtRow(f)); write(false); };
  log(`Stable Diffusion networks on ${dev.adapterName} (random weights, f32; median of ${n} after a warm-up)`);
  log(`${'config'.padEnd(6)} ${'what'.padEnd(44)} ${'type'.padEnd(4)} ${'B'.padStart(3)} ${'time'.padStart(13)}`);
  for (const name of opts.configs ?? ['tiny', 'small']) {
    const sd = createPipelineFromConfig(name, { device: dev, seed: 0 });
    const latent = Number(namedConfig(name).unet.sample_size);
    const ctxDim = sd.textEncoder.config.hiddenSize;
    try {
      const i2 = inputs(dev, 2, latent, ctxDim, 'f32');
      let t = await timeIt(dev, n, unetForward(sd.unet, i2));
      const unetB2 = t.ms;
      add({ config: name, what: `UNet forward ${latent}×${latent} (CFG batch)`, dtype: 'f32', batch: 2, ...t });
      t = await timeIt(dev, n, textForward(sd.textEncoder, i2));
      add({ config: name, what: 'text encoder 77 tokens', dtype: 'f32', batch: 2, ...t });
      const z = randomNormal([1, 4, latent, latent], 3, { device: dev });
      const px = latent * 2 ** (sd.vae.config.blockOutChannels.length - 1);
      t = await timeIt(dev, n, vaeDecode(sd.vae, z));
      add({ config: name, what: `VAE decode ${latent}² → ${px}²`, dtype: 'f32', batch: 1, ...t });
      z.dispose();

      // Sampling: k steps (50 on a fast device); on a slow one 2 steps, extrapolated to 50 with
      // the measured CFG-batch UNet forward as the cost of each further step.
      const k = software ? 2 : 50;
      const tk = await timeIt(dev, software ? 1 : n, async () => {
        const r = sample(sd, { prompts: ['a photo of a cat'], steps: k, guidance: 5, eta: 1, seed: 0 });
        await r.images!.data();
        r.images!.dispose();
        r.trajectory.dispose();
      }, Infinity, !software); // its shaders are compiled by now; a software warm-up would double a long run
      if (k === 50) {
        add({ config: name, what: '50-step CFG sample (text, UNet, DDIM, VAE)', dtype: 'f32', batch: 1, ...tk, imagesPerSecond: 1000 / tk.ms });
      } else {
        const t50 = tk.ms + (50 - k) * unetB2;
        add({ config: name, what: `${k}-step CFG sample, measured`, dtype: 'f32', batch: 1, ...tk, imagesPerSecond: 1000 / tk.ms });
        add({
          config: name, what: '50-step CFG sample, EXTRAPOLATED', dtype: 'f32', batch: 1, ms: t50, samples: 0, imagesPerSecond: 1000 / t50,
          note: `${k}-step ${tk.ms.toFixed(0)} ms + ${50 - k} × UNet forward (batch 2) ${unetB2.toFixed(0)} ms`,
        });
      }

      // LoRA training step last: it freezes the UNet and wraps its projections.
      injectUnetLoRA(sd.unet, { rank: 4 });
      t = await timeIt(dev, n, unetLoraStep(sd.unet, i2));
      add({ config: name, what: 'UNet forward + LoRA backward (r 4)', dtype: 'f32', batch: 2, ...t });
      disposeInputs(i2);
    } finally {
      disposeStableDiffusion(sd);
    }
  }
  write(true);
  log(`\nresults written to ${out}`);
  return { figures };
}

// ------------------------------------------------------------------ --sd-v1: a real GPU, one budgeted script

export interface SdV1BenchOptions {
  /** Folder for models-sd-v1.json / .jsonl (default $OUT, else bench-results). */
  outDir?: string;
  budgetS?: number;
  /** Another config on the same code path (default sd-v1). */
  config?: string;
  log?: (line: string) => void;
}

export async function runSdV1Bench(dev: Device, opts: SdV1BenchOptions = {}): Promise<Figure[]> {
  const t0 = performance.now();
  const budgetMs = (opts.budgetS ?? 330) * 1000;
  const deadline = t0 + budgetMs;
  const log = opts.log ?? ((l: string) => console.log(l));
  const name = opts.config ?? 'sd-v1';
  const outDir = opts.outDir ?? process.env.OUT ?? 'bench-results';
  mkdirSync(outDir, { recursive: true });
  const jsonl = join(outDir, 'models-sd-v1.jsonl'), summary = join(outDir, 'models-sd-v1.json');
  writeFileSync(jsonl, '');
  const figures: Figure[] = [];
  const skipped: string[] = [];
  const flush = (status: string) => writeFileSync(summary, JSON.stringify({
    bench: 'models-sd-v1', config: name, adapter: dev.adapterName, hasF16: dev.hasF16, budgetS: budgetMs / 1000,
    elapsedS: (performance.now() - t0) / 1000, status, figures, skipped,
  }, null, 2) + '\n');
  const add = (f: Figure) => { figures.push(f); appendFileSync(jsonl, JSON.stringify(f) + '\n'); flush('running'); log(fmtRow(f)); };
  // The watchdog: whatever is running, leave with what we have before the budget ends.
  const watchdog = setTimeout(() => { flush('stopped by the budget watchdog'); log('budget reached: stopping'); process.exit(0); }, budgetMs);
  watchdog.unref();
  const cfg = namedConfig(name);
  const latent = Number(cfg.unet.sample_size);
  const dtype: 'f32' | 'f16' = dev.hasF16 ? 'f16' : 'f32';
  const n = 5;
  log(`${name} networks on ${dev.adapterName} (random weights; ${dtype} where possible; budget ${budgetMs / 1000} s)`);
  flush('starting');
  /** Runs a step when at least `reserveS` seconds of budget remain. */
  const step = async (what: string, reserveS: number, fn: () => Promise<void>) => {
    const left = (deadline - performance.now()) / 1000;
    if (left < reserveS) { skipped.push(`${what} (${left.toFixed(0)} s left, wanted ${reserveS})`); log(`skipped ${what}: ${left.toFixed(0)} s left`); return; }
    try { await fn(); } catch (e) { skipped.push(`${what}: ${(e as Error).message.split('\n')[0]}`); log(`failed ${what}: ${(e as Error).message}`); }
  };
  const stop = deadline - 10_000;

  let unet: UNet2DConditionModel | null = new UNet2DConditionModel(cfg.unet, { device: dev, dtype, seed: 0 });
  log(`UNet built (${dtype}) at ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const ctxDim = Number(cfg.unet.cross_attention_dim);
  for (const B of [2, 16]) {
    await step(`UNet forward batch ${B}`, B === 2 ? 20 : 40, async () => {
      const i = inputs(dev, B, latent, ctxDim, dtype);
      try {
        const t = await timeIt(dev, n, unetForward(unet!, i), stop);
        add({ config: name, what: `UNet forward ${latent}×${latent}`, dtype, batch: B, ...t });
      } finally { disposeInputs(i); }
    });
  }
  // A 50-step CFG sample of 8 images from the parts (text encoder and decode below): 50 × UNet(16).
  const b16 = figures.find((f) => f.what.startsWith('UNet forward') && f.batch === 16);
  await step('text encoder', 15, async () => {
    const te = new ClipTextModel(parseClipTextConfig(cfg.text_encoder), { device: dev, dtype, seed: 1 });
    const i = inputs(dev, 2, 8, 8, 'f32');
    try {
      const t = await timeIt(dev, n, textForward(te, i), stop);
      add({ config: name, what: 'text encoder 77 tokens', dtype, batch: 2, ...t });
    } finally { disposeInputs(i); te.dispose(); }
  });
  unet.dispose();
  unet = null;
  for (const vdt of dtype === 'f16' ? (['f16', 'f32'] as const) : (['f32'] as const)) {
    await step(`VAE decode ${vdt}`, 25, async () => {
      const vae = new AutoencoderKL(parseVaeConfig(cfg.vae), { device: dev });
      if (vdt === 'f16') vae.toDtype('f16');
      const z = randomNormal([1, 4, latent, latent], 3, { device: dev, dtype: vdt });
      try {
        const px = latent * 2 ** (vae.config.blockOutChannels.length - 1);
        const t = await timeIt(dev, n, vaeDecode(vae, z), stop);
        add({ config: name, what: `VAE decode ${latent}² → ${px}²`, dtype: vdt, batch: 1, ...t });
      } finally { z.dispose(); vae.dispose(); }
    });
  }
  if (b16) {
    const te = figures.find((f) => f.what.startsWith('text encoder'));
    const dec = figures.find((f) => f.what.startsWith('VAE decode'));
    const ms = 50 * b16.ms + (te ? te.ms : 0) + (dec ? 8 * dec.ms : 0);
    add({
      config: name, what: '50-step CFG sample of 8, ESTIMATED from parts', dtype, batch: 8, ms, samples: 0, imagesPerSecond: 8000 / ms,
      note: `50 × UNet(16) ${b16.ms.toFixed(1)} ms${te ? ' + text encoder' : ''}${dec ? ' + 8 × VAE decode' : ''}; DDIM arithmetic not counted`,
    });
  }
  await step(`UNet forward + LoRA backward batch 2 (${dtype} base)`, 45, async () => {
    const u = new UNet2DConditionModel(cfg.unet, { device: dev, dtype, seed: 0 });
    const i = inputs(dev, 2, latent, ctxDim, dtype);
    try {
      const tf = await timeIt(dev, n, unetForward(u, i), stop);
      add({ config: name, what: `UNet forward ${latent}×${latent}`, dtype, batch: 2, ...tf });
      injectUnetLoRA(u, { rank: 4 });
      const t = await timeIt(dev, n, unetLoraStep(u, i), stop);
      add({ config: name, what: 'UNet forward + LoRA backward (r 4)', dtype, batch: 2, ...t, note: `${dtype} base, f32 adapters` });
    } finally { disposeInputs(i); u.dispose(); }
  });
  clearTimeout(watchdog);
  flush('done');
  log(`done in ${((performance.now() - t0) / 1000).toFixed(1)} s; ${summary}`);
  return figures;
}

// ------------------------------------------------------------------ direct entry point (--sd-v1)

async function main(argv: string[]): Promise<void> {
  const USAGE = 'usage: node dist/bench/models.js [--sd-v1 [--budget-s 330] [--config sd-v1|small|tiny]] [--out PATH] [--quick]';
  let sdV1 = false, budgetS: number | undefined, out: string | undefined, config: string | undefined, quick = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => { const v = argv[++i]; if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`); return v; };
    if (a === '--sd-v1') sdV1 = true;
    else if (a === '--budget-s') { budgetS = Number(value()); if (!(budgetS > 0)) throw new Error(`--budget-s takes a positive number\n${USAGE}`); }
    else if (a === '--out') out = value();
    else if (a === '--config') config = value();
    else if (a === '--quick') quick = true;
    else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  const dev = await createNodeDevice();
  setDefaultDevice(dev);
  if (sdV1) await runSdV1Bench(dev, { budgetS, outDir: out, config });
  else await runModelsBench(dev, { out, quick, configs: config ? [config] : undefined });
  dev.destroy();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(() => process.exit(0), (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
