// softmax / logSoftmax over any axis against float64 references; fused backward kernels against
// the analytic float64 backward (itself checked against finite differences); f16; batch
// independence; the chunked path.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { assertClose, assertThrows, dot, finiteDiff, randArray, randTensor, testDevice } from './helpers.js';
import { KernelFamily, kernelFamilyOverride } from '../engine/kernel-family.js';

/** Runs fn under each kernel family (software adapters walk every row in one thread; GPUs use a
 *  workgroup per row above 64), so CI on a software device covers both. */
async function underEachFamily(fn: (family: KernelFamily) => Promise<void>): Promise<void> {
  const before = kernelFamilyOverride.family;
  try {
    for (const family of ['software', 'gpu'] as KernelFamily[]) { kernelFamilyOverride.family = family; await fn(family); }
  } finally {
    kernelFamilyOverride.family = before;
  }
}

const dev = await testDevice();
const s = suite('softmax');

/** Calls fn(indices of one row) for every row along `axis` of a contiguous `shape`. */
function forRows(shape: number[], axis: number, fn: (idx: number[]) => void): void {
  const L = shape[axis];
  const pre = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const post = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  for (let p = 0; p < pre; p++) for (let q = 0; q < post; q++) fn(Array.from({ length: L }, (_, j) => (p * L + j) * post + q));
}

function refSoftmax(x: Float64Array, shape: number[], axis: number, log: boolean): Float64Array {
  const y = new Float64Array(x.length);
  forRows(shape, axis, (idx) => {
    const m = Math.max(...idx.map((i) => x[i]));
    const s = idx.reduce((a, i) => a + Math.exp(x[i] - m), 0);
    for (const i of idx) y[i] = log ? x[i] - m - Math.log(s) : Math.exp(x[i] - m) / s;
  });
  return y;
}

/** Analytic vector-Jacobian products, from the output y. */
function refGrad(y: Float64Array, g: Float64Array, shape: number[], axis: number, log: boolean): Float64Array {
  const dx = new Float64Array(y.length);
  forRows(shape, axis, (idx) => {
    if (log) {
      const sg = idx.reduce((a, i) => a + g[i], 0);
      for (const i of idx) dx[i] = g[i] - Math.exp(y[i]) * sg;
    } else {
      const sgy = idx.reduce((a, i) => a + g[i] * y[i], 0);
      for (const i of idx) dx[i] = y[i] * (g[i] - sgy);
    }
  });
  return dx;
}

// Row lengths on both sides of the one-thread-per-row limit (64) and of the workgroup size (256).
const CASES: [number[], number][] = [
  [[3, 1, 70], -1], [[5, 4, 3], 1], [[2, 300], 1], [[1], 0], [[2, 3, 4, 5], 0], [[2, 3, 4, 5], 2],
  [[4, 257], -1], [[7, 64], 1], [[3, 65], 1], [[2, 1], 1], [[3, 130, 2], 1],
];

s('forward against float64, any axis; large inputs need the max subtracted (both kernel families)', async () => underEachFamily(async (family) => {
  for (const [shape, axis] of CASES) {
    const a = axis < 0 ? axis + shape.length : axis;
    // Up to ±100: exp would overflow f32 without the max shift.
    const X = randTensor(shape, 3, -100, 100);
    assertClose(await E.softmax(X.t, axis).data(), refSoftmax(X.x, shape, a, false), 1e-5, 1e-7, `${family}: softmax ${shape} axis ${axis}`);
    assertClose(await E.logSoftmax(X.t, axis).data(), refSoftmax(X.x, shape, a, true), 1e-6, 2e-5, `${family}: logSoftmax ${shape} axis ${axis}`);
    const Y = randTensor(shape, 4, -2, 2);
    assertClose(await E.softmax(Y.t, axis).data(), refSoftmax(Y.x, shape, a, false), 1e-5, 1e-7, `softmax small ${shape} axis ${axis}`);
  }
  // Default axis is the last.
  const X = randTensor([3, 5], 6);
  assertClose(await E.softmax(X.t).data(), refSoftmax(X.x, [3, 5], 1, false), 1e-5, 1e-7);
  // Very negative entries (masking) get zero probability.
  const m = E.tensor([0, -1e30, 1, -1e30], [1, 4]);
  assertClose(await E.softmax(m).data(), refSoftmax(Float64Array.from([0, -1e30, 1, -1e30]), [1, 4], 1, false), 1e-6, 1e-7);
}));

s('reference backward agrees with finite differences', () => {
  const shape = [2, 5], x = randArray(10, 7, -2, 2), w = randArray(10, 8);
  for (const log of [false, true]) {
    const [fd] = finiteDiff(([a]) => dot(refSoftmax(a, shape, 1, log), w), [x]);
    assertClose(refGrad(refSoftmax(x, shape, 1, log), w, shape, 1, log), fd, 1e-6, 1e-8, `reference grad log=${log}`);
  }
});

s('backward against the analytic float64 backward (both kernel families)', async () => underEachFamily(async (family) => {
  for (const [shape, axis] of CASES) {
    const a = axis < 0 ? axis + shape.length : axis;
    for (const log of [false, true]) {
      const X = randTensor(shape, 9, -3, 3);
      X.t.requireGrad();
      const G = randTensor(shape, 10);
      const y = log ? E.logSoftmax(X.t, axis) : E.softmax(X.t, axis);
      E.backward(y, { grad: G.t });
      const ref = refGrad(refSoftmax(X.x, shape, a, log), G.x, shape, a, log);
      assertClose(await X.t.grad!.data(), ref, 1e-4, 1e-6, `${family}: ${log ? 'logSoftmax' : 'softmax'} grad ${shape} axis ${axis}`);
    }
  }
  // Composed with a loss: d/dx Σ log_softmax(x)[target] = onehot − softmax.
  const X = randTensor([3, 80], 11, -3, 3);
  X.t.requireGrad();
  const onehot = new Float64Array(240); onehot[5] = 1; onehot[80 + 79] = 1; onehot[160] = 1;
  E.backward(E.sum(E.mul(E.logSoftmax(X.t), E.tensor(onehot, [3, 80]))));
  const sm = refSoftmax(X.x, [3, 80], 1, false);
  assertClose(await X.t.grad!.data(), onehot.map((o, i) => o - sm[i]), 1e-5, 1e-6, `${family}: cross-entropy gradient`);
}));

s('f16 storage: f32 arithmetic, rounded on store', async () => {
  if (!dev.hasF16) return;
  for (const [shape, axis] of [[[4, 70], 1], [[3, 9, 2], 1]] as [number[], number][]) {
    const X = randTensor(shape, 12, -4, 4, 'f16');
    const xr = X.x.map(E.roundToF16);
    const y = E.softmax(X.t, axis);
    assert.is(y.dtype, 'f16');
    assertClose(await y.data(), refSoftmax(xr, shape, axis, false), 1e-3, 1e-5, `f16 softmax ${shape}`);
    assertClose(await E.logSoftmax(X.t, axis).data(), refSoftmax(xr, shape, axis, true), 1e-3, 4e-3, `f16 logSoftmax ${shape}`);
    X.t.requireGrad();
    const G = randTensor(shape, 13, -1, 1, 'f16');
    E.backward(E.softmax(X.t, axis), { grad: G.t });
    const yr = refSoftmax(xr, shape, axis, false).map(E.roundToF16);
    assertClose(await X.t.grad!.data(), refGrad(yr, G.x.map(E.roundToF16), shape, axis, false), 1e-2, 1e-3, `f16 softmax grad ${shape}`);
  }
});

s('a row gives bit-identical results alone and inside a batch', async () => {
  for (const [L, axisLast] of [[70, true], [10, true], [300, true], [20, false]] as [number, boolean][]) {
    const X = randTensor(axisLast ? [9, L] : [L, 9], 14, -5, 5);
    const one = axisLast
      ? E.tensor(X.x.slice(4 * L, 5 * L), [1, L])
      : E.tensor(Array.from({ length: L }, (_, j) => X.x[j * 9 + 4]), [L, 1]);
    const axis = axisLast ? 1 : 0;
    for (const fn of [E.softmax, E.logSoftmax]) {
      const all = await fn(X.t, axis).data();
      const alone = await fn(one, axis).data();
      const row = axisLast ? all.slice(4 * L, 5 * L) : Array.from({ length: L }, (_, j) => all[j * 9 + 4]);
      assert.equal(Array.from(alone), Array.from(row), `L=${L} ${fn.name}`);
    }
  }
});

s('binding limit: rows are chunked (split on leading rows or within one), results unchanged', async () => {
  const cases: [number[], number, number][] = [[[40, 300], 1, 4096], [[6, 20, 30], 1, 4096], [[2, 20, 100], 1, 8192]];
  for (const [shape, axis, limit] of cases) {
    const X = randTensor(shape, 15, -3, 3);
    const G = randTensor(shape, 16);
    const run = async () => {
      const x = E.tensor(X.x, shape).requireGrad();
      const y = E.softmax(x, axis);
      E.backward(y, { grad: G.t });
      return [Array.from(await y.data()), Array.from(await x.grad!.data())];
    };
    const whole = await run();
    const saved = dev.maxBindingBytes;
    dev.maxBindingBytes = limit;
    let chunked: number[][];
    const before = dev.dispatchCount;
    try { chunked = await run(); } finally { dev.maxBindingBytes = saved; }
    assert.ok(dev.dispatchCount - before > 4, 'chunked dispatches ran');
    assert.equal(chunked[0], whole[0], `chunked forward ${shape}`);
    assert.equal(chunked[1], whole[1], `chunked backward ${shape}`);
    assertClose(whole[0], refSoftmax(X.x, shape, axis, false), 1e-5, 1e-7);
  }
});

s('one pipeline per variant serves every shape', async () => {
  await E.softmax(randTensor([3, 100], 1).t).data();
  await E.softmax(randTensor([3, 10], 1).t).data();
  const n = dev.pipelineCount;
  await E.softmax(randTensor([5, 2, 171], 1).t, 2).data();
  await E.softmax(randTensor([5, 13, 2], 1).t, 1).data();
  assert.is(dev.pipelineCount, n);
});

s('errors name the op and shapes', async () => {
  await assertThrows(() => E.softmax(E.tensor([1, 2], [2], 'i32')), /softmax/, /\[2\] i32/);
  await assertThrows(() => E.logSoftmax(E.tensor([1, 2, 3, 4], [2, 2]), 2), /logSoftmax/, /axis 2/, /rank 2/);
  await assertThrows(() => E.softmax(E.tensor([1], [])), /softmax/, /\[\] f32/);
});

s.run();
