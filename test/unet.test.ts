// diffusers' UNet2DConditionModel: config validation, SD v1 parameter names and shapes (without
// allocating), parity with diffusers' outputs and intermediates on the tiny pipeline, save/load
// round trip and load errors, batch independence, the linear-projection path against the conv
// one, and LoRA on the attention projections (gradients reach only the adapters, a directional
// derivative check through the whole UNet, a short training run lowers the loss).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as E from '../engine/index.js';
import { Adam } from '../engine/optim.js';
import { readSafetensorsHost, saveSafetensors } from '../engine/safetensors.js';
import { LoRALinear } from '../engine/nn/index.js';
import { SD_V1_UNET_CONFIG, parseUnetConfig, unetParameterShapes } from '../diffusion/models/unet-config.js';
import { UNet2DConditionModel, injectUnetLoRA, loadUnet, saveUnet, unetLoRAStateDict } from '../diffusion/models/unet.js';
import { assertClose, assertThrows, randTensor, testDevice, repoRoot } from './helpers.js';

const dev = await testDevice();
const s = suite('unet');

const REF = resolve(repoRoot(), '..', 'shared', 'reference');
const UNET_DIR = join(REF, 'tiny-sd-pipe', 'unet');
const IO = join(REF, 'tiny-sd-io', 'unet_io.safetensors');
const haveRef = existsSync(join(UNET_DIR, 'config.json')) && existsSync(IO);
const skip = (what: string) => console.log(`  (skipped ${what}: reference data not found under ${REF})`);
const tinyRaw = (): Record<string, unknown> => (haveRef ? JSON.parse(readFileSync(join(UNET_DIR, 'config.json'), 'utf8')) : {
  // The tiny pipeline's config, for running the self-contained tests without the reference data.
  act_fn: 'silu', attention_head_dim: 4, block_out_channels: [32, 64], cross_attention_dim: 32,
  down_block_types: ['CrossAttnDownBlock2D', 'DownBlock2D'], up_block_types: ['UpBlock2D', 'CrossAttnUpBlock2D'],
  in_channels: 4, out_channels: 4, layers_per_block: 1, norm_num_groups: 16, sample_size: 8,
});

async function host(name: string): Promise<{ data: Float32Array; shape: number[] }> {
  const r = await readSafetensorsHost(IO, name);
  return { data: r.data as Float32Array, shape: [...r.entry.shape] };
}

/** Max |a − e| / max|e|: the error relative to the tensor's scale. */
function relErr(a: ArrayLike<number>, e: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < e.length; i++) { num = Math.max(num, Math.abs(a[i] - e[i])); den = Math.max(den, Math.abs(e[i])); }
  return num / den;
}

// ---------------------------------------------------------------- config and shapes (host only)

s('config: defaults, the attention_head_dim misnomer, and every unsupported value is an Error naming its key', async () => {
  const c = parseUnetConfig(SD_V1_UNET_CONFIG);
  assert.equal(c.numAttentionHeads, [8, 8, 8, 8]);
  assert.equal(c.crossAttentionDim, [768, 768, 768, 768]);
  assert.is(c.timeEmbeddingDim, 1280);
  const tiny = parseUnetConfig(tinyRaw());
  assert.equal(tiny.numAttentionHeads, [4, 4]);
  assert.equal(parseUnetConfig({ ...tinyRaw(), num_attention_heads: 2 }).numAttentionHeads, [2, 2]);
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ dual_cross_attention: true }, /"dual_cross_attention"/],
    [{ class_embed_type: 'timestep' }, /"class_embed_type"/],
    [{ addition_embed_type: 'text_time' }, /"addition_embed_type"/],
    [{ time_embedding_type: 'fourier' }, /"time_embedding_type"/],
    [{ act_fn: 'gelu' }, /"act_fn"/],
    [{ resnet_time_scale_shift: 'spatial' }, /"resnet_time_scale_shift"/],
    [{ dropout: 0.1 }, /"dropout"/],
    [{ num_class_embeds: 10 }, /"num_class_embeds"/],
    [{ attention_type: 'gated' }, /"attention_type"/],
    [{ transformer_layers_per_block: [1] }, /"transformer_layers_per_block"/],
    [{ attention_head_dim: 3 }, /"attention_head_dim".*do not divide/],
    [{ down_block_types: ['CrossAttnDownBlock2D', 'AttnDownBlock2D'] }, /"down_block_types".*AttnDownBlock2D/],
    [{ mid_block_type: 'UNetMidBlock2DSimpleCrossAttn' }, /"mid_block_type"/],
    [{ conv_in_kernel: 4 }, /"conv_in_kernel"/],
    [{ norm_num_groups: 5 }, /"norm_num_groups"/],
    [{ some_future_key: 1 }, /unknown key.*"some_future_key"/],
  ];
  for (const [patch, re] of bad) await assertThrows(() => parseUnetConfig({ ...tinyRaw(), ...patch }), /UNet config/, re);
});

s('SD v1: names and shapes computed without allocating match diffusers exactly (686 tensors, in order)', () => {
  const path = join(REF, 'sd_v1_parameter_shapes.json');
  if (!existsSync(path)) return skip('the SD v1 shapes');
  const ref = JSON.parse(readFileSync(path, 'utf8')).unet as Record<string, number[]>;
  const ours = unetParameterShapes(parseUnetConfig(SD_V1_UNET_CONFIG));
  assert.is(ours.length, 686);
  assert.equal(ours.map(([n]) => n), Object.keys(ref), 'names in state-dict order');
  for (const [n, shape] of ours) assert.equal(shape, ref[n], n);
  const total = ours.reduce((a, [, sh]) => a + sh.reduce((x, y) => x * y, 1), 0);
  assert.is(total, 859520964, 'SD v1 UNet parameter count');
});

s('the modules register exactly the planned names and shapes, in order (tiny, and a variant with every optional path)', async () => {
  const variants: Record<string, unknown>[] = [
    tinyRaw(),
    {
      ...tinyRaw(), use_linear_projection: true, only_cross_attention: [true, false], resnet_time_scale_shift: 'scale_shift',
      transformer_layers_per_block: 2, layers_per_block: [2, 1], upcast_attention: true, center_input_sample: true,
      downsample_padding: 0, resnet_skip_time_act: true, mid_block_scale_factor: 2, resnet_out_scale_factor: 0.5, time_embedding_dim: 48,
    },
  ];
  for (const [k, raw] of variants.entries()) {
    const m = new UNet2DConditionModel(raw, { seed: 1 });
    try {
      const got = [...m.namedParameters()].map(([n, t]) => [n, [...t.shape]]);
      assert.equal(got, unetParameterShapes(parseUnetConfig(raw)));
      if (k === 1) {
        // The optional paths (no reference outputs for them) at least run and give finite values.
        const x = randTensor([1, 4, 8, 8], 3).t, c = randTensor([1, 3, 32], 4).t;
        const o = m.forward(x, 500, c);
        assert.equal([...o.shape], [1, 4, 8, 8]);
        assert.ok((await o.data()).every(Number.isFinite));
        await assertThrows(() => m.forward(randTensor([1, 4, 7, 7], 5).t, 1, c), /multiples of 2/);
        await assertThrows(() => m.forward(x, 1, randTensor([1, 3, 16], 6).t), /cross_attention_dim 32/);
        for (const t of [x, c, o]) t.dispose();
      }
    } finally { m.dispose(); }
  }
});

// ---------------------------------------------------------------- the tiny UNet, loaded once

interface Tiny { unet: UNet2DConditionModel; x: E.Tensor; t: E.Tensor; c: E.Tensor; out: Float32Array }
let tinyModel: Tiny | null = null;
/** The reference UNet and inputs, loaded once and shared (each forward costs ~0.7 s on lavapipe). */
async function tiny(): Promise<Tiny> {
  if (tinyModel) return tinyModel;
  const unet = await loadUnet(UNET_DIR, { device: dev });
  const [sample, ts, ehs] = await Promise.all([host('sample'), host('timestep'), host('encoder_hidden_states')]);
  const x = E.tensor(sample.data, sample.shape), t = E.tensor(ts.data, ts.shape), c = E.tensor(ehs.data, ehs.shape);
  tinyModel = { unet, x, t, c, out: new Float32Array(0) };
  return tinyModel;
}
/** A forward under noGrad (with trainable parameters a forward keeps its graph for backward). */
async function forwardData(u: UNet2DConditionModel, x: E.Tensor, t: E.Tensor | number, c: E.Tensor): Promise<Float32Array> {
  const o = E.noGrad(() => u.forward(x, t, c));
  const d = await o.data() as Float32Array;
  o.dispose();
  return d;
}

// ---------------------------------------------------------------- parity with diffusers

s('tiny UNet vs diffusers: time embedding, block outputs and the noise prediction to ~1e-4', async () => {
  if (!haveRef) return skip('parity');
  const T = await tiny();
  assert.equal([...await T.t.data()], [999, 21]);
  const capture = new Map<string, E.Tensor>();
  const out = E.noGrad(() => T.unet.forward(T.x, T.t, T.c, { capture }));
  try {
    assert.equal([...capture.keys()], ['time_embedding', 'down_blocks.0', 'down_blocks.1', 'mid_block', 'up_blocks.0', 'up_blocks.1']);
    // Intermediates first: they say where a mismatch starts.
    for (const name of ['time_embedding', 'down_blocks.0', 'mid_block', 'up_blocks.0']) {
      const ref = await host(`act.${name}`);
      const got = capture.get(name)!;
      assert.equal([...got.shape], ref.shape, `${name} shape`);
      const err = relErr(await got.data(), ref.data);
      assert.ok(err < 1e-4, `${name}: relative error ${err.toExponential(2)}`);
    }
    const ref = await host('out');
    assert.equal([...out.shape], ref.shape);
    T.out = await out.data() as Float32Array;
    const err = relErr(T.out, ref.data);
    assert.ok(err < 1e-4, `out: relative error ${err.toExponential(2)}`);
    assertClose(T.out, ref.data, 1e-3, 1e-4, 'out elementwise');
  } finally {
    for (const v of capture.values()) v.dispose();
    out.dispose();
  }
});

s('a sample alone gives bit-identical results to the same sample inside a batch', async () => {
  if (!haveRef) return skip('batch independence');
  const T = await tiny();
  const x1 = E.slice(T.x, [1], [2]), c1 = E.slice(T.c, [1], [2]);
  const live = dev.memory().liveBuffers;
  const one = await forwardData(T.unet, x1, 21, c1); // a number timestep is broadcast over the batch
  assert.is(dev.memory().liveBuffers, live, 'a forward leaves no live buffers behind');
  x1.dispose(); c1.dispose();
  const n = one.length;
  assert.ok(Buffer.compare(Buffer.from(one.buffer, 0, 4 * n), Buffer.from(T.out.slice(n, 2 * n).buffer)) === 0, 'sample 1 alone vs in the batch');
});

s('save → load round trip: same config, same names, identical outputs', async () => {
  if (!haveRef) return skip('the round trip');
  const T = await tiny();
  const dir = mkdtempSync(join(tmpdir(), 'unet-'));
  try {
    await saveUnet(T.unet, dir);
    const again = await loadUnet(dir, { device: dev });
    try {
      assert.equal(again.config, T.unet.config);
      assert.equal([...again.stateDict().keys()], [...T.unet.stateDict().keys()]);
      assert.equal([...await forwardData(again, T.x, T.t, T.c)], [...T.out]);
    } finally { again.dispose(); }
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

s('load: missing, unexpected and mis-shaped keys are listed together in one Error; bad configs name the key', async () => {
  if (!haveRef) return skip('load errors');
  const T = await tiny();
  const dir = mkdtempSync(join(tmpdir(), 'unet-bad-'));
  try {
    copyFileSync(join(UNET_DIR, 'config.json'), join(dir, 'config.json'));
    const state = new Map(T.unet.stateDict());
    state.delete('conv_in.bias');
    state.delete('mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight');
    const extra = E.zeros([3]), wrong = E.zeros([5]);
    state.set('extra.weight', extra);
    state.set('conv_out.bias', wrong);
    await saveSafetensors(join(dir, 'diffusion_pytorch_model.safetensors'), state);
    extra.dispose(); wrong.dispose();
    await assertThrows(() => loadUnet(dir, { device: dev }), /loadUnet/, /missing keys \(2\): .*conv_in\.bias/, /attn2\.to_k\.weight/,
      /unexpected keys \(1\): extra\.weight/, /mis-shaped keys \(1\)/, /conv_out\.bias: shape \[5\] in the file, \[4\] in the model/);
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...tinyRaw(), upcast_attention: 'yes' }));
    await assertThrows(() => loadUnet(dir, { device: dev }), /"upcast_attention"/);
    rmSync(join(dir, 'diffusion_pytorch_model.safetensors'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify(tinyRaw()));
    await assertThrows(() => loadUnet(dir, { device: dev }), /no weights file/);
  } finally { rmSync(dir, { recursive: true, force: true }); }
});

s('use_linear_projection (Linear proj_in/proj_out) equals the 1×1-conv path with the same weights', async () => {
  if (!haveRef) return skip('the linear projection check');
  const T = await tiny();
  const lin = new UNet2DConditionModel({ ...tinyRaw(), use_linear_projection: true }, { device: dev });
  try {
    const state = new Map<string, E.Tensor>();
    const views: E.Tensor[] = [];
    for (const [n, t] of T.unet.stateDict()) {
      if (/\.proj_(in|out)\.weight$/.test(n)) { const v = E.reshape(t, t.shape.slice(0, 2)); views.push(v); state.set(n, v); } else state.set(n, t);
    }
    lin.loadStateDict(state);
    views.forEach((v) => v.dispose());
    assertClose(await forwardData(lin, T.x, T.t, T.c), T.out, 1e-4, 1e-5, 'linear vs conv projection');
  } finally { lin.dispose(); }
});

s('f16 model (when the device has shader-f16) stays close to diffusers', async () => {
  if (!haveRef) return skip('the f16 check');
  if (!dev.hasF16) { console.log('  (skipped: no shader-f16)'); return; }
  const T = await tiny();
  const unet = await loadUnet(UNET_DIR, { device: dev, dtype: 'f16' });
  try {
    assert.ok(unet.parameters().every((p) => p.dtype === 'f16'));
    const out = unet.forward(T.x, T.t, T.c);
    assert.is(out.dtype, 'f16');
    const outData = await out.data();
    const err = relErr(outData, T.out);
    out.dispose();
    assert.ok(err < 5e-3, `f16 out: relative error ${err.toExponential(2)}`);
    // LoRA on the f16 model: f32 adapters, and a fresh one (B = 0) changes no bit.
    const { layers } = injectUnetLoRA(unet, { rank: 4 });
    assert.ok(layers.every((l) => l.loraA.dtype === 'f32' && l.loraB.dtype === 'f32' && l.weight.dtype === 'f16'));
    const out2 = unet.forward(T.x, T.t, T.c);
    assert.equal(await out2.data(), outData);
    out2.dispose();
  } finally { unet.dispose(); }
});

// ---------------------------------------------------------------- LoRA

function mse(a: E.Tensor, b: E.Tensor): E.Tensor {
  return E.tidy(() => E.mean(E.square(E.sub(a, b))));
}

s('LoRA on attn1/attn2 to_q/k/v/out.0: no-op at init, gradients reach only the adapters (directional check), Adam lowers an MSE loss', async () => {
  if (!haveRef) return skip('LoRA');
  const T = await tiny();
  const unet = T.unet;
  const target = randTensor([2, 4, 8, 8], 77).t;
  const probe = 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight';
  const baseBefore = await unet.stateDict().get(probe)!.data();
  try {
    const { names, layers } = injectUnetLoRA(unet, { rank: 4, alpha: 8, seed: 5 });
    // 4 transformer blocks (down 0, mid, up 1 ×2) × 2 attentions × 4 projections.
    assert.is(names.length, 32);
    assert.ok(names.every((n) => /\.transformer_blocks\.0\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/.test(n)), names.join());
    assert.ok(layers.every((l) => l instanceof LoRALinear && l.scale === 2));
    const lora = unetLoRAStateDict(unet);
    assert.is(lora.size, 64);
    assert.equal(new Set(unet.trainableParameters()), new Set(lora.values()));

    // Step 0: the fresh adapter changes nothing; then the gradients.
    const out0 = unet.forward(T.x, T.t, T.c);
    assert.equal([...await out0.data()], [...T.out], 'a fresh adapter changes nothing');
    const loss0 = mse(out0, target);
    out0.dispose();
    E.backward(loss0);
    const losses = [await loss0.item()];
    loss0.dispose();
    for (const [n, p] of unet.namedParameters()) {
      if (!lora.has(n)) { assert.is(p.grad, null, `${n} is frozen`); continue; }
      const g = await p.grad!.data();
      assert.ok(g.every(Number.isFinite), `${n}: finite gradient`);
      // B = 0 at init, so dL/dA = scale·Bᵀ·(…) = 0 exactly; every B gets a nonzero gradient.
      if (n.includes('lora_B')) assert.ok(g.some((v) => v !== 0), `${n}: nonzero gradient`);
      else assert.ok(g.every((v) => v === 0), `${n}: zero gradient while B = 0`);
    }

    // Directional derivative over every lora_B: (L(+εd) − L(−εd)) / 2ε ≈ ⟨∇L, d⟩ checks the whole backward.
    const bs = [...lora].filter(([n]) => n.includes('lora_B')).map(([, p]) => p);
    let predicted = 0;
    const dirs = await Promise.all(bs.map(async (p, i) => {
      const d = randTensor([...p.shape], 1000 + i);
      const g = await p.grad!.data();
      for (let k = 0; k < g.length; k++) predicted += g[k] * d.x[k];
      return d.t;
    }));
    const eps = 1e-2;
    const setB = (scale: number) => E.noGrad(() => bs.forEach((p, i) => { const v = E.mulScalar(dirs[i], scale); E.nn.copyInto(p, v); v.dispose(); }));
    const lossAt = async (scale: number) => {
      setB(scale);
      const l = E.noGrad(() => { const o = unet.forward(T.x, T.t, T.c); const r = mse(o, target); o.dispose(); return r; });
      const v = await l.item();
      l.dispose();
      return v;
    };
    const numeric = ((await lossAt(eps)) - (await lossAt(-eps))) / (2 * eps);
    setB(0);
    dirs.forEach((d) => d.dispose());
    assert.ok(Math.abs(numeric - predicted) <= 2e-2 * Math.abs(predicted) + 1e-7, `directional derivative: finite difference ${numeric} vs backward ${predicted}`);

    // Training: the step-0 gradients are in .grad; two more steps after the first update.
    const opt = new Adam(unet.trainableParameters(), { lr: 1e-2 });
    opt.step();
    unet.zeroGrad();
    const live: number[] = [];
    for (let step = 1; step < 3; step++) {
      const o = unet.forward(T.x, T.t, T.c);
      const l = mse(o, target);
      o.dispose();
      E.backward(l);
      losses.push(await l.item());
      l.dispose();
      opt.step();
      unet.zeroGrad();
      live.push(dev.memory().liveBuffers);
    }
    assert.is(live[1], live[0], 'a training step leaves no live buffers behind');
    opt.dispose();
    assert.ok(losses.every(Number.isFinite), losses.join());
    assert.ok(losses[2] < losses[1] && losses[1] < losses[0], `loss ${losses.map((v) => v.toFixed(6)).join(' → ')}`);
    assert.equal([...await unet.stateDict().get(probe)!.data()], [...baseBefore], 'the frozen base weight did not move');
  } finally {
    target.dispose();
    unet.dispose();
    for (const v of [T.x, T.t, T.c]) v.dispose();
    tinyModel = null;
  }
});

s('full fine-tuning: a backward reaches every UNet parameter with a finite, non-zero gradient', async () => {
  const unet = new UNet2DConditionModel(tinyRaw(), { device: dev, seed: 3 });
  try {
    const params = [...unet.namedParameters()];
    assert.ok(params.every(([, p]) => p.requiresGrad), 'every parameter trains by default');
    const x = randTensor([2, 4, 8, 8], 31).t, ctx = randTensor([2, 5, 32], 32).t, w = randTensor([2, 4, 8, 8], 33).t;
    const loss = E.tidy(() => E.sum(E.mul(unet.forward(x, 500, ctx), w)));
    E.backward(loss);
    const bad: string[] = [];
    for (const [name, p] of params) {
      if (!p.grad) { bad.push(`${name}: no gradient`); continue; }
      assert.equal([...p.grad.shape], [...p.shape], name);
      const g = await p.grad.data();
      if (!g.every(Number.isFinite)) bad.push(`${name}: non-finite`);
      else if (g.every((v) => v === 0)) bad.push(`${name}: all zero`);
    }
    assert.equal(bad, [], bad.join('; '));
    loss.dispose();
  } finally {
    unet.dispose();
  }
});

s.run();
