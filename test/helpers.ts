// Shared test fixtures: one software-Vulkan device for the whole run, seeded random data,
// float64 reference helpers, and comparisons with readable failure messages.

import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Device } from '../engine/device.js';
import { mulberry32 } from '../rewards/probe-images.js';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice, Tensor, tensor } from '../engine/tensor.js';
import { DType } from '../engine/dtype.js';
import { contiguousStrides, sizeOf } from '../engine/shape.js';

let devicePromise: Promise<Device> | null = null;

/** The shared test device (the default device too). */
export function testDevice(): Promise<Device> {
  devicePromise ??= createNodeDevice().then((d) => { setDefaultDevice(d); return d; });
  return devicePromise;
}

/** Deterministic PRNG (mulberry32) in [0, 1) so failures reproduce. */
export function rng(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}

/** n values uniform in [lo, hi), rounded to f32. */
export function randArray(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  const r = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.fround(lo + (hi - lo) * r());
  return out;
}

export interface Pair {
  /** float64 host values */
  x: Float64Array;
  /** the same values on the GPU */
  t: Tensor;
}

export function randTensor(shape: number[], seed: number, lo = -1, hi = 1, dtype: DType = 'f32'): Pair {
  const x = randArray(sizeOf(shape), seed, lo, hi);
  return { x, t: tensor(x, shape, dtype) };
}

/** Asserts |actual - expected| <= atol + rtol·|expected| elementwise; reports the worst element. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol = 1e-5, atol = 1e-6, what = 'values'): void {
  assert.is(actual.length, expected.length, `${what}: length ${actual.length} vs expected ${expected.length}`);
  let worst = -1, worstExcess = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (e === a) continue;
    const excess = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) { worst = i; worstExcess = excess; }
  }
  if (worst >= 0) {
    assert.unreachable(`${what}: element ${worst} is ${actual[worst]}, expected ${expected[worst]} (rtol ${rtol}, atol ${atol})`);
  }
}

export async function assertTensorClose(t: Tensor, expected: ArrayLike<number>, rtol = 1e-5, atol = 1e-6, what = t.describe()): Promise<void> {
  assertClose(await t.data(), expected, rtol, atol, what);
}

/** Asserts fn throws an Error whose message matches every pattern. */
export async function assertThrows(fn: () => unknown, ...patterns: RegExp[]): Promise<void> {
  let err: unknown = null;
  try { await fn(); } catch (e) { err = e; }
  assert.ok(err instanceof Error, 'expected an Error to be thrown');
  for (const p of patterns) assert.match((err as Error).message, p);
}

// ---------------------------------------------------------------- float64 references

/** Central finite differences of a scalar function of several float64 arrays. */
export function finiteDiff(f: (xs: Float64Array[]) => number, xs: Float64Array[], h = 1e-6): Float64Array[] {
  return xs.map((x, k) => {
    const g = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) {
      const keep = x[i];
      x[i] = keep + h; const up = f(xs);
      x[i] = keep - h; const down = f(xs);
      x[i] = keep;
      g[i] = (up - down) / (2 * h);
    }
    return g;
    void k;
  });
}

/** Σ y·w: turns a vector output into the scalar whose gradient is the vector-Jacobian product with w. */
export function dot(y: ArrayLike<number>, w: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < y.length; i++) s += y[i] * w[i];
  return s;
}

/** Reads a float64 array at a multi-index under NumPy broadcasting of `shape` into `outShape`. */
export function broadcastIndex(shape: readonly number[], outShape: readonly number[]): (flat: number) => number {
  const strides = contiguousStrides(shape);
  const outStrides = contiguousStrides(outShape);
  const lead = outShape.length - shape.length;
  return (flat: number) => {
    let off = 0;
    for (let d = 0; d < outShape.length; d++) {
      const q = Math.floor(flat / outStrides[d]) % outShape[d];
      const j = d - lead;
      if (j >= 0 && shape[j] !== 1) off += q * strides[j];
    }
    return off;
  };
}

/** The repository root (the folder above the compiled test file that holds package.json). */
export function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(d, 'package.json')) && dirname(d) !== d) d = dirname(d);
  return d;
}

/** The shared reference folder beside the checkout (../shared), present for developers and CI. */
export const SHARED_DIR = resolve(repoRoot(), '..', 'shared');

/** Runs fn with dev.maxBindingBytes lowered to `limit` (unchanged when undefined), restoring it after. */
export async function withBindingLimit<T>(dev: Device, limit: number | undefined, fn: () => Promise<T>): Promise<T> {
  const saved = dev.maxBindingBytes;
  if (limit) dev.maxBindingBytes = limit;
  try { return await fn(); } finally { dev.maxBindingBytes = saved; }
}
