// Loading through the file-access interfaces (engine/io/source.ts) that browsers use: a pipeline
// from bytes in memory and over HTTP (fetchFolder against the test's static server) gives the same
// weights as from disk; safetensors parsed in memory are validated like files; the loaders' errors
// (missing file, bad key, wrong shape) name the file and key on these paths too; and f16 files
// load as f32 on a device without shader-f16.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { requestNodeAdapter } from '../engine/node.js';
import * as E from '../engine/index.js';
import { fetchFolder, memoryFolder, subFolder } from '../engine/io/source.js';
import { encodeSafetensorsHeader, loadSafetensors, parseSafetensors, parseSafetensorsBytes } from '../engine/safetensors.js';
import { disposeStableDiffusion, loadStableDiffusion } from '../diffusion/load.js';
import { loadUnet } from '../diffusion/models/unet.js';
import { loadClipTextModel } from '../diffusion/models/clip-text.js';
import { loadVae } from '../diffusion/models/vae.js';
import { serveStatic, REPO_ROOT } from '../web/serve.js';
import { assertThrows, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('model folder');
const MODEL = join(REPO_ROOT, 'models', 'emoji-16');
const PARTS = ['model_index.json', 'unet', 'vae', 'text_encoder', 'tokenizer', 'scheduler'];

/** The pipeline's files as path → bytes (what a page might hold after fetching or a file picker). */
function filesOf(dir: string, root = dir): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = {};
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (dir === root && !PARTS.includes(name)) continue;
    if (statSync(p).isDirectory()) Object.assign(out, filesOf(p, root));
    else out[relative(root, p).split('\\').join('/')] = new Uint8Array(readFileSync(p));
  }
  return out;
}

/** A safetensors file in memory from named f32 arrays. */
function safetensorsBytes(tensors: Record<string, { shape: number[]; data: Float32Array }>): Uint8Array {
  const { bytes: head, order } = encodeSafetensorsHeader(Object.entries(tensors).map(([name, t]) => ({ name, dtype: 'F32' as const, shape: t.shape })));
  const total = head.length + (order.length ? order[order.length - 1].end : 0);
  const out = new Uint8Array(total);
  out.set(head);
  for (const { entry, begin } of order) out.set(new Uint8Array(tensors[entry.name].data.buffer), head.length + begin);
  return out;
}

async function sameWeights(a: E.nn.Module, b: E.nn.Module, what: string): Promise<void> {
  const sa = a.stateDict(), sb = b.stateDict();
  assert.equal([...sa.keys()], [...sb.keys()], `${what}: names`);
  for (const [k, t] of sa) {
    const x = await t.data(), y = await sb.get(k)!.data();
    assert.ok(x.every((v, i) => Object.is(v, y[i])), `${what}: ${k} differs`);
  }
}

s('the shipped pipeline loads from memory and over HTTP with the same weights as from disk', async () => {
  const disk = await loadStableDiffusion(MODEL, { device: dev });
  const mem = await loadStableDiffusion(memoryFolder(filesOf(MODEL), 'emoji-16'), { device: dev });
  const { server, url } = await serveStatic(REPO_ROOT);
  try {
    const http = await loadStableDiffusion(fetchFolder(`${url}/models/emoji-16/`), { device: dev });
    assert.is(http.folder, `${url}/models/emoji-16/`);
    // Every weights file in HTTP Range requests (as an SD-size file would be), counted.
    let ranged = 0;
    const counting: typeof fetch = (input, init) => {
      if (new Headers(init?.headers).has('range')) ranged++;
      return fetch(input, init);
    };
    const byRange = await loadStableDiffusion(fetchFolder(`${url}/models/emoji-16/`, { fetch: counting, rangeThreshold: 0 }), { device: dev });
    assert.ok(ranged > 10, `range requests: ${ranged}`);
    for (const other of [mem, http, byRange]) {
      await sameWeights(disk.unet, other.unet, 'unet');
      await sameWeights(disk.vae, other.vae, 'vae');
      await sameWeights(disk.textEncoder, other.textEncoder, 'text encoder');
      assert.equal(other.tokenizer.encode('a cat'), disk.tokenizer.encode('a cat'));
      assert.equal(other.schedulerConfig, disk.schedulerConfig);
      disposeStableDiffusion(other);
    }
    // A missing file over HTTP names its URL and the status.
    await assertThrows(() => loadUnet(fetchFolder(`${url}/models/emoji-16/nothing`), { device: dev }), /loadUnet/, /nothing\/config\.json/, /HTTP 404/);
  } finally {
    server.close();
    disposeStableDiffusion(disk);
  }
});

s('f16 files load as f32 on a device without shader-f16 (the browser\'s SwiftShader)', async () => {
  const gpu = await (await requestNodeAdapter('auto')).requestDevice(); // no features requested
  const plain = E.Device.fromGPUDevice(gpu, { adapterName: 'no-f16' });
  try {
    assert.ok(!plain.hasF16);
    const unet = await loadUnet(subFolder(memoryFolder(filesOf(MODEL), 'emoji-16'), 'unet'), { device: plain });
    const ref = await loadUnet(join(MODEL, 'unet'), { device: dev });
    assert.ok([...unet.parameters()].every((p) => p.dtype === 'f32'));
    await sameWeights(unet, ref, 'unet (f16 file → f32)');
    unet.dispose(); ref.dispose();
    await assertThrows(() => loadUnet(join(MODEL, 'unet'), { device: plain, dtype: 'f16' }), /f16/, /shader-f16/);
  } finally {
    plain.destroy();
    gpu.destroy();
  }
});

s('parseSafetensors validates bytes like a file and gives the same tensors', async () => {
  const path = join(MODEL, 'vae', 'diffusion_pytorch_model.safetensors');
  const bytes = new Uint8Array(readFileSync(path));
  const a = await loadSafetensors(path, { device: dev });
  const b = await parseSafetensors(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length) as ArrayBuffer, { device: dev, name: 'vae.safetensors' });
  assert.equal([...a.keys()], [...b.keys()]);
  for (const [k, t] of a) assert.equal(Array.from(await t.data()), Array.from(await b.get(k)!.data()), k);
  for (const t of [...a.values(), ...b.values()]) t.dispose();
  await assertThrows(() => parseSafetensors(bytes.subarray(0, bytes.length - 3), { device: dev, name: 'cut.safetensors' }), /cut\.safetensors/, /run past the data buffer|truncated/);
  assert.throws(() => parseSafetensorsBytes(bytes.subarray(0, 5), 'tiny.bin'), /tiny\.bin.*too short/);
});

s('loader errors name the file and key through a ModelFolder', async () => {
  const files = filesOf(MODEL);
  // The text encoder with one weight missing, one extra and one of the wrong shape.
  const te = await loadClipTextModel(join(MODEL, 'text_encoder'), { device: dev });
  const state: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [k, t] of te.stateDict()) state[k] = { shape: [...t.shape], data: (await t.data()) as Float32Array };
  te.dispose();
  delete state['final_layer_norm.bias'];
  state['extra.weight'] = { shape: [2], data: new Float32Array(2) };
  state['embeddings.position_embedding.weight'] = { shape: [3, 64], data: new Float32Array(192) };
  const broken = memoryFolder({ ...files, 'text_encoder/model.safetensors': safetensorsBytes(state) }, 'mem/emoji');
  await assertThrows(() => loadStableDiffusion(broken, { device: dev }), /cannot load mem\/emoji/, /text_encoder: loadClipTextModel mem\/emoji\/text_encoder\/model\.safetensors/,
    /missing keys \(1\): final_layer_norm\.bias/, /unexpected keys \(1\): extra\.weight/, /embeddings\.position_embedding\.weight: shape \[3,64\] in the file, \[16,64\] expected/);
  // A missing weights file and a missing config.
  const noUnet = { ...files };
  delete noUnet['unet/diffusion_pytorch_model.safetensors'];
  await assertThrows(() => loadUnet(subFolder(memoryFolder(noUnet, 'mem'), 'unet'), { device: dev }), /loadUnet mem\/unet: no weights file/);
  const noVaeConfig = { ...files };
  delete noVaeConfig['vae/config.json'];
  await assertThrows(() => loadVae(subFolder(memoryFolder(noVaeConfig, 'mem'), 'vae'), { device: dev }), /loadVae: cannot read mem\/vae\/config\.json/, /no such file/);
  const noTokenizer = Object.fromEntries(Object.entries(files).filter(([k]) => !k.startsWith('tokenizer/')));
  await assertThrows(() => loadStableDiffusion(memoryFolder(noTokenizer, 'mem'), { device: dev }), /missing component folder\(s\): tokenizer/);
  await assertThrows(() => loadStableDiffusion(memoryFolder({}, 'empty'), { device: dev }), /empty: not a diffusers pipeline folder/);
});

s.run();
