// Elementwise ops: forward against float64 references, backward against the references'
// analytic derivatives (themselves checked once by finite differences), f16, broadcasting.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { assertClose, assertThrows, broadcastIndex, dot, finiteDiff, randArray, randTensor, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('elementwise');

const erf = (x: number) => {
  // float64 erf by series / continued fraction (accurate to ~1e-15 for our ranges)
  const t = Math.abs(x);
  if (t < 3) {
    let sum = t, term = t;
    for (let n = 1; n < 200; n++) { term *= -t * t / n; sum += term / (2 * n + 1); }
    return Math.sign(x) * 2 / Math.sqrt(Math.PI) * sum;
  }
  // erfc asymptotic via continued fraction (Lentz)
  let f = t, C = t, D = 0;
  for (let n = 1; n < 100; n++) {
    const a = n / 2;
    D = 1 / (t + a * D); C = t + a / C; f *= C * D;
  }
  return Math.sign(x) * (1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / f);
};
const sig = (x: number) => 1 / (1 + Math.exp(-x));
const gt = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));

interface U { name: string; run: (t: E.Tensor) => E.Tensor; f: (x: number) => number; df: (x: number) => number; lo?: number; hi?: number; rtol?: number }
const UNARY: U[] = [
  { name: 'neg', run: E.neg, f: (x) => -x, df: () => -1 },
  { name: 'exp', run: E.exp, f: Math.exp, df: Math.exp },
  { name: 'log', run: E.log, f: Math.log, df: (x) => 1 / x, lo: 0.1, hi: 3 },
  { name: 'sqrt', run: E.sqrt, f: Math.sqrt, df: (x) => 0.5 / Math.sqrt(x), lo: 0.1, hi: 3 },
  { name: 'rsqrt', run: E.rsqrt, f: (x) => 1 / Math.sqrt(x), df: (x) => -0.5 * x ** -1.5, lo: 0.1, hi: 3 },
  { name: 'abs', run: E.abs, f: Math.abs, df: Math.sign },
  { name: 'sin', run: E.sin, f: Math.sin, df: Math.cos },
  { name: 'cos', run: E.cos, f: Math.cos, df: (x) => -Math.sin(x) },
  { name: 'relu', run: E.relu, f: (x) => Math.max(x, 0), df: (x) => (x > 0 ? 1 : 0) },
  { name: 'silu', run: E.silu, f: (x) => x * sig(x), df: (x) => sig(x) * (1 + x * (1 - sig(x))), lo: -6, hi: 6 },
  { name: 'gelu', run: (t) => E.gelu(t), f: (x) => 0.5 * x * (1 + erf(x / Math.SQRT2)), df: (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + x * Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI), lo: -5, hi: 5, rtol: 2e-5 },
  { name: 'gelu_tanh', run: (t) => E.gelu(t, 'tanh'), f: gt, df: (x) => { const u = Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3); const th = Math.tanh(u); return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * Math.sqrt(2 / Math.PI) * (1 + 3 * 0.044715 * x * x); }, lo: -5, hi: 5 },
  { name: 'quick_gelu', run: E.quickGelu, f: (x) => x * sig(1.702 * x), df: (x) => sig(1.702 * x) + 1.702 * x * sig(1.702 * x) * (1 - sig(1.702 * x)), lo: -5, hi: 5 },
  { name: 'sigmoid', run: E.sigmoid, f: sig, df: (x) => sig(x) * (1 - sig(x)), lo: -20, hi: 20 },
  { name: 'tanh', run: E.tanh, f: Math.tanh, df: (x) => 1 - Math.tanh(x) ** 2, lo: -20, hi: 20 },
  { name: 'square', run: E.square, f: (x) => x * x, df: (x) => 2 * x },
  { name: 'clamp', run: (t) => E.clamp(t, -0.3, 0.5), f: (x) => Math.min(Math.max(x, -0.3), 0.5), df: (x) => (x >= -0.3 && x <= 0.5 ? 1 : 0) },
  { name: 'pow 3', run: (t) => E.pow(t, 3), f: (x) => x ** 3, df: (x) => 3 * x * x },
  { name: 'pow 0.5', run: (t) => E.pow(t, 0.5), f: Math.sqrt, df: (x) => 0.5 / Math.sqrt(x), lo: 0.1, hi: 2 },
  { name: 'add scalar', run: (t) => E.add(t, 2.5), f: (x) => x + 2.5, df: () => 1 },
  { name: 'rsub scalar', run: (t) => E.sub(2.5, t), f: (x) => 2.5 - x, df: () => -1 },
  { name: 'rdiv scalar', run: (t) => E.div(2, t), f: (x) => 2 / x, df: (x) => -2 / (x * x), lo: 0.5, hi: 2 },
];

s('reference derivatives agree with float64 finite differences', () => {
  const xs = randArray(20, 7, -2, 2);
  for (const u of UNARY) {
    const lo = u.lo ?? -2, hi = u.hi ?? 2;
    const x = xs.map((v) => lo + ((v + 2) / 4) * (hi - lo)).filter((v) => Math.abs(v) > 1e-3 && Math.abs(v - 0.5) > 1e-3 && Math.abs(v + 0.3) > 1e-3);
    const [fd] = finiteDiff(([a]) => a.reduce((acc, v) => acc + u.f(v), 0), [Float64Array.from(x)]);
    assertClose(fd, x.map(u.df), 1e-5, 1e-6, `${u.name}'`);
  }
});

for (const u of UNARY) {
  s(`${u.name}: forward and backward on [3,1,67]`, async () => {
    const shape = [3, 1, 67];
    const { x, t } = randTensor(shape, 11, u.lo ?? -2, u.hi ?? 2);
    const w = randTensor(shape, 12);
    t.requireGrad();
    const y = u.run(t);
    assertClose(await y.data(), x.map(u.f), u.rtol ?? 1e-5, 1e-6, `${u.name}(x)`);
    E.backward(y, { grad: w.t });
    assertClose(await t.grad!.data(), x.map((v, i) => u.df(v) * w.x[i]), 1e-4, 1e-6, `d${u.name}`);
    for (const z of [t, y, w.t, t.grad!]) z.dispose();
  });
}

interface B { name: string; run: (a: E.Tensor, b: E.Tensor) => E.Tensor; f: (a: number, b: number) => number; da: (a: number, b: number) => number; db: (a: number, b: number) => number; lo?: number }
const BIN: B[] = [
  { name: 'add', run: E.add, f: (a, b) => a + b, da: () => 1, db: () => 1 },
  { name: 'sub', run: E.sub, f: (a, b) => a - b, da: () => 1, db: () => -1 },
  { name: 'mul', run: E.mul, f: (a, b) => a * b, da: (_, b) => b, db: (a) => a },
  { name: 'div', run: E.div, f: (a, b) => a / b, da: (_, b) => 1 / b, db: (a, b) => -a / (b * b), lo: 0.5 },
  { name: 'pow', run: E.pow, f: (a, b) => a ** b, da: (a, b) => b * a ** (b - 1), db: (a, b) => a ** b * Math.log(a), lo: 0.5 },
  { name: 'maximum', run: E.maximum, f: Math.max, da: (a, b) => (a >= b ? 1 : 0), db: (a, b) => (a >= b ? 0 : 1) },
  { name: 'minimum', run: E.minimum, f: Math.min, da: (a, b) => (a <= b ? 1 : 0), db: (a, b) => (a <= b ? 0 : 1) },
];

const BSHAPES: [number[], number[]][] = [[[5, 1, 3], [4, 1]], [[1], [2, 3, 1]], [[7, 300], [7, 300]]];

s('binary reference derivatives agree with finite differences', () => {
  for (const b of BIN) {
    const xa = randArray(6, 1, b.lo ?? -2, 2), xb = randArray(6, 2, b.lo ?? -2, 2);
    const [ga, gb] = finiteDiff(([p, q]) => p.reduce((acc, v, i) => acc + b.f(v, q[i]), 0), [xa, xb]);
    assertClose(ga, xa.map((v, i) => b.da(v, xb[i])), 1e-5, 1e-6, `d${b.name}/da`);
    assertClose(gb, xa.map((v, i) => b.db(v, xb[i])), 1e-5, 1e-6, `d${b.name}/db`);
  }
});

for (const b of BIN) {
  s(`${b.name}: broadcasting forward and backward`, async () => {
    for (const [sa, sb] of BSHAPES) {
      const A = randTensor(sa, 3, b.lo ?? -2, 2), Bt = randTensor(sb, 4, b.lo ?? -2, 2);
      A.t.requireGrad(); Bt.t.requireGrad();
      const y = b.run(A.t, Bt.t);
      const out = E.broadcastShapes('test', sa, sb);
      const n = out.reduce((p, q) => p * q, 1);
      const ia = broadcastIndex(sa, out), ib = broadcastIndex(sb, out);
      assert.equal([...y.shape], out);
      const ref = new Float64Array(n);
      for (let i = 0; i < n; i++) ref[i] = b.f(A.x[ia(i)], Bt.x[ib(i)]);
      assertClose(await y.data(), ref, 1e-5, 1e-6, `${b.name} ${sa}×${sb}`);
      const w = randTensor(out, 5);
      E.backward(y, { grad: w.t });
      const ga = new Float64Array(A.x.length), gb = new Float64Array(Bt.x.length);
      for (let i = 0; i < n; i++) {
        ga[ia(i)] += b.da(A.x[ia(i)], Bt.x[ib(i)]) * w.x[i];
        gb[ib(i)] += b.db(A.x[ia(i)], Bt.x[ib(i)]) * w.x[i];
      }
      assertClose(await A.t.grad!.data(), ga, 1e-4, 1e-5, `d${b.name}/da ${sa}×${sb}`);
      assertClose(await Bt.t.grad!.data(), gb, 1e-4, 1e-5, `d${b.name}/db ${sa}×${sb}`);
      for (const z of [A.t, Bt.t, y, w.t, A.t.grad!, Bt.t.grad!]) z.dispose();
    }
  });
}

s('comparisons and where', async () => {
  const a = E.tensor([1, 2, 3, 4], [4]), b = E.tensor([2, 2, 2, 2], [4]);
  assert.equal([...await E.lt(a, b).data()], [1, 0, 0, 0]);
  assert.equal([...await E.le(a, b).data()], [1, 1, 0, 0]);
  assert.equal([...await E.eq(a, b).data()], [0, 1, 0, 0]);
  assert.equal([...await E.ne(a, b).data()], [1, 0, 1, 1]);
  assert.equal([...await E.gt(a, b).data()], [0, 0, 1, 1]);
  assert.equal([...await E.ge(a, b).data()], [0, 1, 1, 1]);
  const A = randTensor([2, 3], 1), B = randTensor([3], 2), C = E.tensor([1, 0, 1, 0, 0, 1], [2, 3]);
  A.t.requireGrad(); B.t.requireGrad();
  const y = E.where(C, A.t, B.t);
  const c = [1, 0, 1, 0, 0, 1];
  assertClose(await y.data(), c.map((v, i) => (v ? A.x[i] : B.x[i % 3])));
  E.backward(E.sum(y));
  assertClose(await A.t.grad!.data(), c);
  assertClose(await B.t.grad!.data(), [1, 2, 0]);
  const ci = E.tensor([0, 5, -1], [3], 'i32');
  assertClose(await E.where(ci, B.t, E.neg(B.t)).data(), [-B.x[0], B.x[1], B.x[2]]);
});

s('f16 storage computes in f32 and rounds on store', async () => {
  const x = randArray(100, 9, -3, 3).map((v) => E.roundToF16(v));
  const t = E.tensor(x, [100], 'f16');
  const y = E.silu(t);
  assert.is(y.dtype, 'f16');
  assertClose(await y.data(), x.map((v) => E.roundToF16(v * sig(v))), 1e-3, 1e-3, 'silu f16');
  const s2 = E.add(t, t);
  assertClose(await s2.data(), x.map((v) => 2 * v), 0, 0, 'f16 add exact');
  const c = E.cast(t, 'f32');
  assertClose(await c.data(), x, 0, 0, 'cast f16->f32 exact');
});

s('integer tensors and casts', async () => {
  const a = E.tensor([1, -2, 3], [3], 'i32');
  assert.equal([...await E.add(a, a).data()], [2, -4, 6]);
  assert.equal([...await E.cast(E.tensor([1.7, -2.2], [2]), 'i32').data()], [1, -2]);
  assert.equal([...await E.arange(2, 9, 3, 'i32').data()], [2, 5, 8]);
});

s('bad input names the op and shapes', async () => {
  const a = E.zeros([2, 3]), b = E.zeros([4]);
  await assertThrows(() => E.add(a, b), /add/, /\[2,3\]/, /\[4\]/);
  await assertThrows(() => E.mul(a, E.zeros([2, 3], 'i32')), /mul/, /dtype/);
  await assertThrows(() => E.exp(E.zeros([2], 'i32')), /exp/, /float/);
  const d = E.zeros([2]);
  d.dispose();
  await assertThrows(() => E.exp(d), /exp/, /dispose/);
});

s('chunked paths equal one dispatch under a lowered binding limit', async () => {
  const A = randTensor([5, 3, 700], 21), B = randTensor([3, 1], 22);
  const whole = await E.mul(A.t, B.t).data();
  const perm = await E.permute(A.t, [2, 0, 1]).data();
  const saved = dev.maxBindingBytes;
  dev.maxBindingBytes = 2048;
  try {
    const before = dev.dispatchCount;
    const chunked = await E.mul(A.t, B.t).data();
    assert.ok(dev.dispatchCount - before > 1, 'expected several dispatches');
    assert.equal([...chunked], [...whole]);
    assert.equal([...await E.permute(A.t, [2, 0, 1]).data()], [...perm]);
  } finally {
    dev.maxBindingBytes = saved;
  }
});

s('batch independence: one row alone equals the same row in a batch, bit for bit', async () => {
  const A = randTensor([4, 33], 31);
  const full = await E.gelu(E.mul(A.t, E.exp(A.t))).data();
  const row = E.slice(A.t, [2], [3]);
  const one = await E.gelu(E.mul(row, E.exp(row))).data();
  assert.equal([...one], [...full.slice(66, 99)]);
});

s('shapes do not create new pipelines', async () => {
  const a = randTensor([3, 5], 1).t, b = randTensor([3, 5], 2).t;
  await E.sub(a, b).data();
  const n = dev.pipelineCount;
  await E.sub(randTensor([7, 2], 3).t, randTensor([7, 2], 4).t).data();
  assert.is(dev.pipelineCount, n);
});

s.run();
