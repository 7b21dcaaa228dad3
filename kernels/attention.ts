// Memory-efficient scaled dot-product attention (flash-attention style), forward and backward.
//
// Every kernel has the same shape: a workgroup owns R "rows" of one (batch, head) and streams
// blocks of C "columns" past them. Forward and dQ: rows are queries, columns keys. dK/dV: rows are
// keys, columns queries. Nothing of size Lq×Lk is ever stored: a block's scores live in registers
// (C/TPR per thread) and in one R×C workgroup tile.
//
// Head sizes up to 512 are handled by slicing the head dimension into DS-wide slices: a score is
// accumulated slice by slice (both operands staged through workgroup memory, DS columns at a
// time), and a thread's output row part (dPad/TPR registers) is updated slice by slice. So the
// workgroup never holds a whole 512-wide row, which lavapipe's 32 KiB could not.
//
// Thread t owns row t / TPR; within it, columns lane + TPR·j (lane = t % TPR) of the score block
// and head columns s·DS + lane + TPR·jj of slice s. Row maxima and sums over the TPR lanes go
// through workgroup memory and are combined in lane order.
//
// Determinism: every sum has a fixed order that depends only on the tile configuration, which
// depends only on the head sizes and the device limits (never on B or L): over d ascending; over
// columns block by block, in block order; no atomics. So one (batch, head) gives the same bits
// whatever batch or chunk it is computed in.

import { DType } from '../engine/dtype.js';
import { ParamLayout, at, declareBindings, f16Enable } from './common.js';

/** Head-dimension slice width (floats staged per row per step). */
export const ATTN_DS = 32;
const DSP = ATTN_DS + 1; // padded row stride in workgroup memory (avoids bank conflicts)

export interface AttnTiles {
  /** Rows per workgroup (queries for 'q' kernels, keys for 'kv'). */
  rows: number;
  /** Columns per streamed block (keys for 'q' kernels, queries for 'kv'). */
  cols: number;
  /** Threads per row. */
  tpr: number;
  /** Head size padded to a whole number of slices: max(D, Dv) rounded up to ATTN_DS. */
  dPad: number;
}

export const attnWorkgroupBytes = (t: AttnTiles) => 4 * (t.rows * DSP + t.cols * DSP + t.rows * t.cols + 2 * t.rows * t.tpr);

/**
 * Tile configuration from the head sizes and the device only. 'q' kernels keep one dPad-wide
 * accumulator per row, 'kv' two (dK and dV); on a GPU threads per row grow with dPad so that a
 * thread holds at most 64 accumulators, and dPad is the head size rounded up to a slice, so each
 * model head size gets kernels sized for it. A software adapter keeps its "registers" in memory
 * anyway and pays seconds of LLVM time per shader, so there one configuration (dPad 512, or the
 * head size rounded up to 512) serves every head size.
 */
export function attentionTiles(kind: 'q' | 'kv', d: number, dv: number, limits: { maxComputeWorkgroupStorageSize: number; maxComputeInvocationsPerWorkgroup: number }, software: boolean): AttnTiles {
  const dMax = Math.max(d, dv, 1);
  const dPad = software ? Math.ceil(dMax / 512) * 512 : Math.ceil(dMax / ATTN_DS) * ATTN_DS;
  const accs = kind === 'kv' ? 2 : 1;
  let tpr = 4;
  while (!software && (accs * dPad) / tpr > 64 && tpr < ATTN_DS) tpr *= 2;
  const maxThreads = Math.min(software ? 128 : 256, limits.maxComputeInvocationsPerWorkgroup);
  for (const [rows, cols] of [[64, 64], [64, 32], [32, 64], [32, 32], [16, 32], [8, 32], [4, 32]]) {
    const t = { rows, cols, tpr, dPad };
    if (rows * tpr <= maxThreads && attnWorkgroupBytes(t) <= limits.maxComputeWorkgroupStorageSize) return t;
  }
  throw new Error(`attention: no tile configuration fits this device (workgroup memory ${limits.maxComputeWorkgroupStorageSize} bytes, ${limits.maxComputeInvocationsPerWorkgroup} invocations)`);
}

/**
 * Uniforms. offs: element offset of each binding's window (binding order). Per (batch, head)
 * tensors are contiguous [nbh, L, dim]; the mask is addressed through strides: the global head
 * index g = h0 + local is split as (g / hh, g % hh) with strides (msb, msh), then (query, key)
 * with (msq, msk).
 */
export const attnLayout = new ParamLayout([
  { name: 'offs', type: 'u32', len: 8 },
  { name: 'nbh', type: 'u32' },
  { name: 'h0', type: 'u32' },
  { name: 'hh', type: 'u32' },
  { name: 'lq', type: 'u32' },
  { name: 'lk', type: 'u32' },
  { name: 'd', type: 'u32' },
  { name: 'dv', type: 'u32' },
  { name: 'scale', type: 'f32' },
  { name: 'msb', type: 'u32' },
  { name: 'msh', type: 'u32' },
  { name: 'msq', type: 'u32' },
  { name: 'msk', type: 'u32' },
  { name: 'nblk', type: 'u32' }, // row blocks per head
  { name: 'one', type: 'u32' }, // always 1 (see attnWGSL)
  { name: 'hasmask', type: 'u32' },
]);

export type AttnKernel = 'fwd' | 'dq' | 'dkv';

export function attnKey(kind: AttnKernel, t: AttnTiles, dtype: DType, mask: DType, unroll: boolean): string {
  return `attention:${kind}:${t.rows}x${t.cols}x${t.tpr}:d${t.dPad}:${dtype}:mask-${mask}${unroll ? ':unrolled' : ''}`;
}

/**
 * Binding names in order: reads, then writes. The mask is always bound (without one, q's buffer
 * is bound in its place and P.hasmask is 0) so that masked and unmasked calls share pipelines.
 */
export function attnBindings(kind: AttnKernel): { reads: string[]; writes: string[] } {
  const qkv = ['q', 'k', 'v', 'mask'];
  if (kind === 'fwd') return { reads: qkv, writes: ['o', 'lse'] };
  if (kind === 'dq') return { reads: [...qkv, 'dout', 'stats'], writes: ['dq'] };
  return { reads: [...qkv, 'dout', 'stats'], writes: ['dk', 'dv'] };
}

const NEG_BIG = '-3.402823466e+38';

/**
 * WGSL shared by every attention kernel family for the mask: headOffset(g), the mask offset of
 * global head g, and the mask value for (query qi, key kj) given mbase, the mask base of the
 * thread's head (0 without a mask: P.hasmask).
 */
export const ATTN_HEAD_OFFSET = 'fn headOffset(g: u32) -> u32 { return (g / P.hh) * P.msb + (g % P.hh) * P.msh; }';
export const attnMaskValue = (qi: string, kj: string) => `select(0.0, f32(mask[mbase + ${qi} * P.msq + ${kj} * P.msk]), P.hasmask != 0u)`;

export function attnWGSL(kind: AttnKernel, t: AttnTiles, dtype: DType, maskType: DType, unroll: boolean): string {
  const { rows: R, cols: C, tpr: TPR, dPad } = t;
  // Loop bound n: a constant lets the compiler unroll and keep the per-thread arrays in registers
  // (GPUs); multiplied by the uniform P.one (= 1) it cannot be unrolled, which keeps lavapipe's
  // LLVM compile to about a second instead of many.
  const B = (n: number) => (unroll ? `${n}u` : `(P.one * ${n}u)`);
  // Where loops are not unrolled anyway, they also stop at the head size: a slice is DS wide and
  // a software adapter's tile covers 512 columns, so a head of 8 would otherwise do 4–64× the
  // work on zeros. Skipped terms are exact zeros, so the results are the same bits.
  const lim = (n: number, bound: string) => (unroll ? `${n}u` : `min(P.one * ${n}u, ${bound})`);
  const DS = ATTN_DS;
  const WGS = R * TPR;
  const NJ = C / TPR; // score registers per thread
  const NA = DS / TPR; // accumulator columns per slice per thread
  const NS = dPad / DS; // slices at most
  const { reads, writes } = attnBindings(kind);
  const names = [...reads, ...writes];
  const off = (name: string) => at('P.offs', `${names.indexOf(name)}u`);
  const typeOf = (name: string): DType => (name === 'mask' ? maskType : name === 'lse' || name === 'stats' ? 'f32' : dtype);
  const decls = declareBindings(
    reads.map((n) => ({ name: n, type: typeOf(n) })),
    writes.map((n) => ({ name: n, type: typeOf(n) })),
    attnLayout,
  );

  // Row bases (element offset of row 0 of this head) of each per-head tensor.
  const base = (name: string, len: string, dim: string) => `let b_${name} = ${off(name)} + l * ${len} * ${dim};`;

  /**
   * Stages rows [start, start+n) (n = R or C), slice s, of `src` (length len, width dim) into
   * `dst`. Unrolled (GPU), all DS columns, zero past the head; otherwise only the slice's
   * w = min(DS, dim − s·DS) columns, which are all the not-unrolled loops read.
   */
  const stage = (dst: 'xs' | 'ys', n: number, src: string, start: string, len: string, dim: string) => unroll ? `
      for (var i = lid; i < ${B(n * DS)}; i += ${WGS}u) {
        let rr = i / ${DS}u;
        let cc = s * ${DS}u + i % ${DS}u;
        let gr = ${start} + rr;
        var x = 0.0;
        if (gr < ${len} && cc < ${dim}) { x = f32(${src}[b_${src} + gr * ${dim} + cc]); }
        ${dst}[rr * ${DSP}u + i % ${DS}u] = x;
      }` : `
      let sw_${dst} = min(${DS}u, ${dim} - s * ${DS}u);
      for (var i = lid; i < ${n}u * sw_${dst}; i += ${WGS}u) {
        let rr = i / sw_${dst};
        let c = i % sw_${dst};
        let gr = ${start} + rr;
        var x = 0.0;
        if (gr < ${len}) { x = f32(${src}[b_${src} + gr * ${dim} + s * ${DS}u + c]); }
        ${dst}[rr * ${DSP}u + c] = x;
      }`;

  /** acc[j] = Σ_d X[row]·Y[col j] over the head dim `dim`: X rows from `x`, Y rows from `y`. */
  const dotBlock = (acc: string, x: string, xStart: string, xLen: string, y: string, yStart: string, yLen: string, dim: string) => `
    for (var j = 0u; j < ${B(NJ)}; j++) { ${acc}[j] = 0.0; }
    for (var s = 0u; s * ${DS}u < ${dim}; s++) {
      workgroupBarrier();${stage('xs', R, x, xStart, xLen, dim)}${stage('ys', C, y, yStart, yLen, dim)}
      workgroupBarrier();
      for (var e = 0u; e < ${lim(DS, `${dim} - s * ${DS}u`)}; e++) {
        let xv = xs[row * ${DSP}u + e];
        for (var j = 0u; j < ${B(NJ)}; j++) { ${acc}[j] += xv * ys[(lane + ${TPR}u * j) * ${DSP}u + e]; }
      }
    }`;

  /** acc[row, :] += Σ_c W[row, c]·Z[col c, :], W in workgroup memory `ws`, Z rows from `z`. */
  const accBlock = (acc: string, z: string, zStart: string, zLen: string, dim: string) => `
    for (var s = 0u; s < ${B(NS)}; s++) {
      if (s * ${DS}u < ${dim}) {
        workgroupBarrier();${stage('ys', C, z, zStart, zLen, dim)}
        workgroupBarrier();
        for (var c = 0u; c < ${B(C)}; c++) {
          let w = ws[row * ${C}u + c];
          for (var jj = 0u; jj < ${lim(NA, `(${dim} - s * ${DS}u + ${TPR - 1}u - lane) / ${TPR}u`)}; jj++) { ${acc}[s * ${NA}u + jj] += w * ys[c * ${DSP}u + lane + ${TPR}u * jj]; }
        }
      }
    }`;

  /** Writes acc·factor to row `r` of `dst` (width dim). */
  const storeRow = (acc: string, dst: string, r: string, len: string, dim: string, factor: string) => `
  if (${r} < ${len}) {
    for (var s = 0u; s < ${B(NS)}; s++) {
      for (var jj = 0u; jj < ${B(NA)}; jj++) {
        let cc = s * ${DS}u + lane + ${TPR}u * jj;
        if (cc < ${dim}) { ${dst}[b_${dst} + ${r} * ${dim} + cc] = ${dtype}(${acc}[s * ${NA}u + jj] * ${factor}); }
      }
    }
  }`;

  // Mask value for (query qi, key kj), added to the scaled score.
  const maskTerm = (qi: string, kj: string) => ` + ${attnMaskValue(qi, kj)}`;

  const head = `${f16Enable(dtype, maskType)}
${decls}
var<workgroup> xs: array<f32, ${R * DSP}>;
var<workgroup> ys: array<f32, ${C * DSP}>;
var<workgroup> ws: array<f32, ${R * C}>;
var<workgroup> reda: array<f32, ${R * TPR}>;
var<workgroup> redb: array<f32, ${R * TPR}>;

${ATTN_HEAD_OFFSET}

@compute @workgroup_size(${WGS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let gid = wid.x + wid.y * nwg.x;
  let l = gid / P.nblk;
  if (l >= P.nbh) { return; }
  let r0 = (gid % P.nblk) * ${R}u;
  let row = lid / ${TPR}u;
  let lane = lid % ${TPR}u;
  let me = r0 + row;
  let mbase = ${off('mask')} + headOffset(P.h0 + l) - headOffset(P.h0);
  ${base('q', 'P.lq', 'P.d')}
  ${base('k', 'P.lk', 'P.d')}
  ${base('v', 'P.lk', 'P.dv')}
  var sc: array<f32, ${NJ}>;
  var dp: array<f32, ${NJ}>;`;

  if (kind === 'fwd') {
    return `${head}
  ${base('o', 'P.lq', 'P.dv')}
  let b_lse = ${off('lse')} + l * P.lq;
  var acc: array<f32, ${NS * NA}>;
  var m = ${NEG_BIG};
  var lsum = 0.0;
  for (var k0 = 0u; k0 < P.lk; k0 += ${C}u) {
${dotBlock('sc', 'q', 'r0', 'P.lq', 'k', 'k0', 'P.lk', 'P.d')}
    // Online softmax: the block's row max, then rescale what was accumulated so far.
    var mx = ${NEG_BIG};
    for (var j = 0u; j < ${B(NJ)}; j++) {
      let kj = k0 + lane + ${TPR}u * j;
      if (kj < P.lk && me < P.lq) {
        sc[j] = sc[j] * P.scale${maskTerm('me', 'kj')};
        mx = max(mx, sc[j]);
      }
    }
    reda[lid] = mx;
    workgroupBarrier();
    var mnew = m;
    for (var u = 0u; u < ${B(TPR)}; u++) { mnew = max(mnew, reda[row * ${TPR}u + u]); }
    var ps = 0.0;
    for (var j = 0u; j < ${B(NJ)}; j++) {
      let kj = k0 + lane + ${TPR}u * j;
      var p = 0.0;
      if (kj < P.lk && me < P.lq) { p = exp(sc[j] - mnew); }
      ws[row * ${C}u + lane + ${TPR}u * j] = p;
      ps += p;
    }
    redb[lid] = ps;
    workgroupBarrier();
    var tot = 0.0;
    for (var u = 0u; u < ${B(TPR)}; u++) { tot += redb[row * ${TPR}u + u]; }
    let alpha = exp(m - mnew);
    lsum = lsum * alpha + tot;
    m = mnew;
    for (var a = 0u; a < ${lim(NS * NA, `(P.dv + ${DS - 1}u) / ${DS}u * ${NA}u`)}; a++) { acc[a] *= alpha; }
${accBlock('acc', 'v', 'k0', 'P.lk', 'P.dv')}
  }
${storeRow('acc', 'o', 'me', 'P.lq', 'P.dv', '(1.0 / lsum)')}
  if (me < P.lq && lane == 0u) { lse[b_lse + me] = m + log(lsum); }
}
`;
  }

  const statsLoad = `let b_stats = ${off('stats')} + l * P.lq * 2u;`;
  if (kind === 'dq') {
    return `${head}
  ${base('dout', 'P.lq', 'P.dv')}
  ${base('dq', 'P.lq', 'P.d')}
  ${statsLoad}
  var lse_r = 0.0;
  var delta_r = 0.0;
  if (me < P.lq) { lse_r = stats[b_stats + 2u * me]; delta_r = stats[b_stats + 2u * me + 1u]; }
  var acc: array<f32, ${NS * NA}>;
  for (var k0 = 0u; k0 < P.lk; k0 += ${C}u) {
${dotBlock('sc', 'q', 'r0', 'P.lq', 'k', 'k0', 'P.lk', 'P.d')}
${dotBlock('dp', 'dout', 'r0', 'P.lq', 'v', 'k0', 'P.lk', 'P.dv')}
    // dS = P∘(dP − Σ dO∘O), P recomputed from the saved logsumexp.
    for (var j = 0u; j < ${B(NJ)}; j++) {
      let kj = k0 + lane + ${TPR}u * j;
      var g = 0.0;
      if (kj < P.lk && me < P.lq) {
        let p = exp(sc[j] * P.scale${maskTerm('me', 'kj')} - lse_r);
        g = p * (dp[j] - delta_r);
      }
      ws[row * ${C}u + lane + ${TPR}u * j] = g;
    }
${accBlock('acc', 'k', 'k0', 'P.lk', 'P.d')}
  }
${storeRow('acc', 'dq', 'me', 'P.lq', 'P.d', 'P.scale')}
}
`;
  }

  // dkv: rows are keys (me), columns are queries.
  return `${head}
  ${base('dout', 'P.lq', 'P.dv')}
  ${base('dk', 'P.lk', 'P.d')}
  ${base('dv', 'P.lk', 'P.dv')}
  ${statsLoad}
  var acck: array<f32, ${NS * NA}>;
  var accv: array<f32, ${NS * NA}>;
  var gs: array<f32, ${NJ}>;
  for (var q0 = 0u; q0 < P.lq; q0 += ${C}u) {
${dotBlock('sc', 'k', 'r0', 'P.lk', 'q', 'q0', 'P.lq', 'P.d')}
${dotBlock('dp', 'v', 'r0', 'P.lk', 'dout', 'q0', 'P.lq', 'P.dv')}
    for (var j = 0u; j < ${B(NJ)}; j++) {
      let qi = q0 + lane + ${TPR}u * j;
      var p = 0.0;
      var g = 0.0;
      if (qi < P.lq && me < P.lk) {
        p = exp(sc[j] * P.scale${maskTerm('qi', 'me')} - stats[b_stats + 2u * qi]);
        g = p * (dp[j] - stats[b_stats + 2u * qi + 1u]);
      }
      ws[row * ${C}u + lane + ${TPR}u * j] = p;
      gs[j] = g;
    }
${accBlock('accv', 'dout', 'q0', 'P.lq', 'P.dv')}
    workgroupBarrier(); // everyone is done reading P before dS replaces it
    for (var j = 0u; j < ${B(NJ)}; j++) { ws[row * ${C}u + lane + ${TPR}u * j] = gs[j]; }
${accBlock('acck', 'q', 'q0', 'P.lq', 'P.d')}
  }
${storeRow('acck', 'dk', 'me', 'P.lk', 'P.d', 'P.scale')}
${storeRow('accv', 'dv', 'me', 'P.lk', 'P.dv', '1.0')}
}
`;
}

/** (lse, Σ dO∘O) per query row, interleaved, f32: the row statistics both backward passes read. */
export function attnStatsKey(dtype: DType): string {
  return `attention:stats:${dtype}`;
}

export const ATTN_STATS_WG = 64;

/** One thread per row; reads o, dout, lse; writes stats. Rows = nbh·lq; uses offs, nbh, lq, dv. */
export function attnStatsWGSL(dtype: DType): string {
  return `${f16Enable(dtype)}
${declareBindings([{ name: 'o', type: dtype }, { name: 'dout', type: dtype }, { name: 'lse', type: 'f32' }], [{ name: 'stats', type: 'f32' }], attnLayout)}
@compute @workgroup_size(${ATTN_STATS_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let r = (wid.x + wid.y * nwg.x) * ${ATTN_STATS_WG}u + lid;
  if (r >= P.nbh * P.lq) { return; }
  var s = 0.0;
  for (var c = 0u; c < P.dv; c++) {
    s += f32(o[${at('P.offs', '0u')} + r * P.dv + c]) * f32(dout[${at('P.offs', '1u')} + r * P.dv + c]);
  }
  stats[${at('P.offs', '3u')} + 2u * r] = lse[${at('P.offs', '2u')} + r];
  stats[${at('P.offs', '3u')} + 2u * r + 1u] = s;
}
`;
}
