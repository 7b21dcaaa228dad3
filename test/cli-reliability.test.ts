// The command line under bad input and interruption, on the tiny model: every bad `ddpo sample`
// flag named before anything loads, `--model tiny`, long-prompt warnings and samples.json, a NaN
// model (sample names the step; inspect --check-values names the tensor), one run per folder,
// SIGTERM saving like SIGINT (a second one quits at once, the checkpoint intact), reward modules'
// syntax errors and relative paths, prompt files' trailing blank lines, and a report that shows
// what is informative. Processes are spawned only where the process itself is the point.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from '../engine/index.js';
import { copyInto } from '../engine/nn/module.js';
import { disposeStableDiffusion, saveStableDiffusion } from '../diffusion/load.js';
import { loadReward, resolveSpec } from '../rewards/load.js';
import { resolveConfig } from '../rl/config.js';
import {  } from '../rl/prompts.js';
import { promptsFromFile } from '../rl/prompts-file.js';
import { createTinyPipeline } from '../rl/tiny-model.js';
import { EpochRecord, epochLine } from '../rl/trainer.js';
import { SampleCliOptions, checkSampleOptions } from '../cli/sample.js';
import { inspectCommand } from '../cli/inspect.js';
import { claimRunFolder } from '../cli/run-folder.js';
import { RunReport } from '../cli/report.js';
import { lineChartSVG } from '../cli/plot.js';
import { assertThrows, repoRoot, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('cli reliability');
const scratch = mkdtempSync(join(tmpdir(), 'ddpo-cli-rel-'));
const DDPO = join(repoRoot(), 'dist', 'cli', 'ddpo.js');
const run = (args: string[], cwd = scratch) => spawnSync(process.execPath, [DDPO, ...args], { cwd, encoding: 'utf8', timeout: 120_000 });
const sha = (p: string) => createHash('sha256').update(readFileSync(p)).digest('hex');
const SMALL_RUN = ['--model', 'tiny', '--set', 'sample.steps=2', '--set', 'sample.batch_size=2', '--set', 'sample.batches_per_epoch=2', '--set', 'train.batch_size=2',
  '--set', 'train.timestep_fraction=0.5', '--set', 'eval.every=0', '--set', 'stat_tracking.min_count=2', '--set', 'stat_tracking.buffer_size=4'];

const throwsAll = (o: Partial<SampleCliOptions>, ...patterns: RegExp[]) => {
  let msg = '';
  try {
    checkSampleOptions({ model: 'tiny', prompt: ['a cat'], steps: 2, eta: 1, guidance: 5, seed: 0, batch: 1, n: 1, out: join(scratch, 'never'), dtype: 'f32', ...o });
  } catch (e) { msg = (e as Error).message; }
  assert.ok(msg, `expected an error for ${JSON.stringify(o)}`);
  for (const p of patterns) assert.match(msg, p);
};

s('ddpo sample: every bad flag is named with its valid range, all at once, before anything loads', () => {
  throwsAll({ n: 0 }, /-n 0: give the number of images per prompt, an integer from 1 up/);
  throwsAll({ batch: 0 }, /--batch 0: give the number of images per batch, an integer from 1/);
  throwsAll({ batch: 2.5 }, /--batch 2\.5: .*an integer/);
  throwsAll({ steps: 1000 }, /--steps 1000: .*at most 999.*from 1 to 999/);
  throwsAll({ steps: 0 }, /--steps 0/);
  throwsAll({ eta: -1, guidance: NaN, seed: -3, dtype: 'f64' }, /--eta -1: .*≥ 0/, /--guidance NaN/, /--seed -3/, /--dtype f64: give f32 or f16/);
  throwsAll({ model: join(scratch, 'no-such-model') }, /--model .*no-such-model: not a folder.*or tiny/);
  throwsAll({ prompt: [] }, /give --prompt/);
  throwsAll({ prompt: [], prompts: join(scratch, 'missing.txt') }, /--prompts .*missing\.txt: cannot read it/);
  const out = join(scratch, 'used');
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, '0000-a-cat.png'), 'x');
  throwsAll({ out }, /--out .*used already holds 1 file\(s\) of an earlier sampling.*--overwrite/);
  assert.equal(checkSampleOptions({ model: 'tiny', prompt: ['x', 'y'], steps: 999, eta: 0, guidance: 1, seed: 0, batch: 1, n: 2, out, dtype: 'f16', overwrite: true }), ['x', 'x', 'y', 'y']);
  // Flags commander parses name themselves too (ddpo train --epochs 2.5 used to say only "not an integer").
  const r = run(['train', '--epochs', '2.5']);
  assert.is(r.status, 1);
  assert.match(r.stderr, /option '--epochs <n>' argument '2\.5' is invalid/);
});

s('ddpo sample --model tiny: PNGs, grid and samples.json; a warning for a prompt longer than the text encoder reads; a used --out is refused', () => {
  const out = join(scratch, 'samples');
  const long = Array.from({ length: 500 }, (_, i) => `word${i % 7}`).join(' ');
  const r = run(['sample', '--model', 'tiny', '--prompt', 'a cat', '--prompt', long, '--steps', '2', '--guidance', '1', '--batch', '2', '--out', out]);
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stderr, /warning: the prompt "word0 word1.*" is \d+ tokens; the text encoder reads only the first 77/);
  const files = readdirSync(out).sort();
  assert.equal(files.length, 4, files.join());
  const meta = JSON.parse(readFileSync(join(out, 'samples.json'), 'utf8'));
  assert.is(meta.samples.length, 2);
  assert.equal(Object.keys(meta.samples[0]).sort(), ['dtype', 'eta', 'file', 'guidance', 'index', 'model', 'negative_prompt', 'prompt', 'seed', 'steps']);
  assert.equal([meta.samples[0].prompt, meta.samples[0].seed, meta.samples[0].steps, meta.samples[0].model], ['a cat', 0, 2, 'tiny']);
  assert.ok(files.includes(meta.samples[1].file) && files.includes('grid.png'));
  const again = run(['sample', '--model', 'tiny', '--prompt', 'a dog', '--out', out]);
  assert.is(again.status, 1);
  assert.match(again.stderr, /already holds 4 file\(s\)/);
});

s('a NaN model: ddpo sample fails naming the sample and the DDIM step and writes nothing; inspect --check-values names the tensor', async () => {
  const model = join(scratch, 'nan-model');
  const sd = createTinyPipeline({ device: dev, seed: 0, folder: mkdtempSync(join(scratch, 'tok-')) });
  try {
    const w = sd.unet.stateDict().get('conv_in.weight')!;
    copyInto(w, E.tensor(new Float32Array(w.size).fill(NaN), w.shape, 'f32', dev), 'test');
    await saveStableDiffusion(sd, model);
  } finally {
    disposeStableDiffusion(sd);
  }
  const out = join(scratch, 'nan-samples');
  const r = run(['sample', '--model', model, '--prompt', 'a cat', '--steps', '2', '--out', out]);
  assert.is(r.status, 1);
  assert.match(r.stderr, /sample 0 \("a cat", seed 0\): NaN\/Inf in the latents after DDIM step 1 of 2 \(t=501\)/);
  assert.match(r.stderr, /ddpo inspect --check-values/);
  assert.ok(!existsSync(out) || readdirSync(out).length === 0, 'no all-black PNG');
  const lines: string[] = [];
  assert.is(await inspectCommand(model, { checkValues: true, summary: true }, () => {}, (l) => lines.push(l)), 1);
  assert.match(lines.join('\n'), /"conv_in\.weight" \(F32, 576 values\) holds 576 non-finite values \(576 NaN/);
});

s('one run per folder: a folder holding an earlier run\'s files (no checkpoint) is refused, --overwrite clears only those; --resume says what to do', () => {
  const out = join(scratch, 'old-run');
  mkdirSync(join(out, 'grids'), { recursive: true });
  writeFileSync(join(out, 'metrics.jsonl'), '{"epoch":1}\n{"epoch":2}\n');
  writeFileSync(join(out, 'config.json'), JSON.stringify(resolveConfig({ model: 'tiny' })));
  writeFileSync(join(out, 'notes.txt'), 'mine');
  const r = run(['train', '--model', 'tiny', '--out', out, '--epochs', '1']);
  assert.is(r.status, 1);
  assert.match(r.stderr, /old-run already holds a run \(config\.json, metrics\.jsonl, grids\)\. It has no checkpoint to continue from\. .*--overwrite/);
  const res = run(['train', '--resume', out]);
  assert.is(res.status, 1);
  assert.match(res.stderr, /no checkpoint at .*nothing to continue.*--overwrite/);
  assert.equal(claimRunFolder(out, true).sort(), ['config.json', 'grids', 'metrics.jsonl']);
  assert.equal(readdirSync(out), ['notes.txt'], 'other files stay');
  assert.equal(claimRunFolder(out, false), []);
});

/** Spawns `ddpo ARGS` and resolves on exit; `onLine` sees each stderr line. */
function spawnDdpo(args: string[], onLine: (line: string, p: ChildProcess) => void): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [DDPO, ...args], { cwd: scratch });
    let stdout = '', stderr = '', partial = '';
    p.stdout.on('data', (d) => { stdout += d; });
    p.stderr.on('data', (d) => {
      stderr += d;
      partial += d;
      const lines = partial.split('\n');
      partial = lines.pop()!;
      for (const l of lines) onLine(l, p);
    });
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

s('SIGTERM saves like SIGINT; a second one quits at once with the last checkpoint intact', async () => {
  const out = join(scratch, 'term');
  let sent = false;
  const a = await spawnDdpo(['train', ...SMALL_RUN, '--epochs', '6', '--set', 'save_every=0', '--out', out], (l, p) => {
    if (!sent && /^epoch 1: reward/.test(l)) { sent = true; p.kill('SIGTERM'); }
  });
  assert.is(a.code, 0, a.stderr);
  const m = /stopped after epoch (\d+)/.exec(a.stdout);
  assert.ok(m, a.stdout + a.stderr);
  const ckpt = join(out, 'checkpoint');
  const done = JSON.parse(readFileSync(join(ckpt, 'trainer.json'), 'utf8')).state.epoch;
  assert.is(done, Number(m![1]), 'save_every = 0: the only checkpoint is the one SIGTERM made');
  assert.ok(done >= 1 && done < 6);
  const before = sha(join(ckpt, 'weights.safetensors'));
  let twice = false;
  const b = await spawnDdpo(['train', '--resume', out, '--epochs', '6'], (l, p) => {
    if (!twice && /^epoch \d+: reward/.test(l)) { twice = true; p.kill('SIGTERM'); setTimeout(() => p.kill('SIGTERM'), 50); }
  });
  assert.is(b.code, 143, b.stderr);
  assert.match(b.stderr, /SIGTERM again: quitting without saving; the last checkpoint is intact/);
  assert.is(sha(join(ckpt, 'weights.safetensors')), before);
  assert.is(JSON.parse(readFileSync(join(ckpt, 'trainer.json'), 'utf8')).state.epoch, done);
});

s('reward modules: a syntax error names the file and line; paths without ./ are relative to the current directory; a missing one says both what it tried', async () => {
  const dir = mkdtempSync(join(scratch, 'cwd-'));
  mkdirSync(join(dir, 'rw'));
  writeFileSync(join(dir, 'rw', 'ok.mjs'), 'export function ok(images) { return new Array(images.n).fill(1); }\n');
  writeFileSync(join(dir, 'rw', 'bad.mjs'), 'export function bad(images) {\n  return images.map((x) => {\n    return 1;\n\n');
  const spec = resolveSpec({ module: 'rw/ok.mjs', export: 'ok' }, dir);
  assert.match((spec as { module: string }).module, /^file:\/\/.*\/rw\/ok\.mjs$/);
  const f = await loadReward(spec);
  assert.equal(await f({ data: new Float32Array(12), n: 1, c: 3, h: 2, w: 2 }, ['p'], [{}]), [1]);
  await assertThrows(() => loadReward(resolveSpec({ module: 'rw/bad.mjs', export: 'bad' }, dir)), /syntax error at .*rw\/bad\.mjs:\d+/, /Unexpected end of input/);
  await assertThrows(() => loadReward(resolveSpec({ module: 'rw/nope.mjs', export: 'x' }, dir)), /"rw\/nope\.mjs" is neither a file \(relative to the current directory/);
});

s('a prompts file ending in blank lines is read; a blank line between prompts is still an Error', () => {
  const p = join(scratch, 'prompts.txt');
  writeFileSync(p, 'a cat\na dog\n\n  \n');
  const fn = promptsFromFile(p);
  assert.ok(fn);
  writeFileSync(p, 'a cat\n\na dog\n');
  assert.throws(() => promptsFromFile(p), /line 2 of .*prompts\.txt is blank/);
});

s('the report shows what is informative: no flat loss for one-step DDPO (the note says why), gradient norms, every grid linked, legends below the plot; a failed run its status', () => {
  const cfg = resolveConfig({ algorithm: 'ddpo-is' });
  const out = join(scratch, 'report');
  const rep = new RunReport(out, { config: cfg });
  const img = { data: new Float32Array(3 * 4 * 4).fill(0.5), height: 4, width: 4 };
  for (let e = 1; e <= 4; e++) {
    rep.addEpoch({ epoch: e, rewards: [1, 2 + e], loss: 1e-9, approxKl: 0, clipfrac: 0, gradNorm: 0.1 * e, optimizerSteps: 1, seconds: { sampling: 1, reward: 0.001, rewardCompute: 0.8, training: 2, total: 3 }, gridImages: [img], gridCaptions: [['a cat', 'reward 1']] });
  }
  rep.addEpoch({ epoch: 5, status: 'reward-failure', error: 'epoch 5: 2 of 2 samples dropped', rewards: [NaN, NaN], dropped: 2 });
  const html = readFileSync(join(out, 'report.html'), 'utf8');
  assert.ok(!/loss \(mean over/.test(html), 'no flat-zero loss chart');
  assert.match(html, /Loss not shown: with one optimizer step per epoch/);
  assert.match(html, /approx_kl and clipfrac are 0 in every epoch/);
  assert.match(html, /gradient norm/);
  for (let e = 1; e <= 4; e++) assert.match(html, new RegExp(`href="grids/epoch-000${e}\\.png"`));
  assert.match(html, /epoch 5<\/td><td>reward-failure: epoch 5: 2 of 2 samples dropped/);
  assert.match(html, /waiting for rewards 0\.004 s \(scoring itself took 3\.2 s/);
  const svg = lineChartSVG([{ name: 'mean', points: [[1, 1], [2, 2]] }, { name: 'p90', points: [[1, 2], [2, 3]] }], { title: 't', xLabel: 'x', yLabel: 'y' });
  const bottom = Number(/<line x1="70" x2="70" y1="40" y2="([\d.]+)"/.exec(svg)![1]);
  const legendY = [...svg.matchAll(/<text x="[\d.]+" y="([\d.]+)" fill="#333">/g)].map((m) => Number(m[1]));
  assert.ok(legendY.length === 2 && legendY.every((y) => y > bottom + 20), 'the legend sits below the x axis');
  const failedOnly = new RunReport(join(scratch, 'report-failed'), { config: cfg });
  failedOnly.addEpoch({ epoch: 1, status: 'non-finite', error: 'NaN', rewards: [], dropped: 4 });
  const h2 = readFileSync(join(scratch, 'report-failed', 'report.html'), 'utf8');
  assert.match(h2, /No epoch has finished yet/);
  assert.ok(!/no data yet/.test(h2), 'no empty chart boxes');
  assert.match(h2, /dropped samples<\/td><td>4/);
  // The console line: the gradient norm where the loss is 0 by construction.
  const rec = { epoch: 2, rewards: [1, 2], dropped: 1, loss: 0, gradNorm: 0.25, optimizerSteps: 1, skippedSteps: 0, approxKl: 0, clipfrac: 0, seconds: { sampling: 1, reward: 0, rewardCompute: 1, training: 1, total: 2 } } as unknown as EpochRecord;
  const line = epochLine(rec, cfg);
  assert.match(line, /grad norm 2\.500e-1/);
  assert.match(line, /1 dropped/);
  assert.ok(!/loss/.test(line), line);
});

s.after(() => rmSync(scratch, { recursive: true, force: true }));

s.run();
