// Save and load back: the tiny diffusers pipeline (older key names) is loaded, saved by our code,
// and loaded again; the UNet, VAE and text encoder give bit-identical outputs and a fixed-seed
// 2-step sample gives identical images. The saved folder uses the current names only. The
// named configs: sd-v1 gives the shared reference names and shapes for all three parts, and
// `tiny` builds a random pipeline with exactly the reference pipeline's names and shapes.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as E from '../engine/index.js';
import { readSafetensorsHeader } from '../engine/safetensors.js';
import { StableDiffusion, disposeStableDiffusion, loadStableDiffusion, saveStableDiffusion } from '../diffusion/load.js';
import { sample } from '../diffusion/pipeline.js';
import { createPipelineFromConfig, namedConfig } from '../diffusion/configs.js';
import { parseUnetConfig, unetParameterShapes } from '../diffusion/models/unet-config.js';
import { parseVaeConfig, vaeParameterShapes } from '../diffusion/models/vae.js';
import { clipTextParameterShapes, parseClipTextConfig } from '../diffusion/models/clip-text.js';
import { inspectFolder } from '../cli/inspect.js';
import { testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('roundtrip');

function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json')) && dirname(d) !== d) d = dirname(d);
  return d;
}
const REF = resolve(repoRoot(), '..', 'shared', 'reference');
const PIPE = join(REF, 'tiny-sd-pipe');
const have = existsSync(join(PIPE, 'model_index.json'));
const skip = (what: string) => console.log(`  (skipped ${what}: ${REF} not found)`);

/** Every output of the three networks on fixed inputs, and a 2-step sample, as host arrays. */
async function outputs(sd: StableDiffusion): Promise<Record<string, Float32Array>> {
  const o: Record<string, Float32Array> = {};
  const get = async (name: string, t: E.Tensor) => { o[name] = await t.data() as Float32Array; t.dispose(); };
  const x = E.randomNormal([1, 4, 8, 8], 1, { device: dev });
  const ctx = E.randomNormal([1, 6, 32], 2, { device: dev });
  const img = E.randomUniform([1, 3, 16, 16], 3, { low: -1, high: 1, device: dev });
  const ids = E.tensor(new Int32Array(sd.tokenizer.encodeBatch(['a red bicycle']).ids), [1, 77], 'i32', dev);
  await E.noGrad(async () => {
    await get('unet', sd.unet.forward(x, 321, ctx));
    const { mean, logvar } = sd.vae.encode(img);
    await get('vae.mean', mean);
    await get('vae.logvar', logvar);
    await get('vae.decode', sd.vae.decode(x));
    const te = sd.textEncoder.forward(ids);
    await get('text.last', te.lastHiddenState);
    await get('text.pooled', te.pooled);
  });
  for (const t of [x, ctx, img, ids]) t.dispose();
  const r = sample(sd, { prompts: ['a cat'], steps: 2, eta: 1, guidance: 5, seed: 42 });
  await get('images', r.images!);
  o['logProbs'] = await r.trajectory.logProbs!.data() as Float32Array;
  r.trajectory.dispose();
  return o;
}

s('tiny-sd-pipe → save → load: identical UNet / VAE / text-encoder outputs and identical 2-step samples; current names only', async () => {
  if (!have) return skip('the round trip');
  const dir = mkdtempSync(join(tmpdir(), 'ddpo-roundtrip-'));
  let a: StableDiffusion | null = null, b: StableDiffusion | null = null;
  try {
    a = await loadStableDiffusion(PIPE, { device: dev });
    const before = await outputs(a);
    await saveStableDiffusion(a, dir);
    b = await loadStableDiffusion(dir, { device: dev });
    const after = await outputs(b);
    assert.equal(Object.keys(after), Object.keys(before));
    for (const k of Object.keys(before)) {
      assert.ok(before[k].length > 0 && before[k].every(Number.isFinite), `${k}: finite`);
      assert.equal(after[k], before[k], `${k}: bit-identical after the round trip`);
    }
    const keys = async (rel: string) => [...(await readSafetensorsHeader(join(dir, rel))).tensors.keys()];
    const vaeKeys = await keys('vae/diffusion_pytorch_model.safetensors');
    assert.ok(vaeKeys.includes('decoder.mid_block.attentions.0.to_out.0.weight'));
    assert.not.ok(vaeKeys.some((k) => /\.(query|key|value|proj_attn)\./.test(k)), 'no old VAE attention names');
    const teKeys = await keys('text_encoder/model.safetensors');
    assert.not.ok(teKeys.some((k) => k.startsWith('text_model.') || k.includes('position_ids')), 'no text_model. prefix, no position_ids');
    const reports = await inspectFolder(dir);
    assert.equal(reports.map((r) => r.problems), [[], [], []]);
    assert.ok(reports.every((r) => r.params.every((p) => p.fileName === undefined)), 'every saved name is current');
    assert.is(JSON.parse(readFileSync(join(dir, 'vae', 'config.json'), 'utf8')).scaling_factor, 0.18215);
  } finally {
    if (a) disposeStableDiffusion(a);
    if (b) disposeStableDiffusion(b);
    rmSync(dir, { recursive: true, force: true });
  }
});

s('sd-v1 names and shapes from diffusion/configs.ts equal the shared reference for unet, vae and text_encoder', () => {
  const cfg = namedConfig('sd-v1');
  const ours = {
    unet: unetParameterShapes(parseUnetConfig(cfg.unet)),
    vae: vaeParameterShapes(parseVaeConfig(cfg.vae)),
    text_encoder: clipTextParameterShapes(parseClipTextConfig(cfg.text_encoder)),
  };
  const path = join(REF, 'sd_v1_parameter_shapes.json');
  if (!existsSync(path)) {
    skip('the sd-v1 shapes comparison');
    assert.is(ours.unet.length, 686);
    return;
  }
  const ref = JSON.parse(readFileSync(path, 'utf8')) as Record<string, Record<string, number[]>>;
  for (const part of ['unet', 'vae', 'text_encoder'] as const) {
    assert.equal(ours[part].map(([n]) => n), Object.keys(ref[part]), `${part}: names in order`);
    assert.equal(Object.fromEntries(ours[part]), ref[part], `${part}: shapes`);
  }
  assert.is(cfg.scheduler.beta_schedule, 'scaled_linear');
  assert.throws(() => namedConfig('sd-v2'), /unknown config "sd-v2"/);
});

s('createPipelineFromConfig("tiny"): a random pipeline with the reference pipeline\'s names and shapes, seeded', async () => {
  if (!have) return skip('createPipelineFromConfig');
  const sd = createPipelineFromConfig('tiny', { device: dev, seed: 5 });
  const again = createPipelineFromConfig('tiny', { device: dev, seed: 5 });
  try {
    const ref = await inspectFolder(PIPE);
    const shapes = (m: E.nn.Module) => Object.fromEntries([...m.stateDict()].map(([n, t]) => [n, [...t.shape]]));
    const refShapes = (i: number) => Object.fromEntries(ref[i].params.map((p) => [p.name, p.shape]));
    assert.equal(shapes(sd.unet), refShapes(0));
    assert.equal(shapes(sd.vae), refShapes(1));
    assert.equal(shapes(sd.textEncoder), refShapes(2));
    const w1 = await sd.unet.stateDict().get('conv_in.weight')!.data();
    const w2 = await again.unet.stateDict().get('conv_in.weight')!.data();
    assert.equal(w1, w2, 'same seed, same weights');
    assert.is(sd.tokenizer.encodeBatch(['a cat']).ids.length, 77);
  } finally {
    disposeStableDiffusion(sd);
    disposeStableDiffusion(again);
  }
  assert.throws(() => createPipelineFromConfig('tiny', { device: dev, tokenizerDir: '/nonexistent' }), /tokenizer files .* not in \/nonexistent.*tokenizerDir/);
});

s.run();
