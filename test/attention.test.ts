// Memory-efficient attention against the float64 formula: forward over awkward shapes, every
// head size the models use (short sequences), masks (causal, broadcast, full), custom scale;
// backward dQ, dK, dV against the analytic float64 backward (checked once by finite
// differences); f16; batch independence; a problem whose score matrix exceeds the binding limit;
// errors.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { Tensor } from '../engine/tensor.js';
import { assertClose, assertThrows, broadcastIndex, dot, finiteDiff, randArray, randTensor, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('attention');

interface Dims { lead: number[]; Lq: number; Lk: number; D: number; Dv: number }
interface MaskRef { x: Float64Array; shape: number[] }

const N = (d: Dims) => d.lead.reduce((a, b) => a * b, 1);

/** Float64 forward; also returns the probabilities for the reference backward. */
function refForward(d: Dims, q: Float64Array, k: Float64Array, v: Float64Array, scale: number, mask?: MaskRef) {
  const { Lq, Lk, D, Dv } = d;
  const n = N(d);
  const out = new Float64Array(n * Lq * Dv);
  const P = new Float64Array(n * Lq * Lk);
  const mi = mask ? broadcastIndex(mask.shape, [...d.lead, Lq, Lk]) : null;
  for (let h = 0; h < n; h++) {
    for (let i = 0; i < Lq; i++) {
      const sc = new Float64Array(Lk);
      let m = -Infinity;
      for (let j = 0; j < Lk; j++) {
        let acc = 0;
        for (let c = 0; c < D; c++) acc += q[(h * Lq + i) * D + c] * k[(h * Lk + j) * D + c];
        sc[j] = acc * scale + (mask ? mask.x[mi!((h * Lq + i) * Lk + j)] : 0);
        m = Math.max(m, sc[j]);
      }
      let z = 0;
      for (let j = 0; j < Lk; j++) { sc[j] = Math.exp(sc[j] - m); z += sc[j]; }
      for (let j = 0; j < Lk; j++) {
        const p = sc[j] / z;
        P[(h * Lq + i) * Lk + j] = p;
        for (let c = 0; c < Dv; c++) out[(h * Lq + i) * Dv + c] += p * v[(h * Lk + j) * Dv + c];
      }
    }
  }
  return { out, P };
}

/** Analytic backward: dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P∘(dP − rowsum(dP∘P)), dQ = dS·K·s, dK = dSᵀ·Q·s. */
function refBackward(d: Dims, q: Float64Array, k: Float64Array, v: Float64Array, P: Float64Array, g: Float64Array, scale: number) {
  const { Lq, Lk, D, Dv } = d;
  const n = N(d);
  const dq = new Float64Array(q.length), dk = new Float64Array(k.length), dv = new Float64Array(v.length);
  for (let h = 0; h < n; h++) {
    for (let i = 0; i < Lq; i++) {
      const dp = new Float64Array(Lk);
      let delta = 0;
      for (let j = 0; j < Lk; j++) {
        for (let c = 0; c < Dv; c++) dp[j] += g[(h * Lq + i) * Dv + c] * v[(h * Lk + j) * Dv + c];
        delta += dp[j] * P[(h * Lq + i) * Lk + j];
      }
      for (let j = 0; j < Lk; j++) {
        const p = P[(h * Lq + i) * Lk + j];
        const ds = p * (dp[j] - delta) * scale;
        for (let c = 0; c < Dv; c++) dv[(h * Lk + j) * Dv + c] += p * g[(h * Lq + i) * Dv + c];
        for (let c = 0; c < D; c++) {
          dq[(h * Lq + i) * D + c] += ds * k[(h * Lk + j) * D + c];
          dk[(h * Lk + j) * D + c] += ds * q[(h * Lq + i) * D + c];
        }
      }
    }
  }
  return { dq, dk, dv };
}

function causal(Lq: number, Lk: number, value = -1e9): MaskRef {
  const x = new Float64Array(Lq * Lk);
  for (let i = 0; i < Lq; i++) for (let j = 0; j < Lk; j++) x[i * Lk + j] = j > i ? value : 0;
  return { x, shape: [Lq, Lk] };
}

interface Case { d: Dims; mask?: MaskRef | 'causal' | number[]; scale?: number; what: string }

function inputs(d: Dims, seed: number, dtype: 'f32' | 'f16' = 'f32') {
  const Q = randTensor([...d.lead, d.Lq, d.D], seed, -1, 1, dtype);
  const K = randTensor([...d.lead, d.Lk, d.D], seed + 1, -1, 1, dtype);
  const V = randTensor([...d.lead, d.Lk, d.Dv], seed + 2, -1, 1, dtype);
  return { Q, K, V };
}

function maskOf(c: Case, seed: number): MaskRef | undefined {
  if (!c.mask) return undefined;
  if (c.mask === 'causal') return causal(c.d.Lq, c.d.Lk);
  if (Array.isArray(c.mask)) {
    const n = c.mask.reduce((a, b) => a * b, 1);
    return { x: randArray(n, seed, -3, 3), shape: c.mask };
  }
  return c.mask;
}

async function checkForward(c: Case, seed: number): Promise<void> {
  const { Q, K, V } = inputs(c.d, seed);
  const m = maskOf(c, seed + 7);
  const mt = m ? E.tensor(m.x, m.shape) : null;
  const scale = c.scale ?? 1 / Math.sqrt(c.d.D);
  const y = E.attention(Q.t, K.t, V.t, { mask: mt, scale: c.scale });
  assert.equal([...y.shape], [...c.d.lead, c.d.Lq, c.d.Dv]);
  const ref = refForward(c.d, Q.x, K.x, V.x, scale, m);
  assertClose(await y.data(), ref.out, 2e-5, 2e-6, `forward ${c.what}`);
  for (const t of [Q.t, K.t, V.t, y, mt]) t?.dispose();
}

const dims = (lead: number[], Lq: number, Lk: number, D: number, Dv = D): Dims => ({ lead, Lq, Lk, D, Dv });

/**
 * Registers a test four times: with the tiled kernels (kernels/attention.ts) forced; with the
 * kernels the adapter picks (on a software adapter, heads up to 64 take the one-thread-per-row
 * kernels of kernels/attention-rows.ts); with the products form (engine/ops/attention-products.ts)
 * wherever it can run (f32 without a mask; the kernels elsewhere); and as chosen, so every form is
 * checked on any device.
 */
function both(name: string, fn: () => Promise<void>): void {
  const forms: [string, { rows?: boolean; products?: boolean }][] = [
    ['tiled', { rows: false }], ['kernels as chosen', { products: false }], ['products', { products: true }], ['as chosen', {}],
  ];
  for (const [tag, tuning] of forms) {
    s(`${name} [${tag}]`, async () => {
      const saved = { rows: E.attentionTuning.rows, products: E.attentionTuning.products };
      E.attentionTuning.rows = tuning.rows;
      E.attentionTuning.products = tuning.products;
      try { await fn(); } finally { E.attentionTuning.rows = saved.rows; E.attentionTuning.products = saved.products; }
    });
  }
}

both('forward against float64: Lq ≠ Lk, lengths off the tile, size-1 dims, Dv ≠ D, custom scale', async () => {
  const cases: Case[] = [
    { d: dims([1, 1], 1, 1, 40), what: 'one query, one key' },
    { d: dims([2, 3], 33, 77, 40), what: 'cross-attention to 77 tokens' },
    { d: dims([1, 2], 70, 5, 40, 64), what: 'Lq > Lk, Dv ≠ D' },
    { d: dims([3], 65, 66, 64, 40), what: 'rank 3, lengths past two blocks' },
    { d: dims([], 9, 13, 40), what: 'rank 2' },
    { d: dims([2, 1], 20, 31, 40), scale: 0.9, what: 'custom scale' },
  ];
  for (const [i, c] of cases.entries()) await checkForward(c, 10 + 5 * i);
});

both('forward at every model head size (40, 80, 160 with 8 heads; 64 causal; 512 single head)', async () => {
  const cases: Case[] = [
    { d: dims([1, 8], 17, 9, 40), what: 'D 40' },
    { d: dims([1, 8], 6, 33, 80), what: 'D 80' },
    { d: dims([1, 8], 12, 5, 160), what: 'D 160' },
    { d: dims([1, 12], 21, 21, 64), mask: 'causal', what: 'D 64 causal (CLIP)' },
    { d: dims([1, 1], 37, 35, 512), what: 'D 512 (VAE)' },
  ];
  for (const [i, c] of cases.entries()) await checkForward(c, 100 + 5 * i);
});

both('masks: causal, broadcast [Lq, Lk], [B, 1, 1, Lk] padding, full [B, H, Lq, Lk], -inf', async () => {
  const cases: Case[] = [
    { d: dims([2, 3], 77, 77, 64), mask: 'causal', what: 'causal 77' },
    { d: dims([2, 3], 10, 40, 40), mask: [10, 40], what: 'broadcast [Lq, Lk]' },
    { d: dims([2, 3], 10, 40, 40), mask: [2, 1, 1, 40], what: 'padding [B, 1, 1, Lk]' },
    { d: dims([2, 3], 7, 9, 40), mask: [2, 3, 7, 9], what: 'full mask' },
    { d: dims([2, 3], 7, 9, 40), mask: [3, 1, 9], what: 'per-head mask [H, 1, Lk]' },
    { d: dims([1, 2], 12, 40, 40), mask: causal(12, 40, -Infinity), what: '-inf causal' },
  ];
  for (const [i, c] of cases.entries()) await checkForward(c, 200 + 5 * i);
});

async function checkBackward(c: Case, seed: number, dtype: 'f32' | 'f16' = 'f32', tol = { rtol: 1e-4, atol: 2e-5 }): Promise<void> {
  const { Q, K, V } = inputs(c.d, seed, dtype);
  const m = maskOf(c, seed + 7);
  const mt = m ? E.tensor(m.x, m.shape, dtype) : null;
  const scale = c.scale ?? 1 / Math.sqrt(c.d.D);
  for (const t of [Q.t, K.t, V.t]) t.requireGrad();
  const G = randTensor([...c.d.lead, c.d.Lq, c.d.Dv], seed + 3, -1, 1, dtype);
  const y = E.attention(Q.t, K.t, V.t, { mask: mt, scale: c.scale });
  E.backward(y, { grad: G.t });
  // References from the values actually stored (f16 rounds them).
  const [qx, kx, vx, gx] = await Promise.all([Q.t, K.t, V.t, G.t].map(async (t) => Float64Array.from(await t.data())));
  const mx = m && mt ? { x: Float64Array.from(await mt.data()), shape: m.shape } : undefined;
  const { out, P } = refForward(c.d, qx, kx, vx, scale, mx);
  const ref = refBackward(c.d, qx, kx, vx, P, gx, scale);
  assertClose(await y.data(), out, tol.rtol, tol.atol, `forward ${c.what} ${dtype}`);
  assertClose(await Q.t.grad!.data(), ref.dq, tol.rtol, tol.atol, `dq ${c.what} ${dtype}`);
  assertClose(await K.t.grad!.data(), ref.dk, tol.rtol, tol.atol, `dk ${c.what} ${dtype}`);
  assertClose(await V.t.grad!.data(), ref.dv, tol.rtol, tol.atol, `dv ${c.what} ${dtype}`);
  for (const t of [Q.t, K.t, V.t]) { t.grad?.dispose(); t.dispose(); }
  for (const t of [G.t, y, mt]) t?.dispose();
}

s('reference backward agrees with float64 finite differences', () => {
  const d = dims([2], 3, 4, 3, 2);
  const q = randArray(6 * 3, 1), k = randArray(8 * 3, 2), v = randArray(8 * 2, 3), g = randArray(6 * 2, 4);
  const m = { x: randArray(3 * 4, 5, -2, 2), shape: [3, 4] };
  const scale = 0.7;
  const { P } = refForward(d, q, k, v, scale, m);
  const ref = refBackward(d, q, k, v, P, g, scale);
  const num = finiteDiff(([a, b, c]) => dot(refForward(d, a, b, c, scale, m).out, g), [q, k, v]);
  assertClose(ref.dq, num[0], 1e-6, 1e-8, 'dq');
  assertClose(ref.dk, num[1], 1e-6, 1e-8, 'dk');
  assertClose(ref.dv, num[2], 1e-6, 1e-8, 'dv');
});

both('backward dQ, dK, dV against the analytic float64 backward', async () => {
  const cases: Case[] = [
    { d: dims([2, 3], 33, 77, 40), mask: [33, 77], what: 'cross-attention, broadcast mask' },
    { d: dims([1, 2], 70, 5, 40, 64), scale: 0.3, what: 'Lq > Lk, Dv ≠ D, scale' },
    { d: dims([1, 3], 21, 21, 64), mask: 'causal', what: 'causal D 64' },
    { d: dims([1, 2], 9, 40, 160), what: 'D 160' },
    { d: dims([1, 1], 19, 23, 512), what: 'D 512' },
  ];
  for (const [i, c] of cases.entries()) await checkBackward(c, 300 + 5 * i);
});

both('leading dims broadcast: k and v shared across the batch get summed gradients', async () => {
  const d = dims([2, 2], 5, 7, 40);
  const Q = randTensor([2, 2, 5, 40], 800), K = randTensor([1, 2, 7, 40], 801), V = randTensor([1, 2, 7, 40], 802), G = randTensor([2, 2, 5, 40], 803);
  for (const t of [Q.t, K.t, V.t]) t.requireGrad();
  const y = E.attention(Q.t, K.t, V.t);
  E.backward(y, { grad: G.t });
  const half = 2 * 7 * 40;
  const tile = (x: Float64Array) => { const o = new Float64Array(2 * half); o.set(x); o.set(x, half); return o; };
  const scale = 1 / Math.sqrt(40);
  const { out, P } = refForward(d, Q.x, tile(K.x), tile(V.x), scale);
  const ref = refBackward(d, Q.x, tile(K.x), tile(V.x), P, G.x, scale);
  const fold = (x: Float64Array) => x.subarray(0, half).map((a, i) => a + x[half + i]);
  assertClose(await y.data(), out, 2e-5, 2e-6, 'forward');
  assertClose(await K.t.grad!.data(), fold(ref.dk), 1e-4, 2e-5, 'dk');
  assertClose(await V.t.grad!.data(), fold(ref.dv), 1e-4, 2e-5, 'dv');
  for (const t of [Q.t, K.t, V.t]) { t.grad?.dispose(); t.dispose(); }
  for (const t of [G.t, y]) t.dispose();
});

both('f16 storage: forward and backward within f16 rounding', async () => {
  const tol = { rtol: 2e-2, atol: 4e-3 };
  await checkBackward({ d: dims([2, 2], 30, 45, 40), mask: 'causal', what: 'f16 causal' }, 400, 'f16', tol);
  await checkBackward({ d: dims([1, 1], 10, 12, 512), what: 'f16 D 512' }, 410, 'f16', tol);
});

/** Runs attention forward and backward on the whole batch and on sample 1 alone: the same bits. */
async function checkBatchIndependence(d: Dims, seed: number, mask: Tensor | null): Promise<void> {
  const { Q, K, V } = inputs(d, seed);
  const G = randTensor([...d.lead, d.Lq, d.Dv], seed + 3);
  const run = async (q: Tensor, k: Tensor, v: Tensor, g: Tensor) => {
    for (const t of [q, k, v]) t.requireGrad();
    const y = E.attention(q, k, v, { mask });
    E.backward(y, { grad: g });
    const r = await Promise.all([y, q.grad!, k.grad!, v.grad!].map((t) => t.data()));
    y.dispose();
    return r;
  };
  const all = await run(Q.t, K.t, V.t, G.t);
  const one = (t: Tensor) => E.noGrad(() => E.slice(t, [1], [2]));
  const alone = await run(one(Q.t), one(K.t), one(V.t), one(G.t));
  const h = d.lead.slice(1).reduce((x, y) => x * y, 1);
  const per = [d.Lq * d.Dv, d.Lq * d.D, d.Lk * d.D, d.Lk * d.Dv].map((n) => n * h);
  alone.forEach((a, i) => {
    const b = all[i].subarray(per[i], 2 * per[i]);
    assert.ok(a.length === b.length && a.every((x, j) => Object.is(x, b[j])), `output ${i} differs alone vs in the batch`);
  });
}

both('batch independence: one sample alone and inside a batch give identical bits (forward and backward)', async () => {
  const mt = E.tensor(causal(40, 37).x, [40, 37]);
  await checkBatchIndependence(dims([3, 2], 40, 37, 40), 500, mt);
  mt.dispose();
});

both('batch independence without a mask (the products form where it applies): alone and in a batch, same bits', async () => {
  await checkBatchIndependence(dims([3, 2], 20, 24, 16), 520, null);
});

s('products form in chunks of heads (lowered binding limit): same bits as one chunk, and correct', async () => {
  const saved = { products: E.attentionTuning.products, limit: dev.maxBindingBytes };
  E.attentionTuning.products = true;
  try {
    const c: Case = { d: dims([2, 3], 16, 20, 8), what: 'products in chunks' };
    const { Q, K, V } = inputs(c.d, 900);
    const whole = await E.attention(Q.t, K.t, V.t).data();
    // One head's scores are 16·20·4 = 1280 bytes: three heads per chunk under 4096.
    dev.maxBindingBytes = 4096;
    const chunked = await E.attention(Q.t, K.t, V.t).data();
    assert.ok(whole.every((x, j) => Object.is(x, chunked[j])), 'chunked products differ from one chunk');
    await checkBackward(c, 900);
    for (const t of [Q.t, K.t, V.t]) t.dispose();
  } finally {
    E.attentionTuning.products = saved.products;
    dev.maxBindingBytes = saved.limit;
  }
});

both('a problem whose score matrix exceeds the binding limit runs, chunked by head, and is correct', async () => {
  const saved = dev.maxBindingBytes;
  try {
    // One head's scores are 64·70·4 = 17.9 kB, all heads' 107 kB, against a 4 kB limit; a head's
    // q (64·8·4 = 2 kB) fits, so the chunks are single heads.
    dev.maxBindingBytes = 4096;
    await checkBackward({ d: dims([2, 3], 64, 70, 8, 7), mask: [1, 70], what: 'binding limit 4096' }, 600);
    const { Q, K, V } = inputs(dims([1, 1], 200, 10, 8), 610);
    await assertThrows(() => E.attention(Q.t, K.t, V.t), /attention/, /binding limit/, /\[1,1,200,8\]/);
    for (const t of [Q.t, K.t, V.t]) t.dispose();
  } finally {
    dev.maxBindingBytes = saved;
  }
});

both('the pipelines do not depend on lengths or batch', async () => {
  await checkForward({ d: dims([1, 2], 5, 6, 40), what: 'warm' }, 700);
  const before = dev.pipelineCount;
  await checkForward({ d: dims([3, 1], 50, 17, 40), what: 'other shape' }, 705);
  assert.is(dev.pipelineCount, before);
});

s('errors name attention and the shapes', async () => {
  const q = E.zeros([1, 2, 5, 8]), k = E.zeros([1, 2, 6, 4]), v = E.zeros([1, 2, 7, 8]), k8 = E.zeros([1, 2, 6, 8]);
  await assertThrows(() => E.attention(q, k, E.zeros([1, 2, 6, 8])), /attention/, /head sizes differ/, /\[1,2,5,8\]/);
  await assertThrows(() => E.attention(q, k8, v), /attention/, /lengths differ/, /\[1,2,7,8\]/);
  await assertThrows(() => E.attention(q, k8, E.zeros([1, 2, 6, 8], 'f16')), /attention/, /dtypes differ/);
  await assertThrows(() => E.attention(q, k8, E.zeros([1, 2, 6, 8]), { mask: E.zeros([5, 5]) }), /attention/, /mask \[5,5\]/, /does not broadcast/);
  await assertThrows(() => E.attention(q, k8, E.zeros([1, 3, 6, 8])), /attention/, /leading dims/);
});

s.run();
