// The sampling pipeline on the tiny diffusers pipeline: trajectories, seeding, and the DDPO
// exactness property (re-evaluated log-probabilities are bit-identical, at any batch size).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import * as E from '../engine/index.js';
import { loadStableDiffusion, StableDiffusion } from '../diffusion/load.js';
import { TextEmbeddingCache, sample, stepLogProb } from '../diffusion/pipeline.js';
import { testDevice, repoRoot } from './helpers.js';

const dev = await testDevice();
const s = suite('pipeline');

const folder = resolve(repoRoot(), '..', 'shared', 'reference', 'tiny-sd-pipe');
const have = existsSync(folder);
let sd: StableDiffusion | null = null;
if (have) sd = await loadStableDiffusion(folder, { device: dev });
else console.log(`  (pipeline tests skipped: ${folder} not found)`);

s('sampling records a trajectory; re-evaluation at another batch size is bit-identical', async () => {
  if (!sd) return;
  const prompts = ['a cat riding a bike', 'a dog', 'an owl playing chess'];
  const { trajectory: tr, images } = sample(sd, { prompts, steps: 3, eta: 1, guidance: 5, seed: 7 });
  assert.is(tr.latents.length, 4);
  assert.equal(tr.timesteps, [667, 334, 1]);
  assert.equal([...tr.logProbs!.shape], [3, 3]);
  assert.equal([...images!.shape], [3, 3, 16, 16]);
  const img = await images!.data();
  assert.ok(img.every((v) => v >= 0 && v <= 1), 'images in [0, 1]');
  const recorded = await tr.logProbs!.data();
  for (let k = 0; k < 3; k++) {
    const [lpAll, lpOne] = E.noGrad(() => E.tidy(() => [stepLogProb(sd!, tr, k).logProb, stepLogProb(sd!, tr, k, [1, 2]).logProb]));
    const all = await lpAll.data(), one = await lpOne.data();
    lpAll.dispose(); lpOne.dispose();
    for (let b = 0; b < 3; b++) assert.is(all[b], recorded[b * 3 + k], `step ${k} sample ${b}: ratio exactly 1`);
    assert.is(one[0], recorded[1 * 3 + k], `step ${k}: sample 1 alone equals its value in the batch`);
  }
  tr.dispose(); images!.dispose();
});

s('the same seed gives the same images whatever the batch size; another seed differs', async () => {
  if (!sd) return;
  const cache = new TextEmbeddingCache(sd);
  const a = sample(sd, { prompts: ['a', 'b'], steps: 2, seed: 3, cache });
  const b = sample(sd, { prompts: ['b'], steps: 2, seed: 3, firstSample: 1, cache });
  const c = sample(sd, { prompts: ['b'], steps: 2, seed: 4, firstSample: 1, cache });
  const ia = await a.images!.data(), ib = await b.images!.data(), ic = await c.images!.data();
  const n = ib.length;
  assert.equal([...ia.slice(n)], [...ib], 'sample 1 of a batch of 2 equals sample 1 drawn alone');
  assert.ok(ic.some((v, i) => v !== ib[i]), 'another seed gives another image');
  assert.is(cache.size, 3, 'prompts and the empty negative prompt are cached');
  for (const r of [a, b, c]) { r.trajectory.dispose(); r.images!.dispose(); }
  cache.dispose();
});

s('η = 0 is deterministic and has no log-probability', async () => {
  if (!sd) return;
  const r = sample(sd, { prompts: ['x'], steps: 2, eta: 0, seed: 1, decode: false });
  assert.is(r.trajectory.logProbs, null);
  assert.throws(() => stepLogProb(sd!, r.trajectory, 0), /η = 0/);
  r.trajectory.dispose();
});

s.run();
