// Finite checks on the GPU, for the places where a NaN or ±Inf must not pass unnoticed (sampled
// latents and images, weights before a checkpoint). A value is non-finite when all its exponent
// bits are set; the test reads the bits (bitcast), because WGSL lets an implementation assume
// finite float arithmetic, under which `x != x` or `x * 0.0` could be folded away.

import { noGrad } from './autograd.js';
import { isFloat } from './dtype.js';
import { add } from './ops/elementwise.js';
import { mapNew } from './ops/elementwise.js';
import { sum } from './ops/reduce.js';
import { tidy } from './scope.js';
import { Tensor } from './tensor.js';

/** 1 where x is NaN or ±Inf, else 0 (f32, x's shape; an integer tensor is all 0). */
export function nonFiniteMask(x: Tensor): Tensor {
  return noGrad(() => {
    if (!isFloat(x.dtype)) return mapNew('zeros_like', '0.0', [x], 'f32', [0, 0], 'f32');
    return mapNew('non_finite', 'select(0.0, 1.0, (bitcast<u32>(a) & 0x7f800000u) == 0x7f800000u)', [x], 'f32', [0, 0], 'f32');
  });
}

/** The number of non-finite elements of x (f32), over `axes` (default all: a scalar). */
export function countNonFinite(x: Tensor, axes?: readonly number[]): Tensor {
  return noGrad(() => tidy(() => sum(nonFiniteMask(x), axes ? [...axes] : undefined)));
}

/** Per tensor, the number of its non-finite elements (one readback when all are finite). */
export async function nonFiniteCounts(tensors: readonly Tensor[]): Promise<number[]> {
  if (!tensors.length) return [];
  const total = noGrad(() => tidy(() => tensors.map((t) => countNonFinite(t)).reduce((a, b) => add(a, b))));
  const n = (await total.data())[0];
  total.dispose();
  if (n === 0) return tensors.map(() => 0);
  const out: number[] = [];
  for (const t of tensors) {
    const c = countNonFinite(t);
    out.push((await c.data())[0]);
    c.dispose();
  }
  return out;
}
