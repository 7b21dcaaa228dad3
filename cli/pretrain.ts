// `ddpo pretrain` (train a small SD model from scratch on a captioned image set: pretrain/trainer.ts)
// and `ddpo export` (write a run's EMA model as a diffusers folder, f32 or f16, from its checkpoint).
//
// The config resolves as defaults < --config FILE < --set pairs < dedicated flags; with --resume
// RUN the base is RUN/config.json and only PRETRAIN_RESUMABLE_KEYS may change. The image set is
// loaded and checked before anything is written. Progress shows steps, rate and ETA; Ctrl-C saves
// a checkpoint (and model/ in stage 2) and exits; `--resume` continues bit-identically.

import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import { PRETRAIN_CONFIG, PRETRAIN_RESUMABLE_KEYS, PretrainConfig, pretrainConfigDocs, resolvePretrainConfig } from '../pretrain/config.js';
import { loadImageSet } from '../pretrain/dataset.js';
import { PretrainResult, Pretrainer, PretrainState, Stage } from '../pretrain/trainer.js';
import { readCheckpoint } from '../rl/checkpoint.js';
import { parseSetArgs } from '../rl/config.js';
import { PretrainReport } from './pretrain-report.js';
import { Progress, fmtTime } from './progress.js';
import { readConfigFile } from './train.js';

export interface PretrainCliOptions {
  data?: string;
  out?: string;
  config?: string;
  set?: string[];
  steps?: number;
  resume?: string;
  adapter?: string;
  seed?: number;
  docs?: boolean;
  printConfig?: boolean;
}

/** The run's config (see the header). */
export function pretrainConfigFromCli(o: PretrainCliOptions): PretrainConfig {
  const pairs: [string, unknown][] = parseSetArgs(o.set ?? []);
  for (const [k, v] of [['data', o.data], ['out', o.out], ['train.steps', o.steps], ['adapter', o.adapter], ['seed', o.seed]] as [string, unknown][]) if (v !== undefined) pairs.push([k, v]);
  if (!o.resume) return resolvePretrainConfig(o.config ? readConfigFile(o.config) : undefined, pairs);
  const saved = join(o.resume, 'config.json');
  if (!existsSync(saved)) throw new Error(`--resume ${o.resume}: no config.json there; give the run folder a previous \`ddpo pretrain\` wrote (its --out)`);
  if (o.config) throw new Error('--resume continues a run with the config it started with; drop --config');
  const changed = pairs.map(([k]) => k).filter((k) => !PRETRAIN_RESUMABLE_KEYS.includes(k));
  if (changed.length) throw new Error(`--resume: ${changed.join(', ')} cannot change when resuming (the run would no longer match an uninterrupted one); only ${PRETRAIN_RESUMABLE_KEYS.join(', ')} can`);
  return resolvePretrainConfig(readConfigFile(saved), [['out', o.resume], ...pairs]);
}

/** `ddpo pretrain`. */
export async function pretrainCommand(o: PretrainCliOptions): Promise<number> {
  if (o.docs) { process.stdout.write(pretrainConfigDocs()); return 0; }
  const cfg = pretrainConfigFromCli(o);
  if (o.printConfig) { console.log(JSON.stringify(cfg, null, 2)); return 0; }
  const log = (m: string) => process.stderr.write(`${m}\n`);
  const ckpt = join(cfg.out, 'checkpoint', 'trainer.json');
  if (o.resume && !existsSync(ckpt)) throw new Error(`--resume ${o.resume}: no checkpoint at ${ckpt} (the run stopped before its first save); start it again without --resume`);
  if (!o.resume && existsSync(ckpt)) throw new Error(`${cfg.out} already holds a pretraining run; continue it with \`ddpo pretrain --resume ${cfg.out}\`, or choose another --out`);
  const data = loadImageSet(resolve(cfg.data!)); // every image checked before anything is written
  const device = await createNodeDevice({ adapter: cfg.adapter });
  setDefaultDevice(device);
  console.log(`device: ${device.adapterName}`);
  console.log(`data: ${data.records.length} images, ${data.captions.length} captions, ${data.size}×${data.size} (${cfg.data})`);
  const t0 = performance.now();
  let resumeAt: { stage: Stage; step: number } | undefined;
  if (o.resume) {
    const st = (await readCheckpoint<PretrainState>(join(cfg.out, 'checkpoint'))).state;
    resumeAt = { stage: st.stage, step: st.step };
  }
  const report = new PretrainReport(cfg.out, cfg, {
    device: device.adapterName, data: `${resolve(cfg.data!)} (${data.records.length} images, ${data.captions.length} captions, ${data.size} px)`,
    'stage 1': cfg.vae.from ? `skipped: VAE from ${cfg.vae.from}` : `${cfg.vae.steps} steps × ${cfg.vae.batch_size} images`,
    'stage 2': `${cfg.train.steps} steps × ${cfg.train.batch_size} samples`, started: new Date().toISOString(),
    ...(resumeAt ? { 'resumed at': `stage ${resumeAt.stage} step ${resumeAt.step}` } : {}),
  }, resumeAt);
  const stage1 = cfg.vae.from ? 0 : cfg.vae.steps;
  const total = stage1 + cfg.train.steps;
  const startAt = resumeAt ? (resumeAt.stage === 1 ? resumeAt.step : stage1 + resumeAt.step) : 0;
  const progress = new Progress(Math.max(total - startAt, 1), 'pretrain', 'step');
  let lastLoss = '';
  const opts = {
    config: cfg, data, runDir: cfg.out, device, log,
    onProgress: (p: { stage: Stage; step: number }) => progress.update((p.stage === 1 ? p.step : stage1 + p.step) - startAt, `stage ${p.stage} ${lastLoss}`),
    onMetrics: (rows: Parameters<PretrainReport['addMetrics']>[0]) => {
      report.addMetrics(rows);
      const r = rows[rows.length - 1];
      lastLoss = `loss ${r.loss.toPrecision(4)}  ${r.samples_per_s.toFixed(1)} samples/s`;
    },
    onGrid: (g: Parameters<PretrainReport['addGrid']>[0]) => report.addGrid(g),
  };
  let trainer: Pretrainer;
  try {
    trainer = o.resume ? await Pretrainer.resume(opts) : await Pretrainer.start(opts);
  } catch (e) {
    device.destroy();
    throw e;
  }
  let interrupts = 0;
  const onSigint = () => {
    if (++interrupts === 1) { log('\nstopping: finishing the current step, then saving a checkpoint (Ctrl-C again to quit without saving)'); trainer.requestStop(); }
    else { log('quitting without saving; the last checkpoint is intact'); process.exit(130); }
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  let result: PretrainResult | null = null;
  try {
    result = await trainer.run();
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    report.setFacts({ finished: new Date().toISOString(), status: result ? `${result.status} at stage ${result.stage} step ${result.step}` : 'failed (see the error)', 'wall time (this invocation)': fmtTime((performance.now() - t0) / 1000) });
    report.writeHtml();
    trainer.dispose();
    device.destroy();
  }
  const where = `report ${join(cfg.out, 'report.html')}${result.model ? `, model ${result.model}` : ''}`;
  if (result.status === 'done') console.log(`done: ${where}`);
  else console.log(`stopped at stage ${result.stage} step ${result.step}; ${where}. Continue with: ddpo pretrain --resume ${cfg.out}`);
  return 0;
}

export interface ExportCliOptions {
  run: string;
  out: string;
  dtype?: string;
  adapter?: string;
}

/** `ddpo export`: a pretraining run's EMA model (from its last checkpoint) as a diffusers folder. */
export async function exportCommand(o: ExportCliOptions): Promise<number> {
  const dtype = (o.dtype ?? 'f32') as 'f32' | 'f16';
  if (dtype !== 'f32' && dtype !== 'f16') throw new Error(`--dtype ${o.dtype}: f32 or f16`);
  const cfgPath = join(o.run, 'config.json');
  if (!existsSync(cfgPath)) throw new Error(`--run ${o.run}: no config.json; give a folder \`ddpo pretrain\` wrote`);
  const cfg = resolvePretrainConfig(JSON.parse(readFileSync(cfgPath, 'utf8')), [['out', o.run]]);
  const data = loadImageSet(resolve(cfg.data!));
  const device = await createNodeDevice({ adapter: o.adapter ?? cfg.adapter });
  setDefaultDevice(device);
  const trainer = await Pretrainer.resume({ config: cfg, data, runDir: o.run, device });
  try {
    if (trainer.stage !== 2) throw new Error(`${o.run}: the checkpoint is in stage 1 (the VAE); there is no UNet to export yet`);
    await trainer.exportModel(o.out, dtype);
    console.log(`wrote ${o.out} (${dtype}, EMA weights at stage 2 step ${trainer.step})`);
  } finally {
    trainer.dispose();
    device.destroy();
  }
  return 0;
}

export { PRETRAIN_CONFIG };
