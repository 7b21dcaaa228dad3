// AutoencoderKL (SD v1's VAE): config validation, parameter names/shapes (against SD v1's list
// from diffusers), parity with diffusers' outputs on the tiny reference pipeline, old and new
// checkpoint key names, save → load round trips, load errors, micro-batch invariance, and
// gradients (reaching every parameter; a directional derivative against finite differences).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as E from '../engine/index.js';
import { backward, noGrad } from '../engine/autograd.js';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors } from '../engine/safetensors.js';
import { copyInto } from '../engine/nn/module.js';
import {
  AutoencoderKL, SD_V1_VAE_CONFIG, VaeConfig, loadVae, parseVaeConfig, saveVae, vaeParameterShapes,
} from '../diffusion/models/vae.js';
import { assertClose, assertThrows, randArray, testDevice, repoRoot } from './helpers.js';

const dev = await testDevice();
const s = suite('vae');

const REF = resolve(repoRoot(), '..', 'shared', 'reference');
const VAE_DIR = join(REF, 'tiny-sd-pipe', 'vae');
const IO_FILE = join(REF, 'tiny-sd-io', 'vae_io.safetensors');
const haveRef = existsSync(join(VAE_DIR, 'diffusion_pytorch_model.safetensors')) && existsSync(IO_FILE);
const skip = (what: string) => console.log(`  (skipped ${what}: reference data not found under ${REF})`);

const tmp = mkdtempSync(join(tmpdir(), 'vae-test-'));

const small = (over: Partial<VaeConfig> = {}): VaeConfig => ({
  ...SD_V1_VAE_CONFIG, blockOutChannels: [4, 8], layersPerBlock: 1, normNumGroups: 2, sampleSize: 8, ...over,
});

// ---------------------------------------------------------------- config

s('config: the tiny reference config parses; defaults; unsupported values name their key', async () => {
  if (haveRef) {
    const c = parseVaeConfig(JSON.parse(readFileSync(join(VAE_DIR, 'config.json'), 'utf8')));
    assert.equal(c.blockOutChannels, [16, 32]);
    assert.is(c.layersPerBlock, 1);
    assert.is(c.normNumGroups, 16);
    assert.is(c.latentChannels, 4);
    assert.is(c.scalingFactor, 0.18215);
    assert.is(c.midBlockAddAttention, true);
  }
  const d = parseVaeConfig({ block_out_channels: [8, 16], norm_num_groups: 4 });
  assert.is(d.layersPerBlock, 1);
  assert.is(d.useQuantConv, true);
  assert.is(d.usePostQuantConv, true);
  assert.is(d.inChannels, 3);
  assert.is(d.scalingFactor, 0.18215);
  await assertThrows(() => parseVaeConfig({ act_fn: 'gelu' }), /"act_fn"/, /gelu/);
  await assertThrows(() => parseVaeConfig({ block_out_channels: [8, 16], norm_num_groups: 4, down_block_types: ['DownEncoderBlock2D', 'AttnDownEncoderBlock2D'] }), /"down_block_types"/, /AttnDownEncoderBlock2D/);
  await assertThrows(() => parseVaeConfig({ block_out_channels: [8, 16], norm_num_groups: 4, up_block_types: ['UpDecoderBlock2D'] }), /"up_block_types"/, /2 block types/);
  await assertThrows(() => parseVaeConfig({ block_out_channels: [8, 12], norm_num_groups: 8 }), /"norm_num_groups"/, /12/);
  await assertThrows(() => parseVaeConfig({ norm_type: 'spatial' }), /"norm_type"/);
  await assertThrows(() => parseVaeConfig({ layers_per_block: 0 }), /"layers_per_block"/);
  await assertThrows(() => parseVaeConfig({ _class_name: 'AsymmetricAutoencoderKL' }), /_class_name/);
  await assertThrows(() => parseVaeConfig({ use_quant_conv: 'yes' }), /"use_quant_conv"/);
});

// ---------------------------------------------------------------- names and shapes

s('names/shapes: SD v1 config matches diffusers\' list exactly (order included), allocating nothing', () => {
  const path = join(REF, 'sd_v1_parameter_shapes.json');
  if (!existsSync(path)) return skip('the SD v1 shape check');
  const want = Object.entries(JSON.parse(readFileSync(path, 'utf8')).vae as Record<string, number[]>);
  const got = vaeParameterShapes(SD_V1_VAE_CONFIG);
  assert.is(got.length, 248);
  assert.equal(got.map(([n]) => n), want.map(([n]) => n));
  assert.equal(got, want);
  const total = got.reduce((a, [, sh]) => a + sh.reduce((x, y) => x * y, 1), 0);
  assert.is(total, 83653863); // SD v1 VAE parameter count
});

s('names/shapes: the modules register exactly what vaeParameterShapes describes', () => {
  const configs: VaeConfig[] = [
    small(),
    small({ blockOutChannels: [4, 8, 8], layersPerBlock: 2, inChannels: 1, outChannels: 2, latentChannels: 3 }),
    small({ midBlockAddAttention: false, useQuantConv: false, usePostQuantConv: false }),
  ];
  for (const c of configs) {
    const vae = new AutoencoderKL(c, { device: dev });
    const got = [...vae.namedParameters()].map(([n, t]) => [n, [...t.shape]]);
    assert.equal(got, vaeParameterShapes(c), JSON.stringify(c));
    vae.dispose();
  }
});

// ---------------------------------------------------------------- parity with diffusers

let ref: Map<string, E.Tensor> | null = null;
let vae: AutoencoderKL | null = null;

s('parity: encode(image) → mean, logvar and decode(latent) match diffusers (tiny pipeline, old key names)', async () => {
  if (!haveRef) return skip('the parity test');
  ref = await loadSafetensors(IO_FILE, { device: dev });
  vae = await loadVae(VAE_DIR, { device: dev });
  const image = ref.get('image')!, latent = ref.get('latent')!;
  assert.equal(image.shape, [2, 3, 16, 16]);
  const { mean, logvar } = vae.encode(image);
  assert.equal(mean.shape, [2, 4, 8, 8]);
  assert.equal(logvar.shape, [2, 4, 8, 8]);
  assertClose(await mean.data(), await ref.get('mean')!.data(), 1e-4, 1e-5, 'mean');
  assertClose(await logvar.data(), await ref.get('logvar')!.data(), 1e-4, 1e-5, 'logvar');
  const decoded = vae.decode(latent);
  assert.equal(decoded.shape, [2, 3, 16, 16]);
  assertClose(await decoded.data(), await ref.get('decoded')!.data(), 1e-4, 1e-5, 'decoded');
  for (const t of [mean, logvar, decoded]) t.dispose();
});

s('micro-batches: results are bit-identical whatever the micro-batch size; bad sizes throw', async () => {
  if (!vae || !ref) return skip('the micro-batch test');
  const latent = ref.get('latent')!;
  const three = E.concat([latent, E.slice(latent, [0], [1])], 0); // [3,4,8,8]: sample 0 twice
  const one = vae.decode(three, { microBatch: 1 });
  const two = vae.decode(three, { microBatch: 2 });
  const all = vae.decode(three, { microBatch: 8 });
  const a = await one.data(), b = await two.data(), c = await all.data();
  assert.equal([...b], [...a], 'microBatch 2 vs 1');
  assert.equal([...c], [...a], 'whole batch vs 1');
  const n = a.length / 3;
  assert.equal([...a.subarray(2 * n)], [...a.subarray(0, n)], 'the same sample at another batch position');
  const enc1 = vae.encode(E.slice(ref.get('image')!, [1], [2]));
  const enc2 = vae.encode(ref.get('image')!, { microBatch: 2 });
  assert.equal([...(await enc1.mean.data())], [...(await enc2.mean.data()).subarray(4 * 64)], 'encode: sample 1 alone vs in the batch');
  await assertThrows(() => vae!.decode(latent, { microBatch: 0 }), /microBatch=0/);
  await assertThrows(() => vae!.decode(ref!.get('image')!), /AutoencoderKL\.decode/, /\[2, 3, 16, 16\]|\[2,3,16,16\]/);
  await assertThrows(() => vae!.encode(latent), /AutoencoderKL\.encode/);
  for (const t of [three, one, two, all, enc1.mean, enc1.logvar, enc2.mean, enc2.logvar]) t.dispose();
});

// ---------------------------------------------------------------- checkpoints

async function decodeWith(m: AutoencoderKL, z: E.Tensor): Promise<Float32Array> {
  const out = m.decode(z, { microBatch: 2 });
  const d = await out.data() as Float32Array;
  out.dispose();
  return d;
}

s('checkpoints: save writes current names; save → load and old conv-shaped [C,C,1,1] keys give identical outputs', async () => {
  if (!vae || !ref) return skip('the checkpoint test');
  const latent = ref.get('latent')!;
  const base = await decodeWith(vae, latent);
  const enc = vae.encode(ref.get('image')!, { microBatch: 2 });
  const baseMean = await enc.mean.data();
  enc.mean.dispose(); enc.logvar.dispose();

  // Round trip through our own save (current names).
  const saved = join(tmp, 'saved');
  await saveVae(vae, saved);
  const names = [...(await readSafetensorsHeader(join(saved, 'diffusion_pytorch_model.safetensors'))).tensors.keys()];
  assert.ok(names.includes('decoder.mid_block.attentions.0.to_out.0.weight'));
  assert.ok(!names.some((n) => /\.(query|key|value|proj_attn)\./.test(n)), 'no old names written');
  assert.is(names.length, vae.parameters().length);
  const again = await loadVae(saved, { device: dev });
  assert.equal(again.config, vae.config);
  assert.equal([...(await decodeWith(again, latent))], [...base], 'decode after save → load');
  const enc2 = again.encode(ref.get('image')!, { microBatch: 2 });
  assert.equal([...(await enc2.mean.data())], [...baseMean], 'encode after save → load');
  enc2.mean.dispose(); enc2.logvar.dispose();
  again.dispose();

  // Old names with 1×1-conv shaped attention weights (as some SD v1-4 era files).
  const old = join(tmp, 'old-conv');
  const orig = await loadSafetensors(join(VAE_DIR, 'diffusion_pytorch_model.safetensors'), { device: dev });
  const convShaped = new Map<string, E.Tensor>();
  for (const [k, t] of orig) {
    convShaped.set(k, /\.(query|key|value|proj_attn)\.weight$/.test(k) ? E.reshape(t, [...t.shape, 1, 1]) : t);
  }
  assert.ok([...convShaped.keys()].some((k) => k.endsWith('.query.weight')), 'the reference uses old names');
  mkdirSync(old, { recursive: true });
  copyFileSync(join(VAE_DIR, 'config.json'), join(old, 'config.json'));
  await saveSafetensors(join(old, 'diffusion_pytorch_model.safetensors'), convShaped);
  const fromConv = await loadVae(old, { device: dev });
  assert.equal([...(await decodeWith(fromConv, latent))], [...base], 'decode from conv-shaped old keys');
  fromConv.dispose();

  // Every problem in one Error: a missing key, an unexpected key, a mis-shaped key.
  const broken = join(tmp, 'broken');
  mkdirSync(broken, { recursive: true });
  copyFileSync(join(VAE_DIR, 'config.json'), join(broken, 'config.json'));
  const bad = new Map(orig);
  bad.delete('decoder.conv_in.bias');
  const extra = E.tensor([1, 2, 3], [3]);
  bad.set('encoder.bogus.weight', extra);
  const wrong = E.tensor(randArray(16 * 16, 5), [16, 16]);
  bad.set('encoder.mid_block.attentions.0.query.weight', wrong);
  await saveSafetensors(join(broken, 'diffusion_pytorch_model.safetensors'), bad);
  await assertThrows(() => loadVae(broken, { device: dev }),
    /loadVae .*broken/, /missing keys \(1\): decoder\.conv_in\.bias/, /unexpected keys \(1\): encoder\.bogus\.weight/,
    /encoder\.mid_block\.attentions\.0\.to_q\.weight: shape \[16, ?16\]/);
  // Both an old and a new name for the same parameter: the old one is reported as unexpected.
  const dup = new Map(orig);
  dup.set('encoder.mid_block.attentions.0.to_q.weight', orig.get('encoder.mid_block.attentions.0.query.weight')!);
  await saveSafetensors(join(broken, 'diffusion_pytorch_model.safetensors'), dup);
  await assertThrows(() => loadVae(broken, { device: dev }), /unexpected keys \(1\): encoder\.mid_block\.attentions\.0\.query\.weight/);
  await assertThrows(() => loadVae(join(tmp, 'nowhere'), { device: dev }), /loadVae/, /config\.json/);
  for (const t of convShaped.values()) t.dispose();
  for (const t of orig.values()) t.dispose();
  extra.dispose(); wrong.dispose();
});

// ---------------------------------------------------------------- gradients

s('gradients: reach every parameter; directional derivative matches central differences', async () => {
  if (!vae || !ref) return skip('the gradient test');
  const image = ref.get('image')!, latent = ref.get('latent')!;
  const wDec = E.tensor(randArray(2 * 3 * 16 * 16, 11), [2, 3, 16, 16]);
  const wMean = E.tensor(randArray(2 * 4 * 64, 12), [2, 4, 8, 8]);
  const wLv = E.tensor(randArray(2 * 4 * 64, 13), [2, 4, 8, 8]);
  const m = vae;
  const loss = () => E.tidy(() => {
    const { mean, logvar } = m.encode(image, { microBatch: 1 });
    const dec = m.decode(latent, { microBatch: 1 });
    return E.add(E.add(E.sum(E.mul(dec, wDec)), E.sum(E.mul(mean, wMean))), E.sum(E.mul(logvar, wLv)));
  });
  m.zeroGrad();
  const L = loss();
  backward(L);
  L.dispose();
  const params = [...m.namedParameters()];
  const zero: string[] = [];
  for (const [n, p] of params) {
    assert.ok(p.grad, `${n} has a gradient`);
    assert.equal(p.grad!.shape, p.shape, `${n} gradient shape`);
    const g = await p.grad!.data();
    assert.ok(g.every(Number.isFinite), `${n} gradient is finite`);
    if (g.every((v) => Math.abs(v) < 1e-5)) zero.push(n);
  }
  // Some gradients are zero by invariance, not by a broken graph (they still exist, checked
  // above): a constant added to every key leaves the softmax unchanged (to_k.bias), and a
  // per-channel constant that reaches only GroupNorms with one channel per group (the tiny VAE's
  // 16-channel stage has 16 groups) is normalised away. Every other gradient must be non-zero.
  const invariant = /to_k\.bias$|^encoder\.down_blocks\.0\.resnets\.\d+\.conv1\.bias$|^decoder\.up_blocks\.1\.resnets\.\d+\.(conv1|conv2|conv_shortcut)\.bias$/;
  assert.equal(zero.filter((n) => !invariant.test(n)), [], 'parameters with a zero gradient');
  assert.ok(zero.includes('encoder.mid_block.attentions.0.to_k.bias'), 'to_k.bias gradient is (near) zero');

  // Directional derivative along a random direction over a spread of parameters.
  const chosen = ['encoder.down_blocks.0.downsamplers.0.conv.weight', 'encoder.mid_block.attentions.0.to_q.weight',
    'encoder.mid_block.resnets.0.norm1.weight', 'quant_conv.bias', 'decoder.mid_block.attentions.0.to_v.weight',
    'decoder.up_blocks.0.upsamplers.0.conv.weight', 'decoder.up_blocks.1.resnets.0.conv_shortcut.weight', 'decoder.conv_out.bias'];
  const state = m.stateDict();
  const orig = new Map<string, Float32Array>();
  const dir = new Map<string, Float64Array>();
  let analytic = 0;
  for (const [i, n] of chosen.entries()) {
    const p = state.get(n)!;
    orig.set(n, Float32Array.from(await p.data()));
    const v = randArray(p.size, 100 + i);
    dir.set(n, v);
    const g = await p.grad!.data();
    for (let k = 0; k < v.length; k++) analytic += g[k] * v[k];
  }
  m.zeroGrad();
  const evalAt = async (eps: number) => {
    for (const n of chosen) {
      const o = orig.get(n)!, v = dir.get(n)!;
      const t = E.tensor(o.map((x, k) => x + eps * v[k]), state.get(n)!.shape);
      copyInto(state.get(n)!, t);
      t.dispose();
    }
    const l = noGrad(loss);
    const val = await l.item();
    l.dispose();
    return val;
  };
  const eps = 1e-2;
  const numeric = ((await evalAt(eps)) - (await evalAt(-eps))) / (2 * eps);
  await evalAt(0);
  assert.ok(Math.abs(numeric - analytic) <= 2e-2 * Math.abs(analytic) + 1e-2, `directional derivative: analytic ${analytic}, numeric ${numeric}`);
  for (const t of [wDec, wMean, wLv]) t.dispose();
});

s('f16: the tiny VAE decodes close to diffusers\' f32 output', async () => {
  if (!haveRef || !ref) return skip('the f16 test');
  if (!dev.hasF16) { console.log('  (skipped f16: the device has no shader-f16)'); return; }
  const h = await loadVae(VAE_DIR, { device: dev, dtype: 'f16' });
  assert.is(h.dtype, 'f16');
  const out = h.decode(ref.get('latent')!, { microBatch: 2 });
  assert.is(out.dtype, 'f16');
  assertClose(await out.data(), await ref.get('decoded')!.data(), 2e-2, 2e-2, 'decoded (f16)');
  out.dispose();
  h.dispose();
});

s('cleanup', () => {
  vae?.dispose();
  if (ref) for (const t of ref.values()) t.dispose();
  rmSync(tmp, { recursive: true, force: true });
});

s.run();
