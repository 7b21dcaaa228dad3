// CLIP's image tower and the dual encoder: ViT-L/14's names and shapes (computed, not allocated),
// a float64 reference forward of the tower on tiny random configs (f32, and f16 storage within
// a stated tolerance), batch independence, get_text_features / logit_scale, and loading
// transformers folders (CLIPModel with the legacy config layout and int64 position_ids buffers,
// CLIPVisionModelWithProjection without them) with errors that name what is wrong.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as E from '../engine/index.js';
import {
  ClipModel, ClipVisionConfig, ClipVisionModelWithProjection, clipModelShapes, clipVisionWithProjectionShapes,
  loadClipModel, loadClipVisionModel, parseClipModelConfig, parseClipVisionConfig, visionTokens, vitL14ClipConfig, vitL14VisionConfig,
} from '../diffusion/models/clip-vision.js';
import { hostParams, linear64, randomizeModule } from './clip-ref64.js';
import { TINY_CLIP_JSON, numel, tinyClip, tinyVision, vision64, writeFolder } from './clip-fixtures.js';
import { assertClose, assertThrows, randArray, repoRoot, testDevice } from './helpers.js';
import { inspectCommand } from '../cli/inspect.js';

const dev = await testDevice();
const s = suite('clip-vision');
const dir = mkdtempSync(join(tmpdir(), 'clip-vision-'));
const ref = resolve(repoRoot(), '..', 'shared', 'reference');

const pixels = (B: number, cfg: ClipVisionConfig, seed: number) => randArray(B * cfg.numChannels * cfg.imageSize * cfg.imageSize, seed, -2, 2);

// ---------------------------------------------------------------- names and shapes

s('ViT-L/14: names and shapes of CLIPModel and CLIPVisionModelWithProjection, computed without allocating', async () => {
  const cfg = vitL14ClipConfig();
  const all = clipModelShapes(cfg);
  const shapes = new Map(all);
  assert.is(all.reduce((n, [, sh]) => n + numel(sh), 0), 427_616_513, 'openai/clip-vit-large-patch14 has 427,616,513 parameters');
  assert.equal(all[0], ['logit_scale', []], 'logit_scale first, as torch orders a module\'s own parameters');
  assert.equal(shapes.get('vision_model.embeddings.class_embedding'), [1024]);
  assert.equal(shapes.get('vision_model.embeddings.patch_embedding.weight'), [1024, 3, 14, 14]);
  assert.equal(shapes.get('vision_model.embeddings.position_embedding.weight'), [257, 1024]);
  assert.equal(shapes.get('vision_model.pre_layrnorm.weight'), [1024]);
  assert.equal(shapes.get('vision_model.encoder.layers.23.mlp.fc1.weight'), [4096, 1024]);
  assert.equal(shapes.get('vision_model.encoder.layers.23.self_attn.q_proj.bias'), [1024]);
  assert.ok(!shapes.has('vision_model.encoder.layers.24.mlp.fc1.weight'), '24 layers');
  assert.equal(shapes.get('vision_model.post_layernorm.bias'), [1024]);
  assert.equal(shapes.get('visual_projection.weight'), [768, 1024]);
  assert.equal(shapes.get('text_projection.weight'), [768, 768]);
  assert.ok(!shapes.has('visual_projection.bias') && !shapes.has('text_projection.bias'), 'projections have no bias');
  assert.equal(shapes.get('text_model.encoder.layers.11.mlp.fc2.weight'), [768, 3072]);
  const text = all.filter(([n]) => n.startsWith('text_model.'));
  assert.is(text.reduce((n, [, sh]) => n + numel(sh), 0), 123_060_480, 'the text tower is SD v1\'s text encoder');
  const sdPath = join(ref, 'sd_v1_parameter_shapes.json');
  if (existsSync(sdPath)) {
    const sd = Object.entries(JSON.parse(readFileSync(sdPath, 'utf8')).text_encoder as Record<string, number[]>);
    assert.equal(text, sd.map(([n, sh]) => [`text_model.${n}`, sh]), 'text tower names and shapes as transformers writes SD v1\'s text encoder');
  }
  const v = clipVisionWithProjectionShapes(vitL14VisionConfig());
  assert.is(v.length, 5 + 24 * 16 + 2 + 1);
  assert.is(v.reduce((n, [, sh]) => n + numel(sh), 0), 303_179_776 + 786_432);
  assert.equal(v, all.filter(([n]) => n.startsWith('vision_model.') || n === 'visual_projection.weight'));
});

s('modules register exactly the names and shapes the shape functions give, in order', () => {
  const m = new ClipModel(tinyClip(), { seed: 1 });
  const v = new ClipVisionModelWithProjection(tinyVision(), { seed: 2 });
  try {
    assert.equal([...m.namedParameters()].map(([n, t]) => [n, [...t.shape]]), clipModelShapes(tinyClip()));
    assert.equal([...v.namedParameters()].map(([n, t]) => [n, [...t.shape]]), clipVisionWithProjectionShapes(tinyVision()));
  } finally {
    m.dispose();
    v.dispose();
  }
});

// ---------------------------------------------------------------- configs

s('configs: openai\'s legacy CLIPConfig layout (text_config + text_config_dict overrides), vision configs; bad keys are named', async () => {
  const visionJson = {
    hidden_size: 16, intermediate_size: 20, num_hidden_layers: 3, num_attention_heads: 4, image_size: 28, patch_size: 14,
    projection_dim: 12, hidden_act: 'quick_gelu', layer_norm_eps: 1e-5, model_type: 'clip_vision_model', dropout: 0, attention_dropout: 0,
    initializer_range: 0.02, initializer_factor: 1, bos_token_id: null, eos_token_id: null, pad_token_id: null, num_beams: 1, torch_dtype: null,
  };
  const c = parseClipModelConfig({
    architectures: ['CLIPModel'], model_type: 'clip', projection_dim: 12, logit_scale_init_value: 2.6592, initializer_factor: 1,
    text_config: { vocab_size: 49408, hidden_size: 512, intermediate_size: 2048, num_hidden_layers: 12, num_attention_heads: 8, max_position_embeddings: 77, bos_token_id: 0, eos_token_id: 2, pad_token_id: 1, projection_dim: 512, top_k: 50, torch_dtype: null },
    text_config_dict: { hidden_size: 8, intermediate_size: 12, num_attention_heads: 2, num_hidden_layers: 1, projection_dim: 12 },
    vision_config: { ...visionJson, hidden_size: 1024 },
    vision_config_dict: { hidden_size: 16 },
    torch_dtype: 'float32', transformers_version: '4.21.0.dev0',
  });
  assert.equal([c.text.hiddenSize, c.text.intermediateSize, c.text.numHiddenLayers, c.text.eosTokenId, c.text.vocabSize], [8, 12, 1, 2, 49408]);
  assert.equal([c.vision.hiddenSize, c.vision.numHiddenLayers, c.vision.patchSize, c.vision.projectionDim, c.projectionDim, c.dtype], [16, 3, 14, 12, 12, 'float32']);
  assert.is(visionTokens(c.vision).tokens, 5);
  const v = parseClipVisionConfig({ ...visionJson, architectures: ['CLIPVisionModelWithProjection'], dtype: 'float16' });
  assert.equal([v.hiddenSize, v.projectionDim, v.dtype], [16, 12, 'float16']);
  await assertThrows(() => parseClipVisionConfig({ ...visionJson, use_rope: true }), /unknown key "use_rope"/);
  await assertThrows(() => parseClipVisionConfig({ ...visionJson, image_size: 30 }), /"image_size" = 30 is not a multiple of "patch_size" = 14/);
  await assertThrows(() => parseClipVisionConfig({ ...visionJson, hidden_act: 'relu' }), /"hidden_act"/);
  await assertThrows(() => parseClipVisionConfig({ ...visionJson, num_attention_heads: 3 }), /not divisible/);
  await assertThrows(() => parseClipModelConfig({ model_type: 'clip', text_config: { rope: 1 } }), /text_config: unknown key "rope"/);
  await assertThrows(() => parseClipModelConfig({ model_type: 'clip', logit_bias: 1 }), /unknown key "logit_bias"/);
});

// ---------------------------------------------------------------- forward vs float64

s('random weights: image embeddings, pooled state and last hidden state match the float64 reference (quick_gelu and gelu)', async () => {
  for (const act of ['quick_gelu', 'gelu'] as const) {
    const cfg = tinyVision({ hiddenAct: act });
    const m = new ClipVisionModelWithProjection(cfg, { seed: 3 });
    randomizeModule(m, act === 'gelu' ? 50 : 10);
    const B = 3;
    const x = pixels(B, cfg, 7);
    const px = E.tensor(x, [B, 3, 12, 12]);
    const out = E.noGrad(() => m.forward(px));
    const r = vision64(cfg, await hostParams(m), x, B);
    assertClose(await out.lastHiddenState.data(), r.last, 1e-4, 1e-5, `${act} last_hidden_state`);
    assertClose(await out.pooled.data(), r.pooled, 1e-4, 1e-5, `${act} pooled`);
    assertClose(await out.imageEmbeds.data(), r.embeds, 1e-4, 1e-5, `${act} image_embeds`);
    // Batch independence: sample 1 alone gives the same bits as row 1 of the batch.
    const one = E.tensor(x.subarray(432, 864), [1, 3, 12, 12]);
    const alone = m.getImageFeatures(one);
    assert.equal([...(await alone.data())], [...(await out.imageEmbeds.data())].slice(5, 10), 'a sample alone = its row in the batch, bit for bit');
    for (const t of [px, one, alone, out.lastHiddenState, out.pooled, out.imageEmbeds]) t.dispose();
    m.dispose();
  }
});

s('f16 storage: image embeddings within 5e-3 (abs) + 5e-3 (rel) of the float64 reference of the f16-rounded weights (measured worst: 8e-4 on 0.33)', async () => {
  if (!dev.hasF16) { console.log('  (skipped f16: no shader-f16 on this device)'); return; }
  const cfg = tinyVision();
  const m32 = new ClipVisionModelWithProjection(cfg, { seed: 3 });
  randomizeModule(m32, 10);
  const m16 = new ClipVisionModelWithProjection(cfg, { dtype: 'f16', init: 'empty' });
  m16.loadStateDict(m32.stateDict());
  const B = 2;
  const x = pixels(B, cfg, 9);
  const px = E.tensor(x, [B, 3, 12, 12]);
  const out = E.noGrad(() => m16.forward(px));
  assert.is(out.imageEmbeds.dtype, 'f16');
  const r = vision64(cfg, await hostParams(m16), x, B);
  assertClose(await out.imageEmbeds.data(), r.embeds, 5e-3, 5e-3, 'f16 image_embeds');
  assertClose(await out.pooled.data(), r.pooled, 5e-3, 5e-3, 'f16 pooled');
  for (const t of [px, out.lastHiddenState, out.pooled, out.imageEmbeds]) t.dispose();
  m32.dispose();
  m16.dispose();
});

s('CLIPModel: get_image_features, get_text_features = text_projection(pooled text state), logit_scale', async () => {
  const cfg = tinyClip();
  const m = new ClipModel(cfg, { seed: 5 });
  randomizeModule(m, 70);
  const P = await hostParams(m);
  const x = pixels(2, cfg.vision, 11);
  const px = E.tensor(x, [2, 3, 12, 12]);
  const img = m.getImageFeatures(px);
  assertClose(await img.data(), vision64(cfg.vision, P, x, 2).embeds, 1e-4, 1e-5, 'image features');
  const ids = E.tensor([8, 3, 4, 10, 9, 8, 1, 10, 9, 9], [2, 5], 'i32');
  const txt = m.getTextFeatures(ids);
  const pooled = await E.noGrad(() => m.text_model.forward(ids).pooled).data();
  const want = linear64(Float64Array.from(pooled), 2, 6, 5, P.get('text_projection.weight')!, null);
  assertClose(await txt.data(), want, 1e-5, 1e-6, 'text features');
  assert.is(m.logit_scale.shape.length, 0);
  assertClose(await m.logit_scale.data(), P.get('logit_scale')!, 0, 0, 'logit_scale');
  for (const t of [px, img, ids, txt]) t.dispose();
  m.dispose();
});

// ---------------------------------------------------------------- loading

s('loading: a CLIPModel folder (int64 position_ids buffers, torch_dtype), the image side of it alone, and a CLIPVisionModelWithProjection folder (f16 file, dtype, no buffers) give the source model\'s features', async () => {
  const src = new ClipModel(tinyClip(), { seed: 6 });
  randomizeModule(src, 90);
  const clipDir = join(dir, 'clip');
  await writeFolder(clipDir, TINY_CLIP_JSON, src, { buffers: [['text_model.embeddings.position_ids', 7], ['vision_model.embeddings.position_ids', 10]] });
  const visDir = join(dir, 'vision');
  const visionSide = (n: string) => n.startsWith('vision_model.') || n === 'visual_projection.weight';
  await writeFolder(visDir, { ...TINY_CLIP_JSON.vision_config, architectures: ['CLIPVisionModelWithProjection'], dtype: 'float16' }, src, { dtype: 'F16', filter: visionSide });
  const x = pixels(2, tinyVision(), 13);
  const px = E.tensor(x, [2, 3, 12, 12]);
  const ids = E.tensor([8, 3, 4, 10, 9, 8, 1, 2, 5, 10], [2, 5], 'i32');
  const want = await src.getImageFeatures(px).data();
  const wantText = await src.getTextFeatures(ids).data();
  const whole = await loadClipModel(clipDir, { device: dev });
  assert.equal([...(await whole.getImageFeatures(px).data())], [...want], 'CLIPModel folder: same image features');
  assert.equal([...(await whole.getTextFeatures(ids).data())], [...wantText], 'CLIPModel folder: same text features');
  const visionOnly = await loadClipVisionModel(clipDir, { device: dev });
  assert.ok(visionOnly instanceof ClipVisionModelWithProjection);
  assert.equal([...(await visionOnly.getImageFeatures(px).data())], [...want], 'image side of a CLIPModel folder: same features');
  const fromF16 = await loadClipVisionModel(visDir, { device: dev });
  assertClose(await fromF16.getImageFeatures(px).data(), want, 2e-2, 2e-2, 'f16 file loaded as f32');
  for (const m of [src, whole, visionOnly, fromF16]) m.dispose();
  px.dispose(); ids.dispose();
});

s('loading errors name the folder, file and keys: missing folder, CLIPVisionModel folder for CLIP score, missing / mis-shaped / unexpected keys', async () => {
  const src = new ClipModel(tinyClip(), { seed: 7 });
  await assertThrows(() => loadClipVisionModel(join(dir, 'nowhere')), /loadClipVisionModel: cannot read .*nowhere\/config\.json/);
  const visDir = join(dir, 'vision-bad');
  const visionSide = (n: string) => n.startsWith('vision_model.') || n === 'visual_projection.weight';
  await writeFolder(visDir, { ...TINY_CLIP_JSON.vision_config, architectures: ['CLIPVisionModelWithProjection'] }, src, { filter: visionSide, drop: ['vision_model.post_layernorm.bias'], reshape: { 'visual_projection.weight': [4, 8] } });
  await assertThrows(() => loadClipVisionModel(visDir), /the weights do not fit the config/, /missing keys \(1\): vision_model\.post_layernorm\.bias/, /visual_projection\.weight: shape \[4,8\] in the file, \[5,8\] expected/);
  await assertThrows(() => loadClipModel(visDir), /holds a CLIPVisionModelWithProjection \(no text tower\)/);
  const extraDir = join(dir, 'clip-extra');
  await writeFolder(extraDir, TINY_CLIP_JSON, src, { reshape: { 'vision_model.extra.weight': [3] } });
  await assertThrows(() => loadClipModel(extraDir), /unexpected keys \(1\): vision_model\.extra\.weight/);
  writeFileSync(join(extraDir, 'config.json'), JSON.stringify({ model_type: 'bert' }));
  await assertThrows(() => loadClipModel(extraDir), /not a CLIPModel nor a CLIPVisionModelWithProjection config/);
  src.dispose();
});

s('ddpo inspect: --config clip-vit-l-14 prints ViT-L/14\'s names and shapes; a CLIP folder is checked from its header', async () => {
  const out: string[] = [], err: string[] = [];
  assert.is(await inspectCommand(undefined, { config: 'clip-vit-l-14', json: true }, (t) => out.push(t), (t) => err.push(t)), 0);
  const json = JSON.parse(out[0]) as Record<string, Record<string, number[]>>;
  assert.equal(Object.entries(json.clip), clipModelShapes(vitL14ClipConfig()));
  out.length = 0;
  assert.is(await inspectCommand(undefined, { config: 'clip-vit-l-14-vision', summary: true }, (t) => out.push(t)), 0);
  assert.match(out[0], /392 tensors, 303,966,208 parameters/);
  const src = new ClipModel(tinyClip(), { seed: 9 });
  const folder = join(dir, 'inspect-clip');
  await writeFolder(folder, TINY_CLIP_JSON, src, { buffers: [['vision_model.embeddings.position_ids', 10]], reshape: { 'text_projection.weight': [5, 7] } });
  src.dispose();
  out.length = 0;
  assert.is(await inspectCommand(folder, {}, (t) => out.push(t), (t) => err.push(t)), 1);
  assert.match(err.join('\n'), /text_projection\.weight: shape \[5,7\] in the file, \[5,6\] expected/);
});

s('forward rejects pixel values of the wrong size, naming the expected shape', async () => {
  const m = new ClipVisionModelWithProjection(tinyVision(), { seed: 8 });
  const bad = E.zeros([1, 3, 16, 16]);
  await assertThrows(() => m.forward(bad), /pixel_values must be \[batch, 3, 12, 12\]/);
  bad.dispose();
  m.dispose();
});

s.after(() => { rmSync(dir, { recursive: true, force: true }); });
s.run();
