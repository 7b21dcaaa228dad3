// 1×1 convolutions (stride 1, no padding, one group) on software adapters, forward and input
// gradient, as batched products on the matmul kernels (engine/ops/matmul.ts), which read the
// pixels four at a time and share the weight rows by subgroup broadcast where the direct kernels
// (kernels/conv2d-rb.ts) gather them one by one: about 4× faster on lavapipe.
//
//   fwd: y[n] = W[Cout, Cin] · x[n][Cin, H·W]   (+ bias, added after the sum as the direct kernel does)
//   dx:  dx[n] = W[Cout, Cin]ᵀ · g[n][Cout, H·W]
//
// Each output is the same fma sum over channels in ascending order as in the direct kernels, so
// the bits are the same (test/kernel-family.test.ts compares against the GPU family). The weight
// gradient stays on the direct kernel: as one product its k would run over (sample, pixel), which
// the batched matmul cannot express without a copy. The choice depends on the convolution's kind,
// dtype and per-sample size, never on the batch.

import type { Device } from '../device.js';
import { bytesOf } from '../dtype.js';
import { kernelFamily } from '../kernel-family.js';
import { Tensor, viewOf } from '../tensor.js';
import { matmulInto } from './matmul.js';
import { storeConvOutput } from './conv2d-im2col.js';
import type { Conv2dGeometry } from './conv2d.js';

/** Turns the matmul route off (`enabled: false`) so tests can compare it with the direct kernels. */
export const pointwiseOverride: { enabled?: boolean } = {};

/** Whether this pass of a convolution runs as a product here (see the file comment). */
export function pointwiseApplies(mode: 'fwd' | 'dx' | 'dw', geo: Conv2dGeometry, dev: Device, dtype: Tensor['dtype'], hasBias: boolean): boolean {
  if (mode === 'dw' || pointwiseOverride.enabled === false || kernelFamily(dev) !== 'software') return false;
  const { KH, KW, SH, SW, G, PT, PB, PL, PR, C, CO, H, W } = geo;
  if (KH !== 1 || KW !== 1 || SH !== 1 || SW !== 1 || G !== 1 || PT || PB || PL || PR || C === 0 || CO === 0) return false;
  // Below 64 pixels a sample fills less than one 64-column tile of the product, while the direct
  // kernel runs the whole batch along its columns (measured in the UNet bench: 2×2 maps took 5 ms
  // per 128→128 input gradient as products). Both give the same bits, so a choice by size keeps
  // batch independence.
  if (H * W < 64) return false;
  // f16 with a bias would round twice (the product, then the sum); the direct kernel rounds once.
  if (mode === 'fwd' && hasBias && dtype !== 'f32') return false;
  // The product binds one sample of x (or g) whole; larger samples take the banded direct path,
  // and a weight too large for one binding the direct path's Error.
  const K = mode === 'fwd' ? C : CO;
  const fits = (elems: number) => elems * bytesOf(dtype) + dev.limits.minStorageBufferOffsetAlignment + 4 <= dev.maxBindingBytes;
  return fits(K * H * W) && fits(C * CO);
}

/** Records the pass: fwd inputs [x, w, bias | null], dx inputs [g, w]; out is the conv's output (or dx). */
export function runPointwise(mode: 'fwd' | 'dx', geo: Conv2dGeometry, inputs: (Tensor | null)[], out: Tensor, label: string): void {
  const { N, C, CO, H, W } = geo;
  const HW = H * W;
  const [src, w] = inputs as [Tensor, Tensor];
  const bias = mode === 'fwd' ? inputs[2] : null;
  const w2 = viewOf(w, [CO, C]);
  const src3 = viewOf(src, [N, mode === 'fwd' ? C : CO, HW]);
  const views = [w2, src3];
  try {
    if (!bias) {
      matmulInto(w2, src3, out, { transA: mode === 'dx' }, label);
      return;
    }
    const prod = new Tensor(out.device, [N, CO, HW], out.dtype);
    views.push(prod);
    matmulInto(w2, src3, prod, {}, label);
    storeConvOutput(prod, [CO * HW, HW, 1], bias, out, N, CO, HW, 0, `${label} (bias)`);
  } finally {
    // Recorded work runs in order: the temporaries' buffers are reused only after it.
    for (const t of views) t.dispose();
  }
}
