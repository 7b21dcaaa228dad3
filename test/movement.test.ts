// Layout ops against float64 index arithmetic; their backward rules against the adjoint
// (scatter) of the same index maps, which is exact for linear ops.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { assertClose, assertThrows, randTensor, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('movement');

/** Checks y = op(x) against `map` (out index -> source index) and the backward against its adjoint. */
async function checkGather(op: (t: E.Tensor) => E.Tensor, inShape: number[], outShape: number[], map: (outIdx: number[]) => number | null) {
  const X = randTensor(inShape, 5);
  X.t.requireGrad();
  const y = op(X.t);
  assert.equal([...y.shape], outShape);
  const n = outShape.reduce((a, b) => a * b, 1);
  const ref = new Float64Array(n), idx = new Array<number>(outShape.length);
  const srcOf: (number | null)[] = [];
  for (let i = 0; i < n; i++) {
    let r = i;
    for (let d = outShape.length - 1; d >= 0; d--) { idx[d] = r % outShape[d]; r = Math.floor(r / outShape[d]); }
    const src = map(idx);
    srcOf.push(src);
    ref[i] = src === null ? 0 : X.x[src];
  }
  assertClose(await y.data(), ref, 0, 0, 'forward');
  const W = randTensor(outShape, 6);
  E.backward(y, { grad: W.t });
  const g = new Float64Array(X.x.length);
  srcOf.forEach((src, i) => { if (src !== null) g[src] += W.x[i]; });
  assertClose(await X.t.grad!.data(), g, 1e-6, 1e-7, 'backward');
}

s('reshape is a view with the same values', async () => {
  await checkGather((t) => E.reshape(t, [6, -1]), [2, 3, 5], [6, 5], ([i, j]) => i * 5 + j);
  await assertThrows(() => E.reshape(E.zeros([2, 3]), [4, 2]), /reshape/, /\[2,3\]/, /\[4,2\]/);
});

s('permute and transpose', async () => {
  await checkGather((t) => E.permute(t, [2, 0, 1]), [2, 3, 4], [4, 2, 3], ([k, i, j]) => i * 12 + j * 4 + k);
  await checkGather((t) => E.transpose(t), [1, 3, 5], [1, 5, 3], ([a, i, j]) => a * 15 + j * 5 + i);
  await assertThrows(() => E.permute(E.zeros([2, 3]), [0, 0]), /permute/);
});

s('slice with negative bounds and steps', async () => {
  await checkGather((t) => E.slice(t, [1, -3], [undefined, undefined], [2, 2]), [5, 9], [2, 2], ([i, j]) => (1 + 2 * i) * 9 + 6 + 2 * j);
  await checkGather((t) => E.slice(t, [0, 0, 2]), [1, 2, 5], [1, 2, 3], ([a, i, j]) => a * 10 + i * 5 + 2 + j);
});

s('expand broadcasts and its gradient sums back', async () => {
  await checkGather((t) => E.expand(t, [2, 3, 4]), [3, 1], [2, 3, 4], ([, i]) => i);
  await assertThrows(() => E.expand(E.zeros([3]), [4]), /expand/);
});

s('concat along inner and outer axes; stack', async () => {
  const A = randTensor([2, 3], 1), B = randTensor([2, 1], 2);
  A.t.requireGrad(); B.t.requireGrad();
  const y = E.concat([A.t, B.t], 1);
  const ref = [A.x[0], A.x[1], A.x[2], B.x[0], A.x[3], A.x[4], A.x[5], B.x[1]];
  assertClose(await y.data(), ref, 0, 0);
  E.backward(y, { grad: E.tensor([1, 2, 3, 4, 5, 6, 7, 8], [2, 4]) });
  assertClose(await A.t.grad!.data(), [1, 2, 3, 5, 6, 7]);
  assertClose(await B.t.grad!.data(), [4, 8]);
  const st = E.stack([E.tensor([1, 2]), E.tensor([3, 4])], 1);
  assert.equal([...st.shape], [2, 2]);
  assertClose(await st.data(), [1, 3, 2, 4]);
  await assertThrows(() => E.concat([E.zeros([2, 3]), E.zeros([3, 3])], 1), /concat/, /\[2,3\]/);
});

s('pad with a constant; gradient is the interior', async () => {
  await checkGather((t) => E.pad(t, [[0, 1], [2, 0]]), [2, 3], [3, 5], ([i, j]) => (i < 2 && j >= 2 ? i * 3 + (j - 2) : null));
  const p = E.pad(E.tensor([1], [1]), [[1, 1]], -7);
  assertClose(await p.data(), [-7, 1, -7]);
});

s('fill, zeros, ones, arange', async () => {
  assertClose(await E.full([2, 2], 3.5).data(), [3.5, 3.5, 3.5, 3.5]);
  assertClose(await E.arange(0, 1, 0.25).data(), [0, 0.25, 0.5, 0.75]);
  assert.equal([...await E.arange(5, 0, -2, 'i32').data()], [5, 3, 1]);
  assert.is(E.zeros([0, 3]).size, 0);
});

s('chunked copies under a lowered binding limit', async () => {
  const X = randTensor([4, 5, 130], 9);
  const expect = await E.permute(X.t, [1, 2, 0]).data();
  const sl = await E.slice(X.t, [1, 0, 3], [4, 5, 120]).data();
  const saved = dev.maxBindingBytes;
  dev.maxBindingBytes = 1024;
  try {
    assert.equal([...await E.permute(X.t, [1, 2, 0]).data()], [...expect]);
    assert.equal([...await E.slice(X.t, [1, 0, 3], [4, 5, 120]).data()], [...sl]);
    assert.equal([...await E.arange(0, 1000, 1, 'i32').data()], Array.from({ length: 1000 }, (_, i) => i));
  } finally {
    dev.maxBindingBytes = saved;
  }
});

s.run();
