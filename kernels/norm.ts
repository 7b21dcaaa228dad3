// Fused group/layer normalisation kernels, forward and backward.
//
// Both norms are seen as "rows": a row is L = cpg·S contiguous elements (group norm: the cpg
// channels of one group × S spatial elements of one sample; layer norm: one row of D, cpg = D,
// S = 1). The affine weight of element j of row r is w[(r mod groups)·cpg + j / S]; r is the
// row's global index (P.row0 + the row within this chunk) so chunking never changes it.
//
// Numerics: f32 throughout (f16 is loaded as f32, rounded on store). Statistics are two-pass:
// m0 = Σx/L, then d = x − m0 gives Σd and Σd²; the mean is m0 + Σd/L and the biased variance
// Σd²/L − (Σd/L)² — the second pass corrects the rounding of m0, so an input of 1e4 + noise
// keeps its noise (E[x²] − E[x]² would cancel it away).
//
// Batch independence: T threads per row, T = normThreads(L) (a power of two from 1 to 256; a
// workgroup of 256 threads holds 256/T rows), or one workgroup per (row, channel) for the weight
// partials; thread t takes elements t, t+T, ... and a fixed tree combines them, so the order
// depends only on L (or S), never on the number of rows. Short rows (a transformer's layer norm
// over 32 channels) would leave most of a 256-thread workgroup idle, which a software device
// pays for in full: this is why T shrinks with L.

import { DType } from '../engine/dtype.js';
import { MAIN_1D, ParamLayout, at, declareBindings, f16Enable } from './common.js';
import { SIGMOID } from './math.js';

export const NORM_WG = 256;
/** Weight partials over at most this many spatial elements run one thread per output. */
export const NORM_SEQ_LIMIT = 64;
/** On software adapters, rows (and weight partials) up to this length take one thread each. */
export const NORM_SOFTWARE_SEQ = 4096;

/** Element offsets within each bound window, by slot. */
export const SLOT = { x: 0, g: 1, out: 2, mean: 3, rstd: 4, pw: 5, pb: 6 } as const;

export const normLayout = new ParamLayout([
  { name: 'offs', type: 'u32', len: 8 },
  { name: 'nrows', type: 'u32' }, // rows in this chunk
  { name: 'row0', type: 'u32' }, // global index of the chunk's first row
  { name: 'groups', type: 'u32' },
  { name: 'cpg', type: 'u32' },
  { name: 'S', type: 'u32' },
  { name: 'len', type: 'u32' }, // L = cpg·S
  { name: 'hasw', type: 'u32' },
  { name: 'hasb', type: 'u32' },
  { name: 'eps', type: 'f32' },
]);

/** 'fwd': x, w, b -> y, mean, rstd. 'dx': x, g, w, mean, rstd -> dx.
 *  'part': x, g, mean, rstd -> Σ_s g·x̂, Σ_s g per (row, channel) (f32), 'wg' or 'seq'. */
export type NormVariant = 'fwd' | 'dx' | 'part-wg' | 'part-seq';

/**
 * An activation fused into the norm: 'silu' returns silu(norm(x)), the pair every resnet block
 * of the UNet and the VAE runs (one dispatch and one full-size tensor fewer each way). Backward
 * recomputes the pre-activation y = x̂·w + b from the saved statistics and folds silu'(y) into the
 * incoming gradient, so the dx and weight-partial kernels also read the bias (and the partials the
 * weight). The SiLU formula is the elementwise map's, so f32 forward results are bit-identical to
 * the unfused pair.
 */
export type NormAct = 'none' | 'silu';

/** Threads per row of the 'fwd' and 'dx' kernels: about 8 elements per thread, 1 … 256. */
export function normThreads(len: number): number {
  let t = 1;
  while (t < NORM_WG && t * 8 < len) t *= 2;
  return t;
}

export function normKey(v: NormVariant, xType: DType, gType: DType, threads = NORM_WG, act: NormAct = 'none'): string {
  return `norm:${v}:${xType},${gType}:${threads}${act === 'none' ? '' : `:${act}`}`;
}

const off = (slot: number) => at('P.offs', `${slot}u`);

/** Tree-sums the vec2 each thread left in red[lid] over the T threads of its row segment (tl
 *  = lid mod T, segment base sb); the result is red[sb] for all of them. */
const treeOf = (T: number) => `  workgroupBarrier();
  for (var s = ${T >> 1}u; s > 0u; s = s >> 1u) {
    if (tl < s) { red[lid] = red[lid] + red[lid + s]; }
    workgroupBarrier();
  }`;
/** Thread-to-row mapping of the segmented kernels; inactive threads still reach the barriers. */
const rowsOf = (T: number) => `  let tl = lid % ${T}u;
  let sb = lid - tl;
  let row = gid * ${NORM_WG / T}u + lid / ${T}u;
  let live = row < P.nrows;
  let rowc = select(0u, row, live);`;
const TREE = treeOf(NORM_WG);

// The affine parameters of channel c of a row whose group's first channel is wb (wbOf). The
// channel of element j is j / S; the loops keep it incrementally (chanLoop) instead of dividing
// per element: a division by a uniform is eight scalar divisions per lane-vector on lavapipe,
// and took a third of the SD-size group norm's time.
const W_AT = `fn wAt(wb: u32, c: u32) -> f32 {
  if (P.hasw == 0u) { return 1.0; }
  return f32(w[wb + c]);
}`;
const AFFINE = `${W_AT}
fn bAt(wb: u32, c: u32) -> f32 {
  if (P.hasb == 0u) { return 0.0; }
  return f32(b[wb + c]);
}`;
/** The index of the first affine parameter of a row's group. */
const wbOf = (row: string) => `((P.row0 + ${row}) % P.groups) * P.cpg`;

/**
 * for (j = tl; j < len; j += T) { body } with c = j / S kept exact without a division per step:
 * j = c·S + r, 0 ≤ r < S, and T = qT·S + rT, so each step adds qT to c and rT to r and carries once.
 */
const chanLoop = (T: string, body: string) => `  {
  var c = tl / P.S; var r = tl % P.S;
  let qT = ${T} / P.S; let rT = ${T} % P.S;
  for (var j = tl; j < len; j += ${T}) {
${body}
    r += rT; c += qT;
    if (r >= P.S) { r -= P.S; c += 1u; }
  }
  }`;

/** The forward's output expression from the pre-activation `yv`. */
const actOut = (act: NormAct, yv: string) => (act === 'silu' ? `${yv} * sigmoid_f(${yv})` : yv);

/** dL/dy (y = x̂·w + b, before the activation) from the incoming gradient `gv`; xh is x̂. */
const G_ACT = `fn gPre(wb: u32, c: u32, xh: f32, gv: f32) -> f32 {
  let yv = xh * wAt(wb, c) + bAt(wb, c);
  let s = sigmoid_f(yv);
  return gv * s * (1.0 + yv * (1.0 - s));
}`;
const gPre = (act: NormAct, gv: string) => (act === 'silu' ? `gPre(wb, c, xh, ${gv})` : gv);

export function normWGSL(v: NormVariant, xType: DType, gType: DType, T = NORM_WG, act: NormAct = 'none'): string {
  const STEP = `${T}u`;
  const helpers = act === 'silu' ? `${SIGMOID}\n${G_ACT}` : '';
  if (v === 'fwd') {
    return `${f16Enable(xType)}
${declareBindings(
      [{ name: 'x', type: xType }, { name: 'w', type: xType }, { name: 'b', type: xType }],
      [{ name: 'y', type: xType }, { name: 'mean', type: 'f32' }, { name: 'rstd', type: 'f32' }], normLayout)}
var<workgroup> red: array<vec2<f32>, ${NORM_WG}>;
${AFFINE}
${act === 'silu' ? SIGMOID : ''}
${MAIN_1D(NORM_WG)}
${rowsOf(T)}
  let len = select(0u, P.len, live);
  let xb = ${off(SLOT.x)} + rowc * P.len;
  let yb = ${off(SLOT.out)} + rowc * P.len;
  let wb = ${wbOf('rowc')};
  let n = f32(P.len);
  var s1 = 0.0;
  for (var j = tl; j < len; j += ${STEP}) { s1 += f32(x[xb + j]); }
  red[lid] = vec2<f32>(s1, 0.0);
${treeOf(T)}
  let m0 = red[sb].x / n;
  workgroupBarrier();
  var d1 = 0.0;
  var d2 = 0.0;
  for (var j = tl; j < len; j += ${STEP}) {
    let d = f32(x[xb + j]) - m0;
    d1 += d;
    d2 += d * d;
  }
  red[lid] = vec2<f32>(d1, d2);
${treeOf(T)}
  let cm = red[sb].x / n;
  let rs = inverseSqrt(max(red[sb].y / n - cm * cm, 0.0) + P.eps);
  if (tl == 0u && live) {
    mean[${off(SLOT.mean)} + row] = m0 + cm;
    rstd[${off(SLOT.rstd)} + row] = rs;
  }
${chanLoop(STEP, `    // (x − m0) − cm rather than x − (m0 + cm): m0 + cm would round to f32 at the mean's scale.
    let xh = ((f32(x[xb + j]) - m0) - cm) * rs;
    let yv = xh * wAt(wb, c) + bAt(wb, c);
    y[yb + j] = ${xType}(${actOut(act, 'yv')});`)}
}
`;
  }
  if (v === 'dx') {
    return `${f16Enable(xType, gType)}
${declareBindings(
      [{ name: 'x', type: xType }, { name: 'g', type: gType }, { name: 'w', type: xType }, ...(act === 'none' ? [] : [{ name: 'b', type: xType }]), { name: 'mean', type: 'f32' }, { name: 'rstd', type: 'f32' }],
      [{ name: 'dx', type: gType }], normLayout)}
var<workgroup> red: array<vec2<f32>, ${NORM_WG}>;
${act === 'none' ? W_AT : `${AFFINE}\n${helpers}`}
${MAIN_1D(NORM_WG)}
${rowsOf(T)}
  let len = select(0u, P.len, live);
  let xb = ${off(SLOT.x)} + rowc * P.len;
  let gb = ${off(SLOT.g)} + rowc * P.len;
  let ob = ${off(SLOT.out)} + rowc * P.len;
  let wb = ${wbOf('rowc')};
  let m = mean[${off(SLOT.mean)} + rowc];
  let rs = rstd[${off(SLOT.rstd)} + rowc];
  var a = 0.0;
  var bb = 0.0;
${chanLoop(STEP, `    let xh = (f32(x[xb + j]) - m) * rs;
    let wg = ${gPre(act, 'f32(g[gb + j])')} * wAt(wb, c);
    a += wg;
    bb += wg * xh;`)}
  red[lid] = vec2<f32>(a, bb);
${treeOf(T)}
  let n = f32(P.len);
  let ma = red[sb].x / n;
  let mb = red[sb].y / n;
  // dx = rstd·(w·g − mean(w·g) − x̂·mean(w·g·x̂)), the means over the row.
${chanLoop(STEP, `    let xh = (f32(x[xb + j]) - m) * rs;
    let wg = ${gPre(act, 'f32(g[gb + j])')} * wAt(wb, c);
    dx[ob + j] = ${gType}(rs * (wg - ma - xh * mb));`)}
}
`;
  }
  const head = `${f16Enable(xType, gType)}
${declareBindings(
    [{ name: 'x', type: xType }, { name: 'g', type: gType }, ...(act === 'none' ? [] : [{ name: 'w', type: xType }, { name: 'b', type: xType }]), { name: 'mean', type: 'f32' }, { name: 'rstd', type: 'f32' }],
    [{ name: 'pw', type: 'f32' }, { name: 'pb', type: 'f32' }], normLayout)}
${act === 'none' ? '' : `${AFFINE}\n${helpers}`}`;
  // Output o = row·cpg + c sums over the S elements of channel c in that row.
  const setup = `  let row = o / P.cpg;
  let c = o % P.cpg;
  let wb = ${wbOf('row')};
  let base = row * P.len + c * P.S;
  let m = mean[${off(SLOT.mean)} + row];
  let rs = rstd[${off(SLOT.rstd)} + row];`;
  // Every term of output o is in channel c of its row.
  const term = act === 'none'
    ? `let gv = f32(g[${off(SLOT.g)} + base + s]);
    acc += vec2<f32>(gv * (f32(x[${off(SLOT.x)} + base + s]) - m) * rs, gv);`
    : `let xh = (f32(x[${off(SLOT.x)} + base + s]) - m) * rs;
    let gv = ${gPre(act, `f32(g[${off(SLOT.g)} + base + s])`)};
    acc += vec2<f32>(gv * xh, gv);`;
  const store = `pw[${off(SLOT.pw)} + o] = r.x;
    pb[${off(SLOT.pb)} + o] = r.y;`;
  if (v === 'part-seq') {
    return `${head}
${MAIN_1D()}
  let o = gid * 256u + lid;
  if (o >= P.nrows * P.cpg) { return; }
${setup}
  var acc = vec2<f32>(0.0, 0.0);
  for (var s = 0u; s < P.S; s++) {
    ${term}
  }
  let r = acc;
  ${store}
}
`;
  }
  return `${head}
var<workgroup> red: array<vec2<f32>, ${NORM_WG}>;
${MAIN_1D(NORM_WG)}
  let o = gid;
  let tl = lid;
  if (o >= P.nrows * P.cpg) { return; }
${setup}
  var acc = vec2<f32>(0.0, 0.0);
  for (var s = lid; s < P.S; s += ${NORM_WG}u) {
    ${term}
  }
  red[lid] = acc;
${TREE}
  if (lid == 0u) {
    let r = red[0];
    ${store}
  }
}
`;
}
