// Autograd mechanics: accumulation into .grad, shared inputs, noGrad, detach-like behaviour,
// graph release by backward() and tidy(), and scope lifetimes.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { record } from '../engine/autograd.js';
import { assertClose, assertThrows, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('autograd');

s('gradients accumulate across backward calls and through reused inputs', async () => {
  const x = E.tensor([1, 2, 3]).requireGrad();
  const f = () => E.sum(E.mul(x, x)); // d/dx = 2x (x used twice)
  E.backward(f());
  assertClose(await x.grad!.data(), [2, 4, 6]);
  E.backward(f());
  assertClose(await x.grad!.data(), [4, 8, 12]);
  const y = E.add(x, x); // one tensor feeding both inputs of an op
  E.backward(E.sum(y));
  assertClose(await x.grad!.data(), [6, 10, 14]);
});

s('chain through many ops matches the analytic gradient', async () => {
  const v = [0.3, -0.7, 1.1, 0.05];
  const x = E.tensor(v, [2, 2]).requireGrad();
  // L = mean(tanh(x) * exp(x)) over a reshaped/permuted path
  const t = E.permute(E.reshape(E.mul(E.tanh(x), E.exp(x)), [4, 1]), [1, 0]);
  E.backward(E.mean(t));
  assertClose(await x.grad!.data(), v.map((a) => ((1 - Math.tanh(a) ** 2) * Math.exp(a) + Math.tanh(a) * Math.exp(a)) / 4), 1e-5);
});

s('noGrad records nothing; inputs without requiresGrad get no gradient', async () => {
  const x = E.tensor([1, 2]).requireGrad();
  const y = E.noGrad(() => E.mul(x, x));
  assert.is(y.requiresGrad, false);
  await assertThrows(() => E.backward(E.sum(y)), /backward/, /does not require a gradient/);
  const c = E.tensor([5, 6]);
  E.backward(E.sum(E.mul(x, c)));
  assert.is(c.grad, null);
  assertClose(await x.grad!.data(), [5, 6]);
});

s('backward needs a scalar or an explicit gradient of the same shape', async () => {
  const x = E.tensor([1, 2]).requireGrad();
  await assertThrows(() => E.backward(E.mul(x, 2)), /not a scalar/);
  await assertThrows(() => E.backward(E.mul(x, 2), { grad: E.zeros([3]) }), /\[3\]/, /\[2\]/);
});

s('backward() sums a gradient given in a broadcast shape down to its input, once; other shapes are an Error', async () => {
  // A rule that hands back its incoming gradient in the output's shape for every input, as the
  // elementwise, matmul and expand rules now do: the walk reduces it.
  const a = E.tensor([1, 2, 3], [1, 3]).requireGrad();
  const b = E.tensor([10, 20], [2, 1]).requireGrad();
  const out = E.add(a, b); // [2, 3]
  E.backward(E.sum(E.mul(out, E.tensor([1, 2, 3, 4, 5, 6], [2, 3]))));
  assert.equal(a.grad!.shape, [1, 3]);
  assertClose(await a.grad!.data(), [5, 7, 9]);
  assertClose(await b.grad!.data(), [6, 15]);
  const x = E.tensor([1, 2]).requireGrad();
  const live = dev.memory().liveBytes;
  E.tidy(() => {
    const y = record('test_op', [x], E.noGrad(() => E.mul(x, 1)), [], (g) => [E.expand(g, [3, 2])]);
    E.backward(E.sum(y));
  });
  assertClose(await x.grad!.data(), [3, 3], 0, 0, 'a [3, 2] gradient is summed to [2]');
  x.grad!.dispose(); x.grad = null;
  assert.is(dev.memory().liveBytes, live, 'the broadcast gradient the rule made is freed');
  const z = record('bad_op', [x], E.noGrad(() => E.mul(x, 1)), [], () => [E.zeros([3])]);
  await assertThrows(() => E.backward(E.sum(z)), /backward of bad_op/, /\[3\]/, /not .*broadcast/);
});

s('op tables are typed: an unknown op name is a compile error, and at run time a clear Error', async () => {
  const x = E.tensor([1, 2]);
  // @ts-expect-error 'addd' is not a BinaryOp (this line stops compiling if the table loses its key type)
  await assertThrows(() => E.binary('addd', x, x), /binary: unknown op addd/, /add, sub/);
  // @ts-expect-error 'expp' is not a UnaryOp
  await assertThrows(() => E.unary('expp', x), /unary: unknown op expp/);
});

s('the graph is released after backward unless retained', async () => {
  const x = E.tensor([1, 2]).requireGrad();
  const l = E.sum(E.exp(x));
  E.backward(l, { retainGraph: true });
  E.backward(l);
  assertClose(await x.grad!.data(), [2 * Math.E, 2 * Math.exp(2)], 1e-5);
  await assertThrows(() => E.backward(l), /released/);
});

s('tidy frees intermediates and unreachable graph memory, keeps what is returned', async () => {
  const x = E.tensor(new Array(1000).fill(0.5)).requireGrad();
  const base = dev.memory().liveBytes;
  const loss = E.tidy(() => E.sum(E.exp(E.mul(x, 3))));
  const held = dev.memory().liveBytes - base;
  assert.ok(held > 0, 'the returned loss and its saved tensors stay alive');
  E.backward(loss);
  loss.dispose();
  x.grad!.dispose();
  x.grad = null;
  assert.is(dev.memory().liveBytes, base, 'after backward and dispose, nothing is left');
  E.tidy(() => { E.sum(E.exp(E.mul(x, 3))); });
  assert.is(dev.memory().liveBytes, base, 'a graph nobody returned is released by tidy');
  await assertThrows(() => E.tidy(() => Promise.resolve(1)), /Promise/);
});

s('keep() lets a tensor outlive its scope', async () => {
  let kept: E.Tensor | null = null;
  E.tidy(() => { kept = E.keep(E.ones([3])); E.ones([3]); });
  assertClose(await kept!.data(), [1, 1, 1]);
});

s('f16 leaves get f32 gradients', async () => {
  const x = E.tensor([1, 2, 3], [3], 'f16').requireGrad();
  E.backward(E.sum(E.mul(x, x)));
  assert.is(x.grad!.dtype, 'f32');
  assertClose(await x.grad!.data(), [2, 4, 6]);
});

s.run();
