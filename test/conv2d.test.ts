// conv2d against a float64 direct convolution: 1×1 and 3×3 kernels, stride, symmetric and
// asymmetric padding, dilation, groups and depthwise, bias or none, H ≠ W, sizes that are not
// tile multiples; the analytic backward (dx, dw, db) against the reference's analytic backward
// (itself checked by finite differences); f16; batch independence; the batch-chunked path; the
// row-band path for a sample above the binding limit (bit-identical to the unbanded pass); errors;
// the Winograd path software adapters take for 3×3 stride-1 convolutions.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { backward } from '../engine/autograd.js';
import { roundToF16 } from '../engine/dtype.js';
import { sizeOf } from '../engine/shape.js';
import { tensor } from '../engine/tensor.js';
import { Conv2dOptions, conv2d, conv2dGeometry, slice, torchPad } from '../engine/ops/index.js';
import { bandOf, planBands } from '../engine/ops/conv2d-bands.js';
import { winogradApplies } from '../engine/ops/conv2d-winograd.js';
import { pointwiseApplies, pointwiseOverride } from '../engine/ops/conv2d-pointwise.js';
import { im2colApplies, im2colOverride } from '../engine/ops/conv2d-im2col.js';
import { kernelFamilyOverride } from '../engine/kernel-family.js';
import { DType } from '../engine/dtype.js';
import { assertClose, assertThrows, dot, finiteDiff, randArray, testDevice, withBindingLimit } from './helpers.js';

const s = suite('conv2d');
const dev = await testDevice();

interface Case {
  x: [number, number, number, number];
  w: [number, number, number, number];
  bias: boolean;
  opts: Conv2dOptions;
}

function geo(c: Case) {
  return conv2dGeometry(c.x, c.w, c.opts, 'test');
}

function outShape(c: Case): number[] {
  const g = geo(c);
  return [g.N, g.CO, g.OH, g.OW];
}

/**
 * Visits every product term out[o] += x[xi]·w[wi] of the convolution (taps in the padding are
 * skipped: they multiply zero). Written independently of the kernel: direct loops over
 * (n, co, oy, ox, ci, ky, kx). The reference forward and its analytic backward both use it.
 */
function forEachTerm(c: Case, visit: (o: number, xi: number, wi: number, co: number) => void): void {
  const g = geo(c);
  const CG = g.C / g.G, COG = g.CO / g.G;
  for (let n = 0; n < g.N; n++) {
    for (let co = 0; co < g.CO; co++) {
      const grp = Math.floor(co / COG);
      for (let oy = 0; oy < g.OH; oy++) {
        for (let ox = 0; ox < g.OW; ox++) {
          const o = ((n * g.CO + co) * g.OH + oy) * g.OW + ox;
          visit(o, -1, -1, co); // lets the caller add the bias once per output
          for (let ci = 0; ci < CG; ci++) {
            for (let ky = 0; ky < g.KH; ky++) {
              const iy = oy * g.SH + ky * g.DH - g.PT;
              if (iy < 0 || iy >= g.H) continue;
              for (let kx = 0; kx < g.KW; kx++) {
                const ix = ox * g.SW + kx * g.DW - g.PL;
                if (ix < 0 || ix >= g.W) continue;
                const xi = ((n * g.C + grp * CG + ci) * g.H + iy) * g.W + ix;
                const wi = ((co * CG + ci) * g.KH + ky) * g.KW + kx;
                visit(o, xi, wi, co);
              }
            }
          }
        }
      }
    }
  }
}

function refConv(c: Case, x: Float64Array, w: Float64Array, b: Float64Array | null): Float64Array {
  const out = new Float64Array(sizeOf(outShape(c)));
  forEachTerm(c, (o, xi, wi, co) => {
    if (xi < 0) { if (b) out[o] += b[co]; } else out[o] += x[xi] * w[wi];
  });
  return out;
}

function refBackward(c: Case, x: Float64Array, w: Float64Array, g: Float64Array): [Float64Array, Float64Array, Float64Array] {
  const dx = new Float64Array(x.length), dw = new Float64Array(w.length), db = new Float64Array(c.w[0]);
  forEachTerm(c, (o, xi, wi, co) => {
    if (xi < 0) { db[co] += g[o]; return; }
    dx[xi] += g[o] * w[wi];
    dw[wi] += g[o] * x[xi];
  });
  return [dx, dw, db];
}

function label(c: Case): string {
  return `x[${c.x}] w[${c.w}]${c.bias ? ' +b' : ''} ${JSON.stringify(c.opts)}`;
}

const cases: Case[] = [
  { x: [1, 3, 7, 9], w: [5, 3, 3, 3], bias: true, opts: { padding: 1 } },
  { x: [3, 3, 7, 9], w: [5, 3, 1, 1], bias: false, opts: {} },
  { x: [3, 4, 9, 7], w: [6, 4, 3, 3], bias: true, opts: { stride: 2, padding: 1 } },
  { x: [1, 3, 8, 6], w: [5, 3, 3, 3], bias: true, opts: { stride: 2, padding: torchPad([0, 1, 0, 1]) } }, // SD VAE down-sample
  { x: [1, 2, 6, 7], w: [3, 2, 3, 2], bias: false, opts: { stride: [1, 2], padding: torchPad([2, 0, 1, 3]) } }, // asymmetric, all four differ
  { x: [1, 3, 9, 10], w: [4, 3, 3, 3], bias: true, opts: { dilation: 2, padding: [2, 1] } },
  { x: [3, 4, 5, 7], w: [6, 2, 3, 3], bias: true, opts: { groups: 2, padding: 1 } },
  { x: [1, 4, 6, 5], w: [8, 1, 3, 3], bias: false, opts: { groups: 4, padding: 1, stride: [2, 1] } }, // depthwise, multiplier 2
  { x: [1, 70, 3, 3], w: [66, 70, 1, 1], bias: true, opts: {} }, // M and K larger than one tile
];

s('forward f32 matches the float64 reference', async () => {
  let seed = 1;
  for (const c of cases) {
    const x = randArray(sizeOf(c.x), seed++), w = randArray(sizeOf(c.w), seed++);
    const b = c.bias ? randArray(c.w[0], seed++) : null;
    const out = conv2d(tensor(x, c.x), tensor(w, c.w), b ? tensor(b, [c.w[0]]) : null, c.opts);
    assert.equal([...out.shape], outShape(c), `shape of ${label(c)}`);
    assertClose(await out.data(), refConv(c, x, w, b), 1e-5, 1e-5, label(c));
  }
});

s('output size: floor((H + pads − d·(k−1) − 1)/s) + 1', () => {
  const o = (h: number, k: number, st: number, p: [number, number], d = 1) =>
    conv2dGeometry([1, 1, h, 4], [1, 1, k, 1], { stride: [st, 1], padding: [p[0], p[1], 0, 0], dilation: [d, 1] }, 't').OH;
  assert.is(o(8, 3, 2, [0, 1]), 4);
  assert.is(o(7, 3, 2, [1, 1]), 4);
  assert.is(o(9, 3, 1, [0, 0], 2), 5);
  assert.is(o(3, 3, 1, [0, 0]), 1);
  assert.equal(torchPad([1, 2, 3, 4]), [3, 4, 1, 2]);
});

s('one pipeline per (pass, dtype) serves every shape', async () => {
  const run = (c: Case) => conv2d(tensor(randArray(sizeOf(c.x), 1), c.x), tensor(randArray(sizeOf(c.w), 2), c.w), null, c.opts);
  run(cases[0]);
  await dev.sync();
  const before = dev.pipelineCount;
  run(cases[2]); run(cases[7]);
  await dev.sync();
  assert.is(dev.pipelineCount, before);
});

const gradCases = [cases[2], cases[3], cases[4], cases[5], cases[6], cases[7]];

s('reference backward agrees with finite differences', () => {
  for (const c of [cases[4], cases[6]]) {
    const x = randArray(sizeOf(c.x), 11), w = randArray(sizeOf(c.w), 12), b = randArray(c.w[0], 13);
    const g = randArray(sizeOf(outShape(c)), 14);
    const [dx, dw, db] = refBackward(c, x, w, g);
    const [fx, fw, fb] = finiteDiff((xs) => dot(refConv(c, xs[0], xs[1], xs[2]), g), [x, w, b]);
    assertClose(dx, fx, 1e-6, 1e-7, `dx of ${label(c)}`);
    assertClose(dw, fw, 1e-6, 1e-7, `dw of ${label(c)}`);
    assertClose(db, fb, 1e-6, 1e-7, `db of ${label(c)}`);
  }
});

/**
 * Runs conv2d forward and backward on random inputs (seeds seed … seed + 3), checks dx, dw and
 * db against the reference's analytic backward, and returns the output and the inputs.
 */
async function checkBackward(c: Case, seed: number) {
  const x = randArray(sizeOf(c.x), seed), w = randArray(sizeOf(c.w), seed + 1), b = randArray(c.w[0], seed + 2);
  const g = randArray(sizeOf(outShape(c)), seed + 3);
  const tx = tensor(x, c.x).requireGrad(), tw = tensor(w, c.w).requireGrad();
  const tb = c.bias ? tensor(b, [c.w[0]]).requireGrad() : null;
  const out = conv2d(tx, tw, tb, c.opts);
  backward(out, { grad: tensor(g, outShape(c)) });
  const [dx, dw, db] = refBackward(c, x, w, g);
  assertClose(await tx.grad!.data(), dx, 1e-5, 1e-5, `dx of ${label(c)}`);
  assertClose(await tw.grad!.data(), dw, 1e-5, 1e-5, `dw of ${label(c)}`);
  if (tb) assertClose(await tb.grad!.data(), db, 1e-5, 1e-5, `db of ${label(c)}`);
  return { out, x, w, b };
}

s('backward (dx, dw, db) matches the reference analytic backward', async () => {
  let seed = 100;
  for (const c of gradCases) {
    await checkBackward(c, seed);
    seed += 4;
  }
});

s('f16 within tolerance (f16 inputs, f32 accumulation, f16 output)', async () => {
  if (!dev.hasF16) return;
  let seed = 200;
  for (const c of [cases[2], cases[3], cases[6]]) {
    const x = randArray(sizeOf(c.x), seed++).map(roundToF16), w = randArray(sizeOf(c.w), seed++).map(roundToF16);
    const b = randArray(c.w[0], seed++).map(roundToF16);
    const out = conv2d(tensor(x, c.x, 'f16'), tensor(w, c.w, 'f16'), tensor(b, [c.w[0]], 'f16'), c.opts);
    assert.is(out.dtype, 'f16');
    // Exact inputs, f32 sums: the error is the one rounding to f16 (≤ 2^-11 relative).
    assertClose(await out.data(), refConv(c, x, w, b), 2 ** -11 + 1e-6, 1e-5, `f16 ${label(c)}`);
  }
  const c = cases[3];
  const x = randArray(sizeOf(c.x), 300).map(roundToF16), w = randArray(sizeOf(c.w), 301).map(roundToF16);
  const b = randArray(c.w[0], 302).map(roundToF16), g = randArray(sizeOf(outShape(c)), 303).map(roundToF16);
  const tx = tensor(x, c.x, 'f16').requireGrad(), tw = tensor(w, c.w, 'f16').requireGrad(), tb = tensor(b, [c.w[0]], 'f16').requireGrad();
  backward(conv2d(tx, tw, tb, c.opts), { grad: tensor(g, outShape(c), 'f16') });
  const [dx, dw, db] = refBackward(c, x, w, g);
  // Gradients are rounded to f16 once (sums of ≤ 48 terms of size ≤ 1 in f32).
  assertClose(await tx.grad!.data(), dx, 2e-3, 2e-3, 'f16 dx');
  assertClose(await tw.grad!.data(), dw, 2e-3, 2e-3, 'f16 dw');
  assertClose(await tb.grad!.data(), db, 2e-3, 2e-3, 'f16 db');
});

function bits(x: ArrayLike<number>): number[] {
  return Array.from(new Uint32Array(Float32Array.from(x).buffer));
}

s('batch independence: one sample alone equals the same sample in a batch, bit for bit', async () => {
  for (const c of [cases[2], cases[6]]) {
    const xs = [5, ...c.x.slice(1)] as [number, number, number, number];
    const X = tensor(randArray(sizeOf(xs), 400, -3, 3), xs).requireGrad();
    const W = tensor(randArray(sizeOf(c.w), 401, -3, 3), c.w);
    const b = tensor(randArray(c.w[0], 402), [c.w[0]]);
    const full = conv2d(X, W, b, c.opts);
    const per = sizeOf(full.shape) / 5;
    const G = tensor(randArray(full.size, 403, -3, 3), full.shape);
    backward(full, { grad: G });
    const x2 = tensor(await slice(X, [2, 0, 0, 0], [3, ...xs.slice(1)]).data(), [1, ...xs.slice(1)]).requireGrad();
    const alone = conv2d(x2, W, b, c.opts);
    backward(alone, { grad: slice(G, [2, 0, 0, 0], [3, ...full.shape.slice(1)]) });
    assert.equal(bits(await alone.data()), bits((await full.data()).subarray(2 * per, 3 * per)), `forward, sample 2 of ${label(c)}`);
    const xper = sizeOf(xs) / 5;
    assert.equal(bits(await x2.grad!.data()), bits((await X.grad!.data()).subarray(2 * xper, 3 * xper)), `dx, sample 2 of ${label(c)}`);
  }
});

s('chunked path (lowered binding limit) equals the unchunked result', async () => {
  const c: Case = { x: [5, 3, 7, 9], w: [5, 3, 3, 3], bias: true, opts: { padding: 1, stride: [1, 2] } };
  const x = tensor(randArray(sizeOf(c.x), 500), c.x), w = tensor(randArray(sizeOf(c.w), 501), c.w), b = tensor(randArray(5, 502), [5]);
  const g = tensor(randArray(sizeOf(outShape(c)), 503), outShape(c));
  const run = async () => {
    const tx = tensor(await x.data(), c.x).requireGrad(), tw = tensor(await w.data(), c.w).requireGrad();
    const out = conv2d(tx, tw, b, c.opts);
    backward(out, { grad: g });
    return [await out.data(), await tx.grad!.data(), await tw.grad!.data()];
  };
  const whole = await run();
  const saved = dev.maxBindingBytes;
  let chunked: ArrayLike<number>[];
  const before = dev.dispatchCount;
  try {
    dev.maxBindingBytes = 1024; // ≈ one sample of x (756 B) per dispatch
    chunked = await run();
  } finally {
    dev.maxBindingBytes = saved;
  }
  assert.ok(dev.dispatchCount - before >= 3 * 5, 'forward, dx and dw should each run per sample');
  for (const [i, name] of ['forward', 'dx', 'dw'].entries()) assert.equal(bits(chunked[i]), bits(whole[i]), `chunked ${name}`);
  assertClose(whole[0], refConv(c, Float64Array.from(await x.data()), Float64Array.from(await w.data()), Float64Array.from(await b.data())), 1e-5, 1e-5, 'chunked vs reference');
});

// Row bands: the sample does not fit the lowered limit but a few rows (plus halo) do.
const bandCases: { c: Case; limit: number; what: string }[] = [
  { c: { x: [2, 3, 13, 10], w: [4, 3, 3, 3], bias: true, opts: { stride: 2, padding: torchPad([0, 1, 0, 1]) } }, limit: 700, what: 'stride 2, pad (0,1,0,1)' },
  { c: { x: [1, 3, 11, 9], w: [4, 3, 3, 3], bias: false, opts: { dilation: 2, padding: [2, 1] } }, limit: 700, what: 'dilation 2' },
  { c: { x: [2, 4, 9, 7], w: [6, 2, 3, 3], bias: true, opts: { groups: 2, padding: 1 } }, limit: 700, what: 'groups 2' },
  // Output rows 7..9 see only the bottom padding: bands there read no image row (PT' < 0).
  { c: { x: [1, 2, 6, 40], w: [3, 2, 3, 3], bias: true, opts: { padding: [1, 5, 1, 1] } }, limit: 2000, what: 'bands inside the bottom padding' },
  // 1×1 stride 2: dx bands over rows that no window reads (odd rows).
  { c: { x: [1, 3, 9, 8], w: [5, 3, 1, 1], bias: true, opts: { stride: 2 } }, limit: 400, what: '1×1 stride 2' },
];

async function runWithLimit(c: Case, dtype: DType, limit: number | null, seed: number) {
  const g = outShape(c);
  const rnd = (n: number, sd: number) => dtype === 'f16' ? randArray(n, sd).map(roundToF16) : randArray(n, sd);
  const x = rnd(sizeOf(c.x), seed), w = rnd(sizeOf(c.w), seed + 1), b = rnd(c.w[0], seed + 2), gv = rnd(sizeOf(g), seed + 3);
  const saved = dev.maxBindingBytes;
  try {
    if (limit !== null) dev.maxBindingBytes = limit;
    const before = dev.dispatchCount;
    const tx = tensor(x, c.x, dtype).requireGrad(), tw = tensor(w, c.w, dtype).requireGrad();
    const tb = c.bias ? tensor(b, [c.w[0]], dtype).requireGrad() : null;
    const out = conv2d(tx, tw, tb, c.opts);
    backward(out, { grad: tensor(gv, g, dtype) });
    const res = { out: await out.data(), dx: await tx.grad!.data(), dw: await tw.grad!.data(), dispatches: dev.dispatchCount - before, x, w, b: c.bias ? b : null, g: gv };
    return res;
  } finally {
    dev.maxBindingBytes = saved;
  }
}

s('row bands: band geometry covers exactly the rows the whole pass reads', () => {
  // For every output row and tap, the band's view (rows shifted by s0, PT') must land on the
  // same image row as the whole pass, and every in-image row a tap reaches must be in the band.
  for (const { c } of bandCases) {
    const G = geo(c);
    for (const mode of ['fwd', 'dw', 'dx'] as const) {
      const rows = mode === 'dx' ? G.H : G.OH;
      for (let r0 = 0; r0 < rows; r0++) {
        for (let r1 = r0 + 1; r1 <= Math.min(rows, r0 + 3); r1++) {
          const b = bandOf(mode, G, r0, r1);
          assert.ok(b.s0 >= 0 && b.s1 > b.s0 && b.s1 <= (mode === 'dx' ? G.OH : G.H), `${label(c)} ${mode} [${r0},${r1}) source rows`);
          for (let r = r0; r < r1; r++) {
            for (let ky = 0; ky < G.KH; ky++) {
              if (mode !== 'dx') {
                const iy = r * G.SH + ky * G.DH - G.PT; // whole pass
                const local = (r - r0) * G.SH + ky * G.DH - b.geo.PT; // band pass
                const inImage = iy >= 0 && iy < G.H;
                assert.is(local >= 0 && local < b.geo.H, inImage, `${mode} row ${r} tap ${ky}`);
                if (inImage) assert.is(local + b.s0, iy);
              } else {
                const t = r + G.PT - ky * G.DH;
                const hit = t >= 0 && t % G.SH === 0 && t / G.SH < G.OH;
                const tl = (r - r0) + b.geo.PT - ky * G.DH;
                const hitLocal = tl >= 0 && tl % G.SH === 0 && tl / G.SH < b.geo.OH;
                assert.is(hitLocal, hit, `dx row ${r} tap ${ky}`);
                if (hit) assert.is(tl / G.SH + b.s0, t / G.SH);
              }
            }
          }
        }
      }
    }
  }
});

s('row bands: a sample above the binding limit gives the unbanded bits (forward, dx, dw)', async () => {
  let seed = 600;
  for (const { c, limit, what } of bandCases) {
    const G = geo(c);
    // The case must really band: one sample exceeds the limit, and each pass has several bands.
    assert.ok(Math.max(G.C * G.H * G.W, G.CO * G.OH * G.OW) * 4 > limit, `${what}: one sample should exceed ${limit} bytes`);
    for (const mode of ['fwd', 'dx', 'dw'] as const) assert.ok(planBands(mode, G, limit, 4, 't').length >= 2, `${what}: ${mode} should use several bands`);
    const whole = await runWithLimit(c, 'f32', null, seed);
    const banded = await runWithLimit(c, 'f32', limit, seed);
    seed += 4;
    assert.ok(banded.dispatches > whole.dispatches, `${what}: the banded run should record more dispatches`);
    assert.equal(bits(banded.out), bits(whole.out), `${what}: forward`);
    assert.equal(bits(banded.dx), bits(whole.dx), `${what}: dx`);
    assert.equal(bits(banded.dw), bits(whole.dw), `${what}: dw`);
    // And both are right (so the test fails on a kernel wrong in both paths alike).
    assertClose(banded.out, refConv(c, banded.x, banded.w, banded.b), 1e-5, 1e-5, `${what}: forward vs reference`);
    const [dx, dw] = refBackward(c, banded.x, banded.w, banded.g);
    assertClose(banded.dx, dx, 1e-5, 1e-5, `${what}: dx vs reference`);
    assertClose(banded.dw, dw, 1e-5, 1e-5, `${what}: dw vs reference`);
  }
});

s('row bands in f16 give the unbanded bits', async () => {
  if (!dev.hasF16) return;
  const { c, limit } = bandCases[0];
  const whole = await runWithLimit(c, 'f16', null, 700);
  const f16Limit = 500; // below one f16 sample (780 bytes), above the f32 weight gradient (432)
  const banded = await runWithLimit(c, 'f16', f16Limit, 700);
  assert.ok(planBands('fwd', geo(c), f16Limit, 2, 't').length >= 2);
  assert.equal(bits(banded.out), bits(whole.out), 'f16 forward');
  assert.equal(bits(banded.dx), bits(whole.dx), 'f16 dx');
  assert.equal(bits(banded.dw), bits(whole.dw), 'f16 dw');
});

s('1×1 convolutions as products (software adapters) give the direct kernels\' bits: fwd with and without bias, dx, f16, odd pixel counts, chunks', async () => {
  const f32 = (d: ArrayLike<number>) => Array.from(new Uint32Array(Float32Array.from(d).buffer));
  const cases: { x: number[]; co: number; bias: boolean; dtype: DType }[] = [
    { x: [3, 8, 8, 8], co: 12, bias: true, dtype: 'f32' },
    { x: [2, 5, 5, 13], co: 7, bias: false, dtype: 'f32' }, // 65 pixels: the scalar-B product
    { x: [1, 17, 8, 9], co: 33, bias: true, dtype: 'f32' },
    { x: [3, 8, 4, 4], co: 12, bias: true, dtype: 'f32' }, // below 64 pixels: the direct kernels
  ];
  if (dev.hasF16) cases.push({ x: [2, 8, 8, 10], co: 4, bias: false, dtype: 'f16' }, { x: [2, 8, 8, 10], co: 4, bias: true, dtype: 'f16' });
  let seed = 900;
  for (const c of cases) {
    const geo = conv2dGeometry(c.x, [c.co, c.x[1], 1, 1], {}, 'test');
    const software = kernelFamilyOverride.family === undefined && pointwiseApplies('dx', geo, dev, c.dtype, false);
    if (kernelFamilyOverride.family === undefined && dev.adapterName.match(/llvmpipe|lavapipe/)) assert.is(software, c.x[2] * c.x[3] >= 64, `route of [${c.x}]`);
    const round = (v: Float64Array) => (c.dtype === 'f16' ? v.map(roundToF16) : v);
    const xv = round(randArray(sizeOf(c.x), seed++)), wv = round(randArray(c.co * c.x[1], seed++)), bv = round(randArray(c.co, seed++));
    const gv = round(randArray(c.x[0] * c.co * c.x[2] * c.x[3], seed++));
    const run = (maxBinding?: number) => withBindingLimit(dev, maxBinding, async () => {
      const x = tensor(xv, c.x, c.dtype).requireGrad(), w = tensor(wv, [c.co, c.x[1], 1, 1], c.dtype);
      const y = conv2d(x, w, c.bias ? tensor(bv, [c.co], c.dtype) : null);
      backward(y, { grad: tensor(gv, [...y.shape], c.dtype) });
      return [f32(await y.data()), f32(await x.grad!.data())];
    });
    const routed = await run();
    let direct: number[][];
    try { pointwiseOverride.enabled = false; direct = await run(); } finally { delete pointwiseOverride.enabled; }
    const what = `[${c.x}] -> ${c.co} ${c.dtype}${c.bias ? ' bias' : ''}`;
    assert.equal(routed[0], direct[0], `forward ${what}`);
    assert.equal(routed[1], direct[1], `dx ${what}`);
    if (c.dtype === 'f32') {
      // A binding limit that splits the batch (one sample and the weight still fit).
      const chunked = await run(Math.max(c.x[1] * c.x[2] * c.x[3], c.co * c.x[2] * c.x[3], c.x[1] * c.co) * 4 + dev.limits.minStorageBufferOffsetAlignment + 64);
      assert.equal(chunked, routed, `chunked ${what}`);
    }
    if (software) assert.ok(c.dtype === 'f32' || !c.bias ? pointwiseApplies('fwd', geo, dev, c.dtype, c.bias) : !pointwiseApplies('fwd', geo, dev, c.dtype, c.bias), `route of ${what}`);
  }
});

s('im2col route (software adapters) gives the direct kernels\' bits: fwd, dw and (1×1) dx; stride, dilation, asymmetric padding, f16 with bias, sample chunks', async () => {
  const f32 = (d: ArrayLike<number>) => Array.from(new Uint32Array(Float32Array.from(d).buffer));
  const cases: { x: number[]; w: number[]; bias: boolean; dtype: DType; opts: Conv2dOptions }[] = [
    { x: [3, 5, 9, 8], w: [7, 5, 3, 3], bias: true, dtype: 'f32', opts: { stride: 2, padding: 1 } },
    { x: [2, 4, 10, 11], w: [6, 4, 3, 2], bias: false, dtype: 'f32', opts: { dilation: [2, 1], padding: [2, 1] } },
    { x: [2, 3, 7, 7], w: [5, 3, 3, 3], bias: true, dtype: 'f32', opts: { stride: [1, 2], padding: [0, 2, 1, 0] } },
    { x: [4, 6, 3, 3], w: [9, 6, 1, 1], bias: true, dtype: 'f32', opts: {} }, // a small 1×1 map
  ];
  if (dev.hasF16) cases.push({ x: [2, 8, 6, 6], w: [8, 8, 3, 3], bias: true, dtype: 'f16', opts: { stride: 2, padding: 1 } }, { x: [2, 8, 5, 5], w: [4, 8, 1, 1], bias: true, dtype: 'f16', opts: {} });
  let seed = 1000;
  for (const c of cases) {
    const geo = conv2dGeometry(c.x, c.w, c.opts, 'test');
    if (kernelFamilyOverride.family === undefined && dev.adapterName.match(/llvmpipe|lavapipe/)) {
      assert.ok(im2colApplies('fwd', geo, dev, c.dtype) && im2colApplies('dw', geo, dev, c.dtype), `route of [${c.x}] * [${c.w}]`);
      assert.is(im2colApplies('dx', geo, dev, c.dtype), c.w[2] === 1 && c.w[3] === 1, `dx route of [${c.x}] * [${c.w}]`);
    }
    const round = (v: Float64Array) => (c.dtype === 'f16' ? v.map(roundToF16) : v);
    const xv = round(randArray(sizeOf(c.x), seed++)), wv = round(randArray(sizeOf(c.w), seed++)), bv = round(randArray(c.w[0], seed++));
    const run = (maxBinding?: number) => withBindingLimit(dev, maxBinding, async () => {
      const x = tensor(xv, c.x, c.dtype).requireGrad(), w = tensor(wv, c.w, c.dtype).requireGrad();
      const y = conv2d(x, w, c.bias ? tensor(bv, [c.w[0]], c.dtype) : null, c.opts);
      backward(y, { grad: tensor(round(randArray(y.size, 77)), [...y.shape], c.dtype) });
      return [f32(await y.data()), f32(await w.grad!.data()), f32(await x.grad!.data())];
    });
    const routed = await run();
    let direct: number[][];
    try { im2colOverride.enabled = false; direct = await run(); } finally { delete im2colOverride.enabled; }
    const what = `[${c.x}] * [${c.w}] ${c.dtype}${c.bias ? ' bias' : ''} ${JSON.stringify(c.opts)}`;
    assert.equal(routed[0], direct[0], `forward ${what}`);
    assert.equal(routed[1], direct[1], `dw ${what}`);
    assert.equal(routed[2], direct[2], `dx ${what}`); // the product form for small 1×1 maps, else direct
    // A binding limit under two samples' columns: the forward runs in chunks of samples.
    const K = c.w[1] * c.w[2] * c.w[3], P = geo.OH * geo.OW;
    const limit = Math.max(K * P, c.w[0] * K, c.x[1] * c.x[2] * c.x[3]) * 4 + dev.limits.minStorageBufferOffsetAlignment + 8;
    if (2 * K * P * 4 > limit - dev.limits.minStorageBufferOffsetAlignment - 4) {
      const chunked = await run(limit);
      assert.equal(chunked[0], routed[0], `chunked forward ${what}`);
      assert.equal(chunked[2], routed[2], `chunked dx ${what}`);
    }
  }
});

s('a weight or a one-row band too large for one binding is an error naming conv2d', async () => {
  const saved = dev.maxBindingBytes;
  try {
    dev.maxBindingBytes = 512;
    // One output row needs 3 input rows of 3 × 30 f32: 1080 bytes.
    await assertThrows(() => conv2d(tensor(randArray(2 * 3 * 8 * 30, 1), [2, 3, 8, 30]), tensor(randArray(27, 2), [1, 3, 3, 3])), /conv2d\(\[2,3,8,30\] f32, \[1,3,3,3\] f32/, /band of one row/, /binding limit/);
    await assertThrows(() => conv2d(tensor(randArray(4, 1), [1, 1, 2, 2]), tensor(randArray(200, 2), [200, 1, 1, 1])), /conv2d/, /\[200,1,1,1\]/, /weight/, /binding limit/);
  } finally {
    dev.maxBindingBytes = saved;
  }
});

s('bad input throws naming conv2d and the shapes', async () => {
  const x = tensor(randArray(2 * 4 * 5 * 5, 1), [2, 4, 5, 5]);
  await assertThrows(() => conv2d(x, tensor(randArray(27, 2), [1, 3, 3, 3])), /conv2d\(\[2,4,5,5\] f32, \[1,3,3,3\] f32/, /channel mismatch/);
  await assertThrows(() => conv2d(x, tensor(randArray(36, 2), [3, 4, 3, 1]), null, { groups: 2 }), /conv2d/, /\[3,4,3,1\]/, /groups=2 must divide/);
  await assertThrows(() => conv2d(x, tensor(randArray(2 * 4 * 6 * 3, 2), [2, 4, 6, 3])), /conv2d/, /\[2,4,6,3\]/, /larger than the padded input/);
  await assertThrows(() => conv2d(x, tensor(randArray(36, 2), [1, 4, 3, 3]), null, { dilation: 3 }), /conv2d/, /dilated\) kernel 7×7/);
  await assertThrows(() => conv2d(x, tensor(randArray(36, 2), [1, 4, 3, 3]), tensor([1, 2], [2])), /conv2d/, /bias must be \[1\]/);
  await assertThrows(() => conv2d(tensor(randArray(20, 1), [4, 5, 1]), tensor(randArray(36, 2), [1, 4, 3, 3])), /conv2d\(\[4,5,1\] f32/, /\[N, Cin, H, W\]/);
  await assertThrows(() => conv2d(x, tensor(randArray(36, 2), [1, 4, 3, 3]), null, { stride: 0 }), /conv2d/, /stride/);
});

// ---------------------------------------------------------------- Winograd (software adapters)

const winoCases: Case[] = [
  { x: [2, 5, 7, 9], w: [6, 5, 3, 3], bias: true, opts: { padding: 1 } }, // odd sizes: partial tiles
  { x: [3, 4, 1, 1], w: [4, 4, 3, 3], bias: false, opts: { padding: 1 } }, // 1×1 image
  { x: [2, 3, 6, 5], w: [4, 3, 3, 3], bias: true, opts: { padding: [0, 2, 1, 0] } }, // asymmetric, 0 and 2
  { x: [1, 8, 8, 8], w: [12, 8, 3, 3], bias: true, opts: {} }, // no padding
  { x: [2, 1, 4, 4], w: [1, 1, 3, 3], bias: true, opts: { padding: 2 } }, // one channel, output larger than input
];

s('Winograd F(2×2, 3×3) (software family): forward, dx, dw, db vs float64; f16; it is the path taken', async () => {
  const before = kernelFamilyOverride.family;
  kernelFamilyOverride.family = 'software';
  try {
    let seed = 600;
    for (const c of winoCases) {
      assert.ok(winogradApplies('fwd', geo(c), dev) && winogradApplies('dx', geo(c), dev), `Winograd applies to ${label(c)}`);
      const { out, x, w, b } = await checkBackward(c, seed);
      seed += 4;
      assertClose(await out.data(), refConv(c, x, w, c.bias ? b : null), 1e-5, 1e-5, `forward of ${label(c)}`);
      if (dev.hasF16) {
        const [x16, w16, b16] = [x, w, b].map((a) => a.map(roundToF16));
        const o16 = conv2d(tensor(x16, c.x, 'f16'), tensor(w16, c.w, 'f16'), c.bias ? tensor(b16, [c.w[0]], 'f16') : null, c.opts);
        assertClose(await o16.data(), refConv(c, x16, w16, c.bias ? b16 : null), 2e-3, 2e-3, `f16 forward of ${label(c)}`);
      }
    }
    // Not Winograd: stride 2, dilation, groups, 1×1, padding 3.
    for (const c of [cases[2], cases[5], cases[6], cases[1]]) assert.not.ok(winogradApplies('fwd', geo(c), dev), label(c));
    assert.not.ok(winogradApplies('dx', geo({ x: [1, 1, 9, 9], w: [1, 1, 3, 3], bias: false, opts: { padding: 3 } }), dev), 'padding 3');
  } finally {
    kernelFamilyOverride.family = before;
  }
});

s('Winograd: a sample alone, in a batch, and in chunks of a lowered binding limit gives the same bits', async () => {
  const before = kernelFamilyOverride.family;
  kernelFamilyOverride.family = 'software';
  const saved = dev.maxBindingBytes;
  try {
    const c: Case = { x: [5, 4, 6, 7], w: [6, 4, 3, 3], bias: true, opts: { padding: 1 } };
    const X = randArray(sizeOf(c.x), 700, -3, 3), W = randArray(sizeOf(c.w), 701), B = randArray(6, 702);
    const G = randArray(sizeOf(outShape(c)), 703);
    const run = async (n0: number, n: number) => {
      const xs = [n, ...c.x.slice(1)], gs = [n, ...outShape(c).slice(1)];
      const per = sizeOf(c.x) / 5, gper = sizeOf(outShape(c)) / 5;
      const tx = tensor(X.slice(n0 * per, (n0 + n) * per), xs).requireGrad(), tw = tensor(W, c.w).requireGrad();
      const out = conv2d(tx, tw, tensor(B, [6]), c.opts);
      backward(out, { grad: tensor(G.slice(n0 * gper, (n0 + n) * gper), gs) });
      return [bits(await out.data()), bits(await tx.grad!.data()), Array.from(await tw.grad!.data())];
    };
    const [yAll, dxAll, dwAll] = await run(0, 5);
    assertClose(dwAll, refBackward(c, X.slice(), W, G)[1], 1e-5, 1e-5, 'dw (Winograd) vs float64');
    const [yOne, dxOne] = await run(3, 1);
    const yper = sizeOf(outShape(c)) / 5, xper = sizeOf(c.x) / 5;
    assert.equal(yOne, yAll.slice(3 * yper, 4 * yper), 'forward alone = in batch');
    assert.equal(dxOne, dxAll.slice(3 * xper, 4 * xper), 'dx alone = in batch');
    // Per sample V is 16·4·12 floats (3 KiB) and M 16·6·12 (4.5 KiB): one sample per chunk at 8 KiB.
    dev.maxBindingBytes = 8192;
    assert.ok(winogradApplies('fwd', geo(c), dev), 'still Winograd at the lowered limit');
    const n0 = dev.dispatchCount;
    const [yCh, dxCh, dwCh] = await run(0, 5);
    // dw sums over the batch: chunks group the sum differently (close, not bit-equal).
    assertClose(dwCh, dwAll, 1e-5, 1e-5, 'dw chunked');
    assert.ok(dev.dispatchCount - n0 > 12, 'chunked into several passes');
    assert.equal(yCh, yAll, 'forward chunked');
    assert.equal(dxCh, dxAll, 'dx chunked');
  } finally {
    dev.maxBindingBytes = saved;
    kernelFamilyOverride.family = before;
  }
});

s.run();
