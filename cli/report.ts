// What a training run leaves in its folder for people to read: metrics.jsonl (one JSON line per
// epoch that started, failed ones included, with its status), a captioned PNG grid of the
// fixed-seed samples per epoch (grids/epoch-0003.png), the reward curve (reward.svg), a
// self-contained report.html (curves inline, first and latest grids as base64 and a link to every
// epoch's, resolved config, run facts), and config.json. Every file is replaced atomically (temp file +
// rename), so a crash or Ctrl-C mid-write never leaves a half line or a truncated report: metrics
// are kept in memory and the whole file rewritten each epoch (a few kB per epoch).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ImageBatch } from '../rewards/types.js';
import { rewardStats } from '../rl/record.js';
import { writeFileAtomic } from './files.js';
import { RGBImage, batchImages, gridPNG } from './images.js';
import { Series, lineChartSVG } from './plot.js';

/** A fixed-seed sample for the grid: CHW image in [0, 1], with what to write under it. */
export interface GridImage extends RGBImage {
  prompt?: string;
  reward?: number;
  /** Caption lines; default: [prompt, "reward R"]. */
  caption?: string[];
}

/**
 * What the report needs from an epoch: a structural subset of the trainer's EpochRecord (fields
 * named as there), so the trainer's record can be passed as it is.
 */
export interface EpochInput {
  epoch: number;
  /** How the epoch ended (default 'ok'): the trainer's EpochRecord or FailedEpoch status. */
  status?: string;
  /** Why a failed epoch ended. */
  error?: string;
  /** One per sample; NaN for a dropped sample. */
  rewards: ArrayLike<number>;
  prompts?: readonly string[];
  /** Statistics of the advantages used for training (any of these keys). */
  advantages?: { mean?: number; std?: number; min?: number; max?: number; clippedFraction?: number };
  loss?: number | null;
  approxKl?: number | null;
  clipfrac?: number | null;
  kl?: number | null;
  /** Mean gradient norm before clipping. */
  gradNorm?: number | null;
  lr?: number | null;
  optimizerSteps?: number;
  /** Optimizer steps skipped for a NaN/Inf loss or gradient norm. */
  skippedSteps?: number;
  globalStep?: number;
  seconds?: { sampling?: number; reward?: number; rewardCompute?: number; training?: number; total?: number };
  samplesPerSecond?: number | null;
  memory?: { liveBytes?: number; peakTotalBytes?: number };
  dropped?: number;
  gridImages?: readonly GridImage[];
  /** The trainer's evaluation samples (NCHW in [0, 1]): the grid when gridImages is not given. */
  evalImages?: ImageBatch;
  /** Captions of the grid images when they are not on the images themselves. */
  gridCaptions?: readonly (readonly string[])[];
  gridPrompts?: readonly string[];
  gridRewards?: ArrayLike<number>;
  /** The trainer's name for gridRewards. */
  evalRewards?: ArrayLike<number>;
  /** A combined reward's per-part means. */
  rewardParts?: Record<string, number>;
  /** Counters the reward kept (a service's requests, retries, failures), by part. */
  rewardCounters?: Record<string, number>;
}

/** One line of metrics.jsonl. Non-finite numbers are written as null. */
export interface MetricsRow {
  epoch: number;
  /** 'ok', or how a failed epoch ended ('stopped', 'reward-failure', 'non-finite', 'error'). */
  status: string;
  error: string | null;
  samples: number;
  dropped: number;
  reward_mean: number | null;
  reward_std: number | null;
  reward_min: number | null;
  reward_max: number | null;
  reward_p10: number | null;
  reward_p50: number | null;
  reward_p90: number | null;
  adv_mean: number | null;
  adv_std: number | null;
  adv_clipped_fraction: number | null;
  loss: number | null;
  approx_kl: number | null;
  clipfrac: number | null;
  kl: number | null;
  grad_norm: number | null;
  lr: number | null;
  optimizer_steps: number | null;
  skipped_steps: number | null;
  global_step: number | null;
  time_sampling_s: number | null;
  /** The wait for rewards after the last batch was sampled. */
  time_reward_s: number | null;
  /** Each batch's scoring from submission to result, summed (it overlaps sampling). */
  time_reward_compute_s: number | null;
  time_training_s: number | null;
  time_total_s: number | null;
  samples_per_s: number | null;
  gpu_live_bytes: number | null;
  gpu_peak_bytes: number | null;
  grid_reward_mean: number | null;
  /** Standard deviation of the fixed-seed eval rewards over the eval samples (the unit the report measures a gain in). */
  grid_reward_std?: number | null;
  /** A combined reward: each part's mean (before weighting). */
  reward_parts?: Record<string, number | null>;
  /** The reward's counters (e.g. service requests, retries, failed samples). */
  reward_counters?: Record<string, number>;
  /** Wall-clock time the line was written (ISO 8601). */
  time: string;
}

const fin = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** The metrics.jsonl row of an epoch. */
export function metricsRow(rec: EpochInput, now = new Date()): MetricsRow {
  const r = rewardStats(rec.rewards);
  const dropped = rec.dropped ?? Array.from(rec.rewards).filter((x) => !Number.isFinite(x)).length;
  const grid = gridRewards(rec);
  return {
    epoch: rec.epoch,
    status: rec.status ?? 'ok',
    error: rec.error ?? null,
    samples: rec.rewards.length,
    dropped,
    reward_mean: fin(r.mean), reward_std: fin(r.std), reward_min: fin(r.min), reward_max: fin(r.max),
    reward_p10: fin(r.p10), reward_p50: fin(r.p50), reward_p90: fin(r.p90),
    adv_mean: fin(rec.advantages?.mean), adv_std: fin(rec.advantages?.std), adv_clipped_fraction: fin(rec.advantages?.clippedFraction),
    loss: fin(rec.loss), approx_kl: fin(rec.approxKl), clipfrac: fin(rec.clipfrac), kl: fin(rec.kl), grad_norm: fin(rec.gradNorm), lr: fin(rec.lr),
    optimizer_steps: fin(rec.optimizerSteps), skipped_steps: fin(rec.skippedSteps), global_step: fin(rec.globalStep),
    time_sampling_s: fin(rec.seconds?.sampling), time_reward_s: fin(rec.seconds?.reward), time_reward_compute_s: fin(rec.seconds?.rewardCompute),
    time_training_s: fin(rec.seconds?.training), time_total_s: fin(rec.seconds?.total),
    samples_per_s: fin(rec.samplesPerSecond),
    gpu_live_bytes: fin(rec.memory?.liveBytes), gpu_peak_bytes: fin(rec.memory?.peakTotalBytes),
    grid_reward_mean: grid.length ? fin(rewardStats(grid).mean) : null,
    grid_reward_std: grid.length ? fin(rewardStats(grid).std) : null,
    ...(rec.rewardParts ? { reward_parts: Object.fromEntries(Object.entries(rec.rewardParts).map(([k, v]) => [k, fin(v)])) } : {}),
    ...(rec.rewardCounters ? { reward_counters: { ...rec.rewardCounters } } : {}),
    time: now.toISOString(),
  };
}

/** The epoch's grid images: gridImages, else the trainer's evalImages. */
function gridImagesOf(rec: EpochInput): readonly GridImage[] {
  return rec.gridImages ?? (rec.evalImages ? batchImages(rec.evalImages) : []);
}

function gridRewards(rec: EpochInput): number[] {
  const imgs = gridImagesOf(rec);
  const given = rec.gridRewards ?? rec.evalRewards;
  return imgs.map((img, i) => img.reward ?? (given ? given[i] : NaN)).filter((x) => Number.isFinite(x));
}

function fmt(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toString();
}

function bytes(v: number | null | undefined): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  return v >= 2 ** 30 ? `${(v / 2 ** 30).toFixed(2)} GiB` : `${(v / 2 ** 20).toFixed(1)} MiB`;
}

/** Captions of an epoch's grid: those given, else [prompt, "reward R"]. */
export function gridCaptions(rec: EpochInput): string[][] {
  return gridImagesOf(rec).map((img, i) => {
    const given = img.caption ?? rec.gridCaptions?.[i];
    if (given) return [...given];
    const prompt = img.prompt ?? rec.gridPrompts?.[i];
    const reward = img.reward ?? (rec.gridRewards ?? rec.evalRewards)?.[i];
    return [prompt ?? `#${i}`, reward === undefined ? '' : `reward ${fmt(reward)}`].filter(Boolean);
  });
}

/** Parses metrics.jsonl (a missing file is no rows); throws naming the line that is not JSON. */
export function readMetrics(path: string): MetricsRow[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.trim()).map((l, i) => {
    try {
      return JSON.parse(l) as MetricsRow;
    } catch (e) {
      throw new Error(`${path}: line ${i + 1} is not JSON (${(e as Error).message})`);
    }
  });
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

type Key = keyof MetricsRow;

/** A line chart of metrics columns over epochs; null values are gaps left out. */
export function metricsChartSVG(rows: readonly MetricsRow[], cols: { key: Key; name: string; color?: string }[], title: string, yLabel: string): string {
  const series: Series[] = cols.map(({ key, name, color }) => ({
    name, color,
    points: rows.filter((r) => typeof r[key] === 'number' && Number.isFinite(r[key] as number)).map((r) => [r.epoch, r[key] as number] as [number, number]),
  })).filter((s) => s.points.length);
  if (!series.length) {
    return `<svg xmlns="http://www.w3.org/2000/svg" width="640" height="80" font-family="sans-serif" font-size="13"><rect width="640" height="80" fill="white"/><text x="320" y="45" text-anchor="middle" fill="#777">${esc(title)}: no data yet</text></svg>`;
  }
  return lineChartSVG(series, { title, xLabel: 'epoch', yLabel });
}

/**
 * The reward curve: the training samples' mean, with the p10–p90 spread and min/max as lighter
 * lines, and the evaluation grid's mean (the same noise every epoch, so its changes are the
 * model's, not sampling luck) in red.
 */
export function rewardChartSVG(rows: readonly MetricsRow[]): string {
  return metricsChartSVG(rows, [
    // Drawn in order, so the means go last, on top.
    { key: 'reward_max', name: 'max', color: '#c8c8c8' },
    { key: 'reward_min', name: 'min', color: '#c8c8c8' },
    { key: 'reward_p90', name: 'p90', color: '#8fbbd9' },
    { key: 'reward_p10', name: 'p10', color: '#8fbbd9' },
    { key: 'reward_mean', name: 'mean', color: '#1f77b4' },
    { key: 'grid_reward_mean', name: 'eval mean (fixed seeds)', color: '#d62728' },
  ], 'reward per epoch', 'reward');
}

/** A combined reward's parts over epochs (each part's own mean, before weighting), or null for a single reward. */
export function rewardPartsChartSVG(rows: readonly MetricsRow[]): string | null {
  const names = [...new Set(rows.flatMap((r) => Object.keys(r.reward_parts ?? {})))];
  if (!names.length) return null;
  const series: Series[] = names.map((name) => ({
    name,
    points: rows.filter((r) => typeof r.reward_parts?.[name] === 'number').map((r) => [r.epoch, r.reward_parts![name] as number] as [number, number]),
  })).filter((x) => x.points.length);
  return series.length ? lineChartSVG(series, { title: 'reward parts (unweighted means)', xLabel: 'epoch', yLabel: 'reward' }) : null;
}

/** Facts about the run shown at the top of the report (device, model, algorithm, ...). */
export type RunFacts = Record<string, string | number | boolean | null | undefined>;

export interface RunReportOptions {
  /** The resolved config: written to config.json and shown in the report. */
  config?: unknown;
  facts?: RunFacts;
  /**
   * When resuming at this epoch, metrics rows of this epoch and later (written after the
   * checkpoint the run resumes from) are dropped, so each epoch appears once.
   */
  resumeEpoch?: number;
  /** Report title (default "DDPO run"). */
  title?: string;
}

/** Writes and keeps up to date a run folder's metrics, grids, curves, HTML report and config. */
export class RunReport {
  readonly metricsPath: string;
  readonly rewardSvgPath: string;
  readonly htmlPath: string;
  readonly configPath: string;
  readonly gridsDir: string;
  private rows: MetricsRow[];
  private config: unknown;
  private facts: RunFacts;
  private readonly title: string;
  /** Grid PNGs kept for embedding: the first epoch's and the latest. */
  private firstGrid: { epoch: number; png: Buffer } | null = null;
  private latestGrid: { epoch: number; png: Buffer } | null = null;

  constructor(readonly outDir: string, opts: RunReportOptions = {}) {
    this.metricsPath = join(outDir, 'metrics.jsonl');
    this.rewardSvgPath = join(outDir, 'reward.svg');
    this.htmlPath = join(outDir, 'report.html');
    this.configPath = join(outDir, 'config.json');
    this.gridsDir = join(outDir, 'grids');
    this.title = opts.title ?? 'DDPO run';
    this.facts = { ...(opts.facts ?? {}) };
    this.rows = readMetrics(this.metricsPath);
    if (opts.resumeEpoch !== undefined) {
      const before = this.rows.length;
      this.rows = this.rows.filter((r) => r.epoch < opts.resumeEpoch!);
      if (this.rows.length !== before) this.writeMetrics();
    }
    // Reload the grids already on disk (a resumed run), so the report still shows the first one.
    for (const r of [this.rows[0], this.rows[this.rows.length - 1]]) {
      if (!r) continue;
      const p = this.gridPath(r.epoch);
      if (!existsSync(p)) continue;
      const g = { epoch: r.epoch, png: readFileSync(p) };
      if (r === this.rows[0]) this.firstGrid = g;
      this.latestGrid = g;
    }
    this.config = opts.config;
    if (opts.config !== undefined) this.writeConfig(opts.config);
  }

  /** Metrics rows so far, in epoch order. */
  get records(): readonly MetricsRow[] {
    return this.rows;
  }

  gridPath(epoch: number): string {
    return join(this.gridsDir, `epoch-${String(epoch).padStart(4, '0')}.png`);
  }

  /** Writes config.json (atomically) and shows the config in the report. */
  writeConfig(config: unknown): void {
    this.config = config;
    writeFileAtomic(this.configPath, JSON.stringify(config, null, 2) + '\n');
  }

  /** Adds or replaces facts shown in the report (e.g. the device once known). */
  setFacts(facts: RunFacts): void {
    Object.assign(this.facts, facts);
  }

  /**
   * Records an epoch: metrics.jsonl gains its line (an epoch already there is replaced), its grid
   * is written when it has grid images, and reward.svg and report.html are regenerated.
   */
  addEpoch(rec: EpochInput): MetricsRow {
    if (!Number.isInteger(rec.epoch) || rec.epoch < 0) throw new Error(`RunReport.addEpoch: epoch ${rec.epoch} is not a non-negative integer`);
    const row = metricsRow(rec);
    this.rows = [...this.rows.filter((r) => r.epoch !== rec.epoch), row].sort((a, b) => a.epoch - b.epoch);
    this.writeMetrics();
    const images = gridImagesOf(rec);
    if (images.length) {
      const png = gridPNG([...images], gridCaptions(rec));
      writeFileAtomic(this.gridPath(rec.epoch), png);
      const g = { epoch: rec.epoch, png };
      if (!this.firstGrid || this.firstGrid.epoch >= rec.epoch) this.firstGrid = g;
      if (!this.latestGrid || this.latestGrid.epoch <= rec.epoch) this.latestGrid = g;
    }
    writeFileAtomic(this.rewardSvgPath, rewardChartSVG(this.rows.filter((r) => (r.status ?? 'ok') === 'ok')));
    this.writeHtml();
    return row;
  }

  /** Regenerates report.html (e.g. after setFacts at the end of a run). */
  writeHtml(): void {
    writeFileAtomic(this.htmlPath, this.html());
  }

  private writeMetrics(): void {
    writeFileAtomic(this.metricsPath, this.rows.map((r) => JSON.stringify(r)).join('\n') + (this.rows.length ? '\n' : ''));
  }

  /**
   * The curves of the finished epochs, and notes on those left out: the loss where it says nothing
   * (DDPO with one optimizer step per epoch: the surrogate at ratio 1 is −mean(A) ≈ 0 by
   * construction), and approx_kl / clipfrac / the KL penalty while they are 0 in every epoch.
   */
  private charts(ok: readonly MetricsRow[]): { charts: string[]; notes: string[] } {
    if (!ok.length) return { charts: [], notes: ['No epoch has finished yet, so there are no curves.'] };
    const charts: string[] = [rewardChartSVG(ok)];
    const notes: string[] = [];
    const nonZero = (k: Key) => ok.some((r) => typeof r[k] === 'number' && r[k] !== 0);
    charts.push(metricsChartSVG(ok, [{ key: 'grad_norm', name: 'gradient norm (before clipping)' }], 'gradient norm', 'L2 norm'));
    const algorithm = (this.config as { algorithm?: string } | undefined)?.algorithm ?? '';
    const ddpo = algorithm.startsWith('ddpo');
    if (ddpo && ok.every((r) => (r.optimizer_steps ?? 0) <= 1)) {
      notes.push("Loss not shown: with one optimizer step per epoch, DDPO's surrogate is evaluated at ratio 1, where its value is −mean(advantage) ≈ 0 by construction (advantages are standardised). The gradient norm shows the size of each update instead.");
    } else {
      charts.push(metricsChartSVG(ok, [{ key: 'loss', name: 'loss' }], 'loss (mean over the epoch\'s optimizer steps)', 'loss'));
    }
    const kl = nonZero('kl');
    if (nonZero('approx_kl') || nonZero('clipfrac') || kl) {
      charts.push(metricsChartSVG(ok, [{ key: 'approx_kl', name: 'approx_kl' }, ...(kl ? [{ key: 'kl' as Key, name: 'KL penalty', color: '#2ca02c' }] : [])], 'approx_kl', 'approx KL'));
      if (algorithm === 'ddpo-is') charts.push(metricsChartSVG(ok, [{ key: 'clipfrac', name: 'clipfrac' }], 'clipfrac', 'fraction clipped'));
    } else if (ddpo) {
      notes.push("approx_kl and clipfrac are 0 in every epoch: each round's first optimizer step sees ratios of exactly 1, and they only move from a round's second step on (train.inner_epochs > 1, or several steps per epoch).");
    }
    charts.push(metricsChartSVG(ok, [
      { key: 'time_sampling_s', name: 'sampling' }, { key: 'time_reward_s', name: 'waiting for rewards' },
      { key: 'time_reward_compute_s', name: 'scoring (overlaps sampling)', color: '#bbbbbb' }, { key: 'time_training_s', name: 'training' },
    ], 'time per epoch', 'seconds'));
    const parts = rewardPartsChartSVG(ok);
    if (parts) charts.push(parts);
    return { charts, notes };
  }

  /** The report page: self-contained (inline SVG, base64 PNG, no external files or scripts). */
  html(): string {
    const rows = this.rows;
    const last = rows[rows.length - 1];
    const sum = (k: Key) => rows.reduce((s, r) => s + ((r[k] as number | null) ?? 0), 0);
    const facts: [string, string][] = Object.entries(this.facts).filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => [k, String(v)]);
    const ok = rows.filter((r) => (r.status ?? 'ok') === 'ok');
    const failed = rows.filter((r) => (r.status ?? 'ok') !== 'ok');
    if (rows.length) {
      const total = sum('time_total_s');
      facts.push(['epochs recorded', `${rows.length} (${rows[0].epoch}–${last.epoch})${failed.length ? `, ${failed.length} of them unfinished` : ''}`]);
      for (const f of failed) facts.push([`epoch ${f.epoch}`, `${f.status}: ${f.error ?? ''}`]);
      if (ok.length) {
        const [o0, o1] = [ok[0], ok[ok.length - 1]];
        facts.push(['reward (last finished epoch)', `${fmt(o1.reward_mean)} ± ${fmt(o1.reward_std)} at epoch ${o1.epoch} (epoch ${o0.epoch}: ${fmt(o0.reward_mean)})`]);
      }
      const evals = rows.filter((r) => r.grid_reward_mean !== null);
      if (evals.length) {
        const [e0, e1] = [evals[0], evals[evals.length - 1]];
        facts.push(['eval reward (fixed seeds)', `${fmt(e1.grid_reward_mean)} at epoch ${e1.epoch} (epoch ${e0.epoch}: ${fmt(e0.grid_reward_mean)}); each epoch's eval samples the model before that epoch's update`]);
        const sd0 = e0.grid_reward_std;
        if (evals.length > 1 && sd0 && sd0 > 0) {
          facts.push(['eval reward change', `${fmt((e1.grid_reward_mean! - e0.grid_reward_mean!) / sd0, 3)} standard deviations of epoch ${e0.epoch}'s eval rewards (σ ${fmt(sd0)} over its ${'samples'})`]);
        }
      }
      facts.push(['time (all epochs)', `${fmt(total, 3)} s: sampling ${fmt(sum('time_sampling_s'), 3)} s, waiting for rewards ${fmt(sum('time_reward_s'), 3)} s (scoring itself took ${fmt(sum('time_reward_compute_s'), 3)} s over all batches, mostly while sampling went on), training ${fmt(sum('time_training_s'), 3)} s`]);
      facts.push(['samples/s (last finished epoch)', fmt(ok[ok.length - 1]?.samples_per_s, 3)]);
      facts.push(['GPU memory peak', bytes(Math.max(...rows.map((r) => r.gpu_peak_bytes ?? 0)) || null)]);
      facts.push(['dropped samples', `${sum('dropped')}${sum('dropped') ? ` (${rows.filter((r) => r.dropped).map((r) => `epoch ${r.epoch}: ${r.dropped}`).join(', ')})` : ''}`]);
      if (sum('skipped_steps')) facts.push(['optimizer steps skipped (NaN/Inf)', String(sum('skipped_steps'))]);
      const lastOk = ok[ok.length - 1];
      if (lastOk?.reward_parts) facts.push(['reward parts (last finished epoch)', Object.entries(lastOk.reward_parts).map(([k, v]) => `${k}: ${fmt(v)}`).join(', ')]);
      const counters: Record<string, number> = {};
      for (const r of rows) for (const [k, v] of Object.entries(r.reward_counters ?? {})) counters[k] = (counters[k] ?? 0) + v;
      if (Object.keys(counters).length) facts.push(['reward counters (all epochs)', Object.entries(counters).map(([k, v]) => `${k} ${v}`).join(', ')]);
    }
    const { charts, notes } = this.charts(ok);
    const img = (g: { epoch: number; png: Buffer }) =>
      `<figure><img alt="epoch ${g.epoch} samples" src="data:image/png;base64,${g.png.toString('base64')}"><figcaption>epoch ${g.epoch}</figcaption></figure>`;
    const grids = [this.firstGrid, this.latestGrid].filter((g, i, a): g is { epoch: number; png: Buffer } => !!g && (i === 0 || g.epoch !== a[0]?.epoch));
    // Every epoch's grid, as links to the files beside the page.
    const allGrids = rows.filter((r) => existsSync(this.gridPath(r.epoch))).map((r) => `<a href="grids/${this.gridPath(r.epoch).split('/').pop()}">${r.epoch}</a>`);
    const cols: [Key, string, (v: never) => string][] = [
      ['epoch', 'epoch', (v: number) => String(v)], ['status', 'status', (v: string | undefined) => v ?? 'ok'], ['reward_mean', 'reward mean', fmt], ['reward_std', 'std', fmt],
      ['reward_p10', 'p10', fmt], ['reward_p90', 'p90', fmt], ['grad_norm', 'grad norm', fmt], ['loss', 'loss', fmt], ['approx_kl', 'approx_kl', fmt],
      ['clipfrac', 'clipfrac', fmt], ['lr', 'lr', fmt], ['time_total_s', 'seconds', (v: number | null) => fmt(v, 3)],
      ['samples_per_s', 'samples/s', (v: number | null) => fmt(v, 3)], ['gpu_peak_bytes', 'GPU peak', bytes], ['dropped', 'dropped', (v: number | null) => String(v ?? 0)],
    ];
    const table = rows.slice(-50).map((r) => `<tr>${cols.map(([k, , f]) => `<td>${esc(f(r[k] as never))}</td>`).join('')}</tr>`).join('\n');
    return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(this.title)}</title>
<style>
body{font-family:sans-serif;margin:24px;color:#222;max-width:1340px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
table.facts td{text-align:left} .charts{display:flex;flex-wrap:wrap;gap:8px}
figure{display:inline-block;margin:0 16px 0 0} img{image-rendering:pixelated;max-width:100%}
pre{background:#f6f6f6;padding:12px;font-size:12px;overflow:auto} .note{color:#555;font-size:13px;max-width:900px}
</style></head><body>
<h1>${esc(this.title)}</h1>
<p>Updated ${esc(new Date().toISOString())}. Files beside this page: metrics.jsonl (one line per epoch), grids/ (a PNG per epoch), reward.svg, config.json.</p>
<table class="facts">${facts.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join('')}</table>
<h2>Curves</h2>
<div class="charts">
${charts.join('\n')}
</div>
${notes.map((n) => `<p class="note">${esc(n)}</p>`).join('\n')}
<h2>Fixed-seed samples</h2>
${grids.length ? grids.map(img).join('\n') : '<p>No grid yet.</p>'}
${allGrids.length ? `<p>Every epoch's grid (files in grids/): ${allGrids.join(' · ')}</p>` : ''}
<h2>Epochs${rows.length > 50 ? ' (last 50)' : ''}</h2>
<table><tr>${cols.map(([, h]) => `<th>${esc(h)}</th>`).join('')}</tr>
${table}
</table>
<h2>Resolved config</h2>
<pre>${esc(this.config === undefined ? '(not recorded)' : JSON.stringify(this.config, null, 2))}</pre>
</body></html>
`;
  }
}
