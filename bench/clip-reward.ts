// What the aesthetic reward costs at the paper's size: CLIP ViT-L/14's image tower (random
// weights: the real ones are not in this repository; the cost does not depend on them) with the
// LAION head, on a batch of 512 px images, split into the GPU preprocessing (quantise, PIL-exact
// bicubic 512 → 224, normalise) and the forward + head. The first batch (pipeline compiles) is
// reported apart from the mean of the others.
//
// node dist/bench/clip-reward.js [--batch 16] [--size 512] [--reps 3] [--dtype f32|f16] [--head FILE]

import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cast, noGrad, randomUniform, tidy } from '../engine/index.js';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import { ClipVisionModelWithProjection, clipPreprocess, vitL14VisionConfig } from '../diffusion/models/clip-vision.js';
import { AestheticHead, loadAestheticHead } from '../rewards/aesthetic-head.js';

async function main(argv: string[]): Promise<void> {
  const o = { batch: 16, size: 512, reps: 3, dtype: 'f32' as 'f32' | 'f16', head: resolve('..', 'shared', 'reference', 'laion-aesthetic', 'sac+logos+ava1-l14-linearMSE.safetensors') };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[++i];
    if (argv[i - 1] === '--batch') o.batch = Number(v);
    else if (argv[i - 1] === '--size') o.size = Number(v);
    else if (argv[i - 1] === '--reps') o.reps = Number(v);
    else if (argv[i - 1] === '--dtype') o.dtype = v as 'f32' | 'f16';
    else if (argv[i - 1] === '--head') o.head = v;
    else throw new Error(`unknown argument ${argv[i - 1]}\nusage: node dist/bench/clip-reward.js [--batch 16] [--size 512] [--reps 3] [--dtype f32|f16] [--head FILE]`);
  }
  const dev = await createNodeDevice();
  setDefaultDevice(dev);
  console.log(`device: ${dev.adapterName}`);
  const t0 = performance.now();
  const clip = new ClipVisionModelWithProjection(vitL14VisionConfig(), { device: dev, dtype: o.dtype, seed: 1 });
  clip.freeze();
  const head = existsSync(o.head) ? await loadAestheticHead(o.head, dev, 768) : new AestheticHead(768, dev);
  await clip.visual_projection.weight.data(); // wait for the init
  console.log(`ViT-L/14 image tower (${o.dtype}, random init) + LAION head${existsSync(o.head) ? '' : ' (random: shared head not found)'} in ${((performance.now() - t0) / 1000).toFixed(1)} s; weights ${(dev.memory().liveBytes / 2 ** 30).toFixed(2)} GiB`);
  const times: { pre: number; fwd: number }[] = [];
  for (let r = 0; r < o.reps; r++) {
    const x = randomUniform([o.batch, 3, o.size, o.size], 100 + r, { device: dev });
    await x.data();
    const a = performance.now();
    const px = clipPreprocess(x);
    await px.data();
    const b = performance.now();
    const scores = noGrad(() => tidy(() => { const e = clip.getImageFeatures(px); return head.forward(e.dtype === 'f32' ? e : cast(e, 'f32')); }));
    await scores.data();
    const c = performance.now();
    times.push({ pre: (b - a) / 1000, fwd: (c - b) / 1000 });
    console.log(`batch ${r + 1}: preprocessing ${(b - a).toFixed(0)} ms, CLIP + head ${(c - b).toFixed(0)} ms (${(o.batch / ((c - a) / 1000)).toFixed(2)} images/s), peak GPU ${(dev.memory().peakTotalBytes / 2 ** 30).toFixed(2)} GiB`);
    for (const t of [x, px, scores]) t.dispose();
  }
  const rest = times.slice(1);
  if (rest.length) {
    const m = (f: (t: { pre: number; fwd: number }) => number) => rest.reduce((s, t) => s + f(t), 0) / rest.length;
    console.log(`mean of batches 2..${o.reps}: preprocessing ${(m((t) => t.pre) * 1000).toFixed(0)} ms, CLIP + head ${(m((t) => t.fwd) * 1000).toFixed(0)} ms per ${o.batch} images of ${o.size} px`);
  }
  clip.dispose();
  head.dispose();
  dev.destroy();
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(() => process.exit(0), (e: Error) => { console.error(e.message); process.exit(1); });
}
