// The run folder's outputs: metrics.jsonl, grids, reward curve, HTML report, config.json.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { EpochInput, RunReport, readMetrics } from '../cli/report.js';
import { rewardStats } from '../rl/record.js';
import { resolveConfig } from '../rl/config.js';

const s = suite('report');

const img = (h: number, w: number, v: number) => ({ data: new Float32Array(3 * h * w).fill(v), height: h, width: w });

function allFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => (statSync(join(dir, n)).isDirectory() ? allFiles(join(dir, n)).map((f) => `${n}/${f}`) : [n]));
}

function record(epoch: number, rewards: number[], extra: Partial<EpochInput> = {}): EpochInput {
  return {
    epoch, rewards, prompts: rewards.map((_, i) => (i % 2 ? 'cat' : 'dog')),
    advantages: { mean: 0, std: 1 }, loss: 0.5 / (epoch + 1), approxKl: 1e-6 * epoch, clipfrac: 0.1, lr: 3e-4,
    seconds: { sampling: 1.5, reward: 0.25, training: 2, total: 3.75 }, samplesPerSecond: rewards.length / 3.75,
    memory: { liveBytes: 1 << 20, peakTotalBytes: 3 << 20 }, dropped: rewards.filter((r) => !Number.isFinite(r)).length,
    gridImages: [{ ...img(8, 8, 0.2), prompt: 'a dog', reward: -epoch }, { ...img(8, 8, 0.8), prompt: 'a cat', reward: -2 * epoch }],
    ...extra,
  };
}

s('rewardStats: finite values only, population std, NumPy percentiles', () => {
  const st = rewardStats([1, 2, 3, 4, NaN, 10]);
  assert.is(st.n, 5);
  assert.is(st.mean, 4);
  assert.ok(Math.abs(st.std - Math.sqrt((9 + 4 + 1 + 0 + 36) / 5)) < 1e-12);
  assert.is(st.min, 1); assert.is(st.max, 10);
  assert.ok(Math.abs(st.p10 - 1.4) < 1e-12); // (5-1)·0.1 = 0.4 between 1 and 2
  assert.is(st.p50, 3);
  assert.ok(Math.abs(st.p90 - 7.6) < 1e-12); // 3.6: 4 + 0.6·(10-4)
  assert.ok(Number.isNaN(rewardStats([NaN]).mean));
});

s('RunReport writes metrics.jsonl, grids, reward.svg, report.html, config.json; atomically', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ddpo-report-'));
  try {
    const config = resolveConfig({ epochs: 3 });
    const rep = new RunReport(dir, { config, facts: { device: 'test device', model: 'tiny', algorithm: 'ddpo-is' } });
    for (let e = 0; e < 3; e++) rep.addEpoch(record(e, [-3 + e, -2 + e, -1 + e, e === 1 ? NaN : e]));
    const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').split('\n');
    assert.is(lines.pop(), '', 'ends with a newline');
    assert.is(lines.length, 3);
    const rows = lines.map((l) => JSON.parse(l));
    assert.equal(rows.map((r) => r.epoch), [0, 1, 2]);
    assert.is(rows[0].reward_mean, -1.5);
    assert.is(rows[0].reward_min, -3); assert.is(rows[0].reward_max, 0);
    assert.is(rows[1].dropped, 1); assert.is(rows[1].samples, 4); assert.is(rows[1].reward_max, 0); // the NaN is left out
    assert.is(rows[2].time_training_s, 2);
    assert.is(rows[2].gpu_peak_bytes, 3 << 20);
    assert.is(rows[2].grid_reward_mean, -3);
    for (const k of ['reward_std', 'reward_p10', 'reward_p50', 'reward_p90', 'loss', 'approx_kl', 'clipfrac', 'lr', 'time_sampling_s', 'time_reward_s', 'samples_per_s', 'gpu_live_bytes']) {
      assert.is(typeof rows[2][k], 'number', k);
    }
    assert.is(rows[2].kl, null, 'absent values are null, not missing');

    const png = PNG.sync.read(readFileSync(join(dir, 'grids', 'epoch-0002.png')));
    assert.ok(png.width > 16 && png.height > 16);
    const svg = readFileSync(join(dir, 'reward.svg'), 'utf8');
    assert.match(svg, /^<svg/); assert.match(svg, /<polyline/); assert.match(svg, /reward per epoch/);
    assert.match(svg, /eval mean \(fixed seeds\)/);
    const html = readFileSync(join(dir, 'report.html'), 'utf8');
    assert.ok((html.match(/<svg/g) ?? []).length >= 4, 'inline curves');
    for (const t of ['reward per epoch', 'eval reward (fixed seeds)', '>loss<', 'approx_kl', 'clipfrac', 'test device', 'ddpo-is', 'data:image/png;base64,', '&quot;batches_per_epoch&quot;: 4']) assert.ok(html.includes(t), `report has ${t}`);
    assert.ok(!/src="(?!data:)/.test(html) && !/<script/.test(html), 'self-contained');
    assert.equal(JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')), config);
    assert.equal(allFiles(dir).filter((f) => f.includes('.tmp')), [], 'no temp files left');
    assert.equal(allFiles(dir).sort(), ['config.json', 'grids/epoch-0000.png', 'grids/epoch-0001.png', 'grids/epoch-0002.png', 'metrics.jsonl', 'report.html', 'reward.svg']);

    // Resuming at epoch 2 (the checkpoint was after epoch 1) drops epoch 2's line; re-adding it keeps one line per epoch.
    const again = new RunReport(dir, { resumeEpoch: 2 });
    assert.equal(readMetrics(join(dir, 'metrics.jsonl')).map((r) => r.epoch), [0, 1]);
    again.addEpoch(record(2, [5, 6]));
    again.addEpoch(record(2, [7, 8]));
    assert.equal(readMetrics(join(dir, 'metrics.jsonl')).map((r) => [r.epoch, r.reward_mean]), [[0, -1.5], [1, -1], [2, 7.5]]);
    assert.ok(readFileSync(join(dir, 'report.html'), 'utf8').includes('epoch 0'), 'first grid still embedded after resume');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

s('an epoch without grid or training metrics still reports; a corrupt metrics line is named', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ddpo-report-'));
  try {
    const rep = new RunReport(dir);
    rep.addEpoch({ epoch: 0, rewards: [1, 2], gridImages: [], loss: NaN });
    assert.is(readMetrics(join(dir, 'metrics.jsonl'))[0].loss, null);
    assert.match(readFileSync(join(dir, 'report.html'), 'utf8'), /gradient norm: no data yet/);
    assert.throws(() => rep.addEpoch({ epoch: -1, rewards: [] }), /epoch -1/);
    writeFileSync(join(dir, 'metrics.jsonl'), '{"epoch":0}\n{"epoch":1');
    assert.throws(() => new RunReport(dir), /line 2 is not JSON/);
    assert.ok(!existsSync(join(dir, 'grids')));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

s.run();
