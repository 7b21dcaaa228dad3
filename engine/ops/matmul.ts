// matmul: batched matrix products with NumPy batch broadcasting, transposes as strides, and the
// binding-limit split (batch first, then rows of M).

import { record } from '../autograd.js';
import { bytesOf } from '../dtype.js';
import { planChunks } from '../chunk.js';
import { MAX_RANK, contiguousStrides, fmt, sizeOf } from '../shape.js';
import { Tensor } from '../tensor.js';
import { kernelFamily } from '../kernel-family.js';
import { matmulLayout, selectMatmulVariant, vec4BApplies } from '../../kernels/matmul.js';
import { cast } from './elementwise.js';
import { full, relayLastTwo, reshape } from './movement.js';

export interface MatmulOptions {
  /** Use the transpose of a's last two dims: a is [..., K, M]. */
  transA?: boolean;
  /** Use the transpose of b's last two dims: b is [..., N, K]. */
  transB?: boolean;
}

function describeCall(a: Tensor, b: Tensor, transA: boolean, transB: boolean): string {
  const flags = [transA ? 'transA' : '', transB ? 'transB' : ''].filter(Boolean).join(', ');
  return `matmul(${a.describe()}, ${b.describe()}${flags ? `, ${flags}` : ''})`;
}

/**
 * a · b over the last two dims, batch dims broadcast as in NumPy. a is [..., M, K] ([..., K, M]
 * with transA), b is [..., K, N] ([..., N, K] with transB). A 1-D a is a row vector [K] and a 1-D
 * b a column vector [K]; their dim is dropped from the result (trans flags do not apply to them).
 * f32 or f16 (both alike); accumulation is always f32.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const transA = !!opts.transA, transB = !!opts.transB;
  const label = describeCall(a, b, transA, transB);
  if (a.device !== b.device) throw new Error(`${label}: tensors live on different devices`);
  if (a.dtype !== b.dtype) throw new Error(`${label}: dtypes differ (${a.dtype} vs ${b.dtype}); cast one of them`);
  if (a.dtype !== 'f32' && a.dtype !== 'f16') throw new Error(`${label}: matmul takes f32 or f16 tensors, not ${a.dtype}`);
  if (a.rank === 0 || b.rank === 0) throw new Error(`${label}: operands must have at least one dimension`);
  if (a.rank === 1 || b.rank === 1) {
    const a2 = a.rank === 1 ? reshape(a, [1, a.shape[0]]) : a;
    const b2 = b.rank === 1 ? reshape(b, [b.shape[0], 1]) : b;
    const out2 = matmul2(a2, b2, a.rank === 1 ? false : transA, b.rank === 1 ? false : transB, label);
    const shape = out2.shape.filter((_, i) => !((a.rank === 1 && i === out2.rank - 2) || (b.rank === 1 && i === out2.rank - 1)));
    const out = reshape(out2, shape);
    for (const t of [a2, b2, out2]) if (t !== a && t !== b) t.dispose();
    return out;
  }
  return matmul2(a, b, transA, transB, label);
}

interface Dims {
  M: number;
  N: number;
  K: number;
  batch: number[];
}

function dimsOf(a: Tensor, b: Tensor, transA: boolean, transB: boolean, label: string): Dims {
  const ra = a.rank, rb = b.rank;
  const M = transA ? a.shape[ra - 1] : a.shape[ra - 2];
  const Ka = transA ? a.shape[ra - 2] : a.shape[ra - 1];
  const Kb = transB ? b.shape[rb - 1] : b.shape[rb - 2];
  const N = transB ? b.shape[rb - 2] : b.shape[rb - 1];
  if (Ka !== Kb) throw new Error(`${label}: inner dimensions differ (A gives K=${Ka}, B gives K=${Kb})`);
  const ba = a.shape.slice(0, -2), bb = b.shape.slice(0, -2);
  const rank = Math.max(ba.length, bb.length);
  const batch = new Array<number>(rank).fill(1);
  for (const s of [ba, bb]) {
    s.forEach((d, i) => {
      const o = rank - s.length + i;
      if (d === batch[o] || d === 1) return;
      if (batch[o] === 1) batch[o] = d;
      else throw new Error(`${label}: batch dims ${fmt(ba)} and ${fmt(bb)} cannot be broadcast together`);
    });
  }
  if (rank + 2 > MAX_RANK) throw new Error(`${label}: the result would have rank ${rank + 2}, above the maximum ${MAX_RANK}`);
  return { M, N, K: Ka, batch };
}

function matmul2(a: Tensor, b: Tensor, transA: boolean, transB: boolean, label: string): Tensor {
  const d = dimsOf(a, b, transA, transB, label);
  const outShape = [...d.batch, d.M, d.N];
  const out = d.K === 0 ? full(outShape, 0, a.dtype, a.device) : new Tensor(a.device, outShape, a.dtype);
  if (d.K > 0) runMatmul(a, b, out, transA, transB, d, label);
  return record('matmul', [a, b], out, [a, b], (g, [as, bs]) => matmulBackward(g, as, bs, a, b, transA, transB, d));
}

/**
 * Writes op(a)·op(b) into out, which must be a contiguous [...batch, M, N] block of the right size
 * (its own shape is not consulted); not recorded for autograd. For ops that are a product inside
 * (a 1×1 convolution on software adapters) and own their output and backward.
 */
export function matmulInto(a: Tensor, b: Tensor, out: Tensor, opts: MatmulOptions, label: string): void {
  const transA = !!opts.transA, transB = !!opts.transB;
  const d = dimsOf(a, b, transA, transB, label);
  if (sizeOf([...d.batch, d.M, d.N]) !== out.size || out.dtype !== a.dtype) throw new Error(`${label}: matmulInto needs a ${a.dtype} output of ${sizeOf([...d.batch, d.M, d.N])} elements, got ${out.describe()}`);
  if (d.K > 0) runMatmul(a, b, out, transA, transB, d, label);
}

/**
 * dA = g·op(B)ᵀ and dB = op(A)ᵀ·g, arranged so that the trans flags become the other product's
 * flags (no transposes are materialised); backward() sums them over the batch dims that were broadcast.
 */
function matmulBackward(g0: Tensor, as: Tensor, bs: Tensor, a: Tensor, b: Tensor, transA: boolean, transB: boolean, d: Dims): (Tensor | null)[] {
  const g = g0.dtype === as.dtype ? g0 : cast(g0, as.dtype);
  const batchSize = sizeOf(d.batch);
  let ga: Tensor | null = null, gb: Tensor | null = null;
  if (a.requiresGrad) {
    const whole = transA ? matmul(bs, g, { transA: transB, transB: true }) : matmul(g, bs, { transB: !transB });
    ga = whole; // backward() sums broadcast batch dims
  }
  if (b.requiresGrad) {
    if (sizeOf(b.shape.slice(0, -2)) === 1 && sizeOf(a.shape.slice(0, -2)) === batchSize && !transA && batchSize > 1) {
      // B was shared by every batch element (a weight): fold the batch into the reduction, one
      // [K, N] product over batch·M rows instead of a [batch, K, N] intermediate summed afterwards.
      const a2 = reshape(as, [batchSize * d.M, d.K]);
      const g2 = reshape(g, [batchSize * d.M, d.N]);
      const flat = transB ? matmul(g2, a2, { transA: true }) : matmul(a2, g2, { transA: true });
      gb = reshape(flat, b.shape);
      for (const t of [a2, g2, flat]) t.dispose();
    } else {
      const whole = transB ? matmul(g, as, { transA: true, transB: transA }) : matmul(as, g, { transA: !transA });
      gb = whole; // backward() sums broadcast batch dims
    }
  }
  if (g !== g0) g.dispose();
  return [ga, gb];
}

/** Strides of one operand over the problem dims [...batch, M, N, K]. */
type OpStrides = number[];

/**
 * Drops size-1 batch dims and merges neighbours among [...batch, M] wherever every operand's
 * strides allow it: [B, T, K] × [K, N] becomes one [B·T, K] × [K, N] product, so small M per batch
 * element does not waste most of each tile. Results are unchanged bit for bit (the order over K
 * does not depend on where a row sits).
 */
function simplify(shape: number[], ops: OpStrides[]): { shape: number[]; ops: OpStrides[] } {
  const lead = shape.length - 2; // batch dims and M
  let s = shape.slice(0, lead);
  let st = ops.map((o) => o.slice(0, lead));
  const keep = s.map((n, i) => n !== 1 || i === lead - 1);
  s = s.filter((_, i) => keep[i]);
  st = st.map((o) => o.filter((_, i) => keep[i]));
  for (let i = s.length - 2; i >= 0; i--) {
    if (st.every((o) => o[i] === o[i + 1] * s[i + 1])) {
      s.splice(i, 2, s[i] * s[i + 1]);
      st = st.map((o) => { const c = o.slice(); c.splice(i, 2, o[i + 1]); return c; });
    }
  }
  return { shape: [...s, ...shape.slice(lead)], ops: st.map((o, k) => [...o, ...ops[k].slice(lead)]) };
}

function pad8(v: readonly number[]): number[] {
  const out = new Array<number>(MAX_RANK).fill(0);
  v.forEach((x, i) => { out[i] = x; });
  return out;
}

/**
 * Turns off the vec4-B twin of the software kernel (`enabled: false`), so that tests can check it
 * against the scalar kernel bit for bit. Default: on wherever B's layout allows it.
 */
export const matmulVec4BOverride: { enabled?: boolean } = {};

/** Writes op(a)·op(b) into out (contiguous [...batch, M, N]). */
function runMatmul(a: Tensor, b: Tensor, out: Tensor, transA: boolean, transB: boolean, d: Dims, label: string): void {
  const dev = out.device;
  const variant = selectMatmulVariant(kernelFamily(dev), dev, a.dtype);
  if (variant.sharedBytes > dev.limits.maxComputeWorkgroupStorageSize || variant.threads > dev.limits.maxComputeInvocationsPerWorkgroup) {
    throw new Error(`${label}: the ${variant.name} kernel needs ${variant.sharedBytes} bytes of workgroup memory and ${variant.threads} threads; this device allows ${dev.limits.maxComputeWorkgroupStorageSize} and ${dev.limits.maxComputeInvocationsPerWorkgroup}`);
  }
  const { M, N, K, batch } = d;
  const vec4 = matmulVec4BOverride.enabled === false ? undefined : variant.vec4B;
  if (transB && b.rank >= 2 && vec4 && N % 4 === 0 && M > 1) {
    // B is [..., N, K]: lay it out as [..., K, N] (a pass over B, against M passes over it in the
    // product) so that the vec4-B kernel reads it; same fmas in the same order, so same bits.
    const bt = relayLastTwo(b, label);
    try {
      runMatmul(a, bt, out, transA, false, d, label);
    } finally {
      bt.dispose(); // recorded work runs in order: the buffer is reused only after the product
    }
    return;
  }
  const br = batch.length;
  const batchStrides = (t: Tensor, perRow: number[]): number[] => {
    const cs = contiguousStrides(t.shape);
    const tb = t.rank - 2;
    return batch.map((n, o) => {
      const j = o - (br - tb);
      return j >= 0 && t.shape[j] !== 1 ? cs[j] : 0;
    }).concat(perRow);
  };
  const ka = a.shape[a.rank - 1], kb = b.shape[b.rank - 1], kc = N;
  // [...batch, M, N, K]: A has no N stride, B no M stride, C no K stride.
  const sA = batchStrides(a, transA ? [1, 0, ka] : [ka, 0, 1]);
  const sB = batchStrides(b, transB ? [0, kb, 1] : [0, 1, kb]);
  const sC = contiguousStrides(batch).map((s) => s * M * N).concat([kc, 1, 0]);
  const simple = simplify([...batch, M, N, K], [sA, sB, sC]);

  const bufs = [a.buffer('matmul'), b.buffer('matmul'), out.buffer('matmul')];
  const align = dev.limits.minStorageBufferOffsetAlignment;
  // B is never split (only batch and rows of M are): one batch element of it must fit.
  const sb = simple.ops[1], rank = simple.shape.length;
  const bElems = (N - 1) * sb[rank - 2] + (K - 1) * sb[rank - 1] + 1;
  const bBytes = bElems * bytesOf(b.dtype);
  if (bBytes + align > dev.maxBindingBytes) {
    throw new Error(`${label}: one batch element of B (${transB ? `[${N},${K}]` : `[${K},${N}]`} ${b.dtype}, ${bBytes} bytes) does not fit the storage binding limit of ${dev.maxBindingBytes} bytes; split the product along N (multiply by column blocks of B and concat) or reduce K·N`);
  }
  const chunks = planChunks(label, simple.shape, simple.ops.map((strides, k) => ({
    strides, offset: 0, elementBytes: bytesOf(out.dtype), bufferBytes: bufs[k].size,
  })), dev.maxBindingBytes, align, rank - 2);

  const maxG = dev.limits.maxComputeWorkgroupsPerDimension;
  for (const ch of chunks) {
    const r = ch.shape.length;
    const bshape = ch.shape.slice(0, r - 3);
    const [oa, ob, oc] = ch.operands;
    const m = ch.shape[r - 3];
    const v = vec4 && vec4BApplies(N, ob.strides[r - 2], ob.strides[r - 1], ob.offset, ob.strides.slice(0, r - 3)) ? vec4 : variant;
    const gx = Math.ceil(N / v.tileN), gy = Math.ceil(m / v.tileM), gz = sizeOf(bshape);
    const base = {
      bshape: pad8(bshape), bsA: pad8(oa.strides.slice(0, r - 3)), bsB: pad8(ob.strides.slice(0, r - 3)), bsC: pad8(oc.strides.slice(0, r - 3)),
      brank: bshape.length, M: m, N, K,
      sAm: oa.strides[r - 3], sAk: oa.strides[r - 1], sBk: ob.strides[r - 1], sBn: ob.strides[r - 2], sCm: oc.strides[r - 3], sCn: oc.strides[r - 2],
      offA: oa.offset, offB: ob.offset, offC: oc.offset,
      aKFast: oa.strides[r - 1] === 1 ? 1 : 0, bNFast: ob.strides[r - 2] === 1 ? 1 : 0,
    };
    // More than 65,535 workgroups along a dimension: several dispatches, each told its base.
    for (let z = 0; z < gz; z += maxG) {
      for (let y = 0; y < gy; y += maxG) {
        for (let x = 0; x < gx; x += maxG) {
          dev.dispatch({
            label,
            key: v.key(a.dtype),
            code: () => v.code(a.dtype),
            reads: [{ buffer: bufs[0], offset: oa.windowOffset, size: oa.windowSize }, { buffer: bufs[1], offset: ob.windowOffset, size: ob.windowSize }],
            writes: [{ buffer: bufs[2], offset: oc.windowOffset, size: oc.windowSize }],
            params: matmulLayout.pack({ ...base, xbase: x, ybase: y, zbase: z }),
            groups: [Math.min(maxG, gx - x), Math.min(maxG, gy - y), Math.min(maxG, gz - z)],
          });
        }
      }
    }
  }
}
