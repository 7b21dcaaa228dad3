// conv2d forward and input gradient as Winograd F(2×2, 3×3) on software adapters (the kernels
// and the algebra: kernels/winograd.ts). Applies to 3×3 kernels with stride 1, dilation 1, one
// group and padding ≤ 2 on each side (the input gradient is then the stride-1 convolution of the
// output gradient with the rotated kernel and padding 2 − p); everything else, and a sample whose
// transformed input would not fit one binding, takes the direct kernels. The choice depends on
// the convolution's kind and the per-sample size only, never on the batch, so a sample gives the
// same bits alone or in a batch.

import type { Device } from '../device.js';
import { bindingWindow } from '../chunk.js';
import { bytesOf } from '../dtype.js';
import { kernelFamily } from '../kernel-family.js';
import { Tensor } from '../tensor.js';
import { WG, grid } from '../../kernels/common.js';
import { WinogradKernel, winogradKey, winogradLayout, winogradWGSL } from '../../kernels/winograd.js';
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
  if (mode === 'dw' || kernelFamily(dev) !== 'software' || !enabled()) return false;
  const { KH, KW, SH, SW, DH, DW, G, PT, PB, PL, PR } = geo;
  if (KH !== 3 || KW !== 3 || SH !== 1 || SW !== 1 || DH !== 1 || DW !== 1 || G !== 1) return false;
  if (Math.max(PT, PB, PL, PR) > 2) return false;
  const p = passOf(mode, geo);
  const limit = dev.maxBindingBytes - dev.limits.minStorageBufferOffsetAlignment - 4;
  return 16 * p.P * p.Q * 4 <= limit && perSample(p).every((n) => n * 4 <= limit);
}

/**
 * Records the Winograd pass: src is x (fwd) or the output gradient (dx), w the [Cout, Cin, 3, 3]
 * weights, out the result. The caller checked winogradApplies.
 */
export function runWinograd(mode: 'fwd' | 'dx', geo: Conv2dGeometry, src: Tensor, w: Tensor, bias: Tensor | null, out: Tensor, label: string): void {
  const dev = out.device;
  const p = passOf(mode, geo);
  const dtype = src.dtype;
  const T = tilesOf(p), TW = Math.ceil(p.OW / 2);
  const align = dev.limits.minStorageBufferOffsetAlignment;
  const limit = dev.maxBindingBytes - align - 4;
  const ns = Math.max(1, Math.min(geo.N, ...perSample(p).map((n) => Math.floor(limit / (n * 4)))));
  const maxG = dev.limits.maxComputeWorkgroupsPerDimension;
  const whole = (t: Tensor) => ({ buffer: t.buffer(label), offset: 0, size: Math.max(4, Math.ceil(t.bytes / 4) * 4) });
  const run = (k: WinogradKernel, reads: GPUBufferBinding[], writes: GPUBufferBinding[], values: Record<string, number>) => {
    dev.dispatch({
      label: `${label} (winograd ${k})`,
      key: winogradKey(k, dtype),
      code: () => winogradWGSL(k, dtype),
      reads: reads as { buffer: GPUBuffer; offset: number; size: number }[],
      writes: writes as { buffer: GPUBuffer; offset: number; size: number }[],
      params: winogradLayout.pack({ P: p.P, Q: p.Q, H: p.H, W: p.W, OH: p.OH, OW: p.OW, TW, T, PT: p.PT, PL: p.PL, ...values }),
      groups: grid(Math.ceil(values.total / WG), maxG),
    });
  };
  const U = new Tensor(dev, [16, p.P, p.Q], 'f32');
  const temps: Tensor[] = [U];
  try {
    run(mode === 'fwd' ? 'weights-fwd' : 'weights-dx', [whole(w)], [whole(U)], { total: p.P * p.Q });
    const [inPer, , , outPer] = perSample(p);
    const eb = bytesOf(dtype);
    for (let s0 = 0; s0 < geo.N; s0 += ns) {
      const n = Math.min(ns, geo.N - s0), cols = n * T;
      const inWin = bindingWindow({ elementBytes: eb, bufferBytes: src.buffer(label).size }, s0 * inPer, n * inPer, align);
      const outWin = bindingWindow({ elementBytes: eb, bufferBytes: out.buffer(label).size }, s0 * outPer, n * outPer, align);
      const V = new Tensor(dev, [16, p.Q, cols], 'f32');
      temps.push(V);
      run('input', [{ buffer: src.buffer(label), offset: inWin.windowOffset, size: inWin.windowSize }], [whole(V)], { total: p.Q * cols, cols, off: inWin.offset });
      const M = matmul(U, V);
      temps.push(M);
      // No bias: bind M again in its place (never read; hasb = 0).
      run('output', [whole(M), bias ? whole(bias) : whole(M)], [{ buffer: out.buffer(label), offset: outWin.windowOffset, size: outWin.windowSize }],
        { total: p.P * cols, cols, off: outWin.offset, hasb: bias ? 1 : 0 });
    }
  } finally {
    // Recorded work runs in order, so pooled buffers reused by later dispatches are safe.
    for (const t of temps) t.dispose();
  }
}
