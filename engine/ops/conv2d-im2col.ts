// conv2d forward and weight gradient (and a 1×1 input gradient) as one matmul over an im2col copy, on software adapters, for
// the convolutions the faster special cases leave (strided, dilated, padded beyond Winograd's
// reach, small 1×1 maps, f16 with a bias): the matmul kernels (kernels/matmul-rb.ts) read their
// operands four at a time and share rows by subgroup broadcast, where the direct kernels
// (kernels/conv2d-rb.ts) gather every input tap lane by lane.
//
//   fwd: cols[k, (s, oy, ox)] = x_padded[s, ci, oy·SH + ky·DH, ox·SW + kx·DW], k = (ci, ky, kx);
//        Y[co, (s, p)] = W[co, k] · cols, then out[s, co, p] = Y[co, (s, p)] (+ bias[co]).
//   dw:  colsᵀ[(s, oy, ox), k] likewise, g'[co, (s, p)] = g[s, co, p];
//        dw[co, k] = g' · colsᵀ, a sum over (s, oy, ox) in order.
//   dx (1×1 stride 1 only, where it needs no col2im): dx'[c, (s, p)] = Wᵀ · g', then the layout.
//
// The samples run along the product's columns (fwd) or its k (dw), so a 4×4 map fills the tiles
// as well as a 32×32 one. Operands are f32 whatever the dtype (an f16 value is exact in f32), and
// the single rounding to the output dtype happens after the bias, as in the direct kernel: each
// output is the same fma sum over k from 0 in the same order, so the bits equal the direct
// kernels' (test/kernel-family.test.ts compares with the GPU family). The choice depends on the
// convolution's kind and per-sample size, never on the batch (fwd splits the batch into chunks
// freely: each output's sum lies inside one chunk).

import type { Device } from '../device.js';
import { bindingWindow, wholeBinding } from '../chunk.js';
import { DType, bytesOf } from '../dtype.js';
import { kernelFamily } from '../kernel-family.js';
import { grid } from '../../kernels/common.js';
import { IM2COL_WG, Im2colLayout, im2colKey, im2colLayout, im2colWGSL } from '../../kernels/im2col.js';
import { Tensor, viewOf } from '../tensor.js';
import { matmulInto } from './matmul.js';
import { runMap } from './run-map.js';
import type { Conv2dGeometry } from './conv2d.js';

/** Turns the im2col route off (`enabled: false`) so tests can compare it with the direct kernels. */
export const im2colOverride: { enabled?: boolean } = {};

/** The largest im2col copy made at once, in bytes (fwd runs larger batches in chunks of samples). */
const COLS_BUDGET = 64 << 20;

function budget(dev: Device): number {
  return Math.min(COLS_BUDGET, dev.maxBindingBytes - dev.limits.minStorageBufferOffsetAlignment - 4);
}

const f32Copy = (t: Tensor) => ({ name: 'copy', inTypes: [t.dtype], outType: 'f32' as const, ctype: 'f32' as const, expr: 'a' });

/**
 * Whether this pass runs here: software family, one group, and (fwd, dx) one sample's columns fit
 * the budget or (dw) the whole batch's do (dw has no chunked form: its sum runs over every
 * sample); dx only for 1×1 stride-1 unpadded convolutions.
 */
export function im2colApplies(mode: 'fwd' | 'dx' | 'dw', geo: Conv2dGeometry, dev: Device, dtype: DType): boolean {
  if (im2colOverride.enabled === false || kernelFamily(dev) !== 'software') return false;
  const { N, C, CO, G, KH, KW, OH, OW } = geo;
  if (G !== 1 || N === 0 || C === 0 || CO === 0 || OH * OW === 0) return false;
  const K = C * KH * KW, b = budget(dev);
  const fits = (elems: number, bytes = 4) => elems * bytes <= b;
  const xs = C * geo.H * geo.W, xb = bytesOf(dtype);
  if (!fits(CO * K)) return false;
  if (mode === 'dx') {
    // Only 1×1 stride-1 unpadded convolutions: their input gradient is Wᵀ · g, no col2im.
    if (KH !== 1 || KW !== 1 || geo.SH !== 1 || geo.SW !== 1 || geo.PT || geo.PB || geo.PL || geo.PR) return false;
    return fits(CO * OH * OW) && fits(C * OH * OW);
  }
  return mode === 'fwd' ? fits(K * OH * OW) && fits(xs, xb) : fits(K * N * OH * OW) && fits(CO * N * OH * OW) && fits(N * xs, xb);
}

/** Records the im2col copy of samples [s0, s0 + n) of x into m (f32, laid out as `layout`). */
function im2col(layout: Im2colLayout, x: Tensor, geo: Conv2dGeometry, s0: number, n: number, m: Tensor, label: string): void {
  const dev = m.device;
  const { C, H, W, KH, KW, OH, OW } = geo;
  const per = C * H * W;
  const win = bindingWindow({ elementBytes: bytesOf(x.dtype), bufferBytes: x.buffer(label).size }, s0 * per, n * per, dev.limits.minStorageBufferOffsetAlignment);
  const total = layout === 'colsT' ? n * OH * OW * C : C * KH * KW * n;
  dev.dispatch({
    label: `${label} (im2col)`,
    key: im2colKey(layout, x.dtype),
    code: () => im2colWGSL(layout, x.dtype),
    reads: [{ buffer: x.buffer(label), offset: win.windowOffset, size: win.windowSize }],
    writes: [wholeBinding(m, label)],
    params: im2colLayout.pack({ total, S: n, C, H, W, KH, KW, OH, OW, SH: geo.SH, SW: geo.SW, DH: geo.DH, DW: geo.DW, PT: geo.PT, PL: geo.PL, off: win.offset }),
    groups: grid(Math.ceil(total / IM2COL_WG), dev.limits.maxComputeWorkgroupsPerDimension),
  });
}

/** The weights as an f32 [Cout, K] matrix (a view of f32 weights). */
function weightMatrix(w: Tensor, geo: Conv2dGeometry, temps: Tensor[]): Tensor {
  const K = geo.C * geo.KH * geo.KW;
  if (w.dtype === 'f32') { const v = viewOf(w, [geo.CO, K]); temps.push(v); return v; }
  const m = new Tensor(w.device, [geo.CO, K], 'f32');
  temps.push(m);
  runMap(f32Copy(w), [geo.CO * K], [{ t: w, strides: [1] }], { t: m, strides: [1] }, [0, 0], 'conv2d (weights as f32)');
  return m;
}

/**
 * out[s0 + s, ch, p] = dtype(Y(s, ch, p) (+ bias[ch])) over [n, channels, P], Y read through
 * yStrides: the only rounding to the output dtype, after the bias as in the direct kernel.
 */
export function storeConvOutput(Y: Tensor, yStrides: readonly number[], bias: Tensor | null, out: Tensor, n: number, channels: number, P: number, s0: number, label: string): void {
  const read = [{ t: Y, strides: yStrides }, ...(bias ? [{ t: bias, strides: [0, 1, 0] }] : [])];
  runMap({ name: bias ? 'add' : 'copy', inTypes: read.map((r) => r.t.dtype), outType: out.dtype, ctype: 'f32', expr: bias ? 'a + b' : 'a' },
    [n, channels, P], read, { t: out, strides: [channels * P, P, 1], offset: s0 * channels * P }, [0, 0], label);
}

/** Records the forward pass: inputs [x, w, bias | null], out [N, Cout, OH, OW]. */
export function runIm2colForward(geo: Conv2dGeometry, inputs: (Tensor | null)[], out: Tensor, label: string): void {
  const [x, w, bias] = inputs as [Tensor, Tensor, Tensor | null];
  const { N, C, CO, KH, KW, OH, OW } = geo;
  const K = C * KH * KW, P = OH * OW;
  const xPer = C * geo.H * geo.W * bytesOf(x.dtype);
  const per = Math.max(1, Math.min(N, Math.floor(budget(out.device) / Math.max(K * P * 4, xPer))));
  const temps: Tensor[] = [];
  try {
    const wm = weightMatrix(w, geo, temps);
    for (let s0 = 0; s0 < N; s0 += per) {
      const n = Math.min(per, N - s0);
      const cols = new Tensor(out.device, [K, n * P], 'f32');
      const Y = new Tensor(out.device, [CO, n * P], 'f32');
      temps.push(cols, Y);
      im2col(OW % 4 === 0 ? 'cols4' : 'cols', x, geo, s0, n, cols, label);
      matmulInto(wm, cols, Y, {}, label);
      storeConvOutput(Y, [P, n * P, 1], bias, out, n, CO, P, s0, `${label} (im2col output)`); // Y is [co, (s, p)]
    }
  } finally {
    // Recorded work runs in order: the temporaries' buffers are reused only after it.
    for (const t of temps) t.dispose();
  }
}

/** g's samples [s0, s0 + n) as an f32 [Cout, n·OH·OW] matrix (the samples along the columns). */
function gradientMatrix(g: Tensor, geo: Conv2dGeometry, s0: number, n: number, temps: Tensor[], label: string): Tensor {
  const { CO, OH, OW } = geo, P = OH * OW;
  const gm = new Tensor(g.device, [CO, n * P], 'f32');
  temps.push(gm);
  runMap(f32Copy(g), [CO, n, P], [{ t: g, strides: [P, CO * P, 1], offset: s0 * CO * P }], { t: gm, strides: [n * P, P, 1] }, [0, 0], `${label} (gradient as [Cout, N·OH·OW])`);
  return gm;
}

/**
 * Records the input gradient of a 1×1 stride-1 convolution (im2colApplies('dx')): dx[s, c, p] =
 * Σ_co W[co, c]·g[s, co, p], a sum over co in order as in the direct kernel, as one product per
 * chunk of samples with the samples along its columns (small maps fill the tiles).
 */
export function runIm2colInputGrad(geo: Conv2dGeometry, g: Tensor, w: Tensor, dx: Tensor, label: string): void {
  const { N, C, CO, OH, OW } = geo;
  const P = OH * OW;
  const per = Math.max(1, Math.min(N, Math.floor(budget(dx.device) / (Math.max(C, CO) * P * 4))));
  const temps: Tensor[] = [];
  try {
    const wm = weightMatrix(w, geo, temps);
    for (let s0 = 0; s0 < N; s0 += per) {
      const n = Math.min(per, N - s0);
      const gm = gradientMatrix(g, geo, s0, n, temps, label);
      const Y = new Tensor(dx.device, [C, n * P], 'f32');
      temps.push(Y);
      matmulInto(wm, gm, Y, { transA: true }, label);
      storeConvOutput(Y, [P, n * P, 1], null, dx, n, C, P, s0, `${label} (input gradient layout)`);
    }
  } finally {
    for (const t of temps) t.dispose();
  }
}

/** Records the weight gradient into dw (f32 [Cout, Cin, KH, KW]) from g and x (whole batch). */
export function runIm2colWeightGrad(geo: Conv2dGeometry, g: Tensor, x: Tensor, dw: Tensor, label: string): void {
  const { N, C, CO, KH, KW, OH, OW } = geo;
  const K = C * KH * KW, P = OH * OW;
  const temps: Tensor[] = [];
  try {
    const colsT = new Tensor(dw.device, [N * P, K], 'f32');
    temps.push(colsT);
    im2col('colsT', x, geo, 0, N, colsT, label);
    matmulInto(gradientMatrix(g, geo, 0, N, temps, label), colsT, dw, {}, label);
  } finally {
    for (const t of temps) t.dispose();
  }
}
