// One DDPO epoch end to end (sampling, reward, training) and its time split, through the real
// Trainer: `node dist/bench/epoch.js [options]`.
//
// Default: the config of the README's main job (configs/emoji-jpeg.json, or --config FILE), its model and
// batch sizes, `--epochs` epochs (default 2: the first includes every shader compile, so both are
// reported). Writes DIR/epoch.json (DIR = --out, else $OUT, else bench-results).
//
// --sd-v1, for a GPU: SD v1 sizes with random weights (they cannot travel) and the issue's
//   settings: LoRA rank 4 (f32 adapters on an f16 UNet where the device has shader-f16, as the
//   PyTorch figure in ../shared/gpu/README.md), 50 DDIM steps, guidance 5, one batch of 8
//   samples, JPEG reward. The
//   training part runs only `--train-steps` (default 2) of the 50 timesteps per sample
//   (timestep_fraction) and is extrapolated to all 50 — training time is linear in trained
//   timesteps — and the figure says so. A watchdog stops the script at --budget-s (default 330)
//   with what it has; results are written as soon as they are known. --model tiny|small runs
//   this same code path on another named size (a check on a software adapter).

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Device } from '../engine/device.js';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import { createPipelineFromConfig } from '../diffusion/configs.js';
import { StableDiffusion, disposeStableDiffusion } from '../diffusion/load.js';
import { builtinReward } from '../rewards/load.js';
import { promptsFromLines } from '../rl/prompts.js';
import { EpochRecord, Trainer, TrainerOptions } from '../rl/trainer.js';
import { ResolvedConfig, resolveConfig, trainedTimesteps } from '../rl/config.js';
import { loadModel, readConfigFile } from '../cli/train.js';

export interface EpochFigure {
  epoch: number;
  samples: number;
  sampling: number;
  reward: number;
  training: number;
  total: number;
  samplesPerSecond: number;
  peakGiB: number;
  /** --sd-v1: the training seconds and total extrapolated from trained to all timesteps. */
  trainingExtrapolated?: number;
  totalExtrapolated?: number;
}

const GiB = 1024 ** 3;

function figure(r: EpochRecord, dev: Device, scale = 1): EpochFigure {
  const s = r.seconds;
  const f: EpochFigure = {
    epoch: r.epoch, samples: r.rewards.length, sampling: s.sampling, reward: s.reward, training: s.training, total: s.total,
    samplesPerSecond: r.samplesPerSecond, peakGiB: dev.memory().peakTotalBytes / GiB,
  };
  if (scale !== 1) {
    f.trainingExtrapolated = s.training * scale;
    f.totalExtrapolated = s.total - s.training + s.training * scale;
  }
  return f;
}

const row = (f: EpochFigure) => `epoch ${f.epoch}: ${f.samples} samples, sampling ${f.sampling.toFixed(1)} s, reward ${f.reward.toFixed(1)} s, training ${f.training.toFixed(1)} s` +
  (f.trainingExtrapolated !== undefined ? ` (extrapolated to all timesteps: ${f.trainingExtrapolated.toFixed(1)} s, epoch ${f.totalExtrapolated!.toFixed(1)} s)` : '') +
  `, total ${f.total.toFixed(1)} s, ${f.samplesPerSecond.toFixed(3)} samples/s, peak GPU memory ${f.peakGiB.toFixed(2)} GiB`;

async function runEpochs(sd: StableDiffusion, tc: ResolvedConfig, opts: Omit<TrainerOptions, 'sd' | 'onEpoch'>, onFigure: (r: EpochRecord) => void): Promise<void> {
  const trainer = await Trainer.create(tc, { ...opts, sd, onEpoch: onFigure });
  try {
    await trainer.run();
  } finally {
    await trainer.close();
  }
}

export interface EpochBenchOptions {
  config?: string;
  epochs?: number;
  outDir?: string;
  log?: (line: string) => void;
}

/** The main job's config's epochs on this device. */
export async function runEpochBench(dev: Device, opts: EpochBenchOptions = {}): Promise<EpochFigure[]> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const cfgPath = opts.config ?? 'configs/emoji-jpeg.json';
  const cfg = resolveConfig(readConfigFile(cfgPath), [['epochs', opts.epochs ?? 2], ['eval.every', 0]]);
  const outDir = opts.outDir ?? process.env.OUT ?? 'bench-results';
  mkdirSync(outDir, { recursive: true });
  const sd = await loadModel(cfg, dev);
  const figures: EpochFigure[] = [];
  log(`epoch benchmark: ${cfgPath} (${cfg.algorithm}, model ${cfg.model}, ${cfg.sample.batch_size}×${cfg.sample.batches_per_epoch} samples, ${cfg.sample.steps} steps) on ${dev.adapterName}`);
  try {
    await runEpochs(sd, cfg, {}, (r) => {
      const f = figure(r, dev);
      figures.push(f);
      log(row(f));
    });
  } finally {
    disposeStableDiffusion(sd);
  }
  writeFileSync(join(outDir, 'epoch.json'), JSON.stringify({ bench: 'epoch', config: cfgPath, adapter: dev.adapterName, figures }, null, 2) + '\n');
  return figures;
}

export interface SdV1EpochOptions {
  model?: 'sd-v1' | 'small' | 'tiny';
  trainSteps?: number;
  budgetS?: number;
  outDir?: string;
  log?: (line: string) => void;
}

/** One SD-v1-size epoch (LoRA, 50 steps, CFG, 8 samples), training extrapolated from a few timesteps. */
export async function runSdV1EpochBench(dev: Device, opts: SdV1EpochOptions = {}): Promise<EpochFigure[]> {
  const t0 = performance.now();
  const log = opts.log ?? ((l: string) => console.log(l));
  const model = opts.model ?? 'sd-v1';
  const steps = 50;
  const trainSteps = opts.trainSteps ?? 2;
  const budgetMs = (opts.budgetS ?? 330) * 1000;
  const outDir = opts.outDir ?? process.env.OUT ?? 'bench-results';
  mkdirSync(outDir, { recursive: true });
  const figures: EpochFigure[] = [];
  let status = 'running';
  const write = () => writeFileSync(join(outDir, `epoch-${model}.json`), JSON.stringify({
    bench: 'epoch', model, adapter: dev.adapterName, unetDtype: dev.hasF16 ? 'f16' : 'f32', steps, trainedTimesteps: trainSteps, budgetS: budgetMs / 1000,
    elapsedS: (performance.now() - t0) / 1000, status, note: `training measured on ${trainSteps} of ${steps} timesteps per sample and extrapolated ×${steps / trainSteps}`, figures,
  }, null, 2) + '\n');
  write();
  const watchdog = setTimeout(() => { status = 'stopped by the budget watchdog'; write(); log('budget reached: stopping'); process.exit(0); }, budgetMs);
  watchdog.unref();
  const tc = resolveConfig({
    algorithm: 'ddpo-is', seed: 0, epochs: 1, sample: { steps, eta: 1, guidance: 5, batch_size: 8, batches_per_epoch: 1 },
    train: { batch_size: 4, gradient_accumulation_steps: 2, timestep_fraction: trainSteps / steps }, lora: { enabled: true, rank: 4 },
    eval: { every: 0 }, save_every: 0, stat_tracking: { min_count: 1 },
  });
  const trained = trainedTimesteps(tc);
  if (trained !== trainSteps) throw new Error(`epoch bench: timestep_fraction ${tc.train.timestep_fraction} trains ${trained} timesteps, not ${trainSteps}`);
  const unetDtype = dev.hasF16 ? 'f16' : 'f32';
  log(`SD-size epoch: model ${model} (random weights, ${unetDtype} UNet with f32 LoRA rank 4), ${steps} steps, guidance 5, 8 samples, training ${trainSteps}/${steps} timesteps (extrapolated), on ${dev.adapterName}`);
  const tLoad = performance.now();
  const sd = createPipelineFromConfig(model, { device: dev, seed: 0, unetDtype });
  log(`model built in ${((performance.now() - tLoad) / 1000).toFixed(1)} s`);
  try {
    await runEpochs(sd, tc, { reward: builtinReward('jpeg_compressibility'), prompts: promptsFromLines(['a cat', 'a dog']) }, (r) => {
      const f = figure(r, dev, steps / trainSteps);
      figures.push(f);
      write();
      log(row(f));
    });
    status = 'done';
  } finally {
    clearTimeout(watchdog);
    write();
    disposeStableDiffusion(sd);
  }
  return figures;
}

async function main(argv: string[]): Promise<void> {
  const USAGE = 'usage: node dist/bench/epoch.js [--config FILE] [--epochs N] [--out DIR]\n       node dist/bench/epoch.js --sd-v1 [--model sd-v1|small|tiny] [--train-steps 2] [--budget-s 330] [--out DIR]';
  let sdV1 = false, config: string | undefined, epochs: number | undefined, out: string | undefined;
  let model: SdV1EpochOptions['model'], trainSteps: number | undefined, budgetS: number | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => { const v = argv[++i]; if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`); return v; };
    const positive = (v: string) => { const n = Number(v); if (!(n > 0)) throw new Error(`${a} takes a positive number\n${USAGE}`); return n; };
    if (a === '--sd-v1') sdV1 = true;
    else if (a === '--config') config = value();
    else if (a === '--epochs') epochs = positive(value());
    else if (a === '--out') out = value();
    else if (a === '--model') { const m = value(); if (!['sd-v1', 'small', 'tiny'].includes(m)) throw new Error(`--model ${m}: expected sd-v1, small or tiny\n${USAGE}`); model = m as SdV1EpochOptions['model']; }
    else if (a === '--train-steps') trainSteps = positive(value());
    else if (a === '--budget-s') budgetS = positive(value());
    else if (a === '--help' || a === '-h') { console.log(USAGE); return; }
    else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  const dev = await createNodeDevice();
  setDefaultDevice(dev);
  if (sdV1) await runSdV1EpochBench(dev, { model, trainSteps, budgetS, outDir: out });
  else await runEpochBench(dev, { config, epochs, outDir: out });
  dev.destroy();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(() => process.exit(0), (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
