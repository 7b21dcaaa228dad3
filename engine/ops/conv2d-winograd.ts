// conv2d forward, input gradient and weight gradient as Winograd F(2×2, 3×3) on software
// adapters (the kernels and the algebra: kernels/winograd.ts). Applies to 3×3 kernels with stride 1, dilation 1, one
// group and padding ≤ 2 on each side (the input gradient is then the stride-1 convolution of the
// output gradient with the rotated kernel and padding 2 − p); everything else, and a sample whose
// transformed input would not fit one binding, takes the direct kernels. The choice depends on
// the convolution's kind and the per-sample size only, never on the batch, so a sample gives the
// same bits alone or in a batch.

import type { Binding, Device } from '../device.js';
import { bindingWindow, wholeBinding } from '../chunk.js';
import { bytesOf } from '../dtype.js';
import { kernelFamily } from '../kernel-family.js';
import { Tensor } from '../tensor.js';
import { WG, grid } from '../../kernels/common.js';
import { WinogradKernel, winogradKey, winogradLayout, winogradWGSL } from '../../kernels/winograd.js';
import { add } from './elementwise.js';
import { matmul } from './matmul.js';
import type { Conv2dGeometry } from './conv2d.js';

/** The convolution one pass computes: P output channels from Q input channels. */
interface Pass {
  P: number; Q: number;
  H: number; W: number; // input image
  OH: number; OW: number; // output image
  PT: number; PL: number;
}

function passOf(mode: 'fwd' | 'dx', geo: Conv2dGeometry): Pass {
  return mode === 'fwd'
    ? { P: geo.CO, Q: geo.C, H: geo.H, W: geo.W, OH: geo.OH, OW: geo.OW, PT: geo.PT, PL: geo.PL }
    : { P: geo.C, Q: geo.CO, H: geo.OH, W: geo.OW, OH: geo.H, OW: geo.W, PT: 2 - geo.PT, PL: 2 - geo.PL };
}

const tilesOf = (p: Pass) => Math.ceil(p.OH / 2) * Math.ceil(p.OW / 2);

/** Bytes one binding may hold at an unaligned start (the window rounds its start down). */
const bindingBudget = (dev: Device) => dev.maxBindingBytes - dev.limits.minStorageBufferOffsetAlignment - 4;

/** Elements per sample of each per-sample operand: input image, V, M, output image. */
function perSample(p: Pass): number[] {
  const T = tilesOf(p);
  return [p.Q * p.H * p.W, 16 * p.Q * T, 16 * p.P * T, p.P * p.OH * p.OW];
}

/**
 * Turns the Winograd path off (`enabled: false`) for comparisons; also DDPO_WINOGRAD=0. Default:
 * on wherever it applies.
 */
export const winogradOverride: { enabled?: boolean } = {};

function enabled(): boolean {
  if (winogradOverride.enabled !== undefined) return winogradOverride.enabled;
  const v = typeof process !== 'undefined' ? process.env?.DDPO_WINOGRAD : undefined;
  if (v === undefined || v === '' || v === '1') return true;
  if (v === '0') return false;
  throw new Error(`DDPO_WINOGRAD=${v}: expected 0 (off) or 1 (on, the default)`);
}

/** Whether this pass runs as Winograd on this device (see the file comment). */
export function winogradApplies(mode: 'fwd' | 'dx' | 'dw', geo: Conv2dGeometry, dev: Device): boolean {
  if (kernelFamily(dev) !== 'software' || !enabled()) return false;
  const { KH, KW, SH, SW, DH, DW, G, PT, PB, PL, PR } = geo;
  if (KH !== 3 || KW !== 3 || SH !== 1 || SW !== 1 || DH !== 1 || DW !== 1 || G !== 1) return false;
  if (Math.max(PT, PB, PL, PR) > 2) return false;
  // The weight gradient works on the forward pass's tiles.
  const p = passOf(mode === 'dw' ? 'fwd' : mode, geo);
  const limit = bindingBudget(dev);
  return 16 * p.P * p.Q * 4 <= limit && perSample(p).every((n) => n * 4 <= limit);
}

/** Records one Winograd kernel over `total` threads. */
function runKernel(dev: Device, label: string, k: WinogradKernel, dtype: Tensor['dtype'], p: Pass, reads: Binding[], writes: Binding[], values: Record<string, number>): void {
  dev.dispatch({
    label: `${label} (winograd ${k})`,
    key: winogradKey(k, dtype),
    code: () => winogradWGSL(k, dtype),
    reads,
    writes,
    params: winogradLayout.pack({ P: p.P, Q: p.Q, H: p.H, W: p.W, OH: p.OH, OW: p.OW, TW: Math.ceil(p.OW / 2), T: tilesOf(p), PT: p.PT, PL: p.PL, ...values }),
    groups: grid(Math.ceil(values.total / WG), dev.limits.maxComputeWorkgroupsPerDimension),
  });
}


/** Samples per chunk so that every per-sample operand of the pass fits one binding. */
function samplesPerChunk(dev: Device, p: Pass, N: number): number {
  const limit = bindingBudget(dev);
  return Math.max(1, Math.min(N, ...perSample(p).map((n) => Math.floor(limit / (n * 4)))));
}

/** The window of samples [s0, s0 + n) of an [N, per] tensor. */
function sampleWindow(dev: Device, t: Tensor, per: number, s0: number, n: number, label: string): { binding: Binding; offset: number } {
  const w = bindingWindow({ elementBytes: bytesOf(t.dtype), bufferBytes: t.buffer(label).size }, s0 * per, n * per, dev.limits.minStorageBufferOffsetAlignment);
  return { binding: { buffer: t.buffer(label), offset: w.windowOffset, size: w.windowSize }, offset: w.offset };
}

/**
 * Records the Winograd pass: src is x (fwd) or the output gradient (dx), w the [Cout, Cin, 3, 3]
 * weights, out the result. The caller checked winogradApplies.
 */
export function runWinograd(mode: 'fwd' | 'dx', geo: Conv2dGeometry, src: Tensor, w: Tensor, bias: Tensor | null, out: Tensor, label: string): void {
  const dev = out.device;
  const p = passOf(mode, geo);
  const dtype = src.dtype;
  const T = tilesOf(p);
  const ns = samplesPerChunk(dev, p, geo.N);
  const [inPer, , , outPer] = perSample(p);
  const U = new Tensor(dev, [16, p.P, p.Q], 'f32');
  const temps: Tensor[] = [U];
  try {
    runKernel(dev, label, mode === 'fwd' ? 'weights-fwd' : 'weights-dx', dtype, p, [wholeBinding(w, label)], [wholeBinding(U, label)], { total: p.P * p.Q });
    for (let s0 = 0; s0 < geo.N; s0 += ns) {
      const n = Math.min(ns, geo.N - s0), cols = n * T;
      const inWin = sampleWindow(dev, src, inPer, s0, n, label), outWin = sampleWindow(dev, out, outPer, s0, n, label);
      const V = new Tensor(dev, [16, p.Q, cols], 'f32');
      temps.push(V);
      runKernel(dev, label, 'input', dtype, p, [inWin.binding], [wholeBinding(V, label)], { total: p.Q * cols, cols, off: inWin.offset });
      const M = matmul(U, V);
      temps.push(M);
      // No bias: bind M again in its place (never read; hasb = 0).
      runKernel(dev, label, 'output', dtype, p, [wholeBinding(M, label), wholeBinding(bias ?? M, label)], [outWin.binding], { total: p.P * cols, cols, off: outWin.offset, hasb: bias ? 1 : 0 });
    }
  } finally {
    // Recorded work runs in order, so pooled buffers reused by later dispatches are safe.
    for (const t of temps) t.dispose();
  }
}

/**
 * Records the weight gradient dw [Cout, Cin, 3, 3] (f32) of x and the output gradient g: the sum
 * over all samples and tiles, chunk after chunk in sample order (a fixed order for a given
 * binding limit). The caller checked winogradApplies('dw', ...).
 */
export function runWinogradWeightGrad(geo: Conv2dGeometry, g: Tensor, x: Tensor, dw: Tensor, label: string): void {
  const dev = dw.device;
  const p = passOf('fwd', geo);
  const dtype = x.dtype;
  const T = tilesOf(p);
  const ns = samplesPerChunk(dev, p, geo.N);
  const [inPer, , , outPer] = perSample(p);
  const temps: Tensor[] = [];
  let S: Tensor | null = null;
  try {
    for (let s0 = 0; s0 < geo.N; s0 += ns) {
      const n = Math.min(ns, geo.N - s0), cols = n * T;
      const xWin = sampleWindow(dev, x, inPer, s0, n, label), gWin = sampleWindow(dev, g, outPer, s0, n, label);
      // V is stored transposed, [16, cols, Q], so that Z · Vᵀ is a plain product (no re-layout of B).
      const Vt = new Tensor(dev, [16, cols, p.Q], 'f32'), Z = new Tensor(dev, [16, p.P, cols], 'f32');
      temps.push(Vt, Z);
      runKernel(dev, label, 'input-t', dtype, p, [xWin.binding], [wholeBinding(Vt, label)], { total: p.Q * cols, cols, off: xWin.offset });
      runKernel(dev, label, 'grad', dtype, p, [gWin.binding], [wholeBinding(Z, label)], { total: p.P * cols, cols, off: gWin.offset });
      const part = matmul(Z, Vt);
      if (S) { const sum = add(S, part); temps.push(S, part); S = sum; } else S = part;
    }
    runKernel(dev, label, 'weights-grad', dtype, p, [wholeBinding(S!, label)], [wholeBinding(dw, label)], { total: p.P * p.Q });
  } finally {
    if (S) temps.push(S);
    for (const t of temps) t.dispose();
  }
}
