// SD layers: nearest 2× upsampling, non-overlapping avg pooling, GEGLU, timestep embedding —
// forwards against float64 references, backwards against the references' analytic derivatives.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { assertClose, assertThrows, dot, finiteDiff, randArray, randTensor, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('layers');

// ------------------------------------------------------------------ float64 references

function upRef(x: ArrayLike<number>, [n, c, h, w]: number[]): Float64Array {
  const out = new Float64Array(n * c * 4 * h * w);
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < 2 * h; i++) {
      for (let j = 0; j < 2 * w; j++) out[(p * 2 * h + i) * 2 * w + j] = x[(p * h + (i >> 1)) * w + (j >> 1)];
    }
  }
  return out;
}

/** Gradient of upsampling: each input pixel collects its 2×2 output block. */
function upGradRef(g: ArrayLike<number>, [n, c, h, w]: number[]): Float64Array {
  const out = new Float64Array(n * c * h * w);
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < 2 * h; i++) {
      for (let j = 0; j < 2 * w; j++) out[(p * h + (i >> 1)) * w + (j >> 1)] += g[(p * 2 * h + i) * 2 * w + j];
    }
  }
  return out;
}

function poolRef(x: ArrayLike<number>, [n, c, h, w]: number[], k: number): Float64Array {
  const ho = h / k, wo = w / k;
  const out = new Float64Array(n * c * ho * wo);
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) out[(p * ho + Math.floor(i / k)) * wo + Math.floor(j / k)] += x[(p * h + i) * w + j] / (k * k);
    }
  }
  return out;
}

function poolGradRef(g: ArrayLike<number>, [n, c, h, w]: number[], k: number): Float64Array {
  const ho = h / k, wo = w / k;
  const out = new Float64Array(n * c * h * w);
  for (let p = 0; p < n * c; p++) {
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) out[(p * h + i) * w + j] = g[(p * ho + Math.floor(i / k)) * wo + Math.floor(j / k)] / (k * k);
    }
  }
  return out;
}

/** erf by its Maclaurin series: exact to ~1e-15 for |x| < 3, all the tests need. */
function erf(x: number): number {
  let term = x, total = x;
  for (let n = 1; n < 120; n++) { term *= -x * x / n; total += term / (2 * n + 1); }
  return (2 / Math.sqrt(Math.PI)) * total;
}
const geluRef = (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));
const dgeluRef = (v: number) => 0.5 * (1 + erf(v / Math.SQRT2)) + v * Math.exp(-0.5 * v * v) / Math.sqrt(2 * Math.PI);

function gegluRef(x: ArrayLike<number>, rows: number, d: number): Float64Array {
  const out = new Float64Array(rows * d);
  for (let r = 0; r < rows; r++) for (let j = 0; j < d; j++) out[r * d + j] = x[r * 2 * d + j] * geluRef(x[r * 2 * d + d + j]);
  return out;
}

function gegluGradRef(x: ArrayLike<number>, g: ArrayLike<number>, rows: number, d: number): Float64Array {
  const out = new Float64Array(rows * 2 * d);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < d; j++) {
      const hv = x[r * 2 * d + j], gv = x[r * 2 * d + d + j], gr = g[r * d + j];
      out[r * 2 * d + j] = gr * geluRef(gv);
      out[r * 2 * d + d + j] = gr * hv * dgeluRef(gv);
    }
  }
  return out;
}

interface TOpts { flipSinToCos: boolean; downscaleFreqShift: number; scale?: number; maxPeriod?: number }
function timestepRef(ts: number[], dim: number, o: TOpts): Float64Array {
  const half = Math.floor(dim / 2);
  const out = new Float64Array(ts.length * dim);
  ts.forEach((t, n) => {
    for (let i = 0; i < half; i++) {
      const freq = Math.exp(-Math.log(o.maxPeriod ?? 10000) * i / (half - o.downscaleFreqShift));
      const a = t * freq * (o.scale ?? 1);
      const [first, second] = o.flipSinToCos ? [Math.cos(a), Math.sin(a)] : [Math.sin(a), Math.cos(a)];
      out[n * dim + i] = first;
      out[n * dim + half + i] = second;
    }
    // odd dim: the last column stays 0
  });
  return out;
}

const f16 = (v: ArrayLike<number>) => Float64Array.from(v, (x) => E.roundToF16(x));

// ------------------------------------------------------------------ upsampleNearest2x

for (const shape of [[1, 3, 1, 5], [2, 3, 4, 7]]) {
  s(`upsampleNearest2x ${JSON.stringify(shape)}: forward exact, backward sums 2×2 blocks`, async () => {
    const { x, t } = randTensor(shape, 1);
    t.requireGrad();
    const y = E.upsampleNearest2x(t);
    assert.equal(y.shape, [shape[0], shape[1], 2 * shape[2], 2 * shape[3]]);
    assertClose(await y.data(), upRef(x, shape), 0, 0, 'upsample');
    const w = randTensor(y.shape as number[], 2);
    E.backward(y, { grad: w.t });
    assertClose(await t.grad!.data(), upGradRef(w.x, shape), 1e-6, 1e-7, 'dupsample');
    for (const z of [t, y, w.t, t.grad!]) z.dispose();
  });
}

s('upsampleNearest2x: reference backward matches finite differences; chunked path; errors', async () => {
  const shape = [1, 2, 2, 3];
  const x = randArray(12, 3), w = randArray(48, 4);
  const [fd] = finiteDiff(([a]) => dot(upRef(a, shape), w), [x]);
  assertClose(fd, upGradRef(w, shape), 1e-6, 1e-7, 'fd upsample');

  const big = [1, 3, 9, 20];
  const { x: bx, t: bt } = randTensor(big, 5);
  const keep = dev.maxBindingBytes;
  dev.maxBindingBytes = 4096;
  try {
    const y = E.upsampleNearest2x(bt);
    assertClose(await y.data(), upRef(bx, big), 0, 0, 'upsample chunked');
    y.dispose();
  } finally { dev.maxBindingBytes = keep; }
  bt.dispose();
  await assertThrows(() => E.upsampleNearest2x(E.zeros([3, 4, 5])), /upsampleNearest2x/, /\[3,4,5\]/);
});

s('upsampleNearest2x f16 is exact', async () => {
  if (!dev.hasF16) return;
  const shape = [1, 3, 2, 5];
  const x = f16(randArray(30, 6));
  const t = E.tensor(x, shape, 'f16');
  const y = E.upsampleNearest2x(t);
  assert.is(y.dtype, 'f16');
  assertClose(await y.data(), upRef(x, shape), 0, 0, 'upsample f16');
  t.dispose(); y.dispose();
});

// ------------------------------------------------------------------ avgPool2d

for (const [shape, k] of [[[1, 3, 4, 6], 2], [[2, 1, 3, 9], 3], [[1, 2, 5, 3], 1]] as [number[], number][]) {
  s(`avgPool2d ${JSON.stringify(shape)} k=${k}: forward and backward`, async () => {
    const { x, t } = randTensor(shape, 7);
    t.requireGrad();
    const y = E.avgPool2d(t, k);
    assert.equal(y.shape, [shape[0], shape[1], shape[2] / k, shape[3] / k]);
    assertClose(await y.data(), poolRef(x, shape, k), 1e-6, 1e-7, 'avgpool');
    const w = randTensor(y.shape as number[], 8);
    E.backward(y, { grad: w.t });
    assertClose(await t.grad!.data(), poolGradRef(w.x, shape, k), 1e-6, 1e-7, 'davgpool');
    for (const z of [t, y, w.t, t.grad!]) z.dispose();
  });
}

s('avgPool2d: reference backward matches finite differences; f16; errors', async () => {
  const shape = [1, 2, 4, 2];
  const x = randArray(16, 9), w = randArray(4, 10);
  const [fd] = finiteDiff(([a]) => dot(poolRef(a, shape, 2), w), [x]);
  assertClose(fd, poolGradRef(w, shape, 2), 1e-6, 1e-7, 'fd avgpool');

  if (dev.hasF16) {
    const xs = [1, 3, 4, 6];
    const h = f16(randArray(72, 11));
    const t = E.tensor(h, xs, 'f16');
    const y = E.avgPool2d(t);
    assert.is(y.dtype, 'f16');
    assertClose(await y.data(), poolRef(h, xs, 2), 1e-3, 1e-3, 'avgpool f16');
    t.dispose(); y.dispose();
  }

  const z = E.zeros([1, 2, 5, 4]);
  await assertThrows(() => E.avgPool2d(z, 2), /avgPool2d/, /\[1,2,5,4\]/, /divisible/);
  await assertThrows(() => E.avgPool2d(z, 2, 1), /avgPool2d/, /\[1,2,5,4\]/, /stride/);
  await assertThrows(() => E.avgPool2d(E.zeros([2, 4, 4])), /avgPool2d/, /\[2,4,4\]/);
  z.dispose();
});

// ------------------------------------------------------------------ geglu

s('geglu: reference derivative matches finite differences', () => {
  const rows = 2, d = 3;
  const x = randArray(rows * 2 * d, 12, -3, 3), g = randArray(rows * d, 13);
  const [fd] = finiteDiff(([a]) => dot(gegluRef(a, rows, d), g), [x]);
  assertClose(fd, gegluGradRef(x, g, rows, d), 1e-6, 1e-7, 'fd geglu');
});

for (const shape of [[3, 1, 10], [1, 2], [2, 67 * 2]]) {
  s(`geglu ${JSON.stringify(shape)}: forward and backward`, async () => {
    const d = shape[shape.length - 1] / 2, rows = shape.reduce((a, b) => a * b, 1) / (2 * d);
    const { x, t } = randTensor(shape, 14, -3, 3);
    t.requireGrad();
    const y = E.geglu(t);
    assert.equal(y.shape, [...shape.slice(0, -1), d]);
    assertClose(await y.data(), gegluRef(x, rows, d), 2e-5, 1e-6, 'geglu');
    const w = randTensor(y.shape as number[], 15);
    E.backward(y, { grad: w.t });
    assertClose(await t.grad!.data(), gegluGradRef(x, w.x, rows, d), 1e-4, 1e-6, 'dgeglu');
    for (const z of [t, y, w.t, t.grad!]) z.dispose();
  });
}

s('geglu: chunked path (halves read at an offset), f16, errors', async () => {
  const shape = [5, 600];
  const { x, t } = randTensor(shape, 16, -3, 3);
  t.requireGrad();
  const w = randTensor([5, 300], 17);
  const keep = dev.maxBindingBytes;
  dev.maxBindingBytes = 4096;
  try {
    const y = E.geglu(t);
    assertClose(await y.data(), gegluRef(x, 5, 300), 2e-5, 1e-6, 'geglu chunked');
    E.backward(y, { grad: w.t });
    assertClose(await t.grad!.data(), gegluGradRef(x, w.x, 5, 300), 1e-4, 1e-6, 'dgeglu chunked');
    y.dispose();
  } finally { dev.maxBindingBytes = keep; }
  for (const z of [t, w.t, t.grad!]) z.dispose();

  if (dev.hasF16) {
    const h = f16(randArray(3 * 14, 18, -3, 3));
    const th = E.tensor(h, [3, 14], 'f16');
    const y = E.geglu(th);
    assert.is(y.dtype, 'f16');
    assertClose(await y.data(), gegluRef(h, 3, 7), 2e-3, 2e-3, 'geglu f16');
    th.dispose(); y.dispose();
  }
  await assertThrows(() => E.geglu(E.zeros([2, 5])), /geglu/, /\[2,5\]/, /even/);
});

// ------------------------------------------------------------------ timestepEmbedding

const TS = [999, 21, 0, 1.5];
for (const dim of [7, 8]) {
  for (const flipSinToCos of [false, true]) {
    for (const downscaleFreqShift of [0, 1]) {
      s(`timestepEmbedding dim=${dim} flip=${flipSinToCos} shift=${downscaleFreqShift}`, async () => {
        const t = E.tensor(TS, [4]);
        const y = E.timestepEmbedding(t, dim, { flipSinToCos, downscaleFreqShift });
        assert.equal(y.shape, [4, dim]);
        assert.is(y.dtype, 'f32');
        // torch rounds t·freq to f32 (|t·freq| ≤ 999: spacing 6e-5), so compare with that slack.
        assertClose(await y.data(), timestepRef(TS, dim, { flipSinToCos, downscaleFreqShift }), 0, 2e-4, 'temb');
        t.dispose(); y.dispose();
      });
    }
  }
}

s('timestepEmbedding: scale and maxPeriod, per-sample batch invariance, no grad, errors', async () => {
  const o = { flipSinToCos: true, downscaleFreqShift: 0, scale: 0.5, maxPeriod: 100 };
  const t = E.tensor(TS, [4]);
  t.requireGrad();
  const y = E.timestepEmbedding(t, 9, o);
  assert.ok(!y.requiresGrad, 'timesteps get no gradient');
  const yd = await y.data();
  assertClose(yd, timestepRef(TS, 9, o), 0, 2e-4, 'temb scale');
  const one = E.tensor([21], [1]);
  const y1 = E.timestepEmbedding(one, 9, o);
  assert.equal([...await y1.data()], [...yd.slice(9, 18)], 'alone vs in batch');
  const ti = E.tensor([999, 0], [2], 'i32');
  const yi = E.timestepEmbedding(ti, 8, { flipSinToCos: true, downscaleFreqShift: 0 });
  assertClose(await yi.data(), timestepRef([999, 0], 8, { flipSinToCos: true, downscaleFreqShift: 0 }), 0, 2e-4, 'temb i32');
  for (const z of [t, y, one, y1, ti, yi]) z.dispose();
  await assertThrows(() => E.timestepEmbedding(E.zeros([2, 1]), 8), /timestepEmbedding/, /\[2,1\]/);
  await assertThrows(() => E.timestepEmbedding(E.zeros([2]), 2), /timestepEmbedding/, /NaN/);
});

s.run();
