// Attention with one thread per row, for small heads on software adapters.
//
// The tiled kernels (kernels/attention.ts) share blocks through workgroup memory and barriers,
// which is what a GPU wants; on a CPU-emulated adapter each barrier and each staged tile is paid
// for by every lane, and a head of 8 or 16 leaves the tiles mostly empty. Here a thread owns one
// row (a query for 'fwd' and 'dq', a key for 'dkv') and loops over the other side alone: no
// workgroup memory, no barriers, its head-size vectors in private arrays (at most ROWS_DMAX).
//
// Same bindings, uniforms and results' meaning as the tiled kernels (so engine/ops/attention.ts
// dispatches either through one path); the arithmetic order differs (keys one at a time, the
// online softmax rescaling at each new maximum), so the bits differ from the tiled kernels' but,
// as there, depend only on the row and its head: one head gives the same bits in any batch.

import { DType } from '../engine/dtype.js';
import { at, declareBindings, f16Enable } from './common.js';
import { ATTN_HEAD_OFFSET, AttnKernel, attnBindings, attnLayout, attnMaskValue } from './attention.js';

/** Largest head size (D and Dv) of the row kernels. */
export const ROWS_DMAX = 64;
export const ROWS_WG = 64;

export function attnRowsKey(kind: AttnKernel, dtype: DType, mask: DType): string {
  return `attention-rows:${kind}:${dtype}:mask-${mask}`;
}

const NEG_BIG = '-3.402823466e+38';

export function attnRowsWGSL(kind: AttnKernel, dtype: DType, maskType: DType): string {
  const { reads, writes } = attnBindings(kind);
  const names = [...reads, ...writes];
  const off = (name: string) => at('P.offs', `${names.indexOf(name)}u`);
  const typeOf = (name: string): DType => (name === 'mask' ? maskType : name === 'lse' || name === 'stats' ? 'f32' : dtype);
  const decls = declareBindings(reads.map((n) => ({ name: n, type: typeOf(n) })), writes.map((n) => ({ name: n, type: typeOf(n) })), attnLayout);
  const rows = kind === 'dkv' ? 'P.lk' : 'P.lq';
  const head = `${f16Enable(dtype, maskType)}
${decls}
${ATTN_HEAD_OFFSET}

@compute @workgroup_size(${ROWS_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let gr = (wid.x + wid.y * nwg.x) * ${ROWS_WG}u + lid;
  let l = gr / ${rows};
  if (l >= P.nbh) { return; }
  let me = gr % ${rows};
  let mbase = ${off('mask')} + headOffset(P.h0 + l) - headOffset(P.h0);
  let bq = ${off('q')} + l * P.lq * P.d;
  let bk = ${off('k')} + l * P.lk * P.d;
  let bv = ${off('v')} + l * P.lk * P.dv;`;

  if (kind === 'fwd') {
    return `${head}
  var qv: array<f32, ${ROWS_DMAX}>;
  var acc: array<f32, ${ROWS_DMAX}>;
  for (var c = 0u; c < P.d; c++) { qv[c] = f32(q[bq + me * P.d + c]); }
  var m = ${NEG_BIG};
  var lsum = 0.0;
  for (var kj = 0u; kj < P.lk; kj++) {
    var s = 0.0;
    for (var c = 0u; c < P.d; c++) { s += qv[c] * f32(k[bk + kj * P.d + c]); }
    s = s * P.scale + ${attnMaskValue('me', 'kj')};
    if (s > m) {
      let alpha = exp(m - s);
      lsum *= alpha;
      for (var c = 0u; c < P.dv; c++) { acc[c] *= alpha; }
      m = s;
    }
    let p = exp(s - m);
    lsum += p;
    for (var c = 0u; c < P.dv; c++) { acc[c] += p * f32(v[bv + kj * P.dv + c]); }
  }
  let bo = ${off('o')} + (l * P.lq + me) * P.dv;
  for (var c = 0u; c < P.dv; c++) { o[bo + c] = ${dtype}(acc[c] / lsum); }
  lse[${off('lse')} + l * P.lq + me] = m + log(lsum);
}
`;
  }
  const stats = `let bs = ${off('stats')} + l * P.lq * 2u;
  let bd = ${off('dout')} + l * P.lq * P.dv;`;
  if (kind === 'dq') {
    return `${head}
  ${stats}
  var qv: array<f32, ${ROWS_DMAX}>;
  var gv: array<f32, ${ROWS_DMAX}>;
  var acc: array<f32, ${ROWS_DMAX}>;
  for (var c = 0u; c < P.d; c++) { qv[c] = f32(q[bq + me * P.d + c]); }
  for (var c = 0u; c < P.dv; c++) { gv[c] = f32(dout[bd + me * P.dv + c]); }
  let lse_r = stats[bs + 2u * me];
  let delta_r = stats[bs + 2u * me + 1u];
  for (var kj = 0u; kj < P.lk; kj++) {
    var s = 0.0;
    for (var c = 0u; c < P.d; c++) { s += qv[c] * f32(k[bk + kj * P.d + c]); }
    let p = exp(s * P.scale + ${attnMaskValue('me', 'kj')} - lse_r);
    var dp = 0.0;
    for (var c = 0u; c < P.dv; c++) { dp += gv[c] * f32(v[bv + kj * P.dv + c]); }
    let g = p * (dp - delta_r);
    for (var c = 0u; c < P.d; c++) { acc[c] += g * f32(k[bk + kj * P.d + c]); }
  }
  let bo = ${off('dq')} + (l * P.lq + me) * P.d;
  for (var c = 0u; c < P.d; c++) { dq[bo + c] = ${dtype}(acc[c] * P.scale); }
}
`;
  }
  return `${head}
  ${stats}
  var kv: array<f32, ${ROWS_DMAX}>;
  var vv: array<f32, ${ROWS_DMAX}>;
  var acck: array<f32, ${ROWS_DMAX}>;
  var accv: array<f32, ${ROWS_DMAX}>;
  for (var c = 0u; c < P.d; c++) { kv[c] = f32(k[bk + me * P.d + c]); }
  for (var c = 0u; c < P.dv; c++) { vv[c] = f32(v[bv + me * P.dv + c]); }
  for (var qi = 0u; qi < P.lq; qi++) {
    var s = 0.0;
    for (var c = 0u; c < P.d; c++) { s += f32(q[bq + qi * P.d + c]) * kv[c]; }
    let p = exp(s * P.scale + ${attnMaskValue('qi', 'me')} - stats[bs + 2u * qi]);
    var dp = 0.0;
    for (var c = 0u; c < P.dv; c++) {
      let go = f32(dout[bd + qi * P.dv + c]);
      accv[c] += p * go;
      dp += go * vv[c];
    }
    let g = p * (dp - stats[bs + 2u * qi + 1u]);
    for (var c = 0u; c < P.d; c++) { acck[c] += g * f32(q[bq + qi * P.d + c]); }
  }
  let bko = ${off('dk')} + (l * P.lk + me) * P.d;
  let bvo = ${off('dv')} + (l * P.lk + me) * P.dv;
  for (var c = 0u; c < P.d; c++) { dk[bko + c] = ${dtype}(acck[c] * P.scale); }
  for (var c = 0u; c < P.dv; c++) { dv[bvo + c] = ${dtype}(accv[c]); }
}
`;
}
