// groupNorm and layerNorm with fused forward and backward kernels (kernels/norm.ts).
//
// Both run over "rows" of L contiguous elements viewed as [nrows, cpg, S] (see the kernel file).
// Chunks split only between rows, so a window is bound per row range (down to one group of one
// sample) and a row's result never depends on the binding limit or the batch. The per-row mean
// and rstd (f32) are saved for backward; dweight/dbias come from per-(row, channel) f32 partial
// sums reduced over rows with sum(): deterministic, no atomics.

import { isGradEnabled, record } from '../autograd.js';
import { bytesOf, isFloat } from '../dtype.js';
import { planChunks, wholeBinding } from '../chunk.js';
import { kernelFamily } from '../kernel-family.js';
import { sameShape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { WG, grid } from '../../kernels/common.js';
import { NORM_SEQ_LIMIT, NORM_SOFTWARE_SEQ, NORM_WG, NormAct, NormVariant, SLOT, normKey, normLayout, normThreads, normWGSL } from '../../kernels/norm.js';
import { cast } from './elementwise.js';
import { sum } from './reduce.js';

export type { NormAct };

interface Geometry {
  nrows: number;
  groups: number;
  cpg: number;
  S: number;
}

type Role = 'row' | 'stat' | 'chan';
interface Operand { slot: number; t: Tensor; role: Role }

/** Records one norm kernel over all rows, chunked so that no binding exceeds the limit. */
function runNorm(v: NormVariant, label: string, geo: Geometry, reads: Operand[], writes: Operand[], affine: { w?: Tensor; b?: Tensor }, eps: number, xType: Tensor['dtype'], gType: Tensor['dtype'], act: NormAct): void {
  const dev = writes[0].t.device;
  const software = kernelFamily(dev) === 'software';
  const all = [...reads, ...writes];
  for (const o of all) if (o.t.device !== dev) throw new Error(`${label}: tensors live on different devices`);
  const { nrows, groups, cpg, S } = geo;
  const L = cpg * S;
  const stridesFor = (r: Role) => (r === 'row' ? [L, S, 1] : r === 'stat' ? [1, 0, 0] : [cpg, 1, 0]);
  const buffers = all.map((o) => o.t.buffer(label));
  // Rows are the only splittable dimension: a group is never split across windows.
  const chunks = planChunks(label, [nrows, cpg, S], all.map((o, k) => ({
    strides: stridesFor(o.role), offset: 0, elementBytes: bytesOf(o.t.dtype), bufferBytes: buffers[k].size,
  })), dev.maxBindingBytes, dev.limits.minStorageBufferOffsetAlignment, 1);
  const whole = (t: Tensor) => wholeBinding(t, label);
  for (const t of [affine.w, affine.b]) {
    if (t && whole(t).size > dev.maxBindingBytes) throw new Error(`${label}: the affine parameter ${t.describe()} exceeds the binding limit of ${dev.maxBindingBytes} bytes`);
  }
  let row0 = 0;
  for (const ch of chunks) {
    const offs = new Array<number>(8).fill(0);
    ch.operands.forEach((o, k) => { offs[all[k].slot] = o.offset; });
    const bind = (k: number) => ({ buffer: buffers[k], offset: ch.operands[k].windowOffset, size: ch.operands[k].windowSize });
    // An absent weight/bias binds the x window instead (read-only aliasing is allowed); the
    // kernel never reads it (P.hasw/P.hasb).
    const wBind = affine.w ? whole(affine.w) : bind(0);
    const bBind = affine.b ? whole(affine.b) : bind(0);
    const readBinds = reads.map((_, k) => bind(k));
    // The order of kernels/norm.ts's declarations: fwd x, w, b; dx x, g, w, (b), mean, rstd;
    // partials x, g, (w, b), mean, rstd — the bracketed ones with an activation only.
    if (v === 'fwd') readBinds.push(wBind, bBind);
    else if (v === 'dx') readBinds.splice(2, 0, ...(act === 'none' ? [wBind] : [wBind, bBind]));
    else if (act !== 'none') readBinds.splice(2, 0, wBind, bBind);
    const rows = ch.shape[0];
    // fwd/dx: 256/T rows per workgroup; part-wg: a workgroup per output; part-seq: a thread per output.
    // Software adapters: one thread per row up to NORM_SOFTWARE_SEQ elements (each barrier of a
    // row's tree is a coroutine switch there; longer rows keep the tree, for its accuracy and
    // parallelism); GPUs: about 8 elements per thread. The order depends on L and the device only.
    const T = v === 'fwd' || v === 'dx' ? (software && L <= NORM_SOFTWARE_SEQ ? 1 : normThreads(L)) : NORM_WG;
    const nout = v.startsWith('part') ? rows * cpg : rows;
    const ngroups = v === 'part-seq' ? Math.ceil(nout / WG) : v === 'part-wg' ? nout : Math.ceil(rows / (NORM_WG / T));
    dev.dispatch({
      label,
      key: normKey(v, xType, gType, T, act),
      code: () => normWGSL(v, xType, gType, T, act),
      reads: readBinds,
      writes: writes.map((_, k) => bind(reads.length + k)),
      params: normLayout.pack({ offs, nrows: rows, row0, groups, cpg, S, len: L, hasw: affine.w ? 1 : 0, hasb: affine.b ? 1 : 0, eps }),
      groups: grid(ngroups, dev.limits.maxComputeWorkgroupsPerDimension),
    });
    row0 += rows;
  }
}

function checkAffine(op: string, x: Tensor, p: Tensor | undefined, name: string, n: number): void {
  if (!p) return;
  if (p.rank !== 1 || p.shape[0] !== n) throw new Error(`${op}: ${name} ${p.describe()} must have shape [${n}] for input ${x.describe()}`);
  if (p.dtype !== x.dtype) throw new Error(`${op}: ${name} ${p.describe()} must have the dtype of the input ${x.describe()}`);
  if (p.device !== x.device) throw new Error(`${op}: ${name} ${p.describe()} and input ${x.describe()} live on different devices`);
}

/** Shared forward + autograd of both norms. nParam: the length of weight/bias. */
function normalize(op: string, label: string, x: Tensor, geo: Geometry, weight: Tensor | undefined, bias: Tensor | undefined, eps: number, nParam: number, act: NormAct = 'none'): Tensor {
  const dev = x.device;
  const y = new Tensor(dev, x.shape, x.dtype);
  if (x.size === 0) return y;
  const mean = new Tensor(dev, [geo.nrows], 'f32');
  const rstd = new Tensor(dev, [geo.nrows], 'f32');
  try {
    runNorm('fwd', label, geo, [{ slot: SLOT.x, t: x, role: 'row' }],
      [{ slot: SLOT.out, t: y, role: 'row' }, { slot: SLOT.mean, t: mean, role: 'stat' }, { slot: SLOT.rstd, t: rstd, role: 'stat' }],
      { w: weight, b: bias }, eps, x.dtype, x.dtype, act);
  } catch (e) {
    for (const t of [y, mean, rstd]) t.dispose();
    throw e;
  }
  const inputs = [x, ...(weight ? [weight] : []), ...(bias ? [bias] : [])];
  // Backward through an activation recomputes its input, so it needs the bias as well.
  const saved = [x, mean, rstd, weight, act === 'none' ? undefined : bias];
  const out = isGradEnabled() ? record(op, inputs, y, saved.filter((t): t is Tensor => t !== undefined), (g, kept) => {
    const [xs, ms, rs] = kept;
    let k = 3;
    const ws = weight ? kept[k++] : undefined;
    const bs = act !== 'none' && bias ? kept[k++] : undefined;
    if (!sameShape(g.shape, xs.shape)) throw new Error(`${op} backward: gradient ${g.describe()} does not match input ${xs.describe()}`);
    if (!isFloat(g.dtype)) throw new Error(`${op} backward: gradient ${g.describe()} is not a float tensor`);
    const blabel = `${op} backward(${g.describe()})`;
    const affine = act === 'none' ? {} : { w: ws, b: bs };
    let dx: Tensor | null = null;
    if (x.requiresGrad) {
      dx = new Tensor(dev, xs.shape, g.dtype);
      runNorm('dx', blabel, geo,
        [{ slot: SLOT.x, t: xs, role: 'row' }, { slot: SLOT.g, t: g, role: 'row' }, { slot: SLOT.mean, t: ms, role: 'stat' }, { slot: SLOT.rstd, t: rs, role: 'stat' }],
        [{ slot: SLOT.out, t: dx, role: 'row' }], { w: ws, b: bs }, eps, xs.dtype, g.dtype, act);
    }
    let dw: Tensor | null = null, db: Tensor | null = null;
    if (weight?.requiresGrad || bias?.requiresGrad) {
      // Per-(row, channel) partials, [rows·cpg] = [rows / groups, nParam], then summed over rows.
      const pw = new Tensor(dev, [geo.nrows / geo.groups, nParam], 'f32');
      const pb = new Tensor(dev, [geo.nrows / geo.groups, nParam], 'f32');
      const seqLimit = kernelFamily(dev) === 'software' ? NORM_SOFTWARE_SEQ : NORM_SEQ_LIMIT;
      runNorm(geo.S <= seqLimit ? 'part-seq' : 'part-wg', blabel, geo,
        [{ slot: SLOT.x, t: xs, role: 'row' }, { slot: SLOT.g, t: g, role: 'row' }, { slot: SLOT.mean, t: ms, role: 'stat' }, { slot: SLOT.rstd, t: rs, role: 'stat' }],
        [{ slot: SLOT.pw, t: pw, role: 'chan' }, { slot: SLOT.pb, t: pb, role: 'chan' }], affine, eps, xs.dtype, g.dtype, act);
      const reduceTo = (p: Tensor, like: Tensor) => {
        const s = sum(p, 0);
        if (like.dtype === 'f32') return s;
        const c = cast(s, like.dtype);
        s.dispose();
        return c;
      };
      if (weight?.requiresGrad) dw = reduceTo(pw, weight);
      if (bias?.requiresGrad) db = reduceTo(pb, bias);
      pw.dispose();
      pb.dispose();
    }
    return [dx, ...(weight ? [dw] : []), ...(bias ? [db] : [])];
  }) : y;
  mean.dispose();
  rstd.dispose();
  return out;
}

/**
 * torch.nn.functional.group_norm: x [N, C, ...spatial] is split into `groups` groups of C/groups
 * channels; each (sample, group) is normalised by its own mean and biased variance over its
 * channels × spatial elements, then scaled by weight [C] and shifted by bias [C] per channel.
 * f16 inputs keep f16 storage (statistics in f32). `act: 'silu'` returns silu(group_norm(x)) from
 * the same kernels (see NormAct in kernels/norm.ts).
 */
export function groupNorm(x: Tensor, groups: number, weight?: Tensor, bias?: Tensor, eps = 1e-5, act: NormAct = 'none'): Tensor {
  const label = `groupNorm(${x.describe()}, groups=${groups}${weight ? `, weight ${weight.describe()}` : ''}${bias ? `, bias ${bias.describe()}` : ''}${act === 'none' ? '' : `, then ${act}`})`;
  if (act !== 'none' && act !== 'silu') throw new Error(`${label}: act must be 'none' or 'silu', not ${JSON.stringify(act)}`);
  if (!isFloat(x.dtype)) throw new Error(`${label}: input is not a float tensor`);
  if (x.rank < 2) throw new Error(`${label}: input must be [N, C, ...spatial]`);
  const C = x.shape[1];
  if (!Number.isInteger(groups) || groups < 1 || C % groups !== 0) throw new Error(`${label}: groups=${groups} must be a positive integer dividing C=${C}`);
  if (!(eps >= 0)) throw new Error(`${label}: eps=${eps} must be ≥ 0`);
  checkAffine('groupNorm', x, weight, 'weight', C);
  checkAffine('groupNorm', x, bias, 'bias', C);
  const S = x.shape.slice(2).reduce((a, b) => a * b, 1);
  return normalize(act === 'none' ? 'groupNorm' : `groupNorm+${act}`, label, x, { nrows: x.shape[0] * groups, groups, cpg: C / groups, S }, weight, bias, eps, C, act);
}

/**
 * torch.nn.functional.layer_norm over the last dimension: each row of D is normalised by its
 * mean and biased variance, then scaled by weight [D] and shifted by bias [D].
 */
export function layerNorm(x: Tensor, weight?: Tensor, bias?: Tensor, eps = 1e-5): Tensor {
  const label = `layerNorm(${x.describe()}${weight ? `, weight ${weight.describe()}` : ''}${bias ? `, bias ${bias.describe()}` : ''})`;
  if (!isFloat(x.dtype)) throw new Error(`${label}: input is not a float tensor`);
  if (x.rank < 1) throw new Error(`${label}: input is a scalar; it needs a last dimension to normalise`);
  if (!(eps >= 0)) throw new Error(`${label}: eps=${eps} must be ≥ 0`);
  const D = x.shape[x.rank - 1];
  checkAffine('layerNorm', x, weight, 'weight', D);
  checkAffine('layerNorm', x, bias, 'bias', D);
  return normalize('layerNorm', label, x, { nrows: x.size / Math.max(D, 1), groups: 1, cpg: D, S: 1 }, weight, bias, eps, D);
}

