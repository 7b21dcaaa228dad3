// Memory discipline over a training loop: with tidy() per step, backward(), an AdamW step and
// zeroGrad(), live memory after step 10 equals live memory after step 200 to the byte, and the
// pool stops creating buffers after the first steps. Also: a disposed tensor's use names the op.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { AdamW, clipGradNorm } from '../engine/optim.js';
import { assertThrows, randArray, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('memory');

s('200-step logistic regression: loss falls, liveBytes flat from step 10 to 200, no new buffers', async () => {
  const N = 48, D = 5;
  const xs = randArray(N * D, 1, -2, 2);
  const wTrue = [1.5, -2, 0.5, 0, 1];
  const labels = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    let z = 0.3;
    for (let d = 0; d < D; d++) z += xs[i * D + d] * wTrue[d];
    labels[i] = z >= 0 ? 1 : -1;
  }
  const X = E.tensor(xs, [N, D]);
  const y = E.tensor(labels, [N]);
  const w = E.zeros([D]).requireGrad();
  const b = E.zeros([1]).requireGrad();
  const opt = new AdamW([w, b], { lr: 0.1, weightDecay: 0.01 });

  // loss = mean(log(1 + exp(-y·(X·w + b)))): the logistic loss, written with elementwise ops.
  const step = (): E.Tensor => E.tidy(() => {
    const z = E.add(E.sum(E.mul(X, w), 1), b);
    const loss = E.mean(E.log(E.add(E.exp(E.neg(E.mul(y, z))), 1)));
    E.backward(loss);
    clipGradNorm([w, b], 5).dispose();
    opt.step();
    opt.zeroGrad();
    return loss;
  });

  let first = NaN, last = NaN;
  let live10 = -1, created10 = -1, liveEarly = -1;
  for (let t = 1; t <= 200; t++) {
    const loss = step();
    if (t === 1) first = await loss.item();
    if (t === 200) last = await loss.item();
    loss.dispose();
    if (t === 3) liveEarly = dev.memory().liveBytes;
    if (t === 10) { live10 = dev.memory().liveBytes; created10 = dev.memory().created; }
  }
  const m = dev.memory();
  assert.ok(Math.abs(first - Math.log(2)) < 1e-5, `initial loss ${first} should be log 2`);
  assert.ok(last < 0.5 * first, `loss did not fall: ${first} -> ${last}`);
  assert.is(m.liveBytes, live10, 'liveBytes after step 200 equals liveBytes after step 10');
  assert.is(liveEarly, live10, 'liveBytes already flat after step 3');
  assert.is(m.created, created10, 'the pool created no buffer after step 10');

  opt.dispose();
  for (const t of [X, y, w, b]) t.dispose();
});

s('using a disposed tensor throws an Error naming the op', async () => {
  const t = E.tensor([1, 2, 3], [3]);
  const u = E.tensor([1, 2, 3], [3]);
  t.dispose();
  t.dispose(); // idempotent
  await assertThrows(() => E.exp(t), /^exp:/, /after dispose/);
  await assertThrows(() => E.add(u, t), /^add:/, /\[3\] f32/, /after dispose/);
  await assertThrows(() => E.sum(t), /^sum/, /after dispose/);
  await assertThrows(() => t.data(), /data/, /after dispose/);

  const p = E.tensor([1, 2, 3], [3]).requireGrad();
  const opt = new AdamW([p]);
  p.grad = E.tensor([1, 1, 1], [3]);
  p.dispose();
  await assertThrows(() => opt.step(), /AdamW\.step/, /after dispose/);
  p.grad.dispose();
  await assertThrows(() => clipGradNorm([p], 1), /clipGradNorm/, /after dispose/);
  opt.dispose();
  u.dispose();
});

s.run();
