// groupNorm / layerNorm forward and backward against float64 references; stability, batch
// independence, chunking and error messages.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { assertClose, assertThrows, dot, finiteDiff, randArray, randTensor, testDevice } from './helpers.js';
import { KernelFamily, kernelFamilyOverride } from '../engine/kernel-family.js';

/** Runs fn under each kernel family (software adapters give a row of ≤ 4096 one thread; GPUs a
 *  tree of threads), so CI on a software device covers both. */
async function underEachFamily(fn: () => Promise<void>): Promise<void> {
  const before = kernelFamilyOverride.family;
  try {
    for (const family of ['software', 'gpu'] as KernelFamily[]) { kernelFamilyOverride.family = family; await fn(); }
  } finally {
    kernelFamilyOverride.family = before;
  }
}

const dev = await testDevice();
const s = suite('norm');

// ---------------------------------------------------------------- float64 reference

/** Rows of L = cpg·S; element j of row r uses affine index (r mod groups)·cpg + ⌊j/S⌋. */
interface Geo { rows: number; groups: number; cpg: number; S: number }
const gnGeo = (shape: number[], groups: number): Geo => ({
  rows: shape[0] * groups, groups, cpg: shape[1] / groups, S: shape.slice(2).reduce((a, b) => a * b, 1),
});
const lnGeo = (shape: number[]): Geo => {
  const D = shape[shape.length - 1];
  return { rows: shape.reduce((a, b) => a * b, 1) / D, groups: 1, cpg: D, S: 1 };
};

function refNorm(x: Float64Array, geo: Geo, w?: Float64Array, b?: Float64Array, eps = 1e-5) {
  const L = geo.cpg * geo.S;
  const y = new Float64Array(x.length), mean = new Float64Array(geo.rows), rstd = new Float64Array(geo.rows);
  for (let r = 0; r < geo.rows; r++) {
    let m = 0;
    for (let j = 0; j < L; j++) m += x[r * L + j];
    m /= L;
    let v = 0;
    for (let j = 0; j < L; j++) v += (x[r * L + j] - m) ** 2;
    v /= L;
    const rs = 1 / Math.sqrt(v + eps);
    mean[r] = m; rstd[r] = rs;
    for (let j = 0; j < L; j++) {
      const c = (r % geo.groups) * geo.cpg + Math.floor(j / geo.S);
      y[r * L + j] = (x[r * L + j] - m) * rs * (w ? w[c] : 1) + (b ? b[c] : 0);
    }
  }
  return { y, mean, rstd };
}

/** Analytic backward: dx = rstd·(w·g − mean(w·g) − x̂·mean(w·g·x̂)); dw = Σ g·x̂; db = Σ g. */
function refBack(x: Float64Array, g: Float64Array, geo: Geo, w?: Float64Array, eps = 1e-5) {
  const L = geo.cpg * geo.S;
  const { mean, rstd } = refNorm(x, geo, undefined, undefined, eps);
  const nParam = geo.groups * geo.cpg;
  const dx = new Float64Array(x.length), dw = new Float64Array(nParam), db = new Float64Array(nParam);
  for (let r = 0; r < geo.rows; r++) {
    const ch = (j: number) => (r % geo.groups) * geo.cpg + Math.floor(j / geo.S);
    let a = 0, bsum = 0;
    for (let j = 0; j < L; j++) {
      const i = r * L + j, xh = (x[i] - mean[r]) * rstd[r], wg = g[i] * (w ? w[ch(j)] : 1);
      a += wg; bsum += wg * xh;
      dw[ch(j)] += g[i] * xh; db[ch(j)] += g[i];
    }
    a /= L; bsum /= L;
    for (let j = 0; j < L; j++) {
      const i = r * L + j, xh = (x[i] - mean[r]) * rstd[r], wg = g[i] * (w ? w[ch(j)] : 1);
      dx[i] = rstd[r] * (wg - a - xh * bsum);
    }
  }
  return { dx, dw, db };
}

const bits = async (t: E.Tensor) => [...new Uint32Array((await t.data()).buffer)];

// ---------------------------------------------------------------- forward

const GN_CASES: [number[], number][] = [
  [[1, 6, 7, 3], 3], [[3, 6, 7, 3], 3], [[3, 4, 1, 1], 1], [[1, 4, 7, 3], 1], [[3, 5, 7, 3], 5],
  [[3, 5, 1, 1], 5], [[3, 6, 11], 3], [[1, 5, 11], 5], [[3, 6], 2], [[2, 4, 30, 30], 2],
];

s('groupNorm forward (with and without affine) vs float64, both kernel families', async () => underEachFamily(async () => {
  let seed = 10;
  for (const [shape, groups] of GN_CASES) {
    const C = shape[1];
    const X = randTensor(shape, seed++, -2, 3), W = randTensor([C], seed++, 0.5, 1.5), B = randTensor([C], seed++);
    const geo = gnGeo(shape, groups);
    const y = E.groupNorm(X.t, groups, W.t, B.t);
    assert.equal([...y.shape], shape);
    assertClose(await y.data(), refNorm(X.x, geo, W.x, B.x).y, 2e-5, 2e-5, `groupNorm ${shape} g=${groups}`);
    assertClose(await E.groupNorm(X.t, groups).data(), refNorm(X.x, geo).y, 2e-5, 2e-5, `groupNorm no affine ${shape}`);
  }
  // weight only, bias only, custom eps.
  const X = randTensor([2, 4, 3, 3], 90), W = randTensor([4], 91), B = randTensor([4], 92);
  const geo = gnGeo([2, 4, 3, 3], 2);
  assertClose(await E.groupNorm(X.t, 2, W.t).data(), refNorm(X.x, geo, W.x).y, 2e-5, 2e-5, 'weight only');
  assertClose(await E.groupNorm(X.t, 2, undefined, B.t).data(), refNorm(X.x, geo, undefined, B.x).y, 2e-5, 2e-5, 'bias only');
  assertClose(await E.groupNorm(X.t, 2, W.t, B.t, 0.3).data(), refNorm(X.x, geo, W.x, B.x, 0.3).y, 2e-5, 2e-5, 'eps 0.3');
}));

s('layerNorm forward vs float64 (D = 1, 7, 300, leading dims), both kernel families', async () => underEachFamily(async () => {
  let seed = 200;
  for (const shape of [[4, 1], [2, 3, 7], [5, 300], [300], [2, 1, 3, 7]]) {
    const D = shape[shape.length - 1];
    const X = randTensor(shape, seed++, -3, 2), W = randTensor([D], seed++), B = randTensor([D], seed++);
    const geo = lnGeo(shape);
    assertClose(await E.layerNorm(X.t, W.t, B.t).data(), refNorm(X.x, geo, W.x, B.x).y, 2e-5, 2e-5, `layerNorm ${shape}`);
    assertClose(await E.layerNorm(X.t).data(), refNorm(X.x, geo).y, 2e-5, 2e-5, `layerNorm no affine ${shape}`);
  }
}));

s('stable for a large mean (1e4 + noise); eps keeps a constant input finite', async () => {
  const shape = [2, 4, 5, 5];
  const X = randTensor(shape, 300, 1e4 - 1, 1e4 + 1);
  // f32 inputs near 1e4 are exact to ~5e-4, so the result is good to ~1e-3; E[x²] − E[x]² in
  // f32 would lose the noise entirely (1e8 has an f32 ulp of 8).
  assertClose(await E.groupNorm(X.t, 2).data(), refNorm(X.x, gnGeo(shape, 2)).y, 0, 2e-3, 'groupNorm 1e4 + noise');
  const Y = randTensor([3, 300], 301, 1e4 - 1, 1e4 + 1);
  assertClose(await E.layerNorm(Y.t).data(), refNorm(Y.x, lnGeo([3, 300])).y, 0, 2e-3, 'layerNorm 1e4 + noise');
  const K = E.full([2, 4, 3, 3], 7);
  const B = randTensor([4], 302);
  const y = await E.groupNorm(K, 2, undefined, B.t).data();
  assertClose(y, refNorm(new Float64Array(72).fill(7), gnGeo([2, 4, 3, 3], 2), undefined, B.x).y, 0, 1e-6, 'constant input');
  assert.ok(y.every((v) => Number.isFinite(v)));
  const z = await E.layerNorm(E.full([3, 5], -2)).data();
  assert.ok(z.every((v) => v === 0), 'constant rows normalise to 0');
});

// ---------------------------------------------------------------- backward

s('reference backward agrees with finite differences', () => {
  const geo = gnGeo([2, 4, 3], 2);
  const x = randArray(24, 400), w = randArray(4, 401, 0.5, 1.5), b = randArray(4, 402), G = randArray(24, 403);
  const [fx, fw, fb] = finiteDiff(([xa, wa, ba]) => dot(refNorm(xa, geo, wa, ba).y, G), [x, w, b]);
  const r = refBack(x, G, geo, w);
  assertClose(r.dx, fx, 1e-6, 1e-7, 'dx');
  assertClose(r.dw, fw, 1e-6, 1e-7, 'dw');
  assertClose(r.db, fb, 1e-6, 1e-7, 'db');
});

async function checkBackward(kind: 'gn' | 'ln', shape: number[], groups: number, affine: boolean, seed: number, dtype: E.DType = 'f32', tol = 1e-4): Promise<void> {
  const P = kind === 'gn' ? shape[1] : shape[shape.length - 1];
  const geo = kind === 'gn' ? gnGeo(shape, groups) : lnGeo(shape);
  const X = randTensor(shape, seed, -2, 2, dtype), G = randTensor(shape, seed + 1, -1, 1, dtype);
  const W = randTensor([P], seed + 2, 0.5, 1.5, dtype), B = randTensor([P], seed + 3, -1, 1, dtype);
  const r16 = (a: Float64Array) => (dtype === 'f16' ? a.map(E.roundToF16) : a);
  const [x, g, w] = [r16(X.x), r16(G.x), r16(W.x)];
  X.t.requireGrad(); W.t.requireGrad(); B.t.requireGrad();
  const y = kind === 'gn'
    ? E.groupNorm(X.t, groups, affine ? W.t : undefined, affine ? B.t : undefined)
    : E.layerNorm(X.t, affine ? W.t : undefined, affine ? B.t : undefined);
  E.backward(y, { grad: G.t });
  const ref = refBack(x, g, geo, affine ? w : undefined);
  const what = `${kind} ${shape} ${dtype}${affine ? '' : ' no affine'}`;
  assertClose(await X.t.grad!.data(), ref.dx, tol, tol, `dx ${what}`);
  if (affine) {
    assertClose(await W.t.grad!.data(), ref.dw, tol, tol, `dw ${what}`);
    assertClose(await B.t.grad!.data(), ref.db, tol, tol, `db ${what}`);
  }
}

s('groupNorm and layerNorm backward vs analytic float64 (dx, dweight, dbias), both kernel families', async () => underEachFamily(async () => {
  await checkBackward('gn', [3, 6, 7, 3], 3, true, 500);
  await checkBackward('gn', [1, 5, 11], 5, true, 510);
  await checkBackward('gn', [2, 4, 9, 9], 2, true, 520); // S = 81: workgroup partials
  await checkBackward('gn', [3, 4, 1, 1], 1, true, 530);
  await checkBackward('gn', [2, 6, 5], 3, false, 540);
  await checkBackward('ln', [2, 3, 7], 1, true, 550);
  await checkBackward('ln', [4, 300], 1, true, 560);
  await checkBackward('ln', [3, 1], 1, true, 570);
  await checkBackward('ln', [5, 7], 1, false, 580);
}));

s('f16 storage: forward and backward within f16 tolerances', async () => {
  if (!dev.hasF16) return;
  const shape = [2, 6, 5, 3];
  const X = randTensor(shape, 600, -2, 2, 'f16'), W = randTensor([6], 601, 0.5, 1.5, 'f16'), B = randTensor([6], 602, -1, 1, 'f16');
  const y = E.groupNorm(X.t, 3, W.t, B.t);
  assert.is(y.dtype, 'f16');
  const ref = refNorm(X.x.map(E.roundToF16), gnGeo(shape, 3), W.x.map(E.roundToF16), B.x.map(E.roundToF16)).y;
  assertClose(await y.data(), ref, 2e-3, 2e-3, 'groupNorm f16');
  const L = randTensor([3, 40], 603, -2, 2, 'f16');
  assertClose(await E.layerNorm(L.t).data(), refNorm(L.x.map(E.roundToF16), lnGeo([3, 40])).y, 2e-3, 2e-3, 'layerNorm f16');
  await checkBackward('gn', shape, 3, true, 610, 'f16', 2e-2);
  await checkBackward('ln', [3, 40], 1, true, 620, 'f16', 2e-2);
});

// ---------------------------------------------------------------- batch independence, chunking

s('a sample alone and inside a batch give bit-identical results', async () => {
  const shape = [3, 4, 17, 17];
  const X = randTensor(shape, 700), W = randTensor([4], 701), B = randTensor([4], 702), G = randTensor(shape, 703);
  const per = 4 * 17 * 17;
  const alone = E.tensor(X.x.slice(per, 2 * per), [1, 4, 17, 17]);
  const gAlone = E.tensor(G.x.slice(per, 2 * per), [1, 4, 17, 17]);
  X.t.requireGrad(); alone.requireGrad();
  const yb = E.groupNorm(X.t, 2, W.t, B.t), ya = E.groupNorm(alone, 2, W.t, B.t);
  assert.equal((await bits(yb)).slice(per, 2 * per), await bits(ya), 'groupNorm forward');
  E.backward(yb, { grad: G.t }); E.backward(ya, { grad: gAlone });
  assert.equal((await bits(X.t.grad!)).slice(per, 2 * per), await bits(alone.grad!), 'groupNorm dx');
  const R = randTensor([5, 300], 704);
  const one = E.tensor(R.x.slice(600, 900), [1, 300]);
  assert.equal((await bits(E.layerNorm(R.t))).slice(600, 900), await bits(E.layerNorm(one)), 'layerNorm forward');
});

s('chunked paths (window per sample range, per group) equal the unchunked result', async () => {
  const run = async (shape: number[], groups: number, seed: number) => {
    const X = randTensor(shape, seed), W = randTensor([shape[1]], seed + 1), B = randTensor([shape[1]], seed + 2), G = randTensor(shape, seed + 3);
    X.t.requireGrad(); W.t.requireGrad(); B.t.requireGrad();
    const y = E.groupNorm(X.t, groups, W.t, B.t);
    E.backward(y, { grad: G.t });
    const out = [await bits(y), await bits(X.t.grad!), await bits(W.t.grad!), await bits(B.t.grad!)];
    X.t.grad = W.t.grad = B.t.grad = null;
    return out;
  };
  const cases: [number[], number][] = [[[3, 4, 10, 10], 2], [[2, 4, 20, 20], 2], [[2, 2, 9, 7], 1]];
  const plain: number[][][] = [];
  for (const [shape, g] of cases) plain.push(await run(shape, g, 800));
  const saved = dev.maxBindingBytes;
  const dispatches = dev.dispatchCount;
  dev.maxBindingBytes = 4096;
  try {
    for (let k = 0; k < cases.length; k++) {
      // [3,4,10,10]: 1600 B a sample; [2,4,20,20]: 6400 B a sample, 3200 B a group.
      const chunked = await run(cases[k][0], cases[k][1], 800);
      ['y', 'dx', 'dw', 'db'].forEach((n, i) => assert.equal(chunked[i], plain[k][i], `${n} chunked ${cases[k][0]}`));
    }
    assert.ok(dev.dispatchCount - dispatches > 3 * 5, 'chunking produced more dispatches');
    const Big = randTensor([1, 2, 40, 40], 900);
    await assertThrows(() => E.groupNorm(Big.t, 1), /groupNorm/, /\[1, ?2, ?40, ?40\]/, /binding limit/);
  } finally {
    dev.maxBindingBytes = saved;
  }
});

s('bad shapes, groups and dtypes throw errors naming the op and shapes', async () => {
  const X = randTensor([2, 6, 3], 950);
  await assertThrows(() => E.groupNorm(X.t, 4), /groupNorm/, /groups=4/, /C=6/, /\[2, ?6, ?3\]/);
  await assertThrows(() => E.groupNorm(X.t, 0), /groupNorm/, /groups=0/);
  await assertThrows(() => E.groupNorm(randTensor([6], 951).t, 1), /groupNorm/, /\[6\]/);
  await assertThrows(() => E.groupNorm(X.t, 3, randTensor([5], 952).t), /groupNorm/, /weight \[5\]/, /\[6\]/);
  await assertThrows(() => E.groupNorm(X.t, 3, undefined, randTensor([2, 3], 953).t), /groupNorm/, /bias \[2, ?3\]/);
  await assertThrows(() => E.layerNorm(X.t, randTensor([6], 954).t), /layerNorm/, /weight \[6\]/, /\[3\]/);
  await assertThrows(() => E.layerNorm(E.tensor([1, 2, 3], [3], 'i32')), /layerNorm/, /\[3\] i32/);
  if (dev.hasF16) await assertThrows(() => E.layerNorm(X.t, randTensor([3], 955, -1, 1, 'f16').t), /layerNorm/, /dtype/, /f16/);
});

// ---------------------------------------------------------------- group norm fused with SiLU

const sig = (v: number) => 1 / (1 + Math.exp(-v));
const siluRef = (a: Float64Array) => a.map((v) => v * sig(v));
/** silu(groupNorm(x)) backward by the chain rule: g·silu'(y) through refBack. */
function refBackSilu(x: Float64Array, g: Float64Array, geo: Geo, w?: Float64Array, b?: Float64Array) {
  const y = refNorm(x, geo, w, b).y;
  const gy = g.map((gv, i) => { const s = sig(y[i]); return gv * s * (1 + y[i] * (1 - s)); });
  return refBack(x, gy, geo, w);
}

s('silu reference backward agrees with finite differences', () => {
  const geo = gnGeo([2, 4, 3], 2);
  const x = randArray(24, 1000), w = randArray(4, 1001, 0.5, 1.5), b = randArray(4, 1002), G = randArray(24, 1003);
  const [fx, fw, fb] = finiteDiff(([xa, wa, ba]) => dot(siluRef(refNorm(xa, geo, wa, ba).y), G), [x, w, b]);
  const r = refBackSilu(x, G, geo, w, b);
  assertClose(r.dx, fx, 1e-6, 1e-7, 'dx');
  assertClose(r.dw, fw, 1e-6, 1e-7, 'dw');
  assertClose(r.db, fb, 1e-6, 1e-7, 'db');
});

s("groupNorm(act 'silu') forward and backward vs float64; f32 forward equals silu(groupNorm) bit for bit", async () => {
  let seed = 1100;
  // S = 1, 21, 81 (workgroup partials), 900; groups of 1 channel; no affine, weight or bias only.
  const cases: [number[], number, 'wb' | 'w' | 'b' | ''][] = [
    [[3, 6, 7, 3], 3, 'wb'], [[1, 5, 11], 5, 'wb'], [[2, 4, 9, 9], 2, 'wb'], [[3, 4, 1, 1], 1, 'wb'],
    [[2, 6, 5], 3, ''], [[2, 4, 3, 3], 2, 'w'], [[2, 4, 3, 3], 2, 'b'], [[1, 2, 30, 30], 1, 'wb'],
  ];
  for (const [shape, groups, aff] of cases) {
    const C = shape[1], geo = gnGeo(shape, groups);
    const X = randTensor(shape, seed++, -2, 2), G = randTensor(shape, seed++, -1, 1);
    const W = randTensor([C], seed++, 0.5, 1.5), B = randTensor([C], seed++, -1, 1);
    const w = aff.includes('w') ? W : undefined, b = aff.includes('b') ? B : undefined;
    const what = `${shape} g=${groups} ${aff || 'no affine'}`;
    X.t.requireGrad(); W.t.requireGrad(); B.t.requireGrad();
    const y = E.groupNorm(X.t, groups, w?.t, b?.t, 1e-5, 'silu');
    assertClose(await y.data(), siluRef(refNorm(X.x, geo, w?.x, b?.x).y), 2e-5, 2e-5, `forward ${what}`);
    assert.equal(await bits(y), await bits(E.silu(E.groupNorm(X.t, groups, w?.t, b?.t))), `bits ${what}`);
    E.backward(y, { grad: G.t });
    const ref = refBackSilu(X.x, G.x, geo, w?.x, b?.x);
    assertClose(await X.t.grad!.data(), ref.dx, 1e-4, 1e-4, `dx ${what}`);
    if (w) assertClose(await W.t.grad!.data(), ref.dw, 1e-4, 1e-4, `dw ${what}`);
    if (b) assertClose(await B.t.grad!.data(), ref.db, 1e-4, 1e-4, `db ${what}`);
  }
  // The fused pair is one dispatch forward where the unfused one is two.
  const X = randTensor([2, 4, 5, 5], 1190);
  const n0 = dev.dispatchCount;
  E.groupNorm(X.t, 2, undefined, undefined, 1e-5, 'silu').dispose();
  assert.is(dev.dispatchCount - n0, 1, 'one dispatch');
  await assertThrows(() => E.groupNorm(X.t, 2, undefined, undefined, 1e-5, 'gelu' as E.NormAct), /groupNorm/, /act/, /gelu/);
});

s("groupNorm(act 'silu'): batch independence and chunked windows are bit-identical", async () => {
  const shape = [3, 4, 10, 10], per = 400;
  const run = async (x: Float64Array, sh: number[], g: Float64Array) => {
    const X = E.tensor(Float32Array.from(x), sh), W = randTensor([4], 1201), B = randTensor([4], 1202);
    X.requireGrad(); W.t.requireGrad(); B.t.requireGrad();
    const y = E.groupNorm(X, 2, W.t, B.t, 1e-5, 'silu');
    E.backward(y, { grad: E.tensor(Float32Array.from(g), sh) });
    return [await bits(y), await bits(X.grad!)];
  };
  const X = randTensor(shape, 1200), G = randTensor(shape, 1203);
  const [yb, dxb] = await run(X.x, shape, G.x);
  const [ya, dxa] = await run(X.x.slice(per, 2 * per), [1, 4, 10, 10], G.x.slice(per, 2 * per));
  assert.equal(yb.slice(per, 2 * per), ya, 'forward alone = in batch');
  assert.equal(dxb.slice(per, 2 * per), dxa, 'dx alone = in batch');
  const saved = dev.maxBindingBytes;
  dev.maxBindingBytes = 4096;
  try {
    const [yc, dxc] = await run(X.x, shape, G.x);
    assert.equal(yc, yb, 'forward chunked');
    assert.equal(dxc, dxb, 'dx chunked');
  } finally {
    dev.maxBindingBytes = saved;
  }
});

s.run();
