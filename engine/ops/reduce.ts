// Reductions over any axes (sum, mean, max, min, var) and sumTo, the gradient of broadcasting.

import { noGrad, record } from '../autograd.js';
import { DType, bytesOf, isFloat } from '../dtype.js';
import { planChunks } from '../chunk.js';
import { MAX_RANK, contiguousStrides, fmt, mergeStridedDims, normAxes, sameShape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { kernelFamily } from '../kernel-family.js';
import { WG, grid } from '../../kernels/common.js';
import { REDUCE_WG, ReduceOp, SEQ_LIMIT, reduceKey, reduceLayout, reduceWGSL } from '../../kernels/reduce.js';
import { div, eq, mul, mulScalar, square, sub } from './elementwise.js';
import { concat, expand, reshape, slice } from './movement.js';

function pad8(v: readonly number[]): number[] {
  const out = new Array<number>(MAX_RANK).fill(0);
  v.forEach((x, i) => { out[i] = x; });
  return out;
}

/** Workgroup of the one-output-per-thread reductions on software adapters: one SIMD register. */
const SOFT_WG = 8;

/** Reduces x over `axes` into a tensor of the kept dims (size-1 axes kept when keepDims). */
function reduceRaw(op: ReduceOp, x: Tensor, axes: number[], keepDims: boolean, scale = 1, outType: DType = x.dtype): Tensor {
  const keptAxes = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const strides = contiguousStrides(x.shape);
  const oshape = keptAxes.map((i) => x.shape[i]);
  const ishape = axes.map((i) => x.shape[i]);
  const outShape = keepDims ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : oshape;
  const out = new Tensor(x.device, outShape, outType);
  const nInner = ishape.reduce((a, b) => a * b, 1);
  const label = `${op}(${x.describe()}, axes=${JSON.stringify(axes)})`;
  if (out.size === 0) return out;
  if (nInner === 0) throw new Error(`${label}: reduction over an empty axis`);
  const dev = x.device;
  const align = dev.limits.minStorageBufferOffsetAlignment;
  const sliceBytes = (1 + axes.reduce((e, i) => e + (x.shape[i] - 1) * strides[i], 0)) * bytesOf(x.dtype);
  if (sliceBytes + align > dev.maxBindingBytes) return reduceSplit(op, x, axes, keepDims, scale, outType);
  const software = kernelFamily(dev) === 'software';
  const mode = software || nInner <= SEQ_LIMIT ? 'seq' : 'wg';
  const wg = software ? SOFT_WG : WG;
  // Reduced dims merged where one steps over the next exactly (same index order, so the same
  // bits): the kernel then walks long rows instead of decoding every element's position.
  const merged = mergeStridedDims(ishape, [axes.map((i) => strides[i])]);
  const inner = { shape: merged.shape, strides: merged.strides[0] };
  const combined = [...oshape, ...inner.shape];
  const ostrideOut = contiguousStrides(oshape);
  const inBuf = x.buffer(op), outBuf = out.buffer(op);
  const chunks = planChunks(label, combined, [
    { strides: [...keptAxes.map((i) => strides[i]), ...inner.strides], offset: 0, elementBytes: bytesOf(x.dtype), bufferBytes: inBuf.size },
    { strides: [...ostrideOut, ...inner.shape.map(() => 0)], offset: 0, elementBytes: bytesOf(outType), bufferBytes: outBuf.size },
  ], dev.maxBindingBytes, dev.limits.minStorageBufferOffsetAlignment, oshape.length);
  for (const ch of chunks) {
    const orank = ch.shape.length - inner.shape.length;
    const [src, dst] = ch.operands;
    const nout = ch.shape.slice(0, orank).reduce((a, b) => a * b, 1);
    dev.dispatch({
      label,
      key: reduceKey(op, mode, x.dtype, outType, wg),
      code: () => reduceWGSL(op, mode, x.dtype, outType, wg),
      reads: [{ buffer: inBuf, offset: src.windowOffset, size: src.windowSize }],
      writes: [{ buffer: outBuf, offset: dst.windowOffset, size: dst.windowSize }],
      params: reduceLayout.pack({
        oshape: pad8(ch.shape.slice(0, orank)), ostride: pad8(src.strides.slice(0, orank)),
        ishape: pad8(inner.shape), istride: pad8(src.strides.slice(orank)),
        orank, irank: inner.shape.length, nout, ninner: nInner, inoff: src.offset, outoff: dst.offset, scale,
      }),
      groups: grid(mode === 'seq' ? Math.ceil(nout / wg) : nout, dev.limits.maxComputeWorkgroupsPerDimension),
    });
  }
  void REDUCE_WG;
  return out;
}

/**
 * A reduction whose reduced slice alone exceeds the binding limit (e.g. a sum over all of a
 * 145 MiB tensor): reduce pieces along the outermost reduced axis into f32 partials, then reduce
 * the partials. The split depends only on the reduced extent and the limit, never on the batch.
 */
function reduceSplit(op: ReduceOp, x: Tensor, axes: number[], keepDims: boolean, scale: number, outType: DType): Tensor {
  return noGrad(() => {
    const a = axes[0];
    const pieceBytes = (x.size / x.shape[a]) * bytesOf(x.dtype);
    const per = Math.max(1, Math.floor((x.device.maxBindingBytes / 2) / pieceBytes));
    const partials: Tensor[] = [];
    for (let i = 0; i < x.shape[a]; i += per) {
      const starts = x.shape.map((_, d) => (d === a ? i : 0));
      const ends = x.shape.map((n, d) => (d === a ? Math.min(i + per, n) : n));
      const piece = slice(x, starts, ends);
      partials.push(reduceRaw(op, piece, axes, true, 1, isFloat(x.dtype) ? 'f32' : x.dtype));
      piece.dispose();
    }
    const joined = concat(partials, a);
    for (const p of partials) p.dispose();
    const out = reduceRaw(op, joined, axes, keepDims, scale, outType);
    joined.dispose();
    return out;
  });
}

function keptShape(x: Tensor, axes: number[]): number[] {
  return x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

/** Spreads a reduced gradient back over the reduced axes (scaled), freeing the temporary view. */
function spread(g: Tensor, x: Tensor, axes: number[], scale = 1): Tensor {
  const view = reshape(g, keptShape(x, axes));
  const e = expand(view, x.shape);
  view.dispose();
  if (scale === 1) return e;
  const out = mulScalar(e, scale);
  e.dispose();
  return out;
}

/** Sum over axes (default all). Accumulates in f32 for float inputs. */
export function sum(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = normAxes('sum', axes, x.rank);
  const out = reduceRaw('sum', x, ax, keepDims);
  return record('sum', [x], out, [], (g) => [spread(g, x, ax)]);
}

/** Mean over axes (default all): one pass, sum scaled by 1/n in f32. */
export function mean(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  if (!isFloat(x.dtype)) throw new Error(`mean: ${x.describe()} is not a float tensor`);
  const ax = normAxes('mean', axes, x.rank);
  const n = ax.reduce((a, i) => a * x.shape[i], 1);
  const out = reduceRaw('sum', x, ax, keepDims, 1 / n);
  return record('mean', [x], out, [], (g) => [spread(g, x, ax, 1 / n)]);
}

function extremum(op: 'max' | 'min', x: Tensor, axes: number | readonly number[] | undefined, keepDims: boolean): Tensor {
  const ax = normAxes(op, axes, x.rank);
  const out = reduceRaw(op, x, ax, keepDims);
  // Ties share the gradient equally (as torch.amax does).
  return record(op, [x], out, [x, out], (g, [xs, os]) => {
    const kept = keptShape(x, ax);
    const ov = reshape(os, kept), gv = reshape(g, kept);
    const mask = eq(xs, ov);
    const count = reduceRaw('sum', mask, ax, true);
    const share = div(gv, count);
    const gx = mul(mask, share);
    for (const t of [ov, gv, mask, count, share]) t.dispose();
    return [gx];
  });
}
export const max = (x: Tensor, axes?: number | readonly number[], keepDims = false) => extremum('max', x, axes, keepDims);
export const min = (x: Tensor, axes?: number | readonly number[], keepDims = false) => extremum('min', x, axes, keepDims);

/** Variance over axes; unbiased divides by n-1 (PyTorch's default for var is unbiased=true). */
export function variance(x: Tensor, axes?: number | readonly number[], keepDims = false, unbiased = false): Tensor {
  const ax = normAxes('var', axes, x.rank);
  const n = ax.reduce((a, i) => a * x.shape[i], 1);
  const m = mean(x, ax, true);
  const d = sub(x, m);
  const sq = square(d);
  const s = sum(sq, ax, keepDims);
  const out = mulScalar(s, 1 / Math.max(unbiased ? n - 1 : n, 1));
  for (const t of [m, d, sq, s]) t.dispose();
  return out;
}

/** Sums a tensor down to `shape` over the axes broadcasting added or stretched (gradient of broadcast). */
export function sumTo(x: Tensor, shape: readonly number[]): Tensor {
  if (sameShape(x.shape, shape)) return mulScalar(x, 1);
  const lead = x.rank - shape.length;
  if (lead < 0) throw new Error(`sumTo: cannot sum ${x.describe()} to the larger shape ${fmt(shape)}`);
  const axes: number[] = [];
  for (let i = 0; i < x.rank; i++) {
    if (i < lead) axes.push(i);
    else if (shape[i - lead] === 1 && x.shape[i] !== 1) axes.push(i);
    else if (shape[i - lead] !== x.shape[i]) throw new Error(`sumTo: ${x.describe()} was not broadcast from ${fmt(shape)}`);
  }
  const s = sum(x, axes, true);
  const out = reshape(s, shape);
  s.dispose();
  return out;
}
