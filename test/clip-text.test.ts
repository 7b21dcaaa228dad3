// CLIP text encoder: config parsing, SD v1's parameter names and shapes, parity with
// transformers on the tiny reference checkpoint, a float64 reference forward (gelu, legacy
// pooling), gradients against finite differences, batch invariance, save/load round trips and
// load errors.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as E from '../engine/index.js';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors } from '../engine/safetensors.js';
import {
  ClipTextConfig, ClipTextModel, clipTextParameterShapes, loadClipTextModel, parseClipTextConfig, saveClipTextModel, sdV1ClipTextConfig,
} from '../diffusion/models/clip-text.js';
import { assertClose, assertThrows, finiteDiff, randArray, testDevice, repoRoot } from './helpers.js';
import { Params, encoderLayer64, hostParams, layerNorm64, randomizeModule } from './clip-ref64.js';

const dev = await testDevice();
const s = suite('clip-text');

const ref = resolve(repoRoot(), '..', 'shared', 'reference');
const tinyDir = join(ref, 'tiny-sd-pipe', 'text_encoder');
const ioPath = join(ref, 'tiny-sd-io', 'text_encoder_io.safetensors');
const haveRef = existsSync(tinyDir) && existsSync(ioPath);
const skip = (what: string) => console.log(`  (skipped ${what}: ${ref} not found)`);
const dir = mkdtempSync(join(tmpdir(), 'clip-text-'));

const TINY_JSON = JSON.parse(haveRef ? readFileSync(join(tinyDir, 'config.json'), 'utf8') : '{}');

/** A small config for the random-weight tests (odd sizes on purpose). */
function smallConfig(over: Partial<ClipTextConfig> = {}): ClipTextConfig {
  return {
    vocabSize: 11, hiddenSize: 8, intermediateSize: 13, numHiddenLayers: 2, numAttentionHeads: 2, maxPositionEmbeddings: 7,
    hiddenAct: 'quick_gelu', layerNormEps: 1e-5, bosTokenId: 8, eosTokenId: 10, padTokenId: 9, ...over,
  };
}

const randomize = (m: ClipTextModel, seed: number) => randomizeModule(m, seed);

// ---------------------------------------------------------------- float64 reference

/** CLIPTextModel forward in float64, straight from the definitions. */
function clip64(cfg: ClipTextConfig, P: Params, ids: number[][]) {
  const B = ids.length, L = ids[0].length, D = cfg.hiddenSize;
  const g = (n: string) => P.get(n)!;
  const N = B * L;
  let x: Float64Array = new Float64Array(N * D);
  const tok = g('embeddings.token_embedding.weight'), pos = g('embeddings.position_embedding.weight');
  for (let b = 0; b < B; b++) for (let l = 0; l < L; l++) for (let d = 0; d < D; d++) {
    x[(b * L + l) * D + d] = tok[ids[b][l] * D + d] + pos[l * D + d];
  }
  const hidden = [x];
  for (let i = 0; i < cfg.numHiddenLayers; i++) {
    x = encoderLayer64(x, B, L, cfg, P, `encoder.layers.${i}`, true);
    hidden.push(x);
  }
  const last = layerNorm64(x, N, D, g('final_layer_norm.weight'), g('final_layer_norm.bias'), cfg.layerNormEps);
  const pooled = new Float64Array(B * D);
  for (let b = 0; b < B; b++) {
    let p = 0;
    if (cfg.eosTokenId === 2) { for (let l = 1; l < L; l++) if (ids[b][l] > ids[b][p]) p = l; }
    else { const f = ids[b].indexOf(cfg.eosTokenId); p = f < 0 ? 0 : f; }
    for (let d = 0; d < D; d++) pooled[b * D + d] = last[(b * L + p) * D + d];
  }
  return { last, pooled, hidden };
}

// ---------------------------------------------------------------- config

s('config: the tiny reference config parses; bad values and unknown keys name the key', async () => {
  const base = {
    vocab_size: 49408, hidden_size: 32, intermediate_size: 37, num_hidden_layers: 2, num_attention_heads: 4, max_position_embeddings: 77,
    hidden_act: 'quick_gelu', layer_norm_eps: 1e-5, bos_token_id: 49406, eos_token_id: 49407, pad_token_id: 1, projection_dim: 512,
    torch_dtype: 'float32', architectures: ['CLIPTextModel'], _name_or_path: 'x', attention_dropout: 0, num_beams: 1,
  };
  const c = parseClipTextConfig(haveRef ? TINY_JSON : base);
  assert.equal([c.hiddenSize, c.intermediateSize, c.numHiddenLayers, c.numAttentionHeads, c.maxPositionEmbeddings], [32, 37, 2, 4, 77]);
  assert.equal([c.hiddenAct, c.eosTokenId, c.dtype], ['quick_gelu', 49407, 'float32']);
  assert.is(parseClipTextConfig({ ...base, hidden_act: 'gelu', torch_dtype: undefined, dtype: 'float16' }).dtype, 'float16');
  assert.is(parseClipTextConfig({ ...base, hidden_act: 'gelu' }).hiddenAct, 'gelu');
  await assertThrows(() => parseClipTextConfig({ ...base, hidden_act: 'relu' }), /"hidden_act"/, /relu/);
  await assertThrows(() => parseClipTextConfig({ ...base, rope_theta: 10000 }), /unknown key "rope_theta"/);
  await assertThrows(() => parseClipTextConfig({ ...base, hidden_size: undefined }), /"hidden_size"/);
  await assertThrows(() => parseClipTextConfig({ ...base, num_attention_heads: 5 }), /hidden_size.*num_attention_heads/);
  await assertThrows(() => parseClipTextConfig({ ...base, layer_norm_eps: 'x' }), /"layer_norm_eps"/);
  await assertThrows(() => parseClipTextConfig({ ...base, torch_dtype: 'int8' }), /"torch_dtype"/);
});

s("sd-v1: the model's parameter names and shapes are exactly transformers 5.x's, in order", async () => {
  const cfg = sdV1ClipTextConfig();
  const path = join(ref, 'sd_v1_parameter_shapes.json');
  const spec = clipTextParameterShapes(cfg);
  // 'empty' allocates without writing (no 123M-parameter init); the buffers go back at the end.
  const m = new ClipTextModel(cfg, { init: 'empty' });
  try {
    const actual = [...m.namedParameters()].map(([n, t]) => [n, [...t.shape]]);
    assert.equal(actual, spec, 'the module registers what clipTextParameterShapes says');
    if (!existsSync(path)) { skip('the comparison with sd_v1_parameter_shapes.json'); return; }
    const want = Object.entries(JSON.parse(readFileSync(path, 'utf8')).text_encoder as Record<string, number[]>);
    assert.is(want.length, 196);
    assert.equal(actual, want);
  } finally {
    m.dispose();
    dev.trim();
  }
});

// ---------------------------------------------------------------- parity with transformers

s('tiny reference checkpoint: last_hidden_state, hidden_states.1 and pooler_output match transformers', async () => {
  if (!haveRef) { skip('parity'); return; }
  const m = await loadClipTextModel(tinyDir, { device: dev });
  const io = await loadSafetensors(ioPath, { device: dev });
  try {
    const ids = io.get('input_ids')!;
    assert.equal([ids.dtype, ...ids.shape], ['i32', 2, 77]);
    const out = m.forward(ids, { outputHiddenStates: true });
    assert.equal(out.lastHiddenState.shape, [2, 77, 32]);
    assert.equal(out.pooled.shape, [2, 32]);
    assert.is(out.hiddenStates!.length, 3);
    const cmp = async (t: E.Tensor, key: string) => assertClose(await t.data(), await io.get(key)!.data(), 1e-4, 1e-5, key);
    await cmp(out.lastHiddenState, 'last_hidden_state');
    await cmp(out.hiddenStates![1], 'hidden_states.1');
    await cmp(out.pooled, 'pooler_output');
    // Batch invariance: sample 1 alone gives bit-identical results.
    const one = E.slice(ids, [1, 0], [2, 77]);
    const alone = m.forward(one);
    const full = await out.lastHiddenState.data(), part = await alone.lastHiddenState.data();
    assert.equal([...part], [...full.subarray(77 * 32)], 'sample 1 alone vs in the batch (last_hidden_state)');
    assert.equal([...(await alone.pooled.data())], [...(await out.pooled.data()).subarray(32)], 'pooled alone vs in the batch');
    for (const t of [out.lastHiddenState, out.pooled, ...out.hiddenStates!, one, alone.lastHiddenState, alone.pooled]) t.dispose();
  } finally {
    m.dispose();
    for (const t of io.values()) t.dispose();
  }
});

s('tiny reference checkpoint in f16 (storage): close to transformers', async () => {
  if (!haveRef) { skip('f16 parity'); return; }
  if (!dev.hasF16) { console.log('  (skipped f16: no shader-f16 on this device)'); return; }
  const m = await loadClipTextModel(tinyDir, { device: dev, dtype: 'f16' });
  const io = await loadSafetensors(ioPath, { device: dev });
  try {
    assert.ok(m.parameters().every((p) => p.dtype === 'f16'));
    const out = m.forward(io.get('input_ids')!);
    assert.is(out.lastHiddenState.dtype, 'f16');
    assertClose(await out.lastHiddenState.data(), await io.get('last_hidden_state')!.data(), 1e-2, 1e-2, 'f16 last_hidden_state');
    assertClose(await out.pooled.data(), await io.get('pooler_output')!.data(), 1e-2, 1e-2, 'f16 pooler_output');
    out.lastHiddenState.dispose(); out.pooled.dispose();
  } finally {
    m.dispose();
    for (const t of io.values()) t.dispose();
  }
});

// ---------------------------------------------------------------- float64 reference, random weights

s('random weights: forward matches a float64 reference (quick_gelu, gelu, legacy eos=2 pooling, no end token)', async () => {
  const ids = [[8, 3, 0, 10, 10], [8, 5, 6, 7, 1]]; // the second prompt has no end token → position 0
  for (const over of [{}, { hiddenAct: 'gelu' as const }, { eosTokenId: 2 }]) {
    const cfg = smallConfig(over);
    const m = new ClipTextModel(cfg, { seed: 7 });
    randomize(m, 100);
    const idsT = E.tensor(ids.flat(), [2, 5], 'i32');
    const out = m.forward(idsT, { outputHiddenStates: true });
    const r = clip64(cfg, await hostParams(m), ids);
    const what = JSON.stringify(over);
    assertClose(await out.lastHiddenState.data(), r.last, 1e-4, 1e-5, `${what} last_hidden_state`);
    assertClose(await out.pooled.data(), r.pooled, 1e-4, 1e-5, `${what} pooled`);
    for (let i = 0; i <= cfg.numHiddenLayers; i++) assertClose(await out.hiddenStates![i].data(), r.hidden[i], 1e-4, 1e-5, `${what} hidden_states.${i}`);
    for (const t of [idsT, out.lastHiddenState, out.pooled, ...out.hiddenStates!]) t.dispose();
    m.dispose();
  }
});

s('backward reaches every parameter; gradients match finite differences of the float64 reference', async () => {
  const cfg = smallConfig();
  const m = new ClipTextModel(cfg, { seed: 3 });
  randomize(m, 200);
  const ids = [[8, 1, 2, 10], [8, 4, 10, 9]];
  const B = 2, L = 4, D = cfg.hiddenSize;
  const wLast = randArray(B * L * D, 11), wPool = randArray(B * D, 12);
  // A weighted sum: a plain sum of layer-normed outputs has (nearly) zero gradient.
  const idsT = E.tensor(ids.flat(), [B, L], 'i32');
  const out = m.forward(idsT);
  const loss = E.tidy(() => E.add(E.sum(E.mul(out.lastHiddenState, E.tensor(wLast, [B, L, D]))), E.sum(E.mul(out.pooled, E.tensor(wPool, [B, D])))));
  E.backward(loss);
  for (const [n, p] of m.namedParameters()) {
    assert.ok(p.grad, `${n} has a gradient`);
    const gv = await p.grad!.data();
    assert.ok(gv.every(Number.isFinite), `${n}: finite gradient`);
    assert.ok(gv.some((v) => v !== 0), `${n}: non-zero gradient`);
  }
  // Spot-check entries of several parameters against central differences in float64.
  const P = await hostParams(m);
  const lossOf = (Q: Params) => {
    const r = clip64(cfg, Q, ids);
    let acc = 0;
    for (let i = 0; i < r.last.length; i++) acc += r.last[i] * wLast[i];
    for (let i = 0; i < r.pooled.length; i++) acc += r.pooled[i] * wPool[i];
    return acc;
  };
  const picks: [string, number][] = [
    ['embeddings.token_embedding.weight', 10 * D + 3], ['embeddings.position_embedding.weight', 2 * D + 1],
    ['encoder.layers.0.self_attn.q_proj.weight', 5], ['encoder.layers.0.self_attn.k_proj.bias', 2],
    ['encoder.layers.1.self_attn.v_proj.weight', 17], ['encoder.layers.1.self_attn.out_proj.bias', 4],
    ['encoder.layers.0.mlp.fc1.weight', 30], ['encoder.layers.1.mlp.fc2.bias', 6],
    ['encoder.layers.0.layer_norm1.weight', 1], ['encoder.layers.1.layer_norm2.bias', 7], ['final_layer_norm.weight', 3],
  ];
  const gpu = m.stateDict();
  for (const [n, idx] of picks) {
    const base = P.get(n)!;
    const [fd] = finiteDiff(([v]) => lossOf(new Map(P).set(n, v)), [base], 1e-5);
    const g = (await gpu.get(n)!.grad!.data())[idx];
    assertClose([g], [fd[idx]], 2e-3, 2e-4, `d loss / d ${n}[${idx}]`);
  }
  for (const t of [idsT, out.lastHiddenState, out.pooled, loss]) t.dispose();
  m.dispose();
});

s('LoRA injection into the attention projections: a fresh adapter changes nothing, and the forward uses it', async () => {
  const m = new ClipTextModel(smallConfig(), { seed: 4 });
  randomize(m, 400);
  const idsT = E.tensor([8, 1, 2, 10], [1, 4], 'i32');
  const before = m.forward(idsT);
  m.freeze();
  const inj = E.nn.injectLoRA(m, (n) => /self_attn\.(q|k|v|out)_proj$/.test(n), { rank: 2, seed: 1 });
  assert.is(inj.names.length, 8);
  assert.is(inj.names[0], 'encoder.layers.0.self_attn.k_proj');
  const after = m.forward(idsT);
  assert.equal([...(await after.lastHiddenState.data())], [...(await before.lastHiddenState.data())]);
  const loss = E.tidy(() => E.sum(E.mul(after.pooled, E.tensor(randArray(8, 5), [1, 8]))));
  E.backward(loss);
  for (const l of inj.layers) assert.ok((await l.loraB.grad!.data()).some((v) => v !== 0), 'lora_B gets a gradient through the forward');
  for (const t of [idsT, before.lastHiddenState, before.pooled, after.lastHiddenState, after.pooled, loss]) t.dispose();
  m.dispose();
});

// ---------------------------------------------------------------- save / load

s('save → load round trip: current key names, identical outputs; the reference file keys load too', async () => {
  const cfg = smallConfig();
  const m = new ClipTextModel(cfg, { seed: 5 });
  randomize(m, 300);
  const folder = join(dir, 'rt');
  await saveClipTextModel(m, folder);
  const h = await readSafetensorsHeader(join(folder, 'model.safetensors'));
  assert.equal([...h.tensors.keys()].sort(), clipTextParameterShapes(cfg).map(([n]) => n).sort());
  const m2 = await loadClipTextModel(folder, { device: dev });
  assert.equal(m2.config, { ...cfg, dtype: 'float32' });
  const idsT = E.tensor([8, 1, 2, 10, 9, 9, 8, 4, 10, 9, 9, 9], [2, 6], 'i32');
  const a = m.forward(idsT), b = m2.forward(idsT);
  assert.equal([...(await b.lastHiddenState.data())], [...(await a.lastHiddenState.data())]);
  assert.equal([...(await b.pooled.data())], [...(await a.pooled.data())]);
  for (const t of [idsT, a.lastHiddenState, a.pooled, b.lastHiddenState, b.pooled]) t.dispose();
  m.dispose(); m2.dispose();
});

s('loading: prefixed keys and the position_ids buffer are accepted; missing, unexpected and mis-shaped keys are one Error', async () => {
  const cfg = smallConfig();
  const m = new ClipTextModel(cfg, { seed: 9 });
  const folder = join(dir, 'bad');
  await saveClipTextModel(m, folder);
  const cfgJson = readFileSync(join(folder, 'config.json'), 'utf8');
  // transformers 4.x layout: every key prefixed, plus the int64-as-i32 buffer.
  const old = new Map<string, E.Tensor>([...m.stateDict()].map(([n, t]) => [`text_model.${n}`, t]));
  const posIds = E.tensor([0, 1, 2, 3, 4, 5, 6], [1, 7], 'i32');
  old.set('text_model.embeddings.position_ids', posIds);
  await saveSafetensors(join(folder, 'model.safetensors'), old);
  const m2 = await loadClipTextModel(folder, { device: dev });
  for (const [n, p] of m2.namedParameters()) assert.equal([...(await p.data())], [...(await m.stateDict().get(n)!.data())], n);
  m2.dispose();
  // Break it three ways at once.
  const broken = new Map(old);
  broken.delete('text_model.encoder.layers.1.mlp.fc1.bias');
  const extra = E.tensor([1, 2], [2]);
  broken.set('text_model.encoder.layers.0.extra', extra);
  const wrong = E.tensor(randArray(8 * 7, 1), [8, 7]);
  broken.set('text_model.encoder.layers.0.mlp.fc2.weight', wrong);
  await saveSafetensors(join(folder, 'model.safetensors'), broken);
  await assertThrows(() => loadClipTextModel(folder, { device: dev }),
    /missing keys \(1\): encoder\.layers\.1\.mlp\.fc1\.bias/, /unexpected keys \(1\): text_model\.encoder\.layers\.0\.extra/,
    /text_model\.encoder\.layers\.0\.mlp\.fc2\.weight: shape \[8,7\] in the file, \[8,13\] expected/);
  // A config the weights do not fit, and a config with an unknown key.
  await saveSafetensors(join(folder, 'model.safetensors'), old);
  writeFileSync(join(folder, 'config.json'), JSON.stringify({ ...JSON.parse(cfgJson), intermediate_size: 12 }));
  await assertThrows(() => loadClipTextModel(folder, { device: dev }), /fc1\.weight: shape \[13,8\] in the file, \[12,8\] expected/);
  writeFileSync(join(folder, 'config.json'), JSON.stringify({ ...JSON.parse(cfgJson), hidden_act: 'swish' }));
  await assertThrows(() => loadClipTextModel(folder, { device: dev }), /config\.json.*"hidden_act"/);
  for (const t of [posIds, extra, wrong]) t.dispose();
  m.dispose();
});

s('forward rejects bad input_ids', async () => {
  const m = new ClipTextModel(smallConfig(), { seed: 1 });
  const f = E.tensor([1, 2, 3], [1, 3]);
  const long = E.tensor(new Array(8).fill(1), [1, 8], 'i32');
  const flat = E.tensor([1, 2, 3], [3], 'i32');
  await assertThrows(() => m.forward(f), /ClipTextModel\.forward/, /\[1,3\] f32/, /i32 or u32/);
  await assertThrows(() => m.forward(long), /length 8 exceeds max_position_embeddings 7/);
  await assertThrows(() => m.forward(flat), /\[batch, length\]/);
  for (const t of [f, long, flat]) t.dispose();
  m.dispose();
});

s.after(() => rmSync(dir, { recursive: true, force: true }));
s.run();
