// `ddpo sample`: text-to-image with any diffusers-layout folder; PNG per image and a grid.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import { loadStableDiffusion, disposeStableDiffusion } from '../diffusion/load.js';
import { TextEmbeddingCache, sample } from '../diffusion/pipeline.js';
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
  dtype: 'f32' | 'f16';
  adapter?: string;
}

const slug = (s: string) => s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 40) || 'prompt';

export async function sampleCommand(o: SampleCliOptions): Promise<number> {
  const prompts = [...(o.prompt ?? [])];
  if (o.prompts) prompts.push(...readFileSync(o.prompts, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean));
  if (!prompts.length) throw new Error('ddpo sample: give --prompt "..." (repeatable) or --prompts FILE');
  const all: string[] = [];
  for (const p of prompts) for (let i = 0; i < o.n; i++) all.push(p);
  const dev = await createNodeDevice({ adapter: o.adapter });
  setDefaultDevice(dev);
  console.log(`device: ${dev.adapterName}`);
  const t0 = performance.now();
  const sd = await loadStableDiffusion(o.model, { device: dev, dtype: o.dtype });
  console.log(`loaded ${o.model} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const cache = new TextEmbeddingCache(sd);
  const images: RGBImage[] = [];
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
    const imgs = batchImages({ data, n, c, h, w });
    imgs.forEach((img, k) => {
      const idx = i + k;
      writeFileAtomic(join(o.out, `${String(idx).padStart(4, '0')}-${slug(all[idx])}.png`), encodePNG(img));
    });
    images.push(...imgs);
    r.images!.dispose();
    r.trajectory.dispose();
  }
  const secs = (performance.now() - t1) / 1000;
  writeFileAtomic(join(o.out, 'grid.png'), gridPNG(images, all.map((p, i) => [p, `seed ${o.seed} #${i}`])));
  console.log(`${all.length} images in ${secs.toFixed(1)} s (${(all.length / secs).toFixed(2)} images/s) -> ${o.out}/ (grid.png and one PNG per image)`);
  cache.dispose();
  disposeStableDiffusion(sd);
  dev.destroy();
  return 0;
}
