// What a pretraining run leaves for people to read, beside its checkpoint: metrics.jsonl (one
// line per log window of either stage), grids/step-NNNNNN.png (the fixed-seed samples of the EMA
// model), loss.svg (both stages' loss curves, log scale), and a self-contained report.html (facts,
// curves inline, the first and latest grids, the resolved config). Files are replaced atomically.
// A resumed run drops the metrics written after its checkpoint, so each step appears once.

import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from './files.js';
import { gridPNG } from './images.js';
import { Series, lineChartSVG } from './plot.js';
import type { GridRecord, PretrainMetrics, Stage } from '../pretrain/trainer.js';

export type Facts = Record<string, string | number | boolean | null | undefined>;

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

function fmt(v: number | null | undefined, digits = 4): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return '–';
  if (v !== 0 && (Math.abs(v) < 1e-3 || Math.abs(v) >= 1e5)) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toString();
}

export class PretrainReport {
  readonly metricsPath: string;
  readonly htmlPath: string;
  readonly lossSvgPath: string;
  readonly gridsDir: string;
  private rows: PretrainMetrics[] = [];
  private facts: Facts;
  private grids: { step: number; png: Buffer }[] = [];

  /** `resumeAt`: the checkpoint's stage and step; rows after it are dropped (the run redoes them). */
  constructor(readonly outDir: string, private readonly config: unknown, facts: Facts = {}, resumeAt?: { stage: Stage; step: number }) {
    this.metricsPath = join(outDir, 'metrics.jsonl');
    this.htmlPath = join(outDir, 'report.html');
    this.lossSvgPath = join(outDir, 'loss.svg');
    this.gridsDir = join(outDir, 'grids');
    this.facts = { ...facts };
    if (existsSync(this.metricsPath)) {
      this.rows = readFileSync(this.metricsPath, 'utf8').split('\n').filter((l) => l.trim()).map((l, i) => {
        try { return JSON.parse(l) as PretrainMetrics; } catch (e) { throw new Error(`${this.metricsPath}: line ${i + 1} is not JSON (${(e as Error).message})`); }
      });
      if (resumeAt) {
        const before = this.rows.length;
        this.rows = this.rows.filter((r) => r.stage < resumeAt.stage || (r.stage === resumeAt.stage && r.step <= resumeAt.step));
        if (before !== this.rows.length) this.writeMetrics();
      } else {
        this.rows = [];
      }
    }
    if (existsSync(this.gridsDir)) {
      for (const f of readdirSync(this.gridsDir).sort()) {
        const m = /^step-(\d+)\.png$/.exec(f);
        if (m && (!resumeAt || resumeAt.stage === 2 && Number(m[1]) <= resumeAt.step)) this.grids.push({ step: Number(m[1]), png: readFileSync(join(this.gridsDir, f)) });
      }
    }
    writeFileAtomic(join(outDir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  }

  get records(): readonly PretrainMetrics[] { return this.rows; }

  setFacts(f: Facts): void { Object.assign(this.facts, f); }

  addMetrics(rows: readonly PretrainMetrics[]): void {
    for (const r of rows) {
      this.rows = this.rows.filter((x) => !(x.stage === r.stage && x.step === r.step));
      this.rows.push(r);
    }
    this.rows.sort((a, b) => a.stage - b.stage || a.step - b.step);
    this.writeMetrics();
    writeFileAtomic(this.lossSvgPath, this.lossChart());
  }

  addGrid(g: GridRecord): void {
    const png = gridPNG(g.images, g.prompts.map((p) => [p]), { cols: Math.min(8, g.images.length) });
    writeFileAtomic(join(this.gridsDir, `step-${String(g.step).padStart(6, '0')}.png`), png);
    this.grids = [...this.grids.filter((x) => x.step !== g.step), { step: g.step, png }].sort((a, b) => a.step - b.step);
    this.writeHtml();
  }

  private writeMetrics(): void {
    writeFileAtomic(this.metricsPath, this.rows.map((r) => JSON.stringify(r)).join('\n') + (this.rows.length ? '\n' : ''));
  }

  private chart(stage: Stage, keys: [keyof PretrainMetrics, string, string?][], title: string, yLabel: string, logY = true): string {
    const rows = this.rows.filter((r) => r.stage === stage);
    const series: Series[] = keys.map(([k, name, color]) => ({
      name, color, points: rows.filter((r) => typeof r[k] === 'number' && Number.isFinite(r[k] as number)).map((r) => [r.step, r[k] as number] as [number, number]),
    })).filter((s) => s.points.length);
    if (!series.length) return `<svg xmlns="http://www.w3.org/2000/svg" width="640" height="60" font-family="sans-serif" font-size="13"><text x="320" y="35" text-anchor="middle" fill="#777">${esc(title)}: no data yet</text></svg>`;
    return lineChartSVG(series, { title, xLabel: `stage ${stage} step`, yLabel, logY });
  }

  lossChart(): string {
    return this.chart(2, [['loss', 'ε-prediction MSE']], 'stage 2: UNet + text encoder loss', 'loss (log scale)');
  }

  writeHtml(): void {
    const rows = this.rows;
    const s1 = rows.filter((r) => r.stage === 1), s2 = rows.filter((r) => r.stage === 2);
    const facts: [string, string][] = Object.entries(this.facts).filter(([, v]) => v !== undefined && v !== null).map(([k, v]) => [k, String(v)]);
    const last = (xs: PretrainMetrics[]) => xs[xs.length - 1];
    if (s1.length) facts.push(['stage 1 (VAE)', `step ${last(s1).step}: loss ${fmt(last(s1).loss)} (recon MSE ${fmt(last(s1).recon)}, KL ${fmt(last(s1).kl)}); first logged ${fmt(s1[0].loss)}; ${fmt(last(s1).samples_per_s, 3)} images/s`]);
    if (s2.length) facts.push(['stage 2 (UNet + text)', `step ${last(s2).step}: loss ${fmt(last(s2).loss)}; first logged ${fmt(s2[0].loss)}; ${fmt(last(s2).samples_per_s, 3)} samples/s`]);
    const charts = [
      this.chart(1, [['loss', 'total'], ['recon', 'reconstruction MSE', '#2ca02c'], ['kl', 'KL per element', '#ff7f0e']], 'stage 1: VAE losses', 'loss (log scale)'),
      this.lossChart(),
      this.chart(2, [['samples_per_s', 'samples/s']], 'stage 2: speed', 'samples/s', false),
    ];
    const shown = this.grids.length > 1 ? [this.grids[0], this.grids[this.grids.length - 1]] : this.grids;
    const img = (g: { step: number; png: Buffer }) => `<figure><img alt="step ${g.step}" src="data:image/png;base64,${g.png.toString('base64')}"><figcaption>stage 2, step ${g.step} (EMA weights)</figcaption></figure>`;
    const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Pretraining</title>
<style>
body{font-family:sans-serif;margin:24px;color:#222;max-width:1340px}
h1{font-size:22px} h2{font-size:17px;margin-top:28px}
table{border-collapse:collapse;font-size:13px} td{border:1px solid #ddd;padding:3px 8px;text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:8px} figure{display:inline-block;margin:0 16px 8px 0}
img{image-rendering:pixelated;max-width:100%} pre{background:#f6f6f6;padding:12px;font-size:12px;overflow:auto}
</style></head><body>
<h1>Pretraining: VAE, then UNet + text encoder</h1>
<p>Updated ${esc(new Date().toISOString())}. Beside this page: metrics.jsonl (one line per log window), grids/ (a PNG per grid), loss.svg, config.json, checkpoint/, and model/ (the diffusers pipeline, when written).</p>
<table>${facts.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join('')}</table>
<h2>Curves</h2>
<div class="charts">
${charts.join('\n')}
</div>
<h2>Fixed-seed samples</h2>
${shown.length ? shown.map(img).join('\n') : '<p>No grid yet (stage 2 draws one every sample.every steps).</p>'}
<h2>Resolved config</h2>
<pre>${esc(JSON.stringify(this.config, null, 2))}</pre>
</body></html>
`;
    writeFileAtomic(this.htmlPath, html);
  }
}
