// conv2d (NCHW, zero padding) as torch.nn.functional.conv2d, with stride, dilation, asymmetric
// padding and groups; forward, input gradient and weight gradient are implicit-GEMM kernels
// (kernels/conv2d.ts), the bias gradient is a sum of g over N, H, W.
//
// Binding limit: the batch is split into runs of samples whose x / out / g windows each fit one
// binding (the weights are bound whole). A single sample too large for a binding runs as row
// bands (conv2d-bands.ts): each band's rows, with the halo its kernel rows reach, are gathered
// into a small contiguous tensor, convolved with the unchanged kernel and scattered back; the
// result is bit-identical to the unbanded pass (forward, dx and dw alike). Weights too large for
// a binding are an Error naming conv2d and the shapes.

import { record } from '../autograd.js';
import { bytesOf } from '../dtype.js';
import { bindingWindow } from '../chunk.js';
import { fmt } from '../shape.js';
import { Tensor } from '../tensor.js';
import { CONV_SHARED_BYTES, CONV_THREADS, CONV_TILE, ConvMode, convKey, convLayout, convTileRows, convWGSL } from '../../kernels/conv2d.js';
import { convRbKey, convRbTile, convRbWGSL } from '../../kernels/conv2d-rb.js';
import { convBlockColumns, kernelFamily, softwareSubgroupSize } from '../kernel-family.js';
import { planBands } from './conv2d-bands.js';
import { im2colApplies, runIm2colForward, runIm2colInputGrad, runIm2colWeightGrad } from './conv2d-im2col.js';
import { pointwiseApplies, runPointwise } from './conv2d-pointwise.js';
import { runWinograd, runWinogradWeightGrad, winogradApplies } from './conv2d-winograd.js';
import { cast } from './elementwise.js';
import { full } from './movement.js';
import { sum } from './reduce.js';
import { runMap } from './run-map.js';

export interface Conv2dOptions {
  /** Stride: one number for both dims, or [sh, sw]. Default 1. */
  stride?: number | readonly [number, number];
  /**
   * Zero padding: one number for all four sides, [ph, pw] (top = bottom = ph, left = right = pw),
   * or four numbers in the order [top, bottom, left, right]. Note that this is NOT the order of
   * torch.nn.functional.pad, which is (left, right, top, bottom): convert with torchPad().
   * Default 0.
   */
  padding?: number | readonly [number, number] | readonly [number, number, number, number];
  /** Dilation: one number or [dh, dw]. Default 1. */
  dilation?: number | readonly [number, number];
  /** Channel groups: Cin and Cout must both be divisible by it. Default 1. */
  groups?: number;
}

/**
 * conv2d's [top, bottom, left, right] from torch.nn.functional.pad's (left, right, top, bottom):
 * the SD VAE encoder's F.pad(x, (0, 1, 0, 1)) before a stride-2 conv is
 * conv2d(x, w, b, { stride: 2, padding: torchPad([0, 1, 0, 1]) }).
 */
export function torchPad(pad: readonly [number, number, number, number]): [number, number, number, number] {
  const [left, right, top, bottom] = pad;
  return [top, bottom, left, right];
}

/** Resolved geometry of one convolution. */
export interface Conv2dGeometry {
  N: number; C: number; H: number; W: number;
  CO: number; KH: number; KW: number;
  OH: number; OW: number;
  SH: number; SW: number; DH: number; DW: number;
  /** top, bottom, left, right */
  PT: number; PB: number; PL: number; PR: number;
  G: number;
}

function pair(v: number | readonly number[] | undefined, def: number): [number, number] {
  if (v === undefined) return [def, def];
  if (typeof v === 'number') return [v, v];
  return [v[0], v[1]];
}

function describeCall(x: Tensor, w: Tensor, bias: Tensor | null | undefined, o: Conv2dOptions): string {
  const parts = [x.describe(), w.describe(), bias ? bias.describe() : 'no bias'];
  for (const k of ['stride', 'padding', 'dilation', 'groups'] as const) {
    if (o[k] !== undefined) parts.push(`${k}=${JSON.stringify(o[k])}`);
  }
  return `conv2d(${parts.join(', ')})`;
}

/** Validates the arguments and computes the output size; throws naming conv2d and the shapes. */
export function conv2dGeometry(xShape: readonly number[], wShape: readonly number[], opts: Conv2dOptions, label: string): Conv2dGeometry {
  if (xShape.length !== 4) throw new Error(`${label}: x must be [N, Cin, H, W], got ${fmt(xShape)}`);
  if (wShape.length !== 4) throw new Error(`${label}: weight must be [Cout, Cin/groups, kh, kw], got ${fmt(wShape)}`);
  const [N, C, H, W] = xShape;
  const [CO, CG, KH, KW] = wShape;
  const G = opts.groups ?? 1;
  const [SH, SW] = pair(opts.stride, 1);
  const [DH, DW] = pair(opts.dilation, 1);
  const p = opts.padding ?? 0;
  let PT: number, PB: number, PL: number, PR: number;
  if (typeof p === 'number') [PT, PB, PL, PR] = [p, p, p, p];
  else if (p.length === 2) [PT, PB, PL, PR] = [p[0], p[0], p[1], p[1]];
  else if (p.length === 4) [PT, PB, PL, PR] = p as [number, number, number, number];
  else throw new Error(`${label}: padding must be a number, [ph, pw] or [top, bottom, left, right]`);
  const isInt = (v: number, min: number) => Number.isInteger(v) && v >= min;
  if (!isInt(G, 1)) throw new Error(`${label}: groups must be a positive integer`);
  if (![SH, SW, DH, DW].every((v) => isInt(v, 1))) throw new Error(`${label}: stride and dilation must be positive integers`);
  if (![PT, PB, PL, PR].every((v) => isInt(v, 0))) throw new Error(`${label}: padding must be non-negative integers`);
  if (C % G !== 0 || CO % G !== 0) throw new Error(`${label}: groups=${G} must divide both Cin=${C} and Cout=${CO}`);
  if (CG * G !== C) throw new Error(`${label}: channel mismatch: x has Cin=${C} but the weight expects Cin/groups=${CG} × groups=${G} = ${CG * G}`);
  if (KH < 1 || KW < 1 || CO < 1) throw new Error(`${label}: the weight has an empty dimension`);
  const effH = DH * (KH - 1) + 1, effW = DW * (KW - 1) + 1;
  if (H + PT + PB < effH || W + PL + PR < effW) {
    throw new Error(`${label}: the (dilated) kernel ${effH}×${effW} is larger than the padded input ${H + PT + PB}×${W + PL + PR}`);
  }
  const OH = Math.floor((H + PT + PB - effH) / SH) + 1;
  const OW = Math.floor((W + PL + PR - effW) / SW) + 1;
  return { N, C, H, W, CO, KH, KW, OH, OW, SH, SW, DH, DW, PT, PB, PL, PR, G };
}

/**
 * torch.nn.functional.conv2d: x [N, Cin, H, W], w [Cout, Cin/groups, kh, kw], bias [Cout] or
 * none; f32 or f16 (all alike), f32 accumulation. Output [N, Cout, OH, OW] with
 * OH = floor((H + top + bottom − dh·(kh−1) − 1)/sh) + 1 (likewise OW).
 *
 * One sample's result does not depend on the batch it is in (bit for bit). Batches are split
 * automatically, and so is one sample larger than the device's storage-binding limit (into row
 * bands, same bits). A weight above that limit, or a single row band that does not fit, throws
 * an Error naming conv2d and the shapes.
 */
export function conv2d(x: Tensor, w: Tensor, bias?: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  const label = describeCall(x, w, bias, opts);
  if (x.device !== w.device || (bias && bias.device !== x.device)) throw new Error(`${label}: tensors live on different devices`);
  if (x.dtype !== w.dtype || (bias && bias.dtype !== x.dtype)) throw new Error(`${label}: dtypes differ; cast them to one float dtype`);
  if (x.dtype !== 'f32' && x.dtype !== 'f16') throw new Error(`${label}: conv2d takes f32 or f16 tensors, not ${x.dtype}`);
  const geo = conv2dGeometry(x.shape, w.shape, opts, label);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== geo.CO)) throw new Error(`${label}: bias must be [${geo.CO}] (one per output channel), got ${fmt(bias.shape)}`);
  const outShape = [geo.N, geo.CO, geo.OH, geo.OW];
  const out = new Tensor(x.device, outShape, x.dtype);
  if (out.size > 0) runConv('fwd', geo, [x, w, bias ?? null], out, label);
  const inputs = bias ? [x, w, bias] : [x, w];
  return record('conv2d', inputs, out, [x, w], (g0, [xs, ws]) => {
    const g = g0.dtype === x.dtype ? g0 : cast(g0, x.dtype);
    const dx = x.requiresGrad ? conv2dInputGrad(g, ws, geo, label) : null;
    const dw = w.requiresGrad ? conv2dWeightGrad(g, xs, geo, label) : null;
    const db = bias && bias.requiresGrad ? sum(g, [0, 2, 3]) : null;
    if (g !== g0) g.dispose();
    return bias ? [dx, dw, db] : [dx, dw];
  });
}

/** ∂L/∂x for output gradient g [N, Cout, OH, OW]: a transposed convolution as a gather. */
export function conv2dInputGrad(g: Tensor, w: Tensor, geo: Conv2dGeometry, label = 'conv2d backward'): Tensor {
  const dx = new Tensor(g.device, [geo.N, geo.C, geo.H, geo.W], g.dtype);
  if (dx.size > 0) runConv('dx', geo, [g, w], dx, `${label} (input gradient)`);
  return dx;
}

/** ∂L/∂w for output gradient g and input x: Σ over samples and output pixels, in a fixed order. */
export function conv2dWeightGrad(g: Tensor, x: Tensor, geo: Conv2dGeometry, label = 'conv2d backward'): Tensor {
  const shape = [geo.CO, geo.C / geo.G, geo.KH, geo.KW];
  if (geo.N === 0) return full(shape, 0, x.dtype, x.device);
  const dw32 = new Tensor(g.device, shape, 'f32');
  runConv('dw', geo, [g, x], dw32, `${label} (weight gradient)`);
  if (x.dtype === 'f32') return dw32;
  const dw = cast(dw32, x.dtype);
  dw32.dispose();
  return dw;
}

interface Operand {
  buffer: GPUBuffer;
  /** Elements per sample (split along the batch), or 0 for an operand bound whole. */
  perSample: number;
  /** Elements in all (whole operands). */
  total: number;
  elementBytes: number;
}

function windowOf(o: Operand, firstElem: number, elems: number, align: number) {
  const w = bindingWindow({ elementBytes: o.elementBytes, bufferBytes: o.buffer.size }, firstElem, elems, align);
  return { binding: { buffer: o.buffer, offset: w.windowOffset, size: w.windowSize }, offset: w.offset };
}

/**
 * Samples per dispatch so that every per-sample window fits a binding; 0 when one sample does not
 * fit (the caller splits it into row bands); throws when the weight does not fit.
 */
function samplesPerChunk(ops: Operand[], N: number, maxBinding: number, align: number, label: string): number {
  for (const o of ops) {
    if (o.perSample === 0 && Math.ceil((o.total * o.elementBytes) / 4) * 4 > maxBinding) {
      throw new Error(`${label}: the weight (${o.total * o.elementBytes} bytes) exceeds the storage-binding limit of ${maxBinding} bytes; split Cout into several convolutions and concat the outputs`);
    }
  }
  const split = ops.filter((o) => o.perSample > 0);
  if (split.every((o) => Math.ceil((N * o.perSample * o.elementBytes) / 4) * 4 <= maxBinding)) return N;
  let n = N;
  for (const o of split) n = Math.min(n, Math.floor((maxBinding - align - 4) / (o.perSample * o.elementBytes)));
  return Math.max(n, 0);
}

const copyKernel = (t: Tensor) => ({ name: 'copy', inTypes: [t.dtype], outType: t.dtype, ctype: 'f32' as const, expr: 'a' });

/**
 * Copies rows [srcRow, srcRow + rows) of every channel of sample `srcSample` of src (rows per
 * channel: srcH) to rows from dstRow of sample `dstSample` of dst (dstH rows per channel). The
 * strided map kernel (the pipeline slice/concat use) splits it where a window would not fit.
 */
function copyRows(src: Tensor, srcSample: number, srcH: number, srcRow: number, dst: Tensor, dstSample: number, dstH: number, dstRow: number, channels: number, rows: number, width: number, label: string): void {
  runMap(copyKernel(src), [channels, rows, width],
    [{ t: src, strides: [srcH * width, width, 1], offset: (srcSample * channels * srcH + srcRow) * width }],
    { t: dst, strides: [dstH * width, width, 1], offset: (dstSample * channels * dstH + dstRow) * width },
    [0, 0], `${label} (row band copy)`);
}

/**
 * One pass over samples whose x / out / g do not fit a binding: per sample, per row band, gather
 * the band's rows into temporaries, run the kernel on them and scatter (fwd, dx) or accumulate
 * (dw, continuing the f32 sum in the order sample, output row: the order of the whole pass).
 */
function runBanded(mode: ConvMode, geo: Conv2dGeometry, inputs: (Tensor | null)[], out: Tensor, label: string): void {
  const dev = out.device;
  const dtype = inputs[0]!.dtype;
  const bands = planBands(mode, geo, dev.maxBindingBytes, bytesOf(dtype), label);
  const { N, C, H, W, CO, OH, OW } = geo;
  let first = true;
  for (let s = 0; s < N; s++) {
    for (const b of bands) {
      const temps: Tensor[] = [];
      const temp = (shape: number[], dt = dtype) => { const t = new Tensor(dev, shape, dt); temps.push(t); return t; };
      const rB = b.r1 - b.r0, sB = b.s1 - b.s0;
      if (mode === 'fwd') {
        const [x, w, bias] = inputs as [Tensor, Tensor, Tensor | null];
        const xb = temp([1, C, sB, W]), ob = temp([1, CO, rB, OW]);
        copyRows(x, s, H, b.s0, xb, 0, sB, 0, C, sB, W, label);
        runConv(mode, b.geo, [xb, w, bias], ob, label);
        copyRows(ob, 0, rB, 0, out, s, OH, b.r0, CO, rB, OW, label);
      } else if (mode === 'dx') {
        const [g, w] = inputs as [Tensor, Tensor];
        const gb = temp([1, CO, sB, OW]), db = temp([1, C, rB, W]);
        copyRows(g, s, OH, b.s0, gb, 0, sB, 0, CO, sB, OW, label);
        runConv(mode, b.geo, [gb, w], db, label);
        copyRows(db, 0, rB, 0, out, s, H, b.r0, C, rB, W, label);
      } else {
        const [g, x] = inputs as [Tensor, Tensor];
        const gb = temp([1, CO, rB, OW]), xb = temp([1, C, sB, W]);
        copyRows(g, s, OH, b.r0, gb, 0, rB, 0, CO, rB, OW, label);
        copyRows(x, s, H, b.s0, xb, 0, sB, 0, C, sB, W, label);
        runConv(mode, b.geo, [gb, xb], out, label, !first);
      }
      first = false;
      // Recorded work runs in order, so a pooled buffer reused by the next band is safe.
      for (const t of temps) t.dispose();
    }
  }
}

/**
 * Records the dispatches of one convolution pass (fwd, dx or dw), split along the batch (or into
 * row bands when one sample does not fit). carry (dw only): continue the sum already in out.
 */
function runConv(mode: ConvMode, geo: Conv2dGeometry, inputs: (Tensor | null)[], out: Tensor, label: string, carry = false): void {
  const dev = out.device;
  const software = kernelFamily(dev) === 'software';
  if (!software && (CONV_SHARED_BYTES > dev.limits.maxComputeWorkgroupStorageSize || CONV_THREADS > dev.limits.maxComputeInvocationsPerWorkgroup)) {
    throw new Error(`${label}: the conv2d kernel needs ${CONV_SHARED_BYTES} bytes of workgroup memory and ${CONV_THREADS} threads; this device allows ${dev.limits.maxComputeWorkgroupStorageSize} and ${dev.limits.maxComputeInvocationsPerWorkgroup}`);
  }
  if (!carry && mode !== 'dw' && pointwiseApplies(mode, geo, dev, inputs[0]!.dtype, mode === 'fwd' && !!inputs[2])) {
    runPointwise(mode, geo, inputs, out, label);
    return;
  }
  if (!carry && winogradApplies(mode, geo, dev)) {
    if (mode === 'dw') runWinogradWeightGrad(geo, inputs[0]!, inputs[1]!, out, label);
    else runWinograd(mode, geo, inputs[0]!, inputs[1]!, mode === 'fwd' ? inputs[2] : null, out, label);
    return;
  }
  if (!carry && im2colApplies(mode, geo, dev, inputs[0]!.dtype)) {
    if (mode === 'dw') runIm2colWeightGrad(geo, inputs[0]!, inputs[1]!, out, label);
    else if (mode === 'dx') runIm2colInputGrad(geo, inputs[0]!, inputs[1]!, out, label);
    else runIm2colForward(geo, inputs, out, label);
    return;
  }
  const { N, C, H, W, CO, KH, KW, OH, OW, G } = geo;
  const CG = C / G, COG = CO / G;
  const dtype = inputs[0]!.dtype;
  // Software kernels read the weights repacked with the product's rows innermost (vec4 reads);
  // the copy is small beside the convolution, and is freed once the dispatches are recorded.
  const packRows = mode === 'dx' ? CG : COG;
  const packable = software && packRows >= 4 && packRows % 4 === 0;
  const packAt = mode === 'dw' ? 0 : 1;
  const packed = packable ? (mode === 'dw' ? packGradient(inputs[0]!, geo) : packWeights(mode, inputs[1]!, geo)) : null;
  const original = inputs;
  if (packed) inputs = inputs.map((t, i) => (i === packAt ? packed : t));
  const eb = bytesOf(dtype);
  const xPer = C * H * W, oPer = CO * OH * OW;
  const buf = (t: Tensor) => t.buffer('conv2d');
  // Operands in binding order: reads, then the output.
  let ops: Operand[];
  if (mode === 'fwd') {
    const [x, w, b] = inputs as [Tensor, Tensor, Tensor | null];
    ops = [
      { buffer: buf(x), perSample: xPer, total: 0, elementBytes: eb },
      { buffer: buf(w), perSample: 0, total: w.size, elementBytes: eb },
      // No bias: bind the weight again (never read; flag = 0).
      b ? { buffer: buf(b), perSample: 0, total: b.size, elementBytes: eb } : { buffer: buf(w), perSample: 0, total: 1, elementBytes: eb },
      { buffer: buf(out), perSample: oPer, total: 0, elementBytes: eb },
    ];
  } else if (mode === 'dx') {
    const [g, w] = inputs as [Tensor, Tensor];
    ops = [
      { buffer: buf(g), perSample: oPer, total: 0, elementBytes: eb },
      { buffer: buf(w), perSample: 0, total: w.size, elementBytes: eb },
      { buffer: buf(out), perSample: xPer, total: 0, elementBytes: eb },
    ];
  } else {
    const [g, x] = inputs as [Tensor, Tensor];
    ops = [
      { buffer: buf(g), perSample: oPer, total: 0, elementBytes: eb },
      { buffer: buf(x), perSample: xPer, total: 0, elementBytes: eb },
      { buffer: buf(out), perSample: 0, total: out.size, elementBytes: 4 },
    ];
  }
  const align = dev.limits.minStorageBufferOffsetAlignment;
  const per = samplesPerChunk(ops, N, dev.maxBindingBytes, align, label);
  if (per === 0) { packed?.dispose(); runBanded(mode, geo, original, out, label); return; }
  const maxG = dev.limits.maxComputeWorkgroupsPerDimension;
  const { BN } = CONV_TILE;
  // The software block's width follows the device only (never the shape): batch independence holds.
  const cols = convBlockColumns(dev);
  // The subgroup form where subgroups are a fixed 8 lanes (kernels/conv2d-rb.ts): device only.
  const sg = software && !!packed && cols === 8 && softwareSubgroupSize(dev) === 8;
  const rbTile = convRbTile(cols, sg);
  for (let s0 = 0; s0 < N; s0 += per) {
    const ns = Math.min(per, N - s0);
    const wins = ops.map((o) => (o.perSample ? windowOf(o, s0 * o.perSample, ns * o.perSample, align) : windowOf(o, 0, o.total, align)));
    let M: number, NN: number, K: number, gz: number;
    // The software kernels run every sample of the chunk along N (z = group only); the tiled
    // ones one sample per z.
    const zs = software ? 1 : ns, ns1 = software ? ns : 1;
    if (mode === 'fwd') { M = COG; NN = ns1 * OH * OW; K = CG * KH * KW; gz = zs * G; }
    else if (mode === 'dx') { M = CG; NN = ns1 * H * W; K = COG * KH * KW; gz = zs * G; }
    else { M = COG; NN = CG * KH * KW; K = ns * OH * OW; gz = G; }
    const outWin = wins[wins.length - 1];
    const base = {
      C, H, W, CO, OH, OW, KH, KW, SH: geo.SH, SW: geo.SW, DH: geo.DH, DW: geo.DW, PT: geo.PT, PL: geo.PL,
      CG, COG, G, M, N: NN, K,
      off0: wins[0].offset, off1: wins[1].offset, off2: mode === 'fwd' ? wins[2].offset : 0, offO: outWin.offset,
      flag: mode === 'fwd' ? (inputs[2] ? 1 : 0) : mode === 'dw' ? (s0 > 0 || carry ? 1 : 0) : 0,
    };
    const BM = software ? rbTile.BM : convTileRows(M);
    const BNc = software ? rbTile.BN : BN;
    const gx = Math.ceil(NN / BNc), gy = Math.ceil(M / BM);
    const st = { SH: geo.SH, SW: geo.SW, DH: geo.DH, DW: geo.DW };
    const key = software ? convRbKey(mode, dtype, st, !!packed, cols, sg) : convKey(mode, dtype, BM);
    const code = software ? () => convRbWGSL(mode, dtype, st, !!packed, cols, sg) : () => convWGSL(mode, dtype, BM);
    for (let z = 0; z < gz; z += maxG) {
      for (let y = 0; y < gy; y += maxG) {
        for (let xb = 0; xb < gx; xb += maxG) {
          dev.dispatch({
            label,
            key,
            code,
            reads: wins.slice(0, -1).map((w) => w.binding),
            writes: [outWin.binding],
            params: convLayout.pack({ ...base, xbase: xb, ybase: y, zbase: z }),
            groups: [Math.min(maxG, gx - xb), Math.min(maxG, gy - y), Math.min(maxG, gz - z)],
          });
        }
      }
    }
  }
  packed?.dispose();
}

/** The output gradient [N, Cout, OH, OW] as [N, OH·OW, Cout] for the software dw kernel. */
function packGradient(g: Tensor, geo: Conv2dGeometry): Tensor {
  const { N, CO, OH, OW } = geo;
  const P = OH * OW;
  const out = new Tensor(g.device, [N, P, CO], g.dtype);
  runMap(copyKernel(g), [N, P, CO], [{ t: g, strides: [CO * P, 1, P] }], { t: out, strides: [P * CO, CO, 1] }, [0, 0], 'conv2d (gradient repack)');
  return out;
}

/**
 * The weights [Cout, Cin/G, kh, kw] repacked for the software kernels: fwd [G, Cin/G·kh·kw,
 * Cout/G] (the output channels of one k side by side), dx [G, Cout/G, kh·kw, Cin/G] (the input
 * channels of one (co, ky, kx) side by side).
 */
function packWeights(mode: ConvMode, w: Tensor, geo: Conv2dGeometry): Tensor {
  const { G, CO, C, KH, KW } = geo;
  const COG = CO / G, CG = C / G, KK = KH * KW, K = CG * KK;
  const out = new Tensor(w.device, mode === 'fwd' ? [G, K, COG] : [G, COG, KK, CG], w.dtype);
  if (mode === 'fwd') runMap(copyKernel(w), [G, K, COG], [{ t: w, strides: [COG * K, 1, K] }], { t: out, strides: [K * COG, COG, 1] }, [0, 0], 'conv2d (weight repack)');
  else runMap(copyKernel(w), [G, COG, KK, CG], [{ t: w, strides: [COG * K, K, 1, KK] }], { t: out, strides: [COG * KK * CG, KK * CG, CG, 1] }, [0, 0], 'conv2d (weight repack)');
  return out;
}
