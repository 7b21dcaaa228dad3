// `ddpo train`, `ddpo eval` and `ddpo config`: the command-line face of the DDPO trainer.
//
// train: resolves the run config (defaults < run.json < flags), checks the run folder (one run
// per folder, cli/run-folder.ts; on --resume the checkpoint as a crash left it and the epochs left
// to do) before anything loads, loads the model, runs epochs with a progress line, writes the run
// folder's report after each epoch that starts (cli/report.ts), checkpoints every `save_every`
// epochs, and on Ctrl-C or SIGTERM finishes the current step, saves and exits. Exit codes: 0 done
// or stopped, 1 an error, 2 the reward failed, 3 NaN/Inf (nothing saved; the last checkpoint stays).
// eval: the reward of a checkpoint on held-out prompts (mean ± std), printed and written to eval.json.
// config: prints the resolved config, or the docs of every option.

import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createNodeDevice } from '../engine/node.js';
import { Device } from '../engine/device.js';
import { Tensor, setDefaultDevice } from '../engine/tensor.js';
import { StableDiffusion, disposeStableDiffusion, loadStableDiffusion } from '../diffusion/load.js';
import { TextEmbeddingCache, sample } from '../diffusion/pipeline.js';
import { LORA_WEIGHT_NAME, loadUnetLoRA } from '../diffusion/lora-io.js';
import { injectUnetLoRA, unetLoRAStateDict } from '../diffusion/models/unet.js';
import { loadCheckpointWeights, readCheckpoint, recoverCheckpoint } from '../rl/checkpoint.js';
import { RewardScorer } from '../rewards/scorer.js';
import { createTinyPipeline } from '../rl/tiny-model.js';
import { PromptRng, samplePrompts } from '../rl/prompts.js';
import { Overrides, RESUMABLE_KEYS, ResolvedConfig, coerceOverride, configDocs, describeReward, parseSetArgs, resolveConfig, resumeConfig, rewardSpec } from '../rl/config.js';
import { promptFn } from '../rl/prompts-file.js';
import { rewardStats } from '../rl/record.js';
import { EpochRecord, FailedEpoch, RunResult, Trainer, TrainerOptions, stopOnSignals } from '../rl/trainer.js';
import { RunReport } from './report.js';
import { RunIdentity, checkIdentity, checkpointDir, claimRunFolder, writeIdentity } from './run-folder.js';

export { checkpointDir };
import { writeFileAtomic } from './files.js';
import { Progress, fmtTime } from './progress.js';

/** Options of `ddpo train` (commander's parsed flags). */
export interface TrainCliOptions {
  config?: string;
  set?: string[];
  resume?: string;
  epochs?: number;
  out?: string;
  model?: string;
  algorithm?: string;
  prompts?: string;
  reward?: string;
  seed?: number;
  adapter?: string;
  dtype?: string;
  /** A new run may delete an earlier run's files in --out (ddpo train --overwrite). */
  overwrite?: boolean;
}

/** Reads a JSON config file; the error says which file and what is wrong with it. */
export function readConfigFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read config file ${path}: ${(e as Error).message}. Give an existing JSON file to --config (\`{}\` uses every default; see docs/config.md)`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`config file ${path} is not valid JSON: ${(e as Error).message}`);
  }
}

/** The dotted-key overrides the flags make: `--set` pairs first, then the dedicated flags (which win). */
export function cliOverrides(o: TrainCliOptions): [string, unknown][] {
  const pairs: [string, unknown][] = parseSetArgs(o.set ?? []);
  const direct: [string, unknown][] = [
    ['epochs', o.epochs], ['out', o.out], ['model', o.model], ['algorithm', o.algorithm], ['prompts', o.prompts],
    ['reward', o.reward], ['seed', o.seed], ['adapter', o.adapter], ['dtype', o.dtype],
  ];
  for (const [k, v] of direct) if (v !== undefined) pairs.push([k, v]);
  return pairs;
}

/**
 * The run's config. With --resume DIR the base is DIR/config.json (the resolved config the run
 * started with), `out` defaults to DIR, and only rl/config.ts RESUMABLE_KEYS may be overridden
 * (epochs, out, adapter, save_every, reward_options): others would make the resumed run differ
 * from an uninterrupted one.
 */
export function resolveRunConfig(o: TrainCliOptions): ResolvedConfig {
  const overrides = cliOverrides(o);
  if (!o.resume) return resolveConfig(o.config ? readConfigFile(o.config) : undefined, overrides);
  const saved = join(o.resume, 'config.json');
  if (!existsSync(saved)) {
    throw new Error(`--resume ${o.resume}: no config.json there. Give the run folder a previous \`ddpo train\` wrote (its --out, default runs/ddpo)`);
  }
  if (o.config) throw new Error('--resume continues a run with the config it started with; drop --config (change the number of epochs with --epochs)');
  return resumeConfig(readConfigFile(saved), [['out', o.resume], ...overrides], '--resume');
}

/** The value at a dotted key of a config ('reward_options.workers'). */
function configValue(c: ResolvedConfig, key: string): unknown {
  return key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], c);
}

/** `ddpo config`: prints the resolved config (or, with --docs, the table of every option). */
export async function configCommand(o: TrainCliOptions & { docs?: boolean }): Promise<number> {
  if (o.docs) {
    process.stdout.write(configDocs());
    return 0;
  }
  console.log(JSON.stringify(resolveRunConfig(o), null, 2));
  return 0;
}

/** Loads the model a config names: 'tiny' builds the small random SD-architecture model. */
export async function loadModel(cfg: Pick<ResolvedConfig, 'model' | 'dtype' | 'seed'>, device: Device): Promise<StableDiffusion> {
  if (cfg.model === 'tiny') return createTinyPipeline({ device, seed: cfg.seed, dtype: cfg.dtype });
  if (!existsSync(cfg.model) || !statSync(cfg.model).isDirectory()) {
    throw new Error(`model ${cfg.model}: not a folder. Give a diffusers-layout Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/) with --model, or --model tiny for the built-in small model`);
  }
  return loadStableDiffusion(cfg.model, { device, dtype: cfg.dtype });
}

function describePrompts(p: ResolvedConfig['prompts']): string {
  return typeof p === 'string' ? p : `${p.file}${p.from !== undefined || p.to !== undefined ? ` lines [${p.from ?? 0}, ${p.to ?? 'end'})` : ''}`;
}

/** `ddpo train`. */
export async function trainCommand(o: TrainCliOptions): Promise<number> {
  const cfg = resolveRunConfig(o);
  if (cfg.dtype === 'f16' && !cfg.lora.enabled) {
    throw new Error("dtype 'f16' trains LoRA adapters only: full fine-tuning needs f32 weights (trainable parameters and their optimizer state are f32). Use --set lora.enabled=true, or --dtype f32");
  }
  const prompts = promptFn(cfg.prompts); // a bad prompt file fails now, not after the model loads
  const ckpt = checkpointDir(cfg.out);
  const log = (m: string) => process.stderr.write(`${m}\n`);
  let identity: RunIdentity | null = null;
  if (o.resume) {
    // Before anything loads: the checkpoint as a crash may have left it, and what is left to do.
    for (const line of await recoverCheckpoint(ckpt)) log(`resume: ${line}`);
    if (!existsSync(join(ckpt, 'trainer.json'))) {
      throw new Error(`--resume ${o.resume}: no checkpoint at ${ckpt} (the run stopped before its first save), so there is nothing to continue. Start it afresh with \`ddpo train --out ${cfg.out} --overwrite\` (deleting that run's files), or choose another --out`);
    }
    const done = (await readCheckpoint<{ epoch: number }>(ckpt)).state.epoch;
    if (cfg.epochs < done) throw new Error(`--resume ${o.resume}: --epochs ${cfg.epochs} is below the ${done} epochs the run has done; give --epochs ${done + 1} or more to continue it`);
    if (cfg.epochs === done) {
      console.log(`${cfg.out}: the run has done all its ${done} epochs; nothing to do (give --epochs ${done + 1} or more to continue it)`);
      return 0;
    }
    identity = checkIdentity(cfg.out, cfg);
  } else {
    const removed = claimRunFolder(cfg.out, !!o.overwrite);
    if (removed.length) log(`--overwrite: deleted the earlier run's ${removed.join(', ')} in ${cfg.out}`);
  }
  const device = await createNodeDevice({ adapter: cfg.adapter });
  setDefaultDevice(device);
  const perEpoch = cfg.sample.batch_size * cfg.sample.batches_per_epoch;
  console.log(`device: ${device.adapterName}`);
  console.log(`run: ${cfg.algorithm} on ${describeReward(cfg.reward)}, prompts ${describePrompts(cfg.prompts)}, ${cfg.epochs} epochs × ${perEpoch} samples (${cfg.sample.steps} steps, guidance ${cfg.sample.guidance}), ${cfg.lora.enabled ? `LoRA rank ${cfg.lora.rank}` : 'full fine-tuning'}, lr ${cfg.train.lr} -> ${cfg.out}/`);
  const t0 = performance.now();
  const sd = await loadModel(cfg, device);
  console.log(`model: ${cfg.model} loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  // The bar counts samples (its rate is samples/s over sampling, reward and training together);
  // within an epoch, sampling moves it through the first half of the epoch's share, training the second.
  let progress: Progress | null = null;
  let firstEpoch = 0;
  let report: RunReport | null = null;
  const onEpoch = (rec: EpochRecord) => {
    report!.addEpoch(rec); // the trainer logs the epoch's line itself
    progress?.update((rec.epoch - firstEpoch) * perEpoch);
  };
  const onEpochFailed = (rec: FailedEpoch) => { report!.addEpoch(rec); };
  const onProgress = (p: { epoch: number; phase: 'sampling' | 'training'; done: number; total: number }) => {
    if (!progress || !(p.total > 0)) return;
    // Sampling fills the first half of an epoch's share of the bar, training the second.
    const frac = 0.5 * Math.min(1, p.done / p.total) + (p.phase === 'training' ? 0.5 : 0);
    progress.update((p.epoch - 1 - firstEpoch) * perEpoch + Math.min(perEpoch - 1, Math.floor(frac * perEpoch)));
  };
  const opts: TrainerOptions = { sd, prompts, onEpoch, onEpochFailed, onProgress, checkpointDir: ckpt, log };
  let trainer: Trainer;
  try {
    trainer = o.resume
      // The checkpoint's config, with what this config may change on resume (RESUMABLE_KEYS).
      ? await Trainer.resume(ckpt, opts, RESUMABLE_KEYS.map((k) => [k, configValue(cfg, k)] as const))
      : await Trainer.create(cfg, opts);
  } catch (e) {
    disposeStableDiffusion(sd);
    device.destroy();
    throw e;
  }
  firstEpoch = trainer.epoch;
  identity ??= o.resume ? null : writeIdentity(cfg.out, cfg);
  report = new RunReport(cfg.out, {
    config: cfg,
    // Metrics written after the checkpoint (epochs > trainer.epoch) are replaced as the run redoes them.
    resumeEpoch: o.resume ? trainer.epoch + 1 : undefined,
    title: `DDPO: ${cfg.algorithm} on ${describeReward(cfg.reward)}`,
    facts: {
      device: device.adapterName, model: cfg.model, algorithm: cfg.algorithm, reward: describeReward(cfg.reward),
      prompts: describePrompts(cfg.prompts), 'samples per epoch': perEpoch, 'DDIM steps': cfg.sample.steps, guidance: cfg.sample.guidance,
      adaptation: cfg.lora.enabled ? `LoRA rank ${cfg.lora.rank}` : 'full fine-tuning', 'learning rate': cfg.train.lr,
      run: identity?.run_id, started: identity?.started ?? new Date().toISOString(), ...(o.resume ? { 'resumed after epoch': trainer.epoch, resumed: new Date().toISOString() } : {}),
    },
  });
  if (o.resume) console.log(`resuming after epoch ${trainer.epoch} of ${cfg.epochs}`);
  progress = new Progress(Math.max(cfg.epochs - trainer.epoch, 1) * perEpoch, 'training', 'sample');

  // Ctrl-C: stop at the next safe point and save; a second Ctrl-C quits at once without saving.
  const offSignals = stopOnSignals(trainer);
  let result: RunResult | null = null;
  try {
    result = await trainer.run();
  } finally {
    offSignals();
    const status = result ? `${result.status} after epoch ${result.epoch}${result.message ? `: ${result.message}` : ''}` : 'failed (see the error)';
    report.setFacts({ finished: new Date().toISOString(), status, 'wall time': fmtTime((performance.now() - t0) / 1000) });
    report.writeHtml();
    await trainer.close();
    disposeStableDiffusion(sd);
    device.destroy();
  }
  const where = `report ${join(cfg.out, 'report.html')}, metrics ${join(cfg.out, 'metrics.jsonl')}, checkpoint ${result.checkpoint ?? '(none)'}`;
  if (result.status === 'done') {
    console.log(`done: ${cfg.epochs} epochs; ${where}`);
    return 0;
  }
  if (result.status === 'stopped') {
    console.log(`stopped after epoch ${result.epoch}; ${where}. Continue with: ddpo train --resume ${cfg.out}`);
    return 0;
  }
  if (result.status === 'non-finite') {
    const kept = existsSync(join(ckpt, 'trainer.json')) ? `the last checkpoint, ${ckpt} (after epoch ${(await readCheckpoint<{ epoch: number }>(ckpt)).state.epoch}), is kept as it was` : 'no checkpoint was written';
    console.error(`stopped: NaN/Inf (${result.message}); ${kept}; report ${join(cfg.out, 'report.html')}, metrics ${join(cfg.out, 'metrics.jsonl')}`);
    return 3;
  }
  console.error(`stopped: the reward failed (${result.message ?? 'too many dropped samples'}); ${where}. Fix the reward, then continue with: ddpo train --resume ${cfg.out}`);
  return 2;
}

// ------------------------------------------------------------------------------------------
// ddpo eval

export interface EvalCliOptions {
  checkpoint: string;
  /** A prompt set: a built-in name, FILE or FILE:FROM-TO (default: the run's eval prompts, else its training prompts). */
  prompts?: string;
  prompt?: string[];
  n: number;
  seed: number;
  batch?: number;
  out?: string;
  adapter?: string;
  /** Run config to use when the checkpoint folder has none. */
  config?: string;
  set?: string[];
}

/** The run config of a checkpoint: config.json in the checkpoint folder or a folder above it. */
function checkpointConfig(dir: string): string | null {
  let d = resolve(dir);
  for (let i = 0; i < 3; i++) {
    if (existsSync(join(d, 'config.json'))) return join(d, 'config.json');
    d = dirname(d);
  }
  return null;
}

/**
 * Loads a checkpoint's trained weights into sd: a `ddpo train` checkpoint folder (trainer.json +
 * weights.safetensors, rl/checkpoint.ts; LoRA adapters are injected first with the run's rank), or
 * a diffusers LoRA file (pytorch_lora_weights.safetensors) as other tools write them.
 */
async function loadCheckpointInto(sd: StableDiffusion, dir: string, cfg: ResolvedConfig): Promise<string> {
  if (existsSync(join(dir, 'trainer.json'))) {
    const file = await readCheckpoint<unknown>(dir);
    let targets: Map<string, Tensor>;
    if (file.weights.kind === 'lora') {
      injectUnetLoRA(sd.unet, { rank: cfg.lora.rank });
      targets = unetLoRAStateDict(sd.unet);
    } else {
      targets = sd.unet.stateDict();
    }
    await loadCheckpointWeights(dir, file, targets);
    return join(dir, file.weights.file);
  }
  const lora = [join(dir, LORA_WEIGHT_NAME), join(dir, 'unet', LORA_WEIGHT_NAME)].find((p) => existsSync(p));
  if (lora) {
    await loadUnetLoRA(sd.unet, lora);
    return lora;
  }
  throw new Error(`${dir}: neither a checkpoint (trainer.json) nor ${LORA_WEIGHT_NAME}. Give --checkpoint a checkpoint folder written by \`ddpo train\` (inside its run folder)`);
}

/** `ddpo eval`: a checkpoint's reward on held-out prompts, mean ± std; writes eval.json. */
export async function evalCommand(o: EvalCliOptions): Promise<number> {
  if (!existsSync(o.checkpoint)) throw new Error(`--checkpoint ${o.checkpoint}: no such folder. Give a run folder or its checkpoint/ written by \`ddpo train\``);
  // A run folder stands for its checkpoint; eval.json goes into the run folder, beside (not into)
  // the checkpoint, which the trainer replaces whole at each save.
  const ckpt = existsSync(join(o.checkpoint, 'trainer.json')) || !existsSync(join(checkpointDir(o.checkpoint), 'trainer.json')) ? o.checkpoint : checkpointDir(o.checkpoint);
  const runDir = existsSync(join(ckpt, 'trainer.json')) ? dirname(resolve(ckpt)) : ckpt;
  const cfgPath = o.config ?? checkpointConfig(ckpt);
  if (!cfgPath) throw new Error(`no config.json in ${ckpt} or above it; give the run's config with --config`);
  const cfg = resolveConfig(readConfigFile(cfgPath), [...parseSetArgs(o.set ?? []), ...(o.adapter ? [['adapter', o.adapter] as [string, unknown]] : [])] as Overrides);
  if (!Number.isInteger(o.n) || o.n < 1) throw new Error(`--n ${o.n}: give the number of samples, an integer >= 1`);
  const rng = new PromptRng(o.seed);
  let prompts: string[];
  if (o.prompt?.length) prompts = Array.from({ length: o.n }, (_, i) => o.prompt![i % o.prompt!.length]);
  else prompts = samplePrompts(promptFn((o.prompts ? coerceOverride('prompts', o.prompts) : cfg.prompts) as ResolvedConfig['prompts']), rng, o.n).prompts;

  const device = await createNodeDevice({ adapter: cfg.adapter });
  setDefaultDevice(device);
  console.log(`device: ${device.adapterName}`);
  const sd = await loadModel(cfg, device);
  const weights = await loadCheckpointInto(sd, ckpt, cfg);
  // Worker parts in pools, GPU and service rewards in this thread on the same device.
  const scorer = new RewardScorer(rewardSpec(cfg.reward), {
    retries: cfg.reward_options.max_retries,
    pool: { workers: cfg.reward_options.workers ?? undefined, timeoutMs: cfg.reward_options.timeout_s * 1000 },
    context: { device, log: (m) => console.error(m) },
  });
  const cache = new TextEmbeddingCache(sd);
  const batch = o.batch ?? cfg.sample.batch_size;
  const rewards: number[] = [];
  const scoring: Promise<void>[] = [];
  const progress = new Progress(prompts.length, 'eval', 'sample');
  const t0 = performance.now();
  try {
    await scorer.ready();
    for (let i = 0; i < prompts.length; i += batch) {
      const ps = prompts.slice(i, i + batch);
      const r = sample(sd, { prompts: ps, steps: cfg.sample.steps, eta: cfg.sample.eta, guidance: cfg.sample.guidance, seed: o.seed, firstSample: i, cache });
      const data = (await r.images!.data()) as Float32Array;
      const [n, c, h, w] = r.images!.shape;
      r.images!.dispose();
      r.trajectory.dispose();
      const bad = await r.nonFinite;
      if (bad.length) throw new Error(`eval sample ${i + bad[0].index} ("${bad[0].prompt}"): ${bad[0].message}; the checkpoint's weights (or the base model's) compute NaN/Inf: check them with \`ddpo inspect --check-values ${ckpt}\``);
      // Scoring overlaps the next batch's sampling; results land at their sample's index.
      const at = i;
      scoring.push(scorer.score(`eval-${at}`, { data, n, c, h, w }, ps, ps.map(() => ({}))).then((r) => { r.rewards.forEach((v, k) => { rewards[at + k] = v; }); }));
      progress.update(Math.min(i + batch, prompts.length));
    }
    await Promise.all(scoring);
  } finally {
    cache.dispose();
    await scorer.close();
    disposeStableDiffusion(sd);
    device.destroy();
  }
  const st = rewardStats(rewards);
  const perPrompt: Record<string, { n: number; mean: number | null; std: number | null }> = {};
  for (const p of new Set(prompts)) {
    const s = rewardStats(prompts.map((q, i) => (q === p ? rewards[i] : NaN)).filter((_, i) => prompts[i] === p));
    perPrompt[p] = { n: s.n, mean: Number.isFinite(s.mean) ? s.mean : null, std: Number.isFinite(s.std) ? s.std : null };
  }
  const result = {
    checkpoint: resolve(ckpt), weights, config: cfgPath, reward: describeReward(cfg.reward),
    prompts: o.prompt?.length ? o.prompt : o.prompts ?? cfg.prompts, seed: o.seed, n: prompts.length,
    scored: st.n, dropped: prompts.length - st.n,
    mean: st.mean, std: st.std, min: st.min, max: st.max, p10: st.p10, p50: st.p50, p90: st.p90,
    seconds: (performance.now() - t0) / 1000,
    per_prompt: perPrompt,
  };
  const out = o.out ?? join(runDir, 'eval.json');
  writeFileAtomic(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`reward (${describeReward(cfg.reward)}) on ${st.n} samples: ${st.mean.toFixed(4)} ± ${st.std.toFixed(4)} (std over samples)${result.dropped ? `, ${result.dropped} dropped` : ''} -> ${out}`);
  return 0;
}
