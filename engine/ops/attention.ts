// Scaled dot-product attention: softmax(q·kᵀ·scale + mask)·v over heads, memory-efficient.
//
// The kernels (kernels/attention.ts) stream key blocks past query blocks with an online softmax,
// so the Lq×Lk score matrix is never stored: the forward saves only the output and the per-row
// logsumexp (f32); the backward recomputes scores block by block in two deterministic passes
// (dQ over query blocks; dK and dV over key blocks), with no atomics.
//
// The binding limit is met by chunking along the flattened (batch, head) index: each dispatch
// binds a window of every tensor covering a range of heads. One head's q, k, v (and mask) slice
// must fit in a binding.

import { kernelFamily } from '../kernel-family.js';
import { record } from '../autograd.js';
import { DType, bytesOf } from '../dtype.js';
import { broadcastShapes, broadcastStrides, fmt, sizeOf } from '../shape.js';
import { Tensor } from '../tensor.js';
import { Device } from '../device.js';
import { grid } from '../../kernels/common.js';
import {
  ATTN_STATS_WG, AttnKernel, attentionTiles, attnBindings, attnKey, attnLayout, attnStatsKey, attnStatsWGSL, attnWGSL,
} from '../../kernels/attention.js';
import { ROWS_DMAX, ROWS_WG, attnRowsKey, attnRowsWGSL } from '../../kernels/attention-rows.js';
import { attentionProducts, attentionProductsApply } from './attention-products.js';
import { cast } from './elementwise.js';
import { expand } from './movement.js';

export interface AttentionOptions {
  /** Additive mask broadcastable to [B, H, Lq, Lk] (e.g. CLIP's causal mask as [Lq, Lk] with −1e9 above the diagonal). */
  mask?: Tensor | null;
  /** Multiplies q·kᵀ; default 1/sqrt(D). */
  scale?: number;
}

/** A tensor bound per head: element offset of head g is g·span (contiguous), or via mask strides. */
interface Operand {
  name: string;
  t: Tensor;
  /** Elements one head touches (from its head offset). */
  span: number;
  /** Head offset in elements of global head index g. */
  headOffset: (g: number) => number;
}

interface Problem {
  label: string;
  dev: Device;
  dtype: DType;
  N: number;
  Lq: number;
  Lk: number;
  D: number;
  Dv: number;
  scale: number;
  mask: MaskLayout | null;
}

/** The mask read through strides: head g = (g / hh, g % hh) with strides (sb, sh). */
interface MaskLayout {
  t: Tensor;
  hh: number;
  sb: number;
  sh: number;
  sq: number;
  sk: number;
  span: number;
}

const contiguous = (name: string, t: Tensor, span: number): Operand => ({ name, t, span, headOffset: (g) => g * span });

function maskOperand(m: MaskLayout): Operand {
  return { name: 'mask', t: m.t, span: m.span, headOffset: (g) => Math.floor(g / m.hh) * m.sb + (g % m.hh) * m.sh };
}

interface Window { offset: number; windowOffset: number; windowSize: number }

function windowOf(op: Operand, g0: number, g1: number, align: number): Window {
  const eb = bytesOf(op.t.dtype);
  const start = op.headOffset(g0) * eb;
  const end = Math.min(op.t.buffer().size, Math.ceil(((op.headOffset(g1 - 1) + op.span) * eb) / 4) * 4);
  const windowOffset = Math.floor(start / align) * align;
  return { windowOffset, windowSize: Math.max(4, end - windowOffset), offset: (start - windowOffset) / eb };
}

/**
 * Ranges [g0, g1) of heads whose windows all fit the binding limit. Head offsets only grow with
 * g, so a range's window runs from its first head's offset to its last head's end.
 */
function planHeads(p: Problem, ops: Operand[]): [number, number][] {
  const limit = p.dev.maxBindingBytes;
  const align = p.dev.limits.minStorageBufferOffsetAlignment;
  const fits = (g0: number, g1: number) => ops.every((o) => windowOf(o, g0, g1, align).windowSize <= limit);
  for (const o of ops) {
    if (o.span * bytesOf(o.t.dtype) + align > limit) {
      throw new Error(`${p.label}: one head's slice of ${o.name} ${o.t.describe()} (${o.span * bytesOf(o.t.dtype)} bytes) exceeds the binding limit of ${limit} bytes; use shorter sequences or smaller heads`);
    }
  }
  const ranges: [number, number][] = [];
  for (let g0 = 0; g0 < p.N;) {
    let lo = 1, hi = p.N - g0;
    while (lo < hi) {
      const mid = Math.ceil((lo + hi) / 2);
      if (fits(g0, g0 + mid)) lo = mid; else hi = mid - 1;
    }
    ranges.push([g0, g0 + lo]);
    g0 += lo;
  }
  return ranges;
}

/**
 * Software adapters (lavapipe, SwiftShader) run CPU code where unrolled loops buy little and
 * cost long LLVM compiles; GPUs get the unrolled kernels. The engine's kernel family decides
 * (engine/kernel-family.ts), unless attentionTuning.software says otherwise.
 */
function isSoftwareAdapter(dev: Device): boolean {
  return attentionTuning.software ?? kernelFamily(dev) === 'software';
}

/**
 * Overrides for tests and benchmarks: `software` picks the tile configuration family (so the GPU
 * tiles can be exercised on lavapipe), `unroll` the loop form, `rows` the one-thread-per-row
 * kernels (kernels/attention-rows.ts; heads up to ROWS_DMAX), `products` the matmul + softmax form
 * (engine/ops/attention-products.ts; f32 without a mask). Undefined: chosen from the adapter
 * and the head sizes (rows: on a software adapter for heads up to ROWS_DMAX), never from the
 * batch, so a head gives the same bits in any batch.
 */
export const attentionTuning: { software?: boolean; unroll?: boolean; rows?: boolean; products?: boolean } = {};

function useRows(p: Problem, software: boolean): boolean {
  const fits = Math.max(p.D, p.Dv) <= ROWS_DMAX;
  if (attentionTuning.rows === true && !fits) throw new Error(`${p.label}: the row kernels take heads up to ${ROWS_DMAX} (attentionTuning.rows is set)`);
  return attentionTuning.rows ?? (software && fits);
}

/** Dispatches one of the tiled kernels over all heads, chunked by the binding limit. */
function runTiled(kind: AttnKernel, p: Problem, tensors: Record<string, Tensor>): void {
  const { dev } = p;
  const software = isSoftwareAdapter(dev);
  const tiles = attentionTiles(kind === 'dkv' ? 'kv' : 'q', p.D, p.Dv, dev.limits, software);
  const { reads, writes } = attnBindings(kind);
  const spans: Record<string, number> = {
    q: p.Lq * p.D, k: p.Lk * p.D, v: p.Lk * p.Dv, o: p.Lq * p.Dv, dout: p.Lq * p.Dv, lse: p.Lq, stats: 2 * p.Lq,
    dq: p.Lq * p.D, dk: p.Lk * p.D, dv: p.Lk * p.Dv,
  };
  // Without a mask, q stands in for it (never read: P.hasmask is 0).
  const ops = [...reads, ...writes].map((n) => (n === 'mask' ? (p.mask ? maskOperand(p.mask) : contiguous('mask', tensors.q, spans.q)) : contiguous(n, tensors[n], spans[n])));
  const rowsPerHead = kind === 'dkv' ? p.Lk : p.Lq;
  const nblk = Math.ceil(rowsPerHead / tiles.rows);
  const maskType = p.mask ? p.mask.t.dtype : p.dtype;
  const align = dev.limits.minStorageBufferOffsetAlignment;
  const unroll = attentionTuning.unroll ?? !software;
  const rows = useRows(p, software);
  for (const [g0, g1] of planHeads(p, ops)) {
    const wins = ops.map((o) => windowOf(o, g0, g1, align));
    const bind = (i: number) => ({ buffer: ops[i].t.buffer(p.label), offset: wins[i].windowOffset, size: wins[i].windowSize });
    dev.dispatch({
      label: `${p.label} ${kind}`,
      key: rows ? attnRowsKey(kind, p.dtype, maskType) : attnKey(kind, tiles, p.dtype, maskType, unroll),
      code: () => (rows ? attnRowsWGSL(kind, p.dtype, maskType) : attnWGSL(kind, tiles, p.dtype, maskType, unroll)),
      reads: reads.map((_, i) => bind(i)),
      writes: writes.map((_, i) => bind(reads.length + i)),
      params: attnLayout.pack({
        offs: wins.map((w) => w.offset), nbh: g1 - g0, h0: g0, hh: p.mask?.hh ?? 1, lq: p.Lq, lk: p.Lk, d: p.D, dv: p.Dv,
        scale: p.scale, msb: p.mask?.sb ?? 0, msh: p.mask?.sh ?? 0, msq: p.mask?.sq ?? 0, msk: p.mask?.sk ?? 0, nblk, one: 1, hasmask: p.mask ? 1 : 0,
      }),
      groups: grid(rows ? Math.ceil(((g1 - g0) * rowsPerHead) / ROWS_WG) : (g1 - g0) * nblk, dev.limits.maxComputeWorkgroupsPerDimension),
    });
  }
}

/** (lse, Σ dO∘O) per query row for the backward passes. */
function rowStats(p: Problem, o: Tensor, dout: Tensor, lse: Tensor): Tensor {
  const stats = new Tensor(p.dev, [p.N, p.Lq, 2], 'f32');
  const ops = [contiguous('o', o, p.Lq * p.Dv), contiguous('dout', dout, p.Lq * p.Dv), contiguous('lse', lse, p.Lq), contiguous('stats', stats, 2 * p.Lq)];
  const align = p.dev.limits.minStorageBufferOffsetAlignment;
  for (const [g0, g1] of planHeads(p, ops)) {
    const wins = ops.map((op) => windowOf(op, g0, g1, align));
    const bind = (i: number) => ({ buffer: ops[i].t.buffer(p.label), offset: wins[i].windowOffset, size: wins[i].windowSize });
    p.dev.dispatch({
      label: `${p.label} backward stats`,
      key: attnStatsKey(p.dtype),
      code: () => attnStatsWGSL(p.dtype),
      reads: [bind(0), bind(1), bind(2)],
      writes: [bind(3)],
      params: attnLayout.pack({ offs: wins.map((w) => w.offset), nbh: g1 - g0, lq: p.Lq, dv: p.Dv }),
      groups: grid(Math.ceil(((g1 - g0) * p.Lq) / ATTN_STATS_WG), p.dev.limits.maxComputeWorkgroupsPerDimension),
    });
  }
  return stats;
}

/**
 * Lays the mask out as strides over the flattened heads: the lead dims it spans are merged into
 * at most two groups (B, H); a mask whose broadcast pattern needs more is materialised.
 */
function maskLayout(label: string, mask: Tensor, lead: number[], Lq: number, Lk: number): { layout: MaskLayout; owned: Tensor | null } {
  const full = [...lead, Lq, Lk];
  let to: number[];
  try { to = broadcastShapes(label, mask.shape, full); } catch { to = []; }
  if (mask.rank > full.length || to.join() !== full.join()) throw new Error(`${label}: mask ${mask.describe()} does not broadcast to ${fmt(full)}`);
  if (mask.dtype !== 'f32' && mask.dtype !== 'f16') throw new Error(`${label}: mask ${mask.describe()} must be f32 or f16`);
  const st = broadcastStrides(mask.shape, full);
  const groups: { size: number; stride: number }[] = [];
  lead.forEach((size, i) => {
    if (size === 1) return;
    const prev = groups[groups.length - 1];
    if (prev && prev.stride === st[i] * size) { prev.size *= size; prev.stride = st[i]; } else groups.push({ size, stride: st[i] });
  });
  const sq = st[lead.length], sk = st[lead.length + 1];
  const span = (Lq - 1) * sq + (Lk - 1) * sk + 1;
  if (groups.length > 2) {
    const owned = expand(mask, full);
    return { layout: { t: owned, hh: sizeOf(lead), sb: 0, sh: Lq * Lk, sq: Lk, sk: 1, span: Lq * Lk }, owned };
  }
  const [outer, inner] = groups.length === 2 ? groups : [{ size: 1, stride: 0 }, groups[0] ?? { size: 1, stride: 0 }];
  return { layout: { t: mask, hh: inner.size, sb: outer.stride, sh: inner.stride, sq, sk, span }, owned: null };
}

/**
 * q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] → [B, H, Lq, Dv]. Any leading dims are
 * allowed as long as q, k and v broadcast together on them (a broadcast one is expanded). f32 or
 * f16 (all three alike; f32 arithmetic and softmax state). Gradients flow to q, k and v; the mask
 * gets none.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const label = `attention(q ${q.describe()}, k ${k.describe()}, v ${v.describe()}${opts.mask ? `, mask ${opts.mask.describe()}` : ''})`;
  if (q.rank < 2 || k.rank < 2 || v.rank < 2) throw new Error(`${label}: q, k and v need at least 2 dims [L, D]`);
  if (q.device !== k.device || q.device !== v.device || (opts.mask && opts.mask.device !== q.device)) throw new Error(`${label}: tensors live on different devices`);
  if (q.dtype !== k.dtype || q.dtype !== v.dtype) throw new Error(`${label}: q, k and v dtypes differ; cast them alike`);
  if (q.dtype !== 'f32' && q.dtype !== 'f16') throw new Error(`${label}: attention takes f32 or f16 tensors, not ${q.dtype}`);
  const D = q.shape[q.rank - 1];
  if (k.shape[k.rank - 1] !== D) throw new Error(`${label}: q and k head sizes differ (${D} vs ${k.shape[k.rank - 1]})`);
  if (k.shape[k.rank - 2] !== v.shape[v.rank - 2]) throw new Error(`${label}: k and v lengths differ (${fmt(k.shape)} vs ${fmt(v.shape)})`);
  const Lq = q.shape[q.rank - 2], Lk = k.shape[k.rank - 2], Dv = v.shape[v.rank - 1];
  let lead: number[];
  try { lead = broadcastShapes(label, q.shape.slice(0, -2), k.shape.slice(0, -2), v.shape.slice(0, -2)); } catch {
    throw new Error(`${label}: the leading dims of q, k and v do not broadcast together`);
  }
  // Broadcast q/k/v are materialised (expand's backward sums their gradients back).
  const temps: Tensor[] = [];
  const full = (t: Tensor, L: number, W: number) => {
    if (t.rank - 2 === lead.length && t.shape.slice(0, -2).join() === lead.join()) return t;
    const e = expand(t, [...lead, L, W]);
    temps.push(e);
    return e;
  };
  const qf = full(q, Lq, D), kf = full(k, Lk, D), vf = full(v, Lk, Dv);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const N = sizeOf(lead);
  // Forcing a kernel (attentionTuning.rows) means the kernels, not the products.
  const forceProducts = attentionTuning.products ?? (attentionTuning.rows === undefined ? undefined : false);
  if (attentionProductsApply(q.device, q.dtype, !!opts.mask, Lq, Lk, D, Dv, ROWS_DMAX, forceProducts)) {
    const out = attentionProducts(qf, kf, vf, lead, scale);
    for (const t of temps) t.dispose();
    return out;
  }
  const mask = opts.mask ? maskLayout(label, opts.mask, lead, Lq, Lk) : null;
  if (mask?.owned) temps.push(mask.owned);
  const p: Problem = { label, dev: q.device, dtype: q.dtype, N, Lq, Lk, D, Dv, scale, mask: mask?.layout ?? null };
  const out = new Tensor(q.device, [...lead, Lq, Dv], q.dtype);
  const lse = new Tensor(q.device, [N, Lq], 'f32');
  if (out.size > 0) runTiled('fwd', p, { q: qf, k: kf, v: vf, o: out, lse });
  const inputs = opts.mask ? [qf, kf, vf, opts.mask] : [qf, kf, vf];
  const saved = mask ? [qf, kf, vf, out, lse, mask.layout.t] : [qf, kf, vf, out, lse];
  const result = record('attention', inputs, out, saved, (g0, sv) => {
    const [qs, ks, vs, os, ls, ms] = sv;
    const pb: Problem = { ...p, label: `${label} backward`, mask: p.mask ? { ...p.mask, t: ms } : null };
    return attentionBackward(pb, g0, qs, ks, vs, os, ls);
  });
  lse.dispose();
  for (const t of temps) t.dispose();
  return result;
}

function attentionBackward(p: Problem, g0: Tensor, q: Tensor, k: Tensor, v: Tensor, o: Tensor, lse: Tensor): (Tensor | null)[] {
  if (g0.shape.join() !== o.shape.join()) throw new Error(`${p.label}: gradient ${g0.describe()} does not match the output ${o.describe()}`);
  const dq = new Tensor(p.dev, q.shape, p.dtype);
  const dk = new Tensor(p.dev, k.shape, p.dtype);
  const dv = new Tensor(p.dev, v.shape, p.dtype);
  if (o.size === 0) return [dq, dk, dv, null];
  const temps: Tensor[] = [];
  let g = g0;
  if (g.dtype !== p.dtype) { g = cast(g0, p.dtype); temps.push(g); }
  const stats = rowStats(p, o, g, lse);
  temps.push(stats);
  runTiled('dq', p, { q, k, v, dout: g, stats, dq });
  runTiled('dkv', p, { q, k, v, dout: g, stats, dk, dv });
  for (const t of temps) t.dispose();
  return [dq, dk, dv, null];
}
