// `ddpo judge` (train the recognisability judge on an image set's real images) and
// `ddpo eval-model` (its top-1 accuracy on a model's samples for every prompt it knows, at fixed
// seeds; writes eval-model.json and a captioned grid).

import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import { disposeStableDiffusion, loadStableDiffusion } from '../diffusion/load.js';
import { loadImageSet } from '../pretrain/dataset.js';
import { evaluateModel } from '../pretrain/evaluate.js';
import { classify, loadJudge, saveJudge, trainJudge } from '../pretrain/judge.js';
import { writeFileAtomic } from './files.js';
import { gridPNG } from './images.js';
import { Progress } from './progress.js';

export interface JudgeCliOptions {
  data: string;
  out: string;
  steps?: number;
  seed?: number;
  adapter?: string;
}

/** `ddpo judge`. */
export async function judgeCommand(o: JudgeCliOptions): Promise<number> {
  const set = loadImageSet(o.data);
  if (set.captions.length < 2) throw new Error(`${o.data}: a judge needs at least two captions to tell apart (the set has ${set.captions.length})`);
  const device = await createNodeDevice({ adapter: o.adapter });
  setDefaultDevice(device);
  const labels = set.records.map((r) => set.captions.indexOf(r.caption));
  const steps = o.steps ?? 400;
  const progress = new Progress(steps, 'judge', 'step');
  const t0 = performance.now();
  const { judge, loss } = await trainJudge(set.images, labels, set.captions, { device, steps, seed: o.seed ?? 0, onStep: (s) => progress.update(s) });
  try {
    const pred = await classify(judge, set.images);
    const acc = pred.filter((p, i) => p === labels[i]).length / labels.length;
    await saveJudge(judge, o.out, {
      trained_on: { data: resolve(o.data), images: set.records.length, fingerprint: set.fingerprint, steps, seed: o.seed ?? 0, final_loss: loss, seconds: (performance.now() - t0) / 1000, device: device.adapterName },
      real_image_accuracy: acc,
    });
    console.log(`judge: ${set.captions.length} classes, final training loss ${loss.toFixed(4)}, top-1 on the ${labels.length} real images ${(100 * acc).toFixed(1)} % -> ${o.out}`);
  } finally {
    judge.dispose();
    device.destroy();
  }
  return 0;
}

export interface EvalModelCliOptions {
  model: string;
  judge?: string;
  n?: number;
  seed?: number;
  steps?: number;
  guidance?: number;
  eta?: number;
  out?: string;
  adapter?: string;
}

/** `ddpo eval-model`. */
export async function evalModelCommand(o: EvalModelCliOptions): Promise<number> {
  const judgeDir = o.judge ?? join(o.model, 'judge');
  if (!existsSync(join(judgeDir, 'config.json'))) throw new Error(`no judge at ${judgeDir}; pass --judge DIR (one \`ddpo judge\` trained on the model's training set)`);
  const device = await createNodeDevice({ adapter: o.adapter });
  setDefaultDevice(device);
  const judge = await loadJudge(judgeDir, device);
  const sd = await loadStableDiffusion(o.model, { device });
  try {
    const progress = new Progress(judge.config.classes.length * (o.n ?? 4), 'eval-model', 'sample');
    const t0 = performance.now();
    const ev = await evaluateModel(sd, judge, { n: o.n, seed: o.seed, steps: o.steps, guidance: o.guidance, eta: o.eta, onBatch: (d) => progress.update(d) });
    const out = o.out ?? join(o.model, 'eval-model.json');
    writeFileAtomic(out, JSON.stringify({
      model: resolve(o.model), judge: resolve(judgeDir), device: device.adapterName, ...ev.settings,
      accuracy: ev.accuracy, chance: ev.chance, samples: ev.prompts.length, seconds: (performance.now() - t0) / 1000, per_prompt: ev.perPrompt,
    }, null, 2) + '\n');
    const grid = out.replace(/\.json$/, '') + '.png';
    writeFileAtomic(grid, gridPNG(ev.images, ev.prompts.map((p, i) => [p.replace(/^an? /, ''), ev.predictions[i] === p ? 'ok' : `→${ev.predictions[i].replace(/^an? /, '')}`]), { cols: ev.settings.n * Math.min(4, Math.ceil(16 / ev.settings.n)) }));
    console.log(`top-1 accuracy of the judge on ${ev.prompts.length} samples (${ev.settings.n} per prompt, seed ${ev.settings.seed}, ${ev.settings.steps} DDIM steps, guidance ${ev.settings.guidance}): ${(100 * ev.accuracy).toFixed(1)} % (chance ${(100 * ev.chance).toFixed(1)} %) -> ${out}, ${grid}`);
    for (const [p, e] of Object.entries(ev.perPrompt)) if (e.accuracy < 1) console.log(`  ${p}: ${e.correct}/${e.n} (${Object.entries(e.predicted).map(([q, k]) => `${q} ×${k}`).join(', ')})`);
  } finally {
    judge.dispose();
    disposeStableDiffusion(sd);
    device.destroy();
  }
  return 0;
}

