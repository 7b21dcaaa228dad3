// Shape and layout ops. reshape is a view (no copy); the others run the strided map kernel with
// the strides that express them, so they share one pipeline per dtype.

import { record } from '../autograd.js';
import { DType, isFloat } from '../dtype.js';
import { broadcastShapes, broadcastStrides, contiguousStrides, fmt, normAxis, sizeOf } from '../shape.js';
import { Tensor, viewOf } from '../tensor.js';
import { runMap } from './run-map.js';

const ctype = (d: DType) => (isFloat(d) ? 'f32' : d) as 'f32' | 'i32' | 'u32';

/** Copies `src` read through (strides, offset) into `dst` written through its own (strides, offset). */
function copyStrided(op: string, shape: readonly number[], src: Tensor, srcStrides: readonly number[], srcOffset: number, dst: Tensor, dstStrides: readonly number[], dstOffset: number): void {
  runMap({ name: 'copy', inTypes: [src.dtype], outType: dst.dtype, ctype: ctype(src.dtype), expr: 'a' },
    shape, [{ t: src, strides: srcStrides, offset: srcOffset }], { t: dst, strides: dstStrides, offset: dstOffset }, [0, 0],
    `${op}(${src.describe()}) -> ${fmt(shape)}`);
}

function fill0(t: Tensor): void {
  runMap({ name: 'fill', inTypes: [], outType: t.dtype, ctype: ctype(t.dtype), expr: `${ctype(t.dtype)}(P.s0)` },
    t.shape, [], { t, strides: contiguousStrides(t.shape) }, [0, 0], `fill(${t.describe()})`);
}

/** Same values, new shape; one dimension may be -1. A view: no copy. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const s = [...shape];
  const free = s.indexOf(-1);
  if (free >= 0) {
    const known = s.reduce((a, d, i) => (i === free ? a : a * d), 1);
    if (known === 0 || x.size % known !== 0) throw new Error(`reshape: cannot reshape ${x.describe()} to ${fmt(shape)}`);
    s[free] = x.size / known;
  }
  if (sizeOf(s) !== x.size) throw new Error(`reshape: cannot reshape ${x.describe()} (${x.size} elements) to ${fmt(shape)} (${sizeOf(s)} elements)`);
  const out = viewOf(x, s);
  return record('reshape', [x], out, [], (g) => [reshape(g, x.shape)]);
}

export const flatten = (x: Tensor) => reshape(x, [x.size]);

/** Inserts a size-1 axis. */
export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = axis < 0 ? axis + x.rank + 1 : axis;
  const s = [...x.shape];
  s.splice(a, 0, 1);
  return reshape(x, s);
}

/** Removes size-1 axes (all, or the given one). */
export function squeeze(x: Tensor, axis?: number): Tensor {
  if (axis === undefined) return reshape(x, x.shape.filter((d) => d !== 1));
  const a = normAxis('squeeze', axis, x.rank);
  if (x.shape[a] !== 1) throw new Error(`squeeze: axis ${axis} of ${x.describe()} has size ${x.shape[a]}, not 1`);
  return reshape(x, x.shape.filter((_, i) => i !== a));
}

/** Broadcasts to `shape` (NumPy rules), materialised. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const to = broadcastShapes('expand', x.shape, shape);
  if (to.join() !== shape.join()) throw new Error(`expand: ${x.describe()} cannot be expanded to ${fmt(shape)}`);
  const out = new Tensor(x.device, shape, x.dtype);
  copyStrided('expand', shape, x, broadcastStrides(x.shape, shape), 0, out, contiguousStrides(shape), 0);
  return record('expand', [x], out, [], (g) => [g]); // backward() sums g back to x's shape
}

/** The contiguous copy of x with its axes reordered (out.shape[i] = x.shape[perm[i]]), not recorded. */
function permuted(x: Tensor, perm: readonly number[], op: string): Tensor {
  const src = contiguousStrides(x.shape);
  const shape = perm.map((p) => x.shape[p]);
  const out = new Tensor(x.device, shape, x.dtype);
  copyStrided(op, shape, x, perm.map((p) => src[p]), 0, out, contiguousStrides(shape), 0);
  return out;
}

/** Reorders axes: out.shape[i] = x.shape[perm[i]]. */
export function permute(x: Tensor, perm: readonly number[]): Tensor {
  if (perm.length !== x.rank || [...perm].sort((a, b) => a - b).some((p, i) => p !== i)) {
    throw new Error(`permute: ${JSON.stringify(perm)} is not a permutation of the axes of ${x.describe()}`);
  }
  const out = permuted(x, perm, 'permute');
  const inverse = new Array<number>(perm.length);
  perm.forEach((p, i) => { inverse[p] = i; });
  return record('permute', [x], out, [], (g) => [permute(g, inverse)]);
}

/**
 * x with its last two axes swapped, as a new contiguous tensor that autograd does not see: for an
 * op that re-lays an operand inside its own forward (matmul on software adapters reads a B laid
 * out along n four columns at a time).
 */
export function relayLastTwo(x: Tensor, op: string): Tensor {
  const r = x.rank;
  return permuted(x, Array.from({ length: r }, (_, i) => (i === r - 2 ? r - 1 : i === r - 1 ? r - 2 : i)), op);
}

/** Swaps two axes (default: the last two). */
export function transpose(x: Tensor, a = -2, b = -1): Tensor {
  const perm = Array.from({ length: x.rank }, (_, i) => i);
  const i = normAxis('transpose', a, x.rank), j = normAxis('transpose', b, x.rank);
  [perm[i], perm[j]] = [perm[j], perm[i]];
  return permute(x, perm);
}

/**
 * x[starts[0]:ends[0], ...] with optional positive steps; missing trailing axes are taken whole.
 * Negative starts/ends count from the end; bounds are clamped as in Python.
 */
export function slice(x: Tensor, starts: readonly number[], ends?: readonly (number | undefined)[], steps?: readonly number[]): Tensor {
  if (starts.length > x.rank) throw new Error(`slice: ${starts.length} starts for ${x.describe()}`);
  const src = contiguousStrides(x.shape);
  const shape: number[] = [], strides: number[] = [], begin: number[] = [];
  let offset = 0;
  for (let d = 0; d < x.rank; d++) {
    const n = x.shape[d];
    const step = steps?.[d] ?? 1;
    if (!Number.isInteger(step) || step < 1) throw new Error(`slice: step ${step} on axis ${d} must be a positive integer`);
    const norm = (v: number) => Math.min(Math.max(v < 0 ? v + n : v, 0), n);
    const s = d < starts.length ? norm(starts[d]) : 0;
    const e = ends?.[d] === undefined ? n : norm(ends[d]!);
    const len = Math.max(0, Math.ceil((e - s) / step));
    shape.push(len); strides.push(src[d] * step); begin.push(s);
    offset += s * src[d];
  }
  const out = new Tensor(x.device, shape, x.dtype);
  copyStrided('slice', shape, x, strides, offset, out, contiguousStrides(shape), 0);
  return record('slice', [x], out, [], (g) => {
    const gx = new Tensor(g.device, x.shape, g.dtype);
    fill0(gx);
    copyStrided('slice_grad', shape, g, contiguousStrides(shape), 0, gx, strides, offset);
    return [gx];
  });
}

/** Joins tensors along an axis. */
export function concat(xs: readonly Tensor[], axis = 0): Tensor {
  if (!xs.length) throw new Error('concat: no tensors');
  const a = normAxis('concat', axis, xs[0].rank);
  for (const t of xs) {
    if (t.rank !== xs[0].rank || t.dtype !== xs[0].dtype || t.shape.some((d, i) => i !== a && d !== xs[0].shape[i])) {
      throw new Error(`concat: shapes ${xs.map((t) => t.describe()).join(', ')} do not match outside axis ${a}`);
    }
  }
  const shape = [...xs[0].shape];
  shape[a] = xs.reduce((s, t) => s + t.shape[a], 0);
  const out = new Tensor(xs[0].device, shape, xs[0].dtype);
  const dst = contiguousStrides(shape);
  let at = 0;
  const starts: number[] = [];
  for (const t of xs) {
    starts.push(at);
    copyStrided('concat', t.shape, t, contiguousStrides(t.shape), 0, out, dst, at * dst[a]);
    at += t.shape[a];
  }
  return record('concat', xs, out, [], (g) => xs.map((t, k) => {
    if (!t.requiresGrad) return null;
    const s = new Array<number>(t.rank).fill(0);
    const e: (number | undefined)[] = new Array(t.rank).fill(undefined);
    s[a] = starts[k]; e[a] = starts[k] + t.shape[a];
    return slice(g, s, e);
  }));
}

/** Stacks same-shaped tensors along a new axis. */
export function stack(xs: readonly Tensor[], axis = 0): Tensor {
  const views = xs.map((t) => unsqueeze(t, axis));
  const out = concat(views, axis);
  for (const v of views) v.dispose();
  return out;
}

/** Pads with a constant: `pads` lists [before, after] per axis from the first (missing = 0). */
export function pad(x: Tensor, pads: readonly (readonly [number, number])[], value = 0): Tensor {
  if (pads.length > x.rank) throw new Error(`pad: ${pads.length} pad pairs for ${x.describe()}`);
  const shape = x.shape.map((d, i) => d + (pads[i]?.[0] ?? 0) + (pads[i]?.[1] ?? 0));
  if (pads.some(([b, e]) => b < 0 || e < 0 || !Number.isInteger(b) || !Number.isInteger(e))) throw new Error(`pad: pads ${JSON.stringify(pads)} must be non-negative integers (use slice to crop)`);
  const out = new Tensor(x.device, shape, x.dtype);
  runMap({ name: 'fill', inTypes: [], outType: out.dtype, ctype: ctype(out.dtype), expr: `${ctype(out.dtype)}(P.s0)` },
    shape, [], { t: out, strides: contiguousStrides(shape) }, [value, 0], `pad(${x.describe()})`);
  const dst = contiguousStrides(shape);
  const offset = x.shape.reduce((s, _, i) => s + (pads[i]?.[0] ?? 0) * dst[i], 0);
  copyStrided('pad', x.shape, x, contiguousStrides(x.shape), 0, out, dst, offset);
  return record('pad', [x], out, [], (g) => [slice(g, x.shape.map((_, i) => pads[i]?.[0] ?? 0), x.shape.map((d, i) => (pads[i]?.[0] ?? 0) + d))]);
}

/** A tensor filled with one value. */
export function full(shape: readonly number[], value: number, dtype: DType = 'f32', device = undefined as Tensor['device'] | undefined): Tensor {
  const dev = device ?? getDevice();
  const out = new Tensor(dev, shape, dtype);
  runMap({ name: 'fill', inTypes: [], outType: dtype, ctype: ctype(dtype), expr: `${ctype(dtype)}(P.s0)` },
    shape, [], { t: out, strides: contiguousStrides(shape) }, [value, 0], `full(${fmt(shape)})`);
  return out;
}
export const zeros = (shape: readonly number[], dtype: DType = 'f32', device?: Tensor['device']) => full(shape, 0, dtype, device);
export const ones = (shape: readonly number[], dtype: DType = 'f32', device?: Tensor['device']) => full(shape, 1, dtype, device);
export const zerosLike = (x: Tensor) => full(x.shape, 0, x.dtype, x.device);
export const onesLike = (x: Tensor) => full(x.shape, 1, x.dtype, x.device);

/** start, start+step, ... below end. */
export function arange(start: number, end?: number, step = 1, dtype: DType = 'f32', device?: Tensor['device']): Tensor {
  if (end === undefined) { end = start; start = 0; }
  if (step === 0) throw new Error('arange: step must not be 0');
  const n = Math.max(0, Math.ceil((end - start) / step));
  const dev = device ?? getDevice();
  const out = new Tensor(dev, [n], dtype);
  const ct = ctype(dtype);
  // Index arithmetic in the output's own type: exact for integers.
  runMap({ name: 'arange', inTypes: [], outType: dtype, ctype: ct, expr: `${ct}(P.s0) + ${ct}(P.obase + o0) * ${ct}(P.s1)` },
    [n], [], { t: out, strides: [1] }, [start, step], `arange(${start}, ${end}, ${step})`);
  return out;
}

import { getDefaultDevice as getDevice } from '../tensor.js';
export { fill0 as _fillZero };
