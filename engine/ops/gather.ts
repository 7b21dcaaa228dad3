// indexSelect and embedding: rows of a tensor picked by integer indices (kernels/gather.ts).
//
// Out-of-range indices (negative i32, or ≥ the axis size) cannot throw inside a kernel: they
// produce ZERO rows, and receive no gradient. When the indices come from a host array, both ops
// check them first and throw naming the op and the bad index (checkIndices), which is cheap.
//
// Binding limit: the indexed tensor is bound in windows of whole rows (and the output in
// windows of positions), so a table larger than maxBindingBytes (CLIP's 49408×768 f32 token
// table is 145 MiB against lavapipe's 128 MiB) runs as several dispatches.
//
// Backward cost (deterministic, no atomics): one zero-fill of a gradient as large as x, an
// O(n²) pass over the n indices (integer compares only, n threads), and one thread per
// (pre, first occurrence, post) element summing its gradient rows in position order: O(pre·n·post)
// reads. The O(n²) pass is negligible for token batches (n ≲ 10⁴); for far more indices, sort
// and de-duplicate them on the host instead.

import { record } from '../autograd.js';
import { bytesOf } from '../dtype.js';
import { fmt, normAxis } from '../shape.js';
import { Tensor, tensor } from '../tensor.js';
import { WG, grid } from '../../kernels/common.js';
import { IndexType, gatherGradWGSL, gatherKey, gatherLayout, gatherWGSL, linksWGSL } from '../../kernels/gather.js';
import { zeros } from './movement.js';

/** Throws unless every id is an integer in [0, size). */
export function checkIndices(op: string, ids: ArrayLike<number>, size: number): void {
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i];
    if (!Number.isInteger(v) || v < 0 || v >= size) throw new Error(`${op}: index ${v} at position ${i} is out of range [0, ${size})`);
  }
}

type Indices = Tensor | ArrayLike<number>;

/** The indices as a tensor (uploading and checking host arrays); `owned` when we made it. */
function indexTensor(op: string, ids: Indices, size: number, x: Tensor, shape?: readonly number[]): { t: Tensor; owned: boolean } {
  if (ids instanceof Tensor) {
    if (ids.dtype !== 'i32' && ids.dtype !== 'u32') throw new Error(`${op}: indices ${ids.describe()} must be i32 or u32 (for ${x.describe()})`);
    if (ids.device !== x.device) throw new Error(`${op}: indices ${ids.describe()} and ${x.describe()} live on different devices`);
    return { t: ids, owned: false };
  }
  checkIndices(op, ids, size);
  return { t: tensor(ids, shape ?? [ids.length], 'i32', x.device), owned: true };
}

interface Window { offset: number; size: number; elem: number }

/** A binding window holding elements [base, base + elems) of `buffer`, starting on an aligned byte offset. */
function windowOf(buffer: GPUBuffer, base: number, elems: number, eb: number, align: number): Window {
  const start = base * eb;
  const offset = Math.floor(start / align) * align;
  const end = Math.min(buffer.size, Math.ceil(((base + elems) * eb) / 4) * 4);
  return { offset, size: Math.max(4, end - offset), elem: (start - offset) / eb };
}

interface Plan { cp: number; cv: number; ck: number }

/**
 * How many pre-rows (cp), table rows (cv) and index positions (ck) one dispatch may cover so that
 * every binding fits. `outRows` is the binding whose size grows with cp·ck·post (forward: the
 * output; backward: the incoming gradient, which cannot be split along positions).
 */
function plan(label: string, pre: number, V: number, post: number, n: number, xb: number, ob: number, limit: number, align: number, splitPositions: boolean): Plan {
  const room = limit - align;
  const most = (unit: number) => Math.floor(room / unit);
  let cp: number, cv: number;
  if (V * post * xb <= room) { cv = V; cp = Math.max(1, Math.min(pre, most(V * post * xb))); }
  else { cp = 1; cv = most(post * xb); }
  if (cv < 1) throw new Error(`${label}: one row of ${post * xb} bytes exceeds the binding limit of ${limit} bytes`);
  let ck = n;
  if (cp * n * post * ob > room) {
    if (n * post * ob <= room) cp = Math.max(1, most(n * post * ob));
    else if (!splitPositions) throw new Error(`${label}: the gradient's ${n * post * ob} bytes per leading index exceed the binding limit of ${limit} bytes`);
    else { cp = 1; ck = most(post * ob); }
  }
  if (ck * 4 > room) {
    if (!splitPositions) throw new Error(`${label}: ${n} indices exceed the binding limit of ${limit} bytes`);
    ck = most(4);
  }
  if (ck < 1) throw new Error(`${label}: one output row of ${post * ob} bytes exceeds the binding limit of ${limit} bytes`);
  return { cp, cv, ck: Math.max(1, ck) };
}

/**
 * out = x with axis `axis` replaced by idx's shape: out[..., k..., ...] = x[..., idx[k...], ...].
 * Records a backward to x that sums gradient rows per selected index.
 */
function gatherAlong(op: string, x: Tensor, axis: number, idx: Tensor, label: string): Tensor {
  const dev = x.device;
  const V = x.shape[axis];
  const pre = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const post = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const n = idx.size;
  const outShape = [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)];
  const out = new Tensor(dev, outShape, x.dtype);
  const it = idx.dtype as IndexType;
  if (out.size > 0) {
    const align = dev.limits.minStorageBufferOffsetAlignment;
    const xb = bytesOf(x.dtype);
    // An empty table axis: every index is out of range, so the output is all zeros.
    const p = plan(label, pre, Math.max(V, 1), post, n, xb, xb, dev.maxBindingBytes, align, true);
    const xBuf = x.buffer(op), iBuf = idx.buffer(op), oBuf = out.buffer(op);
    for (let p0 = 0; p0 < pre; p0 += p.cp) {
      const cp = Math.min(p.cp, pre - p0);
      for (let k0 = 0; k0 < n; k0 += p.ck) {
        const ck = Math.min(p.ck, n - k0);
        const ow = windowOf(oBuf, (p0 * n + k0) * post, ((cp - 1) * n + ck) * post, xb, align);
        const iw = windowOf(iBuf, k0, ck, 4, align);
        for (let v0 = 0; v0 < Math.max(V, 1); v0 += p.cv) {
          const cv = Math.min(p.cv, V - v0);
          const xw = V === 0 ? { offset: 0, size: Math.min(xBuf.size, 4), elem: 0 } : windowOf(xBuf, (p0 * V + v0) * post, ((cp - 1) * V + cv) * post, xb, align);
          dev.dispatch({
            label,
            key: gatherKey('fwd', x.dtype, it, x.dtype),
            code: () => gatherWGSL(x.dtype, it),
            reads: [{ buffer: xBuf, offset: xw.offset, size: xw.size }, { buffer: iBuf, offset: iw.offset, size: iw.size }],
            writes: [{ buffer: oBuf, offset: ow.offset, size: ow.size }],
            params: gatherLayout.pack({
              total: cp * ck * post, ck, post, xps: V * post, ops: n * post, vtot: V, v0, cv: Math.max(cv, 0),
              xoff: xw.elem, ioff: iw.elem, ooff: ow.elem, n,
            }),
            groups: grid(Math.ceil((cp * ck * post) / WG), dev.limits.maxComputeWorkgroupsPerDimension),
          });
        }
      }
    }
  }
  return record(op, [x], out, [idx], (g, [is]) => [gatherGrad(op, x.shape, axis, is, g)]);
}

/** The gradient of gatherAlong with respect to x: per table row, the sum of its positions' gradient rows. */
function gatherGrad(op: string, xShape: readonly number[], axis: number, idx: Tensor, g: Tensor): Tensor {
  const dev = g.device;
  const label = `${op} backward(${g.describe()} -> ${fmt(xShape)}, indices ${idx.describe()})`;
  const gx = zeros(xShape, g.dtype, dev);
  const V = xShape[axis];
  const pre = xShape.slice(0, axis).reduce((a, b) => a * b, 1);
  const post = xShape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const n = idx.size;
  if (gx.size === 0 || n === 0) return gx;
  const it = idx.dtype as IndexType;
  const align = dev.limits.minStorageBufferOffsetAlignment;
  const gb = bytesOf(g.dtype);
  const p = plan(label, pre, V, post, n, gb, gb, dev.maxBindingBytes, align, false);
  const iBuf = idx.buffer(op);
  if (n * 8 > dev.maxBindingBytes) throw new Error(`${label}: ${n} indices need ${n * 8} bytes of links, above the binding limit of ${dev.maxBindingBytes} bytes`);
  const links = new Tensor(dev, [2 * n], 'u32');
  const lBuf = links.buffer(op);
  dev.dispatch({
    label,
    key: gatherKey('links', 'u32', it, 'u32'),
    code: () => linksWGSL(it),
    reads: [{ buffer: iBuf, offset: 0, size: iBuf.size }],
    writes: [{ buffer: lBuf, offset: 0, size: lBuf.size }],
    params: gatherLayout.pack({ n }),
    groups: grid(Math.ceil(n / WG), dev.limits.maxComputeWorkgroupsPerDimension),
  });
  const gBuf = g.buffer(op), xBuf = gx.buffer(op);
  for (let p0 = 0; p0 < pre; p0 += p.cp) {
    const cp = Math.min(p.cp, pre - p0);
    const gw = windowOf(gBuf, p0 * n * post, cp * n * post, gb, align);
    for (let v0 = 0; v0 < V; v0 += p.cv) {
      const cv = Math.min(p.cv, V - v0);
      const xw = windowOf(xBuf, (p0 * V + v0) * post, ((cp - 1) * V + cv) * post, gb, align);
      dev.dispatch({
        label,
        key: gatherKey('grad', g.dtype, it, g.dtype),
        code: () => gatherGradWGSL(g.dtype, it, g.dtype),
        reads: [{ buffer: gBuf, offset: gw.offset, size: gw.size }, { buffer: iBuf, offset: 0, size: iBuf.size }, { buffer: lBuf, offset: 0, size: lBuf.size }],
        writes: [{ buffer: xBuf, offset: xw.offset, size: xw.size }],
        params: gatherLayout.pack({
          total: cp * n * post, ck: n, post, xps: V * post, ops: n * post, vtot: V, v0, cv,
          xoff: xw.elem, ioff: 0, ooff: gw.elem, n,
        }),
        groups: grid(Math.ceil((cp * n * post) / WG), dev.limits.maxComputeWorkgroupsPerDimension),
      });
    }
  }
  links.dispose();
  return gx;
}

/**
 * Rows of x along `axis` picked by 1-D integer indices (like torch.index_select): the output is
 * x.shape with axis replaced by indices.length. Indices: an i32/u32 tensor (out-of-range → zero
 * rows) or a host array (checked: throws on an out-of-range index).
 */
export function indexSelect(x: Tensor, axis: number, indices: Indices): Tensor {
  const a = normAxis('indexSelect', axis, x.rank);
  const shapeOf = (i: Indices) => (i instanceof Tensor ? i.describe() : `${i.length} host indices`);
  const label = `indexSelect(${x.describe()}, axis=${axis}, ${shapeOf(indices)})`;
  if (x.rank === 0) throw new Error(`${label}: cannot index a scalar`);
  if (indices instanceof Tensor && indices.rank !== 1) throw new Error(`${label}: indices must be 1-D (use embedding for any shape)`);
  const { t, owned } = indexTensor('indexSelect', indices, x.shape[a], x);
  try {
    return gatherAlong('indexSelect', x, a, t, label);
  } finally {
    if (owned) t.dispose();
  }
}

/**
 * Embedding lookup: table [V, D], ids of any shape → [...ids.shape, D]. ids: an i32/u32 tensor
 * (out-of-range ids give zero vectors) or a host array with `shape` (checked: throws). The
 * gradient to the table sums the gradients of the positions that picked each row, in position
 * order; rows never picked get zero.
 */
export function embedding(table: Tensor, ids: Indices, shape?: readonly number[]): Tensor {
  const shapeOf = (i: Indices) => (i instanceof Tensor ? i.describe() : `${i.length} host ids`);
  const label = `embedding(${table.describe()}, ${shapeOf(ids)})`;
  if (table.rank !== 2) throw new Error(`${label}: the table must be 2-D [V, D]`);
  if (shape && !(ids instanceof Tensor) && shape.reduce((a, b) => a * b, 1) !== ids.length) {
    throw new Error(`${label}: shape ${fmt(shape)} does not hold ${ids.length} ids`);
  }
  const { t, owned } = indexTensor('embedding', ids, table.shape[0], table, shape);
  try {
    return gatherAlong('embedding', table, 0, t, label);
  } finally {
    if (owned) t.dispose();
  }
}
