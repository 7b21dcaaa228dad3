// nn modules: PyTorch parameter naming, state-dict round trips and errors, layers against the
// functional ops, and LoRA (zero init, gradients vs a float64 reference, merge/unmerge,
// injection, a short AdamW training run).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as E from '../engine/index.js';
import { AdamW } from '../engine/optim.js';
import { loadSafetensors, saveSafetensors } from '../engine/safetensors.js';
import {
  Conv2d, Embedding, GroupNorm, LayerNorm, Linear, LoRALinear, Module, ModuleList, copyInto, injectLoRA, manualSeed,
} from '../engine/nn/index.js';
import { assertClose, assertThrows, finiteDiff, randTensor, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('nn');

// ---------------------------------------------------------------- a small nested model

class Resnet extends Module {
  conv1: Conv2d;
  norm1: GroupNorm;
  constructor(c: number) {
    super();
    this.conv1 = this.registerModule('conv1', new Conv2d(c, c, 3, { padding: 1 }));
    this.norm1 = this.registerModule('norm1', new GroupNorm(1, c));
  }
  forward(x: E.Tensor): E.Tensor {
    return E.tidy(() => this.norm1.forward(this.conv1.forward(x)));
  }
}

class DownBlock extends Module {
  resnets: ModuleList<Resnet>;
  constructor(c: number, n: number) {
    super();
    this.resnets = this.registerModule('resnets', new ModuleList(Array.from({ length: n }, () => new Resnet(c))));
  }
}

class Net extends Module {
  down_blocks: ModuleList<DownBlock>;
  proj: Linear;
  ln: LayerNorm;
  emb: Embedding;
  constructor() {
    super();
    this.emb = this.registerModule('emb', new Embedding(5, 3));
    this.down_blocks = this.registerModule('down_blocks', new ModuleList([new DownBlock(2, 2), new DownBlock(2, 1)]));
    this.proj = this.registerModule('proj', new Linear(4, 3));
    this.ln = this.registerModule('ln', new LayerNorm(3));
  }
  /** x [N, 2, H, 4] → [N, 2, H, 3] */
  forward(x: E.Tensor): E.Tensor {
    return E.tidy(() => {
      let h = x;
      for (const b of this.down_blocks) for (const r of b.resnets) h = r.forward(h);
      return this.ln.forward(this.proj.forward(h));
    });
  }
}

const NET_PARAMS: [string, number[]][] = [
  ['emb.weight', [5, 3]],
  ...[[0, 0], [0, 1], [1, 0]].flatMap(([b, r]): [string, number[]][] => [
    [`down_blocks.${b}.resnets.${r}.conv1.weight`, [2, 2, 3, 3]],
    [`down_blocks.${b}.resnets.${r}.conv1.bias`, [2]],
    [`down_blocks.${b}.resnets.${r}.norm1.weight`, [2]],
    [`down_blocks.${b}.resnets.${r}.norm1.bias`, [2]],
  ]),
  ['proj.weight', [3, 4]],
  ['proj.bias', [3]],
  ['ln.weight', [3]],
  ['ln.bias', [3]],
];

async function host(t: E.Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.data());
}

s('namedParameters: dotted PyTorch names, shapes and order; trainable f32; freeze/unfreeze', () => {
  const net = new Net();
  try {
    const got = [...net.namedParameters()].map(([n, t]) => [n, [...t.shape]]);
    assert.equal(got, NET_PARAMS);
    assert.is(net.parameters().length, NET_PARAMS.length);
    assert.ok(net.parameters().every((t) => t.dtype === 'f32' && t.requiresGrad));
    assert.equal([...net.stateDict().keys()], NET_PARAMS.map(([n]) => n));
    net.down_blocks.get(1).freeze();
    assert.is(net.trainableParameters().length, NET_PARAMS.length - 4);
    net.freeze();
    assert.is(net.trainableParameters().length, 0);
    net.unfreeze();
    assert.is(net.trainableParameters().length, NET_PARAMS.length);
    // GroupNorm without affine and a bias-free Linear register nothing for the missing tensors.
    const m = new Module();
    m.registerModule('gn', new GroupNorm(2, 4, { affine: false }));
    m.registerModule('fc', new Linear(2, 3, { bias: false }));
    assert.equal([...m.stateDict().keys()], ['fc.weight']);
    m.dispose();
  } finally {
    net.dispose();
  }
});

s('parameters survive tidy(); init is seeded and within torch bounds', async () => {
  const a = E.tidy(() => new Linear(7, 3, { seed: 11 }));
  const b = new Linear(7, 3, { seed: 11 });
  try {
    const wa = await host(a.weight), wb = await host(b.weight), ba = await host(a.bias!);
    assert.equal(wa, wb);
    const bound = 1 / Math.sqrt(7);
    assert.ok([...wa, ...ba].every((v) => Math.abs(v) <= bound));
    assert.ok(new Set(wa).size > 15, 'values vary');
    // manualSeed makes default seeds reproducible.
    manualSeed(3);
    const c = new Conv2d(2, 4, 3, { groups: 2 });
    manualSeed(3);
    const d = new Conv2d(2, 4, 3, { groups: 2 });
    assert.equal([...c.weight.shape], [4, 1, 3, 3]);
    assert.equal(await host(c.weight), await host(d.weight));
    assert.ok((await host(c.weight)).every((v) => Math.abs(v) <= 1 / 3));
    c.dispose(); d.dispose();
  } finally {
    a.dispose(); b.dispose();
  }
});

s('stateDict → saveSafetensors → loadSafetensors → loadStateDict gives identical outputs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'nn-test-'));
  manualSeed(100);
  const a = new Net();
  manualSeed(200);
  const b = new Net();
  const x = randTensor([2, 2, 3, 4], 1).t;
  try {
    // GroupNorm/LayerNorm init to ones/zeros: make them differ too so the load is visible.
    for (const [n, t] of a.stateDict()) if (/norm1|ln/.test(n)) copyInto(t, randTensor([...t.shape], n.length).t);
    const ya = await host(a.forward(x));
    const yb0 = await host(b.forward(x));
    assert.not.equal(ya, yb0);
    const file = join(dir, 'net.safetensors');
    await saveSafetensors(file, a.stateDict());
    const loaded = await loadSafetensors(file, { device: dev });
    const res = b.loadStateDict(loaded);
    for (const t of loaded.values()) t.dispose();
    assert.equal(res, { missing: [], unexpected: [] });
    assert.equal(await host(b.forward(x)), ya);
    for (const [n, t] of b.stateDict()) assert.equal(await host(t), await host(a.stateDict().get(n)!), n);
  } finally {
    a.dispose(); b.dispose(); x.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
});

s('loadStateDict lists missing, unexpected and mis-shaped keys in one Error, and changes nothing', async () => {
  const net = new Net();
  const src = new Map<string, E.Tensor>();
  for (const [n, shape] of NET_PARAMS) src.set(n, E.zeros(shape));
  try {
    src.get('proj.bias')!.dispose();
    src.delete('proj.bias');
    src.get('ln.weight')!.dispose();
    src.set('ln.weight', E.zeros([4]));
    src.get('down_blocks.1.resnets.0.conv1.weight')!.dispose();
    src.set('down_blocks.1.resnets.0.conv1.weight', E.zeros([2, 2, 1, 3]));
    src.set('extra.weight', E.zeros([1]));
    const before = await host(net.emb.weight);
    await assertThrows(() => net.loadStateDict(src),
      /Net\.loadStateDict/, /missing keys \(1\): proj\.bias/, /unexpected keys \(1\): extra\.weight/,
      /mis-shaped keys \(2\)/, /ln\.weight: shape \[4\] in the state dict, \[3\] in the model/,
      /down_blocks\.1\.resnets\.0\.conv1\.weight: shape \[2, ?2, ?1, ?3\]/);
    assert.equal(await host(net.emb.weight), before, 'nothing was written');
    // Non-strict: missing/unexpected are reported, mis-shaped still throws.
    await assertThrows(() => net.loadStateDict(src, { strict: false }), /mis-shaped keys \(2\)/);
    src.get('ln.weight')!.dispose(); src.delete('ln.weight');
    src.get('down_blocks.1.resnets.0.conv1.weight')!.dispose(); src.delete('down_blocks.1.resnets.0.conv1.weight');
    const res = net.loadStateDict(src, { strict: false });
    assert.equal(res.missing.sort(), ['down_blocks.1.resnets.0.conv1.weight', 'ln.weight', 'proj.bias']);
    assert.equal(res.unexpected, ['extra.weight']);
    assert.ok((await host(net.emb.weight)).every((v) => v === 0), 'present keys were loaded');
  } finally {
    net.dispose();
    for (const t of src.values()) t.dispose();
  }
});

s('Linear and Conv2d forward equal the functional ops (and Linear a float64 reference)', async () => {
  const lin = new Linear(5, 3, { seed: 4 });
  const conv = new Conv2d(4, 6, [3, 2], { seed: 5, stride: [2, 1], padding: [1, 0], dilation: 1, groups: 2 });
  const x = randTensor([2, 1, 5], 6);
  const xc = randTensor([1, 4, 5, 3], 7).t;
  try {
    const y = await host(lin.forward(x.t));
    const yf = await host(E.add(E.matmul(x.t, lin.weight, { transB: true }), lin.bias!));
    assert.equal(y, yf);
    const w = await host(lin.weight), b = await host(lin.bias!);
    const ref = new Float64Array(2 * 3);
    for (let m = 0; m < 2; m++) for (let o = 0; o < 3; o++) {
      let acc = b[o];
      for (let k = 0; k < 5; k++) acc += x.x[m * 5 + k] * w[o * 5 + k];
      ref[m * 3 + o] = acc;
    }
    assertClose(y, ref, 1e-5, 1e-6, 'Linear vs float64');
    assert.equal(await host(conv.forward(xc)),
      await host(E.conv2d(xc, conv.weight, conv.bias, { stride: [2, 1], padding: [1, 0], groups: 2 })));
    await assertThrows(() => lin.forward(xc), /Linear\(5, 3\)/, /\[1, ?4, ?5, ?3\]/);
    // Embedding and GroupNorm/LayerNorm delegate to their ops too.
    const emb = new Embedding(4, 2, { seed: 8 });
    const e = await host(emb.forward([3, 0], [2]));
    const tbl = await host(emb.weight);
    assert.equal(e, Float64Array.from([tbl[6], tbl[7], tbl[0], tbl[1]]));
    emb.dispose();
  } finally {
    lin.dispose(); conv.dispose(); x.t.dispose(); xc.dispose();
  }
});

// ---------------------------------------------------------------- LoRA

/** Float64 LoRA forward y = x Wᵀ + b + s (x Aᵀ) Bᵀ and its analytic gradients for L = Σ G ⊙ y. */
function loraRef(x: Float64Array, W: Float64Array, b: Float64Array, A: Float64Array, B: Float64Array, s: number, M: number, I: number, O: number, R: number) {
  const H = new Float64Array(M * R);
  for (let m = 0; m < M; m++) for (let r = 0; r < R; r++) { let a = 0; for (let i = 0; i < I; i++) a += x[m * I + i] * A[r * I + i]; H[m * R + r] = a; }
  const y = new Float64Array(M * O);
  for (let m = 0; m < M; m++) for (let o = 0; o < O; o++) {
    let a = b[o];
    for (let i = 0; i < I; i++) a += x[m * I + i] * W[o * I + i];
    for (let r = 0; r < R; r++) a += s * H[m * R + r] * B[o * R + r];
    y[m * O + o] = a;
  }
  const grads = (G: Float64Array) => {
    const dB = new Float64Array(O * R), dA = new Float64Array(R * I);
    for (let o = 0; o < O; o++) for (let r = 0; r < R; r++) { let a = 0; for (let m = 0; m < M; m++) a += G[m * O + o] * H[m * R + r]; dB[o * R + r] = s * a; }
    for (let r = 0; r < R; r++) for (let i = 0; i < I; i++) {
      let a = 0;
      for (let m = 0; m < M; m++) { let gb = 0; for (let o = 0; o < O; o++) gb += G[m * O + o] * B[o * R + r]; a += gb * x[m * I + i]; }
      dA[r * I + i] = s * a;
    }
    return { dA, dB };
  };
  return { y, grads };
}

s('LoRA: fresh adapter (B = 0) leaves the output equal to the base; init and naming', async () => {
  const lin = new Linear(6, 5, { seed: 21 });
  const x = randTensor([3, 6], 22).t;
  try {
    const base = await host(lin.forward(x));
    const w0 = lin.weight;
    const lora = new LoRALinear(lin, { rank: 3, seed: 9 });
    assert.is(lora.weight, w0, 'the base tensor is adopted, not copied');
    assert.is(lin.parameters().length, 0);
    assert.equal([...lora.namedParameters()].map(([n, t]) => [n, [...t.shape]]),
      [['weight', [5, 6]], ['bias', [5]], ['lora_A.weight', [3, 6]], ['lora_B.weight', [5, 3]]]);
    assert.equal(lora.trainableParameters(), [lora.loraA, lora.loraB]);
    assert.is(lora.scale, 1);
    assert.equal(await host(lora.forward(x)), base);
    assert.ok((await host(lora.loraB)).every((v) => v === 0));
    const a = await host(lora.loraA);
    const std = Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);
    assert.ok(std > 0.1 && std < 0.6, `lora_A std ${std} ≈ 1/r`);
    lora.dispose();
  } finally {
    x.dispose();
  }
});

s('LoRA backward: only A and B get gradients, equal to the float64 analytic reference', async () => {
  const M = 4, I = 6, O = 5, R = 3, alpha = 6, sc = alpha / R;
  const lora = new LoRALinear(new Linear(I, O, { seed: 31 }), { rank: R, alpha });
  const x = randTensor([2, 2, I], 32);
  const A = randTensor([R, I], 33), B = randTensor([O, R], 34), G = randTensor([2, 2, O], 35);
  try {
    copyInto(lora.loraA, A.t);
    copyInto(lora.loraB, B.t);
    const W = await host(lora.weight), b = await host(lora.bias!);
    const ref = loraRef(x.x, W, b, A.x, B.x, sc, M, I, O, R);
    const loss = E.tidy(() => {
      const y = lora.forward(x.t);
      return E.sum(E.mul(y, G.t));
    });
    const refLoss = ref.y.reduce((acc, v, i) => acc + v * G.x[i], 0);
    assertClose([await loss.item()], [refLoss], 1e-5, 1e-5, 'loss');
    E.backward(loss);
    loss.dispose();
    assert.is(lora.weight.grad, null, 'frozen base weight has no grad');
    assert.is(lora.bias!.grad, null, 'frozen base bias has no grad');
    const { dA, dB } = ref.grads(G.x);
    const gA = await host(lora.loraA.grad!), gB = await host(lora.loraB.grad!);
    assert.ok([...gA, ...gB].every(Number.isFinite));
    assertClose(gA, dA, 1e-4, 1e-5, 'dA');
    assertClose(gB, dB, 1e-4, 1e-5, 'dB');
    // The analytic reference itself, against central differences of its forward.
    const f = ([a, bb]: Float64Array[]) => loraRef(x.x, W, b, a, bb, sc, M, I, O, R).y.reduce((acc, v, i) => acc + v * G.x[i], 0);
    const [fdA, fdB] = finiteDiff(f, [A.x, B.x]);
    assertClose(dA, fdA, 1e-5, 1e-6, 'dA vs finite differences');
    assertClose(dB, fdB, 1e-5, 1e-6, 'dB vs finite differences');
  } finally {
    lora.dispose();
    for (const p of [x, A, B, G]) p.t.dispose();
  }
});

s('LoRA on an f16 base: f32 adapter, output and gradients match the f32 layer to f16 rounding; merge works', async () => {
  if (!dev.hasF16) return;
  const I = 6, O = 5, R = 3;
  const base32 = new Linear(I, O, { seed: 51 });
  const W = await host(base32.weight), b = await host(base32.bias!);
  const l32 = new LoRALinear(base32, { rank: R, seed: 52 });
  const base16 = new Linear(I, O, { weights: { weight: E.cast(E.tensor(Float32Array.from(W), [O, I]), 'f16'), bias: E.cast(E.tensor(Float32Array.from(b), [O]), 'f16') } });
  const l16 = new LoRALinear(base16, { rank: R, seed: 52 });
  const Bv = randTensor([O, R], 53);
  const x = randTensor([2, 3, I], 54), G = randTensor([2, 3, O], 55);
  try {
    assert.is(l16.weight.dtype, 'f16');
    assert.is(l16.loraA.dtype, 'f32'); assert.is(l16.loraB.dtype, 'f32');
    copyInto(l32.loraB, Bv.t); copyInto(l16.loraB, Bv.t);
    const run = (l: LoRALinear, xin: E.Tensor) => E.tidy(() => E.sum(E.mul(E.cast(l.forward(xin), 'f32'), G.t)));
    const x16 = E.cast(x.t, 'f16');
    const y32 = await host(l32.forward(x.t)), y16 = await host(E.cast(l16.forward(x16), 'f32'));
    assertClose(y16, y32, 1e-2, 1e-2, 'forward');
    const L32 = run(l32, x.t), L16 = run(l16, x16);
    E.backward(L32); E.backward(L16);
    assert.is(l16.loraA.grad!.dtype, 'f32');
    assertClose(await host(l16.loraA.grad!), await host(l32.loraA.grad!), 2e-2, 2e-2, 'dA');
    assertClose(await host(l16.loraB.grad!), await host(l32.loraB.grad!), 2e-2, 2e-2, 'dB');
    assert.is(l16.weight.grad, null, 'the f16 base stays frozen');
    l16.merge();
    assert.is(l16.weight.dtype, 'f16');
    assertClose(await host(E.cast(l16.forward(x16), 'f32')), y32, 1e-2, 1e-2, 'merged forward');
    for (const t of [L32, L16, x16]) t.dispose();
  } finally {
    l32.dispose(); l16.dispose();
    for (const p of [Bv, x, G]) p.t.dispose();
  }
});

s('LoRA merge/unmerge and enabled: merged forward equals adapter forward; unmerge restores W', async () => {
  const lora = new LoRALinear(new Linear(7, 4, { seed: 41 }), { rank: 2, alpha: 1 });
  const x = randTensor([3, 7], 42).t;
  const B = randTensor([4, 2], 43).t;
  try {
    copyInto(lora.loraB, B);
    const w0 = await host(lora.weight);
    const base = await host(E.add(E.matmul(x, lora.weight, { transB: true }), lora.bias!));
    const yAdapter = await host(lora.forward(x));
    assert.not.equal(yAdapter, base);
    lora.enabled = false;
    assert.equal(await host(lora.forward(x)), base, 'disabled adapter = base');
    lora.enabled = true;
    lora.merge();
    assert.ok(lora.merged);
    lora.merge(); // idempotent
    const A = await host(lora.loraA), Bh = await host(lora.loraB), w1 = await host(lora.weight);
    const wRef = w0.map((v, k) => { const o = Math.floor(k / 7), i = k % 7; return v + 0.5 * (Bh[o * 2] * A[i] + Bh[o * 2 + 1] * A[7 + i]); });
    assertClose(w1, wRef, 1e-5, 1e-6, 'merged W');
    assertClose(await host(lora.forward(x)), yAdapter, 1e-5, 1e-5, 'merged forward');
    lora.unmerge();
    assert.not.ok(lora.merged);
    assertClose(await host(lora.weight), w0, 0, 1e-6, 'unmerged W');
    assertClose(await host(lora.forward(x)), yAdapter, 1e-5, 1e-5, 'unmerged forward');
  } finally {
    lora.dispose(); x.dispose(); B.dispose();
  }
});

class Attn extends Module {
  to_q: Linear; to_k: Linear; to_v: Linear;
  constructor(d: number) {
    super();
    this.to_q = this.registerModule('to_q', new Linear(d, d));
    this.to_k = this.registerModule('to_k', new Linear(d, d));
    this.to_v = this.registerModule('to_v', new Linear(d, d, { bias: false }));
  }
}

s('injectLoRA replaces matching Linears in place (fields, ModuleList items, state-dict names)', async () => {
  const root = new Module();
  const blocks = root.registerModule('blocks', new ModuleList([new Attn(3), new Attn(3)]));
  blocks.push(new Linear(3, 3) as unknown as Attn);
  const x = randTensor([2, 3], 51).t;
  try {
    const before = await host(blocks.get(0).to_q.forward(x));
    root.freeze();
    const res = injectLoRA(root, (n) => /to_(q|v)$/.test(n) || n === 'blocks.2', { rank: 2 });
    assert.equal(res.names, ['blocks.0.to_q', 'blocks.0.to_v', 'blocks.1.to_q', 'blocks.1.to_v', 'blocks.2']);
    assert.ok(blocks.get(0).to_q instanceof LoRALinear, 'field repointed');
    assert.ok(blocks.get(2) instanceof LoRALinear, 'ModuleList item replaced');
    assert.ok(!(blocks.get(0).to_k instanceof LoRALinear));
    assert.equal(await host(blocks.get(0).to_q.forward(x)), before);
    const names = [...root.stateDict().keys()];
    assert.equal(names.slice(0, 9), [
      'blocks.0.to_q.weight', 'blocks.0.to_q.bias', 'blocks.0.to_q.lora_A.weight', 'blocks.0.to_q.lora_B.weight',
      'blocks.0.to_k.weight', 'blocks.0.to_k.bias',
      'blocks.0.to_v.weight', 'blocks.0.to_v.lora_A.weight', 'blocks.0.to_v.lora_B.weight',
    ]);
    const trainable = [...root.namedParameters()].filter(([, t]) => t.requiresGrad).map(([n]) => n);
    assert.is(trainable.length, 10);
    assert.ok(trainable.every((n) => /lora_[AB]\.weight$/.test(n)));
    // Injecting again does not wrap twice.
    assert.equal(injectLoRA(root, () => true).names, ['blocks.0.to_k', 'blocks.1.to_k']);
  } finally {
    root.dispose(); x.dispose();
  }
});

s('a LoRA-wrapped Linear regression trains with AdamW and its loss falls', async () => {
  const I = 8, O = 4, N = 16;
  const lora = new LoRALinear(new Linear(I, O, { seed: 61 }), { rank: 2, seed: 62 });
  const x = randTensor([N, I], 63).t;
  // Target: the base layer plus a rank-1 change, reachable by the adapter.
  const u = randTensor([O, 1], 64).t, v = randTensor([1, I], 65).t;
  const target = E.noGrad(() => E.tidy(() => E.add(lora.forward(x), E.matmul(x, E.matmul(u, v), { transB: true }))));
  const w0 = await host(lora.weight);
  const opt = new AdamW(lora.trainableParameters(), { lr: 0.05, weightDecay: 0 });
  try {
    const lossOf = () => E.tidy(() => { const d = E.sub(lora.forward(x), target); return E.mean(E.mul(d, d)); });
    let first = 0, last = 0;
    for (let step = 0; step < 50; step++) {
      const loss = lossOf();
      if (step === 0) first = await loss.item();
      E.backward(loss);
      loss.dispose();
      opt.step();
      opt.zeroGrad();
    }
    const final = E.noGrad(lossOf);
    last = await final.item();
    final.dispose();
    assert.ok(Number.isFinite(last) && last < 0.2 * first, `loss ${first} → ${last}`);
    assert.equal(await host(lora.weight), w0, 'base weight untouched');
  } finally {
    opt.dispose();
    lora.dispose();
    for (const t of [x, u, v, target]) t.dispose();
  }
});

s('no leaks: model forward in tidy, LoRA merge/unmerge, loadStateDict and dispose return every buffer', async () => {
  const live0 = dev.memory().liveBytes;
  const net = new Net();
  const lora = new LoRALinear(new Linear(3, 3), { rank: 2 });
  const x = randTensor([1, 2, 2, 4], 71).t;
  const live1 = dev.memory().liveBytes;
  E.tidy(() => { net.forward(x); lora.forward(E.zeros([2, 3])); });
  lora.merge(); lora.unmerge();
  // noGrad: outside tidy a recorded node would keep its saved inputs alive.
  const src = E.noGrad(() => new Map([...net.stateDict()].map(([n, t]) => [n, E.add(t, 1)] as [string, E.Tensor])));
  net.loadStateDict(src);
  for (const t of src.values()) t.dispose();
  await x.data();
  assert.is(dev.memory().liveBytes, live1);
  net.dispose(); lora.dispose(); x.dispose();
  assert.is(dev.memory().liveBytes, live0);
});

s.run();
