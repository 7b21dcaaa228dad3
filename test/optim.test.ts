// Optimizers against float64 references of PyTorch's update rules (torch.optim.SGD / Adam /
// AdamW, torch.nn.utils.clip_grad_norm_), their chunked paths, and their error handling.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { Adam, AdamW, Optimizer, SGD, clipGradNorm } from '../engine/optim.js';
import { copyInto } from '../engine/nn/module.js';
import { assertClose, assertThrows, randArray, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('optim');

// Awkward sizes: a single element, fewer than a workgroup, not a multiple of 256, rank 2.
const SHAPES = [[1], [7], [3, 100]];
const STEPS = 4;

// ---------------------------------------------------------------- float64 references

interface Hyper {
  kind: 'sgd' | 'adam' | 'adamw';
  lr: number;
  momentum?: number;
  nesterov?: boolean;
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
}

/** One parameter's float64 state under torch's single-tensor update rules. */
class RefParam {
  step = 0;
  buf: Float64Array | null = null;
  m: Float64Array;
  v: Float64Array;
  constructor(public p: Float64Array) {
    this.m = new Float64Array(p.length);
    this.v = new Float64Array(p.length);
  }

  update(g: Float64Array, h: Hyper, lr: number): void {
    this.step++;
    const p = this.p, n = p.length, wd = h.weightDecay ?? (h.kind === 'adamw' ? 1e-2 : 0);
    if (h.kind === 'sgd') {
      const mu = h.momentum ?? 0;
      const d = Float64Array.from(g, (x, i) => x + wd * p[i]);
      if (mu > 0) {
        if (!this.buf) this.buf = Float64Array.from(d);
        else for (let i = 0; i < n; i++) this.buf[i] = mu * this.buf[i] + d[i];
        for (let i = 0; i < n; i++) d[i] = h.nesterov ? d[i] + mu * this.buf[i] : this.buf[i];
      }
      for (let i = 0; i < n; i++) p[i] -= lr * d[i];
      return;
    }
    const [b1, b2] = h.betas ?? [0.9, 0.999];
    const eps = h.eps ?? 1e-8;
    const bc1 = 1 - b1 ** this.step, bc2 = 1 - b2 ** this.step;
    for (let i = 0; i < n; i++) {
      let gi = g[i];
      if (h.kind === 'adam') gi += wd * p[i];
      else p[i] *= 1 - lr * wd;
      this.m[i] = b1 * this.m[i] + (1 - b1) * gi;
      this.v[i] = b2 * this.v[i] + (1 - b2) * gi * gi;
      const denom = Math.sqrt(this.v[i]) / Math.sqrt(bc2) + eps;
      p[i] -= (lr / bc1) * (this.m[i] / denom);
    }
  }
}

function makeOptimizer(h: Hyper, params: E.Tensor[]): Optimizer {
  if (h.kind === 'sgd') return new SGD(params, { lr: h.lr, momentum: h.momentum, weightDecay: h.weightDecay, nesterov: h.nesterov });
  const opts = { lr: h.lr, betas: h.betas, eps: h.eps, weightDecay: h.weightDecay };
  return h.kind === 'adam' ? new Adam(params, opts) : new AdamW(params, opts);
}

function setGrad(p: E.Tensor, g: ArrayLike<number>): void {
  p.grad?.dispose();
  p.grad = E.tensor(g, p.shape);
}

/** Runs STEPS steps on GPU and reference with the same random gradients; the lr changes at step 3. */
async function checkAgainstReference(h: Hyper, label: string): Promise<void> {
  const hosts = SHAPES.map((sh, k) => randArray(sh.reduce((a, b) => a * b, 1), 100 + k));
  const params = SHAPES.map((sh, k) => E.tensor(hosts[k], sh).requireGrad());
  const refs = hosts.map((x) => new RefParam(Float64Array.from(x)));
  const opt = makeOptimizer(h, params);
  for (let t = 1; t <= STEPS; t++) {
    const lr = t >= 3 ? h.lr * 0.5 : h.lr;
    opt.lr = lr;
    params.forEach((p, k) => {
      const g = randArray(p.size, 1000 * t + k, -2, 2);
      setGrad(p, g);
      refs[k].update(g, h, lr);
    });
    const before = dev.dispatchCount, submits = dev.submitCount;
    opt.step();
    assert.is(dev.dispatchCount - before, params.length, `${label}: one fused dispatch per parameter`);
    assert.is(dev.submitCount, submits, `${label}: step() only records work (no submit, no readback)`);
  }
  for (let k = 0; k < params.length; k++) {
    assertClose(await params[k].data(), refs[k].p, 2e-5, 2e-6, `${label} param ${SHAPES[k]}`);
    // The parameters must actually have moved (a no-op kernel would otherwise pass for tiny lr).
    assert.ok(refs[k].p.some((x, i) => Math.abs(x - hosts[k][i]) > 1e-3), `${label}: reference did not move`);
  }
  if (h.kind !== 'sgd') {
    const st = opt.stateOf(params[2])!;
    assert.is(st.step, STEPS);
    assertClose(await st.buffers.expAvg.data(), refs[2].m, 1e-5, 1e-6, `${label} exp_avg`);
    assertClose(await st.buffers.expAvgSq.data(), refs[2].v, 1e-5, 1e-7, `${label} exp_avg_sq`);
  }
  opt.zeroGrad();
  assert.ok(params.every((p) => p.grad === null), 'zeroGrad clears grads');
  opt.dispose();
  params.forEach((p) => p.dispose());
}

s('SGD plain, with weight decay, momentum and Nesterov equal float64 torch.optim.SGD', async () => {
  await checkAgainstReference({ kind: 'sgd', lr: 0.1 }, 'sgd');
  await checkAgainstReference({ kind: 'sgd', lr: 0.1, weightDecay: 0.3 }, 'sgd wd');
  await checkAgainstReference({ kind: 'sgd', lr: 0.05, momentum: 0.9 }, 'sgd momentum');
  await checkAgainstReference({ kind: 'sgd', lr: 0.05, momentum: 0.8, nesterov: true, weightDecay: 0.1 }, 'sgd nesterov wd');
});

s('Adam (L2 weight decay) equals float64 torch.optim.Adam', async () => {
  await checkAgainstReference({ kind: 'adam', lr: 0.05 }, 'adam');
  await checkAgainstReference({ kind: 'adam', lr: 0.05, weightDecay: 0.5, betas: [0.8, 0.99], eps: 1e-6 }, 'adam wd');
});

s('AdamW (decoupled weight decay) equals float64 torch.optim.AdamW', async () => {
  await checkAgainstReference({ kind: 'adamw', lr: 0.05 }, 'adamw default wd');
  await checkAgainstReference({ kind: 'adamw', lr: 0.05, weightDecay: 0.9, betas: [0.5, 0.9] }, 'adamw wd');
});

s('Adam and AdamW differ when weight decay is on (L2 vs decoupled)', async () => {
  const x = randArray(7, 5);
  const run = async (Opt: typeof Adam | typeof AdamW) => {
    const p = E.tensor(x, [7]).requireGrad();
    const opt = new Opt([p], { lr: 0.1, weightDecay: 0.5 });
    for (let t = 0; t < 3; t++) { setGrad(p, randArray(7, 50 + t)); opt.step(); }
    const out = await p.data();
    opt.zeroGrad(); opt.dispose(); p.dispose();
    return out;
  };
  const a = await run(Adam), w = await run(AdamW);
  assert.ok(a.some((v, i) => Math.abs(v - w[i]) > 1e-3), 'L2 and decoupled decay gave the same result');
});

s('a parameter without a grad is skipped; per-parameter step counts (bias correction) as torch', async () => {
  const xa = randArray(7, 21), xb = randArray(300, 22);
  const a = E.tensor(xa, [7]).requireGrad(), b = E.tensor(xb, [300]).requireGrad();
  const ra = new RefParam(Float64Array.from(xa)), rb = new RefParam(Float64Array.from(xb));
  const h: Hyper = { kind: 'adam', lr: 0.02 };
  const opt = new Adam([a, b], { lr: 0.02 });
  for (let t = 1; t <= 3; t++) {
    const ga = randArray(7, 300 + t);
    setGrad(a, ga); ra.update(ga, h, 0.02);
    if (t === 3) { const gb = randArray(300, 400 + t); setGrad(b, gb); rb.update(gb, h, 0.02); }
    if (t === 1) {
      assert.is(opt.stateOf(b), undefined);
      const before = dev.dispatchCount;
      opt.step();
      assert.is(dev.dispatchCount - before, 1, 'only the parameter with a grad is updated');
      assertClose(await b.data(), xb, 0, 0, 'untouched parameter');
    } else {
      opt.step();
    }
  }
  assert.is(opt.stateOf(a)!.step, 3);
  assert.is(opt.stateOf(b)!.step, 1);
  assert.is(opt.stateDict().length, 2);
  assertClose(await a.data(), ra.p, 2e-5, 2e-6, 'a');
  assertClose(await b.data(), rb.p, 2e-5, 2e-6, 'b (its first step: step-1 bias correction)');
  opt.zeroGrad(); opt.dispose(); a.dispose(); b.dispose();
});

s('state is created lazily and freed by dispose(); step() after dispose throws', async () => {
  const p = E.tensor(randArray(300, 7), [300]).requireGrad();
  const opt = new AdamW([p]);
  setGrad(p, randArray(300, 8));
  const before = dev.memory().liveBytes;
  opt.step();
  const withState = dev.memory().liveBytes;
  assert.ok(withState > before, 'moments allocated on the first step');
  opt.step();
  assert.is(dev.memory().liveBytes, withState, 'no allocation after the first step');
  opt.dispose();
  assert.is(dev.memory().liveBytes, before, 'dispose frees the moments');
  await assertThrows(() => opt.step(), /AdamW\.step/, /disposed/);
  opt.zeroGrad(); p.dispose();
});

s('a step inside tidy() keeps the optimizer state', async () => {
  const p = E.tensor(randArray(7, 9), [7]).requireGrad();
  const opt = new SGD([p], { lr: 0.1, momentum: 0.9 });
  for (let t = 0; t < 2; t++) {
    E.tidy(() => { setGrad(p, randArray(7, 10 + t)); opt.step(); });
  }
  assert.ok(!opt.stateOf(p)!.buffers.momentum.isDisposed, 'momentum buffer survived tidy');
  assert.ok(!p.isDisposed);
  opt.zeroGrad(); opt.dispose(); p.dispose();
});

s('loadStateDict into a fresh optimizer continues bit-identically; bad state is refused whole', async () => {
  const mk = () => [E.tensor(randArray(37, 21), [37]).requireGrad(), E.tensor(randArray(6, 22), [2, 3]).requireGrad()];
  const [a0, a1] = mk();
  const [b0, b1] = mk();
  const optA = new AdamW([a0, a1], { lr: 0.01 });
  const grads = (t: number) => [randArray(37, 30 + t), randArray(6, 40 + t)];
  for (let t = 0; t < 3; t++) { const g = grads(t); setGrad(a0, g[0]); if (t !== 1) setGrad(a1, g[1]); optA.step(); optA.zeroGrad(); }
  // b: the same weights, then a fresh optimizer given copies of a's state.
  copyInto(b0, a0); copyInto(b1, a1);
  const optB = new AdamW([b0, b1], { lr: 0.01 });
  const copies = optA.stateDict().map((e) => ({ param: e.param === a0 ? b0 : b1, step: e.step, buffers: Object.fromEntries(Object.entries(e.buffers).map(([k, v]) => [k, E.mul(v, 1)])) }));
  optB.loadStateDict(copies);
  assert.is(optB.stateOf(b1)!.step, 2, 'per-parameter step counts kept');
  const g = grads(9);
  setGrad(a0, g[0]); setGrad(a1, g[1]); optA.step();
  setGrad(b0, g[0]); setGrad(b1, g[1]); optB.step();
  assert.equal(await b0.data(), await a0.data());
  assert.equal(await b1.data(), await a1.data());

  const z = () => E.zeros([37]);
  await assertThrows(() => optB.loadStateDict([{ param: E.zeros([37]), step: 1, buffers: { expAvg: z(), expAvgSq: z() } }]), /not a parameter of this optimizer/);
  await assertThrows(() => optB.loadStateDict([{ param: b0, step: 1, buffers: { momentum: z() } }]), /buffers \[momentum\]/);
  await assertThrows(() => optB.loadStateDict([{ param: b0, step: 0, buffers: { expAvg: z(), expAvgSq: z() } }]), /step 0/);
  await assertThrows(() => optB.loadStateDict([{ param: b0, step: 1, buffers: { expAvg: z(), expAvgSq: E.zeros([36]) } }]), /expAvgSq/, /shape/);
  assert.equal(await b0.data(), await a0.data(), 'a refused load changed nothing');
  for (const o of [optA, optB]) { o.zeroGrad(); o.dispose(); }
  for (const t of [a0, a1, b0, b1]) t.dispose();
});

// ---------------------------------------------------------------- clipGradNorm

function hostNorm(gs: Float64Array[]): number {
  let s2 = 0;
  for (const g of gs) for (const x of g) s2 += x * x;
  return Math.sqrt(s2);
}

/** Params of several sizes (2500 gives several partial sums, so the folding pass runs) with grads. */
function gradParams(seed: number, scale: number) {
  const shapes = [[1], [7], [3, 100], [2500]];
  const gs = shapes.map((sh, k) => Float64Array.from(randArray(sh.reduce((a, b) => a * b, 1), seed + k), (x) => Math.fround(x * scale)));
  const ps = shapes.map((sh) => E.zeros(sh).requireGrad());
  ps.forEach((p, k) => setGrad(p, gs[k]));
  return { gs, ps };
}

s('clipGradNorm scales every grad to the max norm and returns the pre-clip norm', async () => {
  const { gs, ps } = gradParams(60, 3);
  const free = E.zeros([4]).requireGrad(); // no grad: skipped
  const norm = hostNorm(gs);
  const maxNorm = 2.5;
  assert.ok(norm > maxNorm);
  const submits = dev.submitCount;
  const n = clipGradNorm([...ps, free], maxNorm);
  assert.is(dev.submitCount, submits, 'clipGradNorm only records work (no readback)');
  assert.equal(n.shape, []);
  assert.is(n.dtype, 'f32');
  assertClose([await n.item()], [norm], 1e-5, 0, 'total norm');
  const coef = maxNorm / (norm + 1e-6);
  const after: Float64Array[] = [];
  for (let k = 0; k < ps.length; k++) {
    const d = await ps[k].grad!.data();
    assertClose(d, gs[k].map((x) => x * coef), 1e-5, 1e-7, `clipped grad ${k}`);
    after.push(Float64Array.from(d));
  }
  assertClose([hostNorm(after)], [maxNorm], 1e-5, 0, 'norm after clipping');
  assert.is(free.grad, null);
  n.dispose();
  for (const p of [...ps, free]) { p.grad?.dispose(); p.dispose(); }
});

s('clipGradNorm leaves grads bit-identical when under the max; no grads gives norm 0', async () => {
  const { gs, ps } = gradParams(70, 0.01);
  const norm = hostNorm(gs);
  const n = clipGradNorm(ps, 10);
  assertClose([await n.item()], [norm], 1e-5, 0, 'total norm');
  for (let k = 0; k < ps.length; k++) assertClose(await ps[k].grad!.data(), gs[k], 0, 0, `grad ${k} untouched`);
  n.dispose();
  for (const p of ps) { p.grad?.dispose(); p.dispose(); }
  const bare = E.zeros([3]);
  const z = clipGradNorm([bare], 1);
  assert.is(await z.item(), 0);
  z.dispose(); bare.dispose();
  await assertThrows(() => clipGradNorm([], -1), /clipGradNorm/, /maxNorm/);
});

// ---------------------------------------------------------------- chunked paths

s('chunked steps (lowered maxBindingBytes) equal the unchunked ones bit for bit; chunked clip equals unchunked', async () => {
  const n = 3000; // 12,000 bytes: several 4 KiB windows, chunk starts not on window boundaries
  const x = randArray(n, 80);
  const grads = [1, 2, 3].map((t) => randArray(n, 90 + t));
  const hypers: Hyper[] = [
    { kind: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01 },
    { kind: 'sgd', lr: 0.1 },
    { kind: 'adam', lr: 0.05, weightDecay: 0.1 },
    { kind: 'adamw', lr: 0.05 },
  ];
  const run = async (h: Hyper, limit?: number) => {
    const saved = dev.maxBindingBytes;
    if (limit) dev.maxBindingBytes = limit;
    try {
      const p = E.tensor(x, [n]).requireGrad();
      const opt = makeOptimizer(h, [p]);
      let dispatches = 0;
      for (const g of grads) {
        setGrad(p, g);
        const before = dev.dispatchCount;
        opt.step();
        dispatches = dev.dispatchCount - before;
      }
      const out = await p.data();
      opt.zeroGrad(); opt.dispose(); p.dispose();
      return { out, dispatches };
    } finally {
      dev.maxBindingBytes = saved;
    }
  };
  for (const h of hypers) {
    const whole = await run(h);
    const chunked = await run(h, 4096);
    assert.is(whole.dispatches, 1);
    assert.ok(chunked.dispatches >= 3, `${h.kind}: expected several chunks, got ${chunked.dispatches}`);
    assert.equal([...chunked.out], [...whole.out], `${h.kind} chunked vs whole`);
  }

  const clip = async (limit?: number) => {
    const saved = dev.maxBindingBytes;
    if (limit) dev.maxBindingBytes = limit;
    try {
      const { gs, ps } = gradParams(110, 1);
      const norm = clipGradNorm(ps, 1);
      const value = await norm.item();
      const out = [];
      for (const p of ps) out.push(await p.grad!.data());
      norm.dispose();
      for (const p of ps) { p.grad?.dispose(); p.dispose(); }
      return { value, out, ref: hostNorm(gs) };
    } finally {
      dev.maxBindingBytes = saved;
    }
  };
  const cw = await clip(), cc = await clip(4096);
  assertClose([cc.value], [cc.ref], 1e-5, 0, 'chunked norm');
  assertClose([cc.value], [cw.value], 1e-6, 0, 'chunked vs whole norm');
  cc.out.forEach((g, k) => assertClose(g, cw.out[k], 1e-6, 1e-9, `chunked clipped grad ${k}`));
});

// ---------------------------------------------------------------- errors

s('f16 and integer parameters, bad hyper-parameters and mismatched grads are rejected', async () => {
  if (dev.hasF16) {
    const h = E.tensor([1, 2, 3], [3], 'f16');
    await assertThrows(() => new AdamW([h]), /AdamW/, /f16/, /f32/);
    await assertThrows(() => new SGD([h], { lr: 0.1 }), /SGD/, /f16/);
    h.dispose();
  }
  const i = E.tensor([1, 2], [2], 'i32');
  await assertThrows(() => new Adam([i]), /Adam/, /not a float/);
  i.dispose();
  const p = E.tensor([1, 2, 3], [3]).requireGrad();
  await assertThrows(() => new SGD([p], { lr: 0.1, nesterov: true }), /SGD/, /Nesterov/);
  await assertThrows(() => new Adam([p], { betas: [0.9, 1] }), /Adam/, /betas/);
  await assertThrows(() => new SGD([p], { lr: -1 }), /SGD/, /lr/);
  await assertThrows(() => new SGD([p, p], { lr: 1 }), /twice/);
  const q = E.tensor([4, 5], [2]).requireGrad();
  const opt = new Adam([q, p]);
  q.grad = E.tensor([1, 1], [2]);
  p.grad = E.tensor([1, 2], [2]);
  await assertThrows(() => opt.step(), /Adam\.step/, /parameter 1/, /\[2\]/, /does not match/);
  assertClose(await q.data(), [4, 5], 0, 0, 'no half-applied step');
  q.grad.dispose(); q.dispose();
  opt.lr = NaN;
  await assertThrows(() => opt.step(), /Adam/, /lr/);
  opt.zeroGrad(); opt.dispose(); p.dispose();
});

s.run();
