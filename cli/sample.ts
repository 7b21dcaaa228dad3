// `ddpo sample`: text-to-image with any diffusers-layout folder (or the built-in tiny model); a
// PNG per image, a captioned grid, and samples.json saying what made each file (prompt, seed,
// steps, η, guidance, model).
//
// Every flag is checked before anything loads, with messages that name the flag and its valid
// range (the number of steps against the model's scheduler config, read on its own first). A
// folder that already holds images is refused unless --overwrite, so one folder never mixes two
// runs' PNGs. No NaN reaches a PNG: a sample whose latents or decoded image went non-finite is
// an Error naming the sample and the DDIM step (nothing of its batch is written).

import { existsSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import { StableDiffusion, loadStableDiffusion, disposeStableDiffusion } from '../diffusion/load.js';
import { TextEmbeddingCache, sample } from '../diffusion/pipeline.js';
import { DDIMSchedule, SchedulerConfig } from '../diffusion/schedule.js';
import { SD_V1_SCHEDULER, createTinyPipeline } from '../rl/tiny-model.js';
import { RGBImage, batchImages, encodePNG, gridPNG } from './images.js';
import { writeFileAtomic } from './files.js';
import { Progress } from './progress.js';

export interface SampleCliOptions {
  model: string;
  prompt?: string[];
  prompts?: string;
  negative?: string;
  steps: number;
  eta: number;
  guidance: number;
  seed: number;
  batch: number;
  n: number;
  out: string;
  dtype: string;
  adapter?: string;
  /** Replace the PNGs, grid and samples.json already in --out. */
  overwrite?: boolean;
}

/** What samples.json records for each image. */
export interface SampleEntry {
  file: string;
  prompt: string;
  negative_prompt: string;
  /** The noise seed, and the sample's index in its stream (its noise is Philox (seed, index)). */
  seed: number;
  index: number;
  steps: number;
  eta: number;
  guidance: number;
  model: string;
  dtype: string;
}

const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'prompt';

/** The scheduler of the model a flag names, read without loading any weights (null: unreadable, loading will say why). */
function schedulerOf(model: string): DDIMSchedule | null {
  if (model === 'tiny') return new DDIMSchedule({ ...SD_V1_SCHEDULER });
  try {
    return new DDIMSchedule(JSON.parse(readFileSync(join(model, 'scheduler', 'scheduler_config.json'), 'utf8')) as SchedulerConfig);
  } catch {
    return null;
  }
}

/** The files a previous `ddpo sample` leaves in a folder. */
function sampleFiles(out: string): string[] {
  if (!existsSync(out)) return [];
  return readdirSync(out).filter((f) => f.endsWith('.png') || f === 'samples.json');
}

/** Checks every flag (all problems in one Error) and returns the prompts, each repeated -n times. */
export function checkSampleOptions(o: SampleCliOptions): string[] {
  const problems: string[] = [];
  const int = (flag: string, v: number, min: number, max = Number.MAX_SAFE_INTEGER, what = '') => {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) problems.push(`${flag} ${v}: give ${what}an integer from ${min}${max < Number.MAX_SAFE_INTEGER ? ` to ${max}` : ' up'}`);
  };
  const num = (flag: string, v: number, what: string) => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) problems.push(`${flag} ${v}: give ${what}, a number ≥ 0`);
  };
  if (!o.model) problems.push('--model: give a diffusers-layout folder, or tiny for the built-in small random model');
  else if (o.model !== 'tiny' && !(existsSync(o.model) && statSync(o.model).isDirectory())) {
    problems.push(`--model ${o.model}: not a folder. Give a diffusers-layout Stable Diffusion folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), or tiny for the built-in small random model`);
  }
  const schedule = o.model ? schedulerOf(o.model) : null;
  int('-n', o.n, 1, Number.MAX_SAFE_INTEGER, 'the number of images per prompt, ');
  int('--batch', o.batch, 1, Number.MAX_SAFE_INTEGER, 'the number of images per batch, ');
  int('--steps', o.steps, 1, schedule?.maxSteps ?? 1000, `the number of DDIM steps${schedule ? ` (this model's scheduler takes at most ${schedule.maxSteps})` : ''}, `);
  num('--eta', o.eta, 'DDIM η (0: deterministic, 1: DDPM-like)');
  num('--guidance', o.guidance, 'the classifier-free guidance scale (1: none)');
  int('--seed', o.seed, 0, Number.MAX_SAFE_INTEGER, 'the noise seed, ');
  if (o.dtype !== 'f32' && o.dtype !== 'f16') problems.push(`--dtype ${o.dtype}: give f32 or f16`);
  if (!o.out) problems.push('--out: give the folder to write the images to');
  const prompts = [...(o.prompt ?? [])];
  if (o.prompts) {
    try {
      prompts.push(...readFileSync(o.prompts, 'utf8').split(/\r?\n/).map((l) => l.trim()).filter(Boolean));
    } catch (e) {
      problems.push(`--prompts ${o.prompts}: cannot read it (${(e as Error).message}); give a text file with one prompt per line`);
    }
  }
  if (!prompts.length && !(o.prompts && problems.some((p) => p.startsWith('--prompts')))) problems.push('give --prompt "..." (repeatable) or --prompts FILE (one prompt per line)');
  if (o.out && !o.overwrite) {
    const old = sampleFiles(o.out);
    if (old.length) problems.push(`--out ${o.out} already holds ${old.length} file(s) of an earlier sampling (${old.slice(0, 3).join(', ')}${old.length > 3 ? ', …' : ''}); choose another --out, or pass --overwrite to replace them`);
  }
  if (problems.length) throw new Error(`ddpo sample:\n  ${problems.join('\n  ')}`);
  return prompts.flatMap((p) => Array.from({ length: o.n }, () => p));
}

/** Warns about prompts longer than the text encoder reads (they are cut, as in diffusers). */
function warnTruncated(sd: StableDiffusion, prompts: readonly string[], warn: (m: string) => void): void {
  const max = sd.tokenizer.modelMaxLength;
  for (const p of new Set(prompts)) {
    const n = sd.tokenizer.encode(p).length;
    if (n > max) warn(`warning: the prompt "${p.length > 60 ? `${p.slice(0, 57)}...` : p}" is ${n} tokens; the text encoder reads only the first ${max} (start and end included), the rest is ignored`);
  }
}

export async function sampleCommand(o: SampleCliOptions): Promise<number> {
  const all = checkSampleOptions(o);
  if (o.overwrite) for (const f of sampleFiles(o.out)) rmSync(join(o.out, f), { force: true });
  const dtype = o.dtype as 'f32' | 'f16';
  const dev = await createNodeDevice({ adapter: o.adapter });
  setDefaultDevice(dev);
  console.log(`device: ${dev.adapterName}`);
  const t0 = performance.now();
  let sd: StableDiffusion | null = null;
  let cache: TextEmbeddingCache | null = null;
  try {
    // 'tiny' is the model `ddpo train --model tiny --seed S` starts from.
    sd = o.model === 'tiny' ? createTinyPipeline({ device: dev, seed: o.seed, dtype }) : await loadStableDiffusion(o.model, { device: dev, dtype });
    console.log(`loaded ${o.model} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    warnTruncated(sd, [...all, ...(o.negative ? [o.negative] : [])], (m) => process.stderr.write(`${m}\n`));
    cache = new TextEmbeddingCache(sd);
    const images: RGBImage[] = [];
    const entries: SampleEntry[] = [];
    const progress = new Progress(all.length * o.steps, 'sampling');
    const t1 = performance.now();
    for (let i = 0; i < all.length; i += o.batch) {
      const batch = all.slice(i, i + o.batch);
      const r = sample(sd, {
        prompts: batch, steps: o.steps, eta: o.eta, guidance: o.guidance, seed: o.seed, firstSample: i,
        negativePrompt: o.negative, cache,
        onStep: (k) => progress.update(i * o.steps + k * batch.length),
      });
      const data = await r.images!.data() as Float32Array;
      const [n, c, h, w] = r.images!.shape;
      r.images!.dispose();
      r.trajectory.dispose();
      const bad = await r.nonFinite;
      if (bad.length) {
        const b = bad[0];
        throw new Error(`sample ${i + b.index} ("${b.prompt}", seed ${o.seed}): ${b.message}${bad.length > 1 ? ` (and ${bad.length - 1} more in its batch)` : ''}. The model's weights are probably NaN/Inf: check them with \`ddpo inspect --check-values ${o.model}\`. Nothing of this batch was written`);
      }
      const imgs = batchImages({ data, n, c, h, w });
      imgs.forEach((img, k) => {
        const idx = i + k;
        const file = `${String(idx).padStart(4, '0')}-${slug(all[idx])}.png`;
        writeFileAtomic(join(o.out, file), encodePNG(img));
        entries.push({ file, prompt: all[idx], negative_prompt: o.negative ?? '', seed: o.seed, index: idx, steps: o.steps, eta: o.eta, guidance: o.guidance, model: o.model, dtype: o.dtype });
      });
      images.push(...imgs);
      // Written after every batch, so an interrupted run still says what made the files it left.
      writeFileAtomic(join(o.out, 'samples.json'), JSON.stringify({ model: o.model, dtype: o.dtype, seed: o.seed, steps: o.steps, eta: o.eta, guidance: o.guidance, negative_prompt: o.negative ?? '', samples: entries }, null, 2) + '\n');
    }
    const secs = (performance.now() - t1) / 1000;
    writeFileAtomic(join(o.out, 'grid.png'), gridPNG(images, all.map((p, i) => [p, `seed ${o.seed} #${i}`])));
    console.log(`${all.length} images in ${secs.toFixed(1)} s (${(all.length / secs).toFixed(2)} images/s) -> ${o.out}/ (grid.png, one PNG per image, samples.json)`);
    return 0;
  } finally {
    cache?.dispose();
    if (sd) disposeStableDiffusion(sd);
    dev.destroy();
  }
}
