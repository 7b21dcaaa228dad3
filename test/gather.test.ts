// indexSelect and embedding against float64 references, their deterministic backward, zero rows
// for out-of-range indices, host-side checks, and the chunked path for tables above the binding
// limit.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { assertClose, assertThrows, dot, finiteDiff, randArray, randTensor, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('gather');

/** float64 index_select: out[p, k, q] = x[p, idx[k], q] (zero when idx[k] is out of range). */
function refSelect(x: Float64Array, shape: number[], axis: number, idx: number[]): Float64Array {
  const V = shape[axis];
  const pre = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const post = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const out = new Float64Array(pre * idx.length * post);
  for (let p = 0; p < pre; p++) for (let k = 0; k < idx.length; k++) for (let q = 0; q < post; q++) {
    const v = idx[k];
    out[(p * idx.length + k) * post + q] = v >= 0 && v < V ? x[(p * V + v) * post + q] : 0;
  }
  return out;
}

/** Its analytic backward: gx[p, v, q] = Σ_{k: idx[k] = v} g[p, k, q]. */
function refSelectGrad(g: Float64Array, shape: number[], axis: number, idx: number[]): Float64Array {
  const V = shape[axis];
  const pre = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const post = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const gx = new Float64Array(pre * V * post);
  for (let p = 0; p < pre; p++) for (let k = 0; k < idx.length; k++) for (let q = 0; q < post; q++) {
    const v = idx[k];
    if (v >= 0 && v < V) gx[(p * V + v) * post + q] += g[(p * idx.length + k) * post + q];
  }
  return gx;
}

const CASES: [number[], number, number[], 'i32' | 'u32'][] = [
  [[5, 7], 0, [3, 0, 3, 4], 'i32'],
  [[2, 9, 3], 1, [8, 1, 1, 0, 8, 8, 2, 5, 1, 0, 7, 3, 3], 'u32'],
  [[4, 1, 6], -1, [5], 'i32'],
  [[1, 300], 1, Array.from({ length: 70 }, (_, i) => (i * 37) % 300), 'i32'],
  [[3, 2], 0, [2, 2, 2, 2, 2], 'u32'],
];

s('indexSelect forward against float64 (tensor and host indices, any axis, int tensors)', async () => {
  for (const [shape, axis, idx, it] of CASES) {
    const a = axis < 0 ? axis + shape.length : axis;
    const X = randTensor(shape, 1);
    const expectShape = shape.map((d, i) => (i === a ? idx.length : d));
    const y = E.indexSelect(X.t, axis, E.tensor(idx, [idx.length], it));
    assert.equal([...y.shape], expectShape);
    assertClose(await y.data(), refSelect(X.x, shape, a, idx), 0, 0, `indexSelect ${shape} axis ${axis}`);
    assertClose(await E.indexSelect(X.t, axis, idx).data(), refSelect(X.x, shape, a, idx), 0, 0, `host indices ${shape}`);
  }
  const I = E.tensor([10, -20, 30, 40, 50, 60], [3, 2], 'i32');
  const y = E.indexSelect(I, 0, [2, 0]);
  assert.is(y.dtype, 'i32');
  assert.equal(Array.from(await y.data()), [50, 60, 10, -20]);
  assert.equal([...E.indexSelect(I, 0, []).shape], [0, 2]);
});

s('out-of-range tensor indices give zero rows; host indices are checked', async () => {
  const X = randTensor([4, 3], 2);
  const y = E.indexSelect(X.t, 0, E.tensor([1, -1, 4, 3, 1000], [5], 'i32'));
  assertClose(await y.data(), refSelect(X.x, [4, 3], 0, [1, -1, 4, 3, 1000]), 0, 0, 'i32 out of range');
  const u = E.embedding(X.t, E.tensor([0xffffffff, 2], [2], 'u32'));
  assertClose(await u.data(), refSelect(X.x, [4, 3], 0, [-1, 2]), 0, 0, 'u32 out of range');
  // An empty table: every index is out of range.
  const empty = E.indexSelect(E.zeros([0, 3]), 0, E.tensor([0, 1], [2], 'i32'));
  assert.equal(Array.from(await empty.data()), [0, 0, 0, 0, 0, 0]);
  await assertThrows(() => E.indexSelect(X.t, 0, [0, 4]), /indexSelect/, /index 4 at position 1/, /\[0, 4\)/);
  await assertThrows(() => E.embedding(X.t, [1, -1]), /embedding/, /index -1/);
  await assertThrows(() => E.embedding(X.t, [1, 0.5]), /embedding/, /0\.5/);
});

s('embedding: ids of any shape -> [...ids, D]', async () => {
  const T = randTensor([11, 6], 3);
  const ids = [3, 10, 0, 3, 7, 7];
  const y = E.embedding(T.t, E.tensor(ids, [2, 3], 'i32'));
  assert.equal([...y.shape], [2, 3, 6]);
  assertClose(await y.data(), refSelect(T.x, [11, 6], 0, ids), 0, 0, 'embedding');
  const h = E.embedding(T.t, ids, [3, 1, 2]);
  assert.equal([...h.shape], [3, 1, 2, 6]);
  assertClose(await h.data(), refSelect(T.x, [11, 6], 0, ids), 0, 0, 'embedding host ids');
  assert.equal([...E.embedding(T.t, [4]).shape], [1, 6]);
});

s('reference backward agrees with finite differences', () => {
  const shape = [2, 4, 3], idx = [3, 0, 3, 3, 9], x = randArray(24, 4), w = randArray(2 * 5 * 3, 5);
  const [fd] = finiteDiff(([a]) => dot(refSelect(a, shape, 1, idx), w), [x]);
  assertClose(refSelectGrad(w, shape, 1, idx), fd, 1e-6, 1e-8);
});

s('backward to x / table against the analytic float64 backward; deterministic', async () => {
  for (const [shape, axis, idx, it] of CASES) {
    const a = axis < 0 ? axis + shape.length : axis;
    const X = randTensor(shape, 6);
    X.t.requireGrad();
    const outShape = shape.map((d, i) => (i === a ? idx.length : d));
    const G = randTensor(outShape, 7);
    E.backward(E.indexSelect(X.t, axis, E.tensor(idx, [idx.length], it)), { grad: G.t });
    assertClose(await X.t.grad!.data(), refSelectGrad(G.x, shape, a, idx), 1e-6, 1e-7, `grad ${shape} axis ${axis}`);
  }
  // Embedding with repeats and out-of-range ids (which get no gradient); twice, bit-identical.
  const ids = [2, 5, 2, -3, 2, 0, 5, 9, 2];
  const run = async () => {
    const T = E.tensor(randArray(8 * 5, 8), [8, 5]).requireGrad();
    const G = randTensor([3, 3, 5], 9);
    E.backward(E.embedding(T, E.tensor(ids, [3, 3], 'i32')), { grad: G.t });
    return [Array.from(await T.grad!.data()), G.x] as const;
  };
  const [g1, gx] = await run();
  const [g2] = await run();
  assert.equal(g1, g2, 'backward is deterministic');
  assertClose(g1, refSelectGrad(gx, [8, 5], 0, ids), 1e-6, 1e-7, 'embedding grad');
  // Gradient through a composition: Σ embedding² → 2·count·row.
  const T = randTensor([4, 3], 10);
  T.t.requireGrad();
  E.backward(E.sum(E.square(E.embedding(T.t, [1, 1, 3]))));
  assertClose(await T.t.grad!.data(), T.x.map((v, i) => { const r = Math.floor(i / 3); return r === 1 ? 4 * v : r === 3 ? 2 * v : 0; }), 1e-6, 1e-7);
});

s('f16 tables: exact copies forward, f32 accumulation backward', async () => {
  if (!dev.hasF16) return;
  const T = randTensor([9, 7], 11, -1, 1, 'f16');
  const ids = [8, 0, 8, 4];
  const y = E.embedding(T.t, ids);
  assert.is(y.dtype, 'f16');
  assertClose(await y.data(), refSelect(T.x.map(E.roundToF16), [9, 7], 0, ids), 0, 0, 'f16 embedding');
  T.t.requireGrad();
  const G = randTensor([4, 7], 12, -1, 1, 'f16');
  E.backward(E.embedding(T.t, ids), { grad: G.t });
  assertClose(await T.t.grad!.data(), refSelectGrad(G.x.map(E.roundToF16), [9, 7], 0, ids).map(E.roundToF16), 0, 0, 'f16 grad');
});

s('binding limit: table and output bound in windows; results unchanged', async () => {
  // [50, 24] f32 = 4800 bytes > 4096: the table is bound in row windows; 100 positions of
  // 96 bytes = 9600 bytes: the output is bound in position windows.
  const cases: [number[], number, number[]][] = [
    [[50, 24], 0, Array.from({ length: 100 }, (_, i) => (i * 31) % 53 - 1)],
    [[3, 40, 10], 1, [39, 0, 17, 39, 20, 1]],
    [[2, 60, 20], 1, [59, 0, 45, 47, 48, 59]],
  ];
  for (const [shape, axis, idx] of cases) {
    const X = randTensor(shape, 13);
    const outShape = shape.map((d, i) => (i === axis ? idx.length : d));
    const G = randTensor(outShape, 14);
    const run = async (withGrad: boolean) => {
      const x = E.tensor(X.x, shape).requireGrad(withGrad);
      const y = E.indexSelect(x, axis, E.tensor(idx, [idx.length], 'i32'));
      if (withGrad) E.backward(y, { grad: G.t });
      return [Array.from(await y.data()), withGrad ? Array.from(await x.grad!.data()) : []];
    };
    const whole = await run(true);
    assertClose(whole[0], refSelect(X.x, shape, axis, idx), 0, 0, `forward ${shape}`);
    assertClose(whole[1], refSelectGrad(G.x, shape, axis, idx), 1e-6, 1e-7, `backward ${shape}`);
    const saved = dev.maxBindingBytes;
    dev.maxBindingBytes = 4096;
    const before = dev.dispatchCount;
    let chunked: number[][];
    // The first table's gradient rows per leading index (100·24·4 bytes) exceed the limit: forward only.
    try { chunked = await run(shape[0] !== 50); } finally { dev.maxBindingBytes = saved; }
    assert.ok(dev.dispatchCount - before > 3, 'chunked dispatches ran');
    assert.equal(chunked[0], whole[0], `chunked forward ${shape}`);
    if (shape[0] !== 50) assert.equal(chunked[1], whole[1], `chunked backward ${shape}`);
  }
  // The backward of the first case states why it cannot run under that limit.
  const x = E.tensor(randArray(1200, 1), [50, 24]).requireGrad();
  const y = E.embedding(x, Array.from({ length: 100 }, (_, i) => i % 50));
  const saved = dev.maxBindingBytes;
  dev.maxBindingBytes = 4096;
  try {
    await assertThrows(() => E.backward(y, { grad: E.ones([100, 24]) }), /embedding backward/, /binding limit/);
  } finally { dev.maxBindingBytes = saved; }
});

s('errors name the op and shapes', async () => {
  const X = randTensor([4, 3], 1).t;
  await assertThrows(() => E.indexSelect(X, 0, E.tensor([1], [1], 'f32')), /indexSelect/, /\[1\] f32/, /i32 or u32/);
  await assertThrows(() => E.indexSelect(X, 2, [0]), /indexSelect/, /axis 2/);
  await assertThrows(() => E.indexSelect(X, 0, E.tensor([1, 2], [1, 2], 'i32')), /indexSelect/, /\[4,3\] f32/, /1-D/);
  await assertThrows(() => E.embedding(E.tensor([1, 2, 3], [3]), [0]), /embedding/, /\[3\] f32/, /2-D/);
  await assertThrows(() => E.embedding(X, [0, 1], [3]), /embedding/, /\[3\]/);
});

s.run();
