// softmax and logSoftmax over any axis, with fused backward kernels (kernels/softmax.ts).
//
// The axis is read through strides (no permute): a contiguous tensor is viewed as
// [pre, post, L] with strides [L·post, 1, post], rows being the (pre, post) pairs. Rows are never
// split across chunks, so a row's result does not depend on the binding limit or the batch.

import { record } from '../autograd.js';
import { DType, bytesOf, isFloat } from '../dtype.js';
import { planChunks } from '../chunk.js';
import { normAxis, sameShape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { WG, grid } from '../../kernels/common.js';
import { kernelFamily } from '../kernel-family.js';
import { SOFTMAX_SEQ_LIMIT, SoftmaxVariant, softmaxKey, softmaxLayout, softmaxWGSL } from '../../kernels/softmax.js';

/** Runs one softmax-family kernel over the rows along `axis` of same-shaped tensors. */
function runRows(v: SoftmaxVariant, log: boolean, inputs: Tensor[], outType: DType, axis: number, label: string): Tensor {
  const x = inputs[0];
  const dev = x.device;
  for (const t of inputs) if (t.device !== dev) throw new Error(`${label}: tensors live on different devices`);
  const out = new Tensor(dev, x.shape, outType);
  if (out.size === 0) return out;
  const L = x.shape[axis];
  const pre = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const post = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const all = [...inputs, out];
  const buffers = all.map((t) => t.buffer(label));
  const chunks = planChunks(label, [pre, post, L], all.map((t, k) => ({
    strides: [L * post, 1, post], offset: 0, elementBytes: bytesOf(t.dtype), bufferBytes: buffers[k].size,
  })), dev.maxBindingBytes, dev.limits.minStorageBufferOffsetAlignment, 2);
  // Software adapters pay for every barrier of the workgroup tree (a coroutine switch each):
  // there a thread walks its whole row for any L. The order depends on L and the device only.
  const mode = L <= SOFTMAX_SEQ_LIMIT || kernelFamily(dev) === 'software' ? 'seq' : 'wg';
  const inTypes = inputs.map((t) => t.dtype);
  for (const ch of chunks) {
    const st = ch.operands[0].strides;
    // A chunk is [c, post, L] (split on pre) or [c, L] (split on post within one pre index).
    const [nrows, o1, s0, s1] = ch.shape.length === 3
      ? [ch.shape[0] * ch.shape[1], ch.shape[1], st[0], st[1]]
      : [ch.shape[0], ch.shape[0], 0, st[0]];
    const ls = st[st.length - 1];
    dev.dispatch({
      label,
      key: softmaxKey(v, mode, inTypes, outType),
      code: () => softmaxWGSL(v, mode, inTypes, outType),
      reads: ch.operands.slice(0, inputs.length).map((o, k) => ({ buffer: buffers[k], offset: o.windowOffset, size: o.windowSize })),
      writes: [{ buffer: buffers[inputs.length], offset: ch.operands[inputs.length].windowOffset, size: ch.operands[inputs.length].windowSize }],
      params: softmaxLayout.pack({ offs: ch.operands.map((o) => o.offset), nrows, o1: Math.max(o1, 1), s0, s1, len: L, ls, log: log ? 1 : 0 }),
      groups: grid(mode === 'seq' ? Math.ceil(nrows / WG) : nrows, dev.limits.maxComputeWorkgroupsPerDimension),
    });
  }
  return out;
}

function family(op: 'softmax' | 'logSoftmax', x: Tensor, axis: number): Tensor {
  if (!isFloat(x.dtype)) throw new Error(`${op}: ${x.describe()} is not a float tensor`);
  if (x.rank === 0) throw new Error(`${op}: ${x.describe()} is a scalar; it has no axis ${axis}`);
  const a = normAxis(op, axis, x.rank);
  const log = op === 'logSoftmax';
  const y = runRows('fwd', log, [x], x.dtype, a, `${op}(${x.describe()}, axis=${axis})`);
  return record(op, [x], y, [y], (g, [ys]) => {
    if (!sameShape(g.shape, ys.shape)) throw new Error(`${op} backward: gradient ${g.describe()} does not match ${ys.describe()}`);
    return [runRows('grad', log, [ys, g], g.dtype, a, `${op} backward(${g.describe()}, axis=${axis})`)];
  });
}

/**
 * exp(x − max) / Σ exp(x − max) along `axis` (default the last). f32 arithmetic; f16 inputs give
 * f16 outputs. Very negative entries (masks) get probability 0: prefer a finite mask such as
 * -1e30, since WGSL lets devices treat infinities loosely (on lavapipe -inf works, and a row of
 * only -inf gives NaN, as in PyTorch). Backward: dx = y·(g − Σ g·y), one fused kernel reading
 * the saved output.
 */
export function softmax(x: Tensor, axis = -1): Tensor {
  return family('softmax', x, axis);
}

/**
 * x − max − log Σ exp(x − max) along `axis` (default the last). Backward: dx = g − exp(y)·Σ g,
 * one fused kernel reading the saved output.
 */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  return family('logSoftmax', x, axis);
}
