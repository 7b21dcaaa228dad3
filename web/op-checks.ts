// The op checks the browser test runs twice: in the page on the browser's GPUDevice and in Node on
// Dawn's, with the same deterministic inputs; test/browser.test.ts compares the two. One module for
// both sides, so the two computations cannot drift apart.

import { Device } from '../engine/device.js';
import { Tensor, tensor } from '../engine/tensor.js';
import { backward } from '../engine/autograd.js';
// Through the ops index: it also registers the ops that backward() needs.
import { attention, conv2d, groupNorm, matmul, mul, sum } from '../engine/ops/index.js';

/** Deterministic values in [-1, 1) from a 32-bit LCG (no Math.random: both sides must agree). */
export function lcgValues(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Results by name: each op's output and the gradients of sum(output * r) for a fixed r. */
export type OpCheckResults = Record<string, number[]>;

async function check(dev: Device, name: string, shapes: number[][], f: (xs: Tensor[]) => Tensor, out: OpCheckResults): Promise<void> {
  const xs = shapes.map((s, i) => tensor(lcgValues(size(s), 17 + 31 * i + name.length), s, 'f32', dev).requireGrad());
  const y = f(xs);
  const r = tensor(lcgValues(y.size, 99), y.shape, 'f32', dev);
  backward(sum(mul(y, r)));
  out[`${name} forward`] = Array.from(await y.data());
  for (let i = 0; i < xs.length; i++) out[`${name} grad ${i}`] = Array.from(await xs[i].grad!.data());
}

export async function runOpChecks(dev: Device, timings: Record<string, number> = {}): Promise<OpCheckResults> {
  const out: OpCheckResults = {};
  const timed = async (name: string, f: () => Promise<void>) => { const t = performance.now(); await f(); timings[name] = Math.round(performance.now() - t); };
  await timed('matmul', () => check(dev, 'matmul', [[2, 33, 20], [2, 20, 17]], ([a, b]) => matmul(a, b), out));
  await timed('conv2d 3x3 stride 1', () => check(dev, 'conv2d 3x3 stride 1', [[2, 4, 9, 7], [6, 4, 3, 3], [6]], ([x, w, b]) => conv2d(x, w, b, { padding: 1 }), out));
  await timed('conv2d 3x3 stride 2', () => check(dev, 'conv2d 3x3 stride 2', [[2, 4, 9, 8], [5, 4, 3, 3], [5]], ([x, w, b]) => conv2d(x, w, b, { padding: 1, stride: 2 }), out));
  await timed('conv2d 1x1', () => check(dev, 'conv2d 1x1', [[1, 6, 5, 5], [3, 6, 1, 1]], ([x, w]) => conv2d(x, w), out));
  await timed('attention', () => check(dev, 'attention', [[2, 12, 16], [2, 9, 16], [2, 9, 16]], ([q, k, v]) => attention(q, k, v), out));
  await timed('groupNorm', () => check(dev, 'groupNorm', [[2, 8, 5, 6], [8], [8]], ([x, w, b]) => groupNorm(x, 4, w, b), out));
  await timed('groupNorm silu', () => check(dev, 'groupNorm silu', [[2, 8, 5, 6], [8], [8]], ([x, w, b]) => groupNorm(x, 2, w, b, 1e-5, 'silu'), out));
  return out;
}
