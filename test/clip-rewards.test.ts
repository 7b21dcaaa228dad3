// The CLIP-based rewards: the LAION aesthetic head with its real weights (../shared/reference/
// laion-aesthetic) against a float64 reference; the aesthetic reward end to end on a tiny CLIP
// with that head (GPU preprocessing → tower → projection → normalise → head), non-finite images
// dropped, micro-batching and batch composition not changing any bit, memory flat over epochs
// (with and without offloading the weights); CLIP score; and bad options failing before any
// sampling, naming what is wrong.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as E from '../engine/index.js';
import { readSafetensorsHost } from '../engine/safetensors.js';
import { CLIP_IMAGE_PROCESSOR, ClipModel, ClipModelConfig, ClipVisionModelWithProjection, clipPreprocess } from '../diffusion/models/clip-vision.js';
import { loadClipTokenizer } from '../diffusion/text/load-node.js';
import { aestheticHeadShapes, loadAestheticHead } from '../rewards/aesthetic-head.js';
import { createAestheticReward } from '../rewards/aesthetic.js';
import { createClipScoreReward } from '../rewards/clip-score.js';
import { hostedRewardSpec } from '../rewards/hosted-options.js';
import { RewardScorer } from '../rewards/scorer.js';
import { ImageBatch } from '../rewards/types.js';
import { hostParams, linear64, randomizeModule } from './clip-ref64.js';
import { TINY_CLIP_JSON, tinyVision, vision64, writeFolder, writeHostSafetensors } from './clip-fixtures.js';
import { assertClose, assertThrows, randArray, repoRoot, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('clip-rewards');
const dir = mkdtempSync(join(tmpdir(), 'clip-rewards-'));
const ref = resolve(repoRoot(), '..', 'shared', 'reference');
const headPath = join(ref, 'laion-aesthetic', 'sac+logos+ava1-l14-linearMSE.safetensors');
const tokDir = join(ref, 'tiny-sd-pipe', 'tokenizer');
const haveHead = existsSync(headPath), haveTok = existsSync(join(tokDir, 'vocab.json'));
/** The tiny models' processor: shortest edge 12, 12 px crop. */
const PROC12 = { ...CLIP_IMAGE_PROCESSOR, shortestEdge: 12, cropHeight: 12, cropWidth: 12 };
const skip = (what: string) => console.log(`  (skipped ${what}: ${ref} not found)`);

/** The LAION head in float64 from the file: x/‖x‖, then layers 0, 2, 4, 6, 7 with no activations. */
async function head64(emb: Float64Array, B: number, D: number, path = headPath): Promise<Float64Array> {
  let x: Float64Array = new Float64Array(emb.length);
  for (let b = 0; b < B; b++) {
    let n = 0;
    for (let k = 0; k < D; k++) n += emb[b * D + k] ** 2;
    for (let k = 0; k < D; k++) x[b * D + k] = emb[b * D + k] / Math.sqrt(n);
  }
  let inF = D;
  for (const i of [0, 2, 4, 6, 7]) {
    const w = Float64Array.from((await readSafetensorsHost(path, `layers.${i}.weight`)).data);
    const bias = Float64Array.from((await readSafetensorsHost(path, `layers.${i}.bias`)).data);
    const outF = bias.length;
    x = linear64(x, B, inF, outF, w, bias);
    inF = outF;
  }
  return x;
}

/** A batch of n random images (values in [0, 1]) of h × w. */
function images(n: number, h: number, w: number, seed: number): ImageBatch {
  return { data: Float32Array.from(randArray(n * 3 * h * w, seed, 0, 1)), n, c: 3, h, w };
}

/** A tiny CLIPVisionModelWithProjection folder with ViT-L/14's projection width (768) and a 12 px processor. */
async function tinyAestheticClip(name: string): Promise<{ folder: string; model: ClipVisionModelWithProjection }> {
  const cfg = tinyVision({ projectionDim: 768 });
  const model = new ClipVisionModelWithProjection(cfg, { seed: 21 });
  randomizeModule(model, 500, 0.3);
  const folder = join(dir, name);
  await writeFolder(folder, { ...TINY_CLIP_JSON.vision_config, projection_dim: 768, architectures: ['CLIPVisionModelWithProjection'] }, model);
  writeFileSync(join(folder, 'preprocessor_config.json'), JSON.stringify({ size: { shortest_edge: 12 }, crop_size: { height: 12, width: 12 }, do_resize: true, do_center_crop: true, resample: 3 }));
  return { folder, model };
}

s('LAION head with the shared real weights: GPU = float64 reference (L2-normalised input, five linear layers, no activations)', async () => {
  if (!haveHead) { skip('the LAION head'); return; }
  const head = await loadAestheticHead(headPath, dev, 768);
  assert.equal([...head.namedParameters()].map(([n, t]) => [n, [...t.shape]]), aestheticHeadShapes(768));
  const B = 6;
  const emb = randArray(B * 768, 31, -1, 1);
  for (let k = 0; k < 768; k++) emb[5 * 768 + k] = Math.fround(emb[k] * 3.5); // a multiple of row 0
  const out = await head.forward(E.tensor(emb, [B, 768])).data();
  const want = await head64(emb, B, 768);
  assertClose(out, want, 1e-5, 1e-5, 'aesthetic scores');
  assertClose([out[5]], [out[0]], 1e-6, 1e-6, 'scaling an embedding does not change its score (L2 normalisation)');
  console.log(`  LAION head on random unit directions: ${[...out].map((v) => v.toFixed(3)).join(', ')}`);
  head.dispose();
});

s('LAION head errors name the file and the shape: wrong input width, a mis-shaped layer, not a head at all', async () => {
  if (!haveHead) { skip('the LAION head errors'); return; }
  await assertThrows(() => loadAestheticHead(headPath, dev, 512), /takes 768-d embeddings .* gives 512-d ones/);
  const bad = join(dir, 'bad-head.safetensors');
  const entries = aestheticHeadShapes(768).map(([name, shape]) => ({ name, dtype: 'F32' as const, shape: name === 'layers.2.weight' ? [128, 1000] : shape, values: new Float64Array(shape.reduce((a, b) => a * b, 1) + (name === 'layers.2.weight' ? -128 * 24 : 0)) }));
  writeHostSafetensors(bad, entries);
  await assertThrows(() => loadAestheticHead(bad, dev, 768), /aesthetic head .*bad-head\.safetensors: the weights do not fit/, /layers\.2\.weight: shape \[128,1000\] in the file, \[128,1024\] expected/);
  const notHead = join(dir, 'not-head.safetensors');
  writeHostSafetensors(notHead, [{ name: 'fc.weight', dtype: 'F32', shape: [2, 2], values: [1, 2, 3, 4] }]);
  await assertThrows(() => loadAestheticHead(notHead, dev), /no 2-D layers\.0\.weight/);
});

s('aesthetic reward end to end (tiny CLIP, real head): float64 reference of the whole chain; NaN images dropped; micro-batches and batch mates change no bit', async () => {
  if (!haveHead) { skip('the aesthetic reward'); return; }
  const { folder, model } = await tinyAestheticClip('aesthetic-clip');
  const P = await hostParams(model);
  const reward = await createAestheticReward({ clip: folder, head: headPath, batch_size: 3 }, { device: dev });
  const batch = images(5, 20, 16, 41);
  const got = await reward.score(batch, [], []);
  // Reference: the GPU's preprocessing (checked against PIL elsewhere), then the tower and head in float64.
  const x = E.tensor(batch.data, [5, 3, 20, 16]);
  const px = Float64Array.from(await clipPreprocess(x, PROC12).data());
  const emb = vision64(model.config, P, px, 5).embeds;
  assertClose(got, await head64(emb, 5, 768), 1e-4, 1e-4, 'aesthetic reward');
  // A diverged sample is dropped; its batch mates keep their exact values.
  const withNaN: ImageBatch = { ...batch, data: new Float32Array(batch.data) };
  withNaN.data[3 * 3 * 20 * 16 + 17] = NaN;
  const got2 = await reward.score(withNaN, [], []);
  assert.ok(Number.isNaN(got2[3]), 'the NaN image scores NaN (dropped)');
  assert.equal(got2.filter((_, i) => i !== 3), (got as number[]).filter((_, i) => i !== 3), 'the others: identical bits');
  const big = await createAestheticReward({ clip: folder, head: headPath, batch_size: 16 }, { device: dev });
  assert.equal(await big.score(batch, [], []), got, 'batch_size 16 vs 3: identical bits');
  await reward.close?.(); await big.close?.();
  model.dispose(); x.dispose();
});

s('memory: flat over epochs (scoring then release), and with offload the weights go too and come back for the next epoch', async () => {
  if (!haveHead) { skip('the memory check'); return; }
  const { folder, model } = await tinyAestheticClip('memory-clip');
  model.dispose();
  dev.trim();
  const base = dev.memory().liveBytes;
  for (const offload of [false, true]) {
    const reward = await createAestheticReward({ clip: folder, head: headPath, offload }, { device: dev });
    const loaded = dev.memory().liveBytes;
    assert.ok(loaded > base, 'weights are on the device after creation');
    const first = await reward.score(images(4, 24, 18, 51), [], []);
    const after: number[] = [];
    for (let epoch = 0; epoch < 3; epoch++) {
      const r = await reward.score(images(4, 24, 18, 51), [], []);
      assert.equal(r, first, `epoch ${epoch}: same scores${offload ? ' after reloading' : ''}`);
      await reward.release?.();
      const m = dev.memory();
      assert.is(m.pooledBytes, 0, 'release() returns pooled buffers to the driver');
      after.push(m.liveBytes);
    }
    assert.equal(after, after.map(() => offload ? base : loaded), offload ? 'offload: live bytes back to the baseline every epoch' : 'live bytes flat (the weights only)');
    await reward.close?.();
    assert.is(dev.memory().liveBytes, base, 'close() frees everything');
  }
});

s('CLIP score: scale·cos(image features, prompt features); scale 100 = torchmetrics per sample; prompts cached', async () => {
  if (!haveTok) { skip('CLIP score'); return; }
  const cfg: ClipModelConfig = {
    text: { vocabSize: 49408, hiddenSize: 6, intermediateSize: 7, numHiddenLayers: 2, numAttentionHeads: 2, maxPositionEmbeddings: 77, hiddenAct: 'quick_gelu', layerNormEps: 1e-5, bosTokenId: 49406, eosTokenId: 49407, padTokenId: 49407 },
    vision: tinyVision(), projectionDim: 5, logitScaleInit: 2.6592,
  };
  const m = new ClipModel(cfg, { seed: 61 });
  randomizeModule(m, 600, 0.3);
  const folder = join(dir, 'clip-score');
  await writeFolder(folder, {
    ...TINY_CLIP_JSON, projection_dim: 5,
    text_config: { ...TINY_CLIP_JSON.text_config, vocab_size: 49408, max_position_embeddings: 77, bos_token_id: 49406, eos_token_id: 49407, pad_token_id: 49407 },
  }, m);
  mkdirSync(folder, { recursive: true });
  for (const f of ['vocab.json', 'merges.txt']) copyFileSync(join(tokDir, f), join(folder, f));
  writeFileSync(join(folder, 'preprocessor_config.json'), JSON.stringify({ size: 12, crop_size: 12 }));
  const prompts = ['a cat', 'a dog riding a bike', 'a cat'];
  const batch = images(3, 14, 19, 71);
  const r1 = await createClipScoreReward({ clip: folder }, { device: dev });
  const r100 = await createClipScoreReward({ clip: folder, scale: 100, batch_size: 2 }, { device: dev });
  const got = await r1.score(batch, prompts, []);
  const got100 = await r100.score(batch, prompts, []);
  // Reference: image features from the float64 tower on the GPU-preprocessed pixels; text features from the model.
  const P = await hostParams(m);
  const x = E.tensor(batch.data, [3, 3, 14, 19]);
  const px = Float64Array.from(await clipPreprocess(x, PROC12).data());
  const img = vision64(cfg.vision, P, px, 3).embeds;
  const enc = loadClipTokenizer(tokDir).encodeBatch(prompts, { maxLength: 77, padding: 'max_length' });
  const txt = await m.getTextFeatures(E.tensor(enc.ids, [3, 77], 'i32')).data();
  const cos = [0, 1, 2].map((i) => {
    let d = 0, a = 0, b = 0;
    for (let k = 0; k < 5; k++) { d += img[i * 5 + k] * txt[i * 5 + k]; a += img[i * 5 + k] ** 2; b += txt[i * 5 + k] ** 2; }
    return d / Math.sqrt(a * b);
  });
  assertClose(got, cos, 1e-4, 1e-5, 'cosine');
  assertClose(got100, cos.map((c) => 100 * c), 1e-4, 1e-3, '×100');
  assert.ok(got.every((v) => Math.abs(v) <= 1), 'cosines are within [−1, 1]');
  await r1.close?.(); await r100.close?.();
  m.dispose(); x.dispose();
});

s('bad options fail in RewardScorer.ready() (before any sampling), naming the option and the path', async () => {
  const missing = join(dir, 'no-such-clip');
  await assertThrows(async () => { const sc = new RewardScorer(hostedRewardSpec('aesthetic', { clip: missing, head: headPath }), { context: { device: dev } }); try { await sc.ready(); } finally { await sc.close(); } },
    /reward createAestheticReward: aesthetic\.clip: .*no-such-clip does not exist/);
  await assertThrows(() => Promise.resolve(hostedRewardSpec('aesthetic', { clip: 'x' })), /reward\.aesthetic\.head: missing/);
  await assertThrows(() => Promise.resolve(hostedRewardSpec('clip_score', { clip: 'x', scale: -1, foo: 1 })), /unknown key\(s\) foo/, /scale: expected a positive number/);
  if (!haveHead) return;
  const { folder, model } = await tinyAestheticClip('wrong-width-clip');
  model.dispose();
  // A CLIP whose projection is not 768 wide cannot feed the ViT-L/14 head.
  const narrow = new ClipVisionModelWithProjection(tinyVision(), { seed: 3 });
  await writeFolder(join(dir, 'narrow'), { ...TINY_CLIP_JSON.vision_config, architectures: ['CLIPVisionModelWithProjection'] }, narrow);
  narrow.dispose();
  await assertThrows(() => createAestheticReward({ clip: join(dir, 'narrow'), head: headPath }, { device: dev }), /takes 768-d embeddings .* gives 5-d ones/);
  await assertThrows(() => createAestheticReward({ clip: folder, head: folder }, { device: dev }), /aesthetic\.head: .* is not a file/);
});

s.after(() => { rmSync(dir, { recursive: true, force: true }); });
s.run();
