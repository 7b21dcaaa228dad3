// UNet LoRA files: diffusers' current format (PEFT lora_A/lora_B keys under "unet.", alpha in the
// lora_adapter_metadata) written and read back into a fresh UNet with identical outputs; the
// older attention-processor names read to the same outputs; kohya names mapped; bad files give
// Errors that say what is wrong. Runs on the `tiny` config with random weights (no reference data).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from '../engine/index.js';
import { readSafetensorsHeader, saveSafetensors } from '../engine/safetensors.js';
import { copyInto } from '../engine/nn/module.js';
import { namedConfig } from '../diffusion/configs.js';
import { UNet2DConditionModel, injectUnetLoRA } from '../diffusion/models/unet.js';
import { LORA_ADAPTER_METADATA_KEY, loadUnetLoRA, planUnetLoRA, saveUnetLoRA, unetLoRALayers } from '../diffusion/lora-io.js';
import { assertThrows, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('lora-io');
const dir = mkdtempSync(join(tmpdir(), 'ddpo-lora-'));
const Q = 'down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q';

const fresh = () => new UNet2DConditionModel(namedConfig('tiny').unet, { device: dev, seed: 11 });
const x = E.keep(E.randomNormal([1, 4, 8, 8], 1, { device: dev }));
const ctx = E.keep(E.randomNormal([1, 5, 32], 2, { device: dev }));
const run = async (u: UNet2DConditionModel) => {
  const y = E.noGrad(() => u.forward(x, 500, ctx));
  const d = await y.data() as Float32Array;
  y.dispose();
  return d;
};

/** A UNet with rank-4, alpha-8 adapters whose B matrices are nonzero (fresh ones are zero: a no-op). */
function adapted(): UNet2DConditionModel {
  const u = fresh();
  injectUnetLoRA(u, { rank: 4, alpha: 8, seed: 3 });
  let k = 100;
  E.noGrad(() => E.tidy(() => {
    for (const l of unetLoRALayers(u).values()) copyInto(l.loraB, E.randomNormal(l.loraB.shape, k++, { std: 0.5, device: dev }));
  }));
  return u;
}

const src = adapted();
let srcOut: Float32Array;

s('save → load into a fresh UNet: diffusers key names and metadata, injected adapters, identical outputs', async () => {
  srcOut = await run(src);
  const base = fresh();
  const baseOut = await run(base);
  base.dispose();
  assert.ok(srcOut.some((v, i) => v !== baseOut[i]), 'the adapters change the output (else the test proves nothing)');

  const file = await saveUnetLoRA(src, dir);
  assert.is(file, join(dir, 'pytorch_lora_weights.safetensors'));
  const h = await readSafetensorsHeader(file);
  // 4 transformer blocks (down_blocks.0: 1, up_blocks.1: 2, mid: 1) × attn1/attn2 × 4 projections × (A, B).
  assert.is(h.tensors.size, 4 * 2 * 4 * 2);
  assert.equal(h.tensors.get(`unet.${Q}.lora_A.weight`)?.shape, [4, 32]);
  assert.equal(h.tensors.get(`unet.${Q}.lora_B.weight`)?.shape, [32, 4]);
  assert.ok(h.tensors.has('unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0.lora_B.weight'));
  const meta = JSON.parse(h.metadata[LORA_ADAPTER_METADATA_KEY]);
  assert.is(meta['unet.r'], 4);
  assert.is(meta['unet.lora_alpha'], 8);
  assert.equal(meta['unet.target_modules'], ['to_k', 'to_out.0', 'to_q', 'to_v']);
  assert.is(h.metadata.format, 'pt');

  const dst = fresh();
  const r = await loadUnetLoRA(dst, dir);
  assert.is(r.format, 'peft');
  assert.is(r.injected, 32);
  assert.ok(r.modules.every((m) => m.rank === 4 && m.alpha === 8));
  assert.ok([...unetLoRALayers(dst).values()].every((l) => l.scale === 2));
  assert.equal(new Set(dst.trainableParameters()), new Set([...unetLoRALayers(dst).values()].flatMap((l) => [l.loraA, l.loraB])), 'only the adapters train');
  assert.equal(await run(dst), srcOut, 'bit-identical outputs');
  // Loading again into the now-adapted UNet reuses its adapters.
  assert.is((await loadUnetLoRA(dst, dir)).injected, 0);
  dst.dispose();
});

s('the older attention-processor format (…processor.to_q_lora.down/up.weight, no alpha) loads to the same outputs', async () => {
  // That format has no alpha (scale 1): fold this adapter's scale 2 into up (exact in floating point).
  const t = new Map<string, E.Tensor>();
  const made: E.Tensor[] = [];
  for (const [name, l] of unetLoRALayers(src)) {
    const m = /^(.*)\.(to_q|to_k|to_v|to_out)(\.0)?$/.exec(name)!;
    const up = E.noGrad(() => E.mulScalar(l.loraB, 2));
    made.push(up);
    t.set(`${m[1]}.processor.${m[2]}_lora.down.weight`, l.loraA);
    t.set(`${m[1]}.processor.${m[2]}_lora.up.weight`, up);
  }
  const file = join(dir, 'old.safetensors');
  await saveSafetensors(file, t, { format: 'pt' });
  for (const u of made) u.dispose();
  const dst = fresh();
  const r = await loadUnetLoRA(dst, file);
  assert.is(r.format, 'attn-processor');
  assert.ok(r.modules.some((m) => m.module === 'up_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0'), 'to_out_lora → to_out.0');
  assert.ok(r.modules.every((m) => m.alpha === 4), 'no alpha → alpha = rank');
  assert.equal(await run(dst), srcOut, 'bit-identical outputs');
  dst.dispose();
});

s('kohya and diffusers-dot names map onto the same modules; alpha tensors and metadata patterns are read', () => {
  const mods = [Q, 'mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0'];
  const keys = new Map<string, number[]>([
    [`lora_unet_${Q.replace(/\./g, '_')}.lora_down.weight`, [2, 32]],
    [`lora_unet_${Q.replace(/\./g, '_')}.lora_up.weight`, [32, 2]],
    [`lora_unet_${Q.replace(/\./g, '_')}.alpha`, []],
  ]);
  const p = planUnetLoRA('k.safetensors', keys, {}, mods);
  assert.is(p.format, 'kohya');
  assert.equal(p.modules.map((m) => [m.module, m.rank, m.alphaKey]), [[Q, 2, `lora_unet_${Q.replace(/\./g, '_')}.alpha`]]);
  const d = planUnetLoRA('d.safetensors', new Map([
    [`unet.${mods[1]}.lora.down.weight`, [4, 64]], [`unet.${mods[1]}.lora.up.weight`, [64, 4]],
  ]), { [LORA_ADAPTER_METADATA_KEY]: JSON.stringify({ 'unet.lora_alpha': 4, 'unet.alpha_pattern': { 'attn2.to_out.0': 16 } }) }, mods);
  assert.equal(d.modules.map((m) => [m.module, m.rank, m.alpha]), [[mods[1], 4, 16]]);
  assert.is(d.format, 'diffusers');
});

s('bad files: an unpaired matrix, a rank mismatch, unknown keys and a clash with existing adapters are clear Errors listing every problem', async () => {
  const A = E.keep(E.zeros([4, 32], 'f32', dev)), B3 = E.keep(E.zeros([32, 3], 'f32', dev)), B4 = E.keep(E.zeros([32, 4], 'f32', dev));
  const K = 'down_blocks.0.attentions.0.transformer_blocks.0.attn1';
  const write = async (name: string, t: Record<string, E.Tensor>) => { const f = join(dir, name); await saveSafetensors(f, t); return f; };
  const u = fresh();
  const f1 = await write('bad1.safetensors', {
    [`unet.${K}.to_q.lora_A.weight`]: A, // no lora_B
    [`unet.${K}.to_k.lora_A.weight`]: A, [`unet.${K}.to_k.lora_B.weight`]: B3, // rank 4 vs 3
    [`unet.${K}.to_v.lora_B.weight`]: B4, // no lora_A
    'unet.something.else': A,
  });
  await assertThrows(() => loadUnetLoRA(u, f1), /4 problem/, /to_q: down\/lora_A .* without its up\/lora_B/, /to_k: rank mismatch: down .*\[4,32\] has rank 4, up .*\[32,3\] has rank 3/,
    /to_v: up\/lora_B .* without its down\/lora_A/, /unet\.something\.else: not a LoRA key/);
  const f2 = await write('bad2.safetensors', { [`unet.${K}.to_nope.lora_A.weight`]: A, [`unet.${K}.to_nope.lora_B.weight`]: B4 });
  await assertThrows(() => loadUnetLoRA(u, f2), /to_nope: the UNet has no Linear layer/);
  assert.is(unetLoRALayers(u).size, 0, 'nothing injected when the file is refused');
  // A rank-4 file into a UNet that already carries rank-2 adapters.
  injectUnetLoRA(u, { rank: 2 });
  await assertThrows(() => loadUnetLoRA(u, dir), /rank mismatch: the file's adapter has rank 4, the UNet's 2/);
  await assertThrows(() => saveUnetLoRA(fresh(), join(dir, 'x.safetensors')), /no LoRA adapters/);
  for (const t of [A, B3, B4]) t.dispose();
  u.dispose();
});

s.after(() => {
  src.dispose();
  x.dispose();
  ctx.dispose();
  rmSync(dir, { recursive: true, force: true });
});

s.run();
