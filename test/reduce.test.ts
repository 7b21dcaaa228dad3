// Reductions over axis sets against float64 references; backward rules against analytic ones.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { assertClose, assertThrows, finiteDiff, randArray, randTensor, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('reduce');

/** float64 reduction of x (shape) over axes with fn(values) per output. */
function refReduce(x: Float64Array, shape: number[], axes: number[], fn: (v: number[]) => number): Float64Array {
  const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const n = outShape.reduce((a, b) => a * b, 1);
  const groups: number[][] = Array.from({ length: n }, () => []);
  for (let i = 0; i < x.length; i++) {
    let r = i, o = 0, mul = 1;
    for (let d = shape.length - 1; d >= 0; d--) {
      const q = r % shape[d]; r = Math.floor(r / shape[d]);
      if (!axes.includes(d)) o += q * mul;
      mul *= outShape[d];
    }
    groups[o].push(x[i]);
  }
  return Float64Array.from(groups.map(fn));
}
const sumF = (v: number[]) => v.reduce((a, b) => a + b, 0);

const CASES: [number[], number[]][] = [[[3, 1, 70], [2]], [[3, 1, 70], [0, 2]], [[5, 4, 3], [1]], [[2, 300], [1]], [[1], [0]], [[2, 3, 4, 5], [0, 2]]];

s('sum, mean, max, min, var forward', async () => {
  for (const [shape, axes] of CASES) {
    const X = randTensor(shape, 3);
    assertClose(await E.sum(X.t, axes).data(), refReduce(X.x, shape, axes, sumF), 1e-5, 1e-5, `sum ${shape} ${axes}`);
    assertClose(await E.mean(X.t, axes).data(), refReduce(X.x, shape, axes, (v) => sumF(v) / v.length), 1e-5, 1e-6, `mean ${shape} ${axes}`);
    assertClose(await E.max(X.t, axes).data(), refReduce(X.x, shape, axes, (v) => Math.max(...v)), 0, 0, `max ${shape}`);
    assertClose(await E.min(X.t, axes).data(), refReduce(X.x, shape, axes, (v) => Math.min(...v)), 0, 0, `min ${shape}`);
    const varF = (v: number[]) => { const m = sumF(v) / v.length; return sumF(v.map((a) => (a - m) ** 2)) / v.length; };
    assertClose(await E.variance(X.t, axes).data(), refReduce(X.x, shape, axes, varF), 1e-4, 1e-6, `var ${shape}`);
  }
  const X = randTensor([4, 6], 4);
  const k = E.sum(X.t, [1], true);
  assert.equal([...k.shape], [4, 1]);
  assert.equal([...E.sum(X.t).shape], []);
  const u = E.variance(X.t, 1, false, true);
  assertClose(await u.data(), refReduce(X.x, [4, 6], [1], (v) => { const m = sumF(v) / 6; return sumF(v.map((a) => (a - m) ** 2)) / 5; }), 1e-4);
});

s('reference gradient of var agrees with finite differences', () => {
  const x = randArray(7, 2);
  const v = (a: Float64Array) => { const m = a.reduce((p, q) => p + q, 0) / a.length; return a.reduce((p, q) => p + (q - m) ** 2, 0) / a.length; };
  const [fd] = finiteDiff(([a]) => v(a), [x]);
  const m = x.reduce((p, q) => p + q, 0) / 7;
  assertClose(fd, x.map((a) => (2 * (a - m)) / 7), 1e-6, 1e-8);
});

s('backward of sum, mean, max (ties share), var', async () => {
  const X = randTensor([3, 70], 5);
  X.t.requireGrad();
  const W = randTensor([3], 6);
  E.backward(E.mean(X.t, 1), { grad: W.t });
  assertClose(await X.t.grad!.data(), X.x.map((_, i) => W.x[Math.floor(i / 70)] / 70), 1e-6, 1e-8);
  X.t.grad = null;
  E.backward(E.sum(X.t, 0), { grad: randTensor([70], 7).t });
  const w7 = randTensor([70], 7).x;
  assertClose(await X.t.grad!.data(), X.x.map((_, i) => w7[i % 70]));
  const T = E.tensor([1, 3, 3, 2], [4]).requireGrad();
  E.backward(E.max(T));
  assertClose(await T.grad!.data(), [0, 0.5, 0.5, 0]);
  const V = randTensor([2, 5], 8);
  V.t.requireGrad();
  E.backward(E.sum(E.variance(V.t, 1)));
  const ref = V.x.map((a, i) => { const row = Math.floor(i / 5); const m = V.x.slice(row * 5, row * 5 + 5).reduce((p, q) => p + q, 0) / 5; return (2 * (a - m)) / 5; });
  assertClose(await V.t.grad!.data(), ref, 1e-4, 1e-6);
});

s('f16 input accumulates in f32', async () => {
  const n = 3000;
  const x = new Float64Array(n).fill(0.1).map((v) => E.roundToF16(v));
  const t = E.tensor(x, [n], 'f16');
  // An f16 accumulator would stall near 256 (spacing 0.25 > 0.1); f32 accumulation gets ~300.
  assertClose(await E.sum(t).data(), [E.roundToF16(x[0] * n)], 1e-3);
});

s('batch independence: a row reduced alone equals the batched result bit for bit', async () => {
  const X = randTensor([5, 1000], 11);
  const all = await E.sum(X.t, 1).data();
  const one = await E.sum(E.slice(X.t, [3], [4]), 1).data();
  assert.is(one[0], all[3]);
  const small = randTensor([9, 40], 12);
  const alls = await E.mean(small.t, 1).data();
  assert.is((await E.mean(E.slice(small.t, [8], [9]), 1).data())[0], alls[8]);
});

s('chunked reduction under a lowered binding limit', async () => {
  const X = randTensor([6, 4, 100], 13);
  const expect = await E.sum(X.t, [2]).data();
  const expect2 = await E.max(X.t, [0, 2]).data();
  const saved = dev.maxBindingBytes;
  dev.maxBindingBytes = 2048;
  try {
    assert.equal([...await E.sum(X.t, [2]).data()], [...expect]);
    // A reduced slice over the limit is reduced in pieces, then the pieces are reduced.
    assert.equal([...await E.max(X.t, [0, 2]).data()], [...expect2]);
    const total = refReduce(X.x, [6, 4, 100], [0, 1, 2], sumF);
    assertClose(await E.sum(X.t).data(), total, 1e-5, 1e-5, 'split full sum');
    assertClose(await E.mean(X.t, [1, 2]).data(), refReduce(X.x, [6, 4, 100], [1, 2], (v) => sumF(v) / v.length), 1e-5, 1e-6, 'split mean');
  } finally {
    dev.maxBindingBytes = saved;
  }
});

s('bad axes', async () => {
  await assertThrows(() => E.sum(E.zeros([2, 3]), 2), /sum/, /axis 2/);
  await assertThrows(() => E.mean(E.zeros([2, 3]), [1, 1]), /mean/, /repeated/);
});

s.run();
