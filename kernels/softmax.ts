// Row-wise softmax and log-softmax, forward and backward, over one axis read through strides.
//
// A "row" is the L elements along the axis; rows are addressed by two outer indices
// (r0, r1) with strides (s0, s1) so that any axis of a contiguous tensor, and any chunk the
// binding limit forces, is expressible without a transpose. All operands share the layout and
// differ only in their element offset (P.offs).
//
// Numerics: f32 throughout (f16 is loaded into f32 and rounded on store); the row max is
// subtracted before exp. Batch independence: the reduction order of a row depends only on L —
// 'seq' (L ≤ SOFTMAX_SEQ_LIMIT, any L on software adapters): one thread per row, in index order; 'wg': one workgroup per row,
// thread t takes elements t, t+256, ..., then a fixed tree.

import { DType } from '../engine/dtype.js';
import { MAIN_1D, ParamLayout, at, declareBindings, f16Enable } from './common.js';

/** 'fwd': x -> y; 'grad': (y, g) -> dx. P.log picks log-softmax over softmax (a uniform, so
 * the two share one pipeline: each shader is an expensive compile on lavapipe). */
export type SoftmaxVariant = 'fwd' | 'grad';
export type SoftmaxMode = 'wg' | 'seq';
export const SOFTMAX_WG = 256;
export const SOFTMAX_SEQ_LIMIT = 64;

export const softmaxLayout = new ParamLayout([
  { name: 'offs', type: 'u32', len: 4 },
  { name: 'nrows', type: 'u32' },
  { name: 'o1', type: 'u32' }, // rows are r = r0·o1 + r1
  { name: 's0', type: 'u32' },
  { name: 's1', type: 'u32' },
  { name: 'len', type: 'u32' }, // L
  { name: 'ls', type: 'u32' }, // stride along the axis
  { name: 'log', type: 'u32' }, // 1: log-softmax
]);

export function softmaxKey(v: SoftmaxVariant, mode: SoftmaxMode, inTypes: DType[], outType: DType): string {
  return `softmax:${v}:${mode}:${inTypes.join(',')}>${outType}`;
}

const NEG_BIG = '-3.402823466e+38';

/**
 * Forward: one input x, output y. Backward: inputs (y, g) — y the forward's output — output dx:
 *   softmax:     dx = y·(g − Σ g·y)
 *   log-softmax: dx = g − exp(y)·Σ g
 */
export function softmaxWGSL(v: SoftmaxVariant, mode: SoftmaxMode, inTypes: DType[], outType: DType): string {
  const forward = v === 'fwd';
  const reads = inTypes.map((t, k) => ({ name: `in${k}`, type: t }));
  const off = (k: number) => at('P.offs', `${k}u`);
  // WGSL loads of element j of the row for input k, as f32.
  const ld = (k: number) => `f32(in${k}[${off(k)} + base + j * P.ls])`;
  const store = (expr: string) => `dst[${off(inTypes.length)} + base + j * P.ls] = ${outType}(${expr});`;

  // Per-row pieces: what is accumulated (and how), and the final write.
  interface Pass { init: string; term: string; combine: (a: string, b: string) => string }
  const passes: Pass[] = forward
    ? [
        { init: NEG_BIG, term: ld(0), combine: (a, b) => `max(${a}, ${b})` },
        { init: '0.0', term: `exp(${ld(0)} - acc0)`, combine: (a, b) => `${a} + ${b}` },
      ]
    : [{ init: '0.0', term: `${ld(1)} * select(${ld(0)}, 1.0, islog)`, combine: (a, b) => `${a} + ${b}` }];
  const write = forward
    ? `select(exp(${ld(0)} - acc0) / acc1, ${ld(0)} - acc0 - log(acc1), islog)`
    : `select(${ld(0)} * (${ld(1)} - acc0), ${ld(1)} - exp(${ld(0)}) * acc0, islog)`;

  const head = `${f16Enable(...inTypes, outType)}
${declareBindings(reads, [{ name: 'dst', type: outType }], softmaxLayout)}`;
  const rowBase = '  let base = (row / P.o1) * P.s0 + (row % P.o1) * P.s1;\n  let islog = P.log != 0u;';

  if (mode === 'seq') {
    const body = passes.map((p, k) => `  var acc${k}: f32 = ${p.init};
  for (var j = 0u; j < P.len; j++) { acc${k} = ${p.combine(`acc${k}`, p.term)}; }`).join('\n');
    return `${head}
${MAIN_1D()}
  let row = gid * 256u + lid;
  if (row >= P.nrows) { return; }
${rowBase}
${body}
  for (var j = 0u; j < P.len; j++) { ${store(write)} }
}
`;
  }

  const body = passes.map((p, k) => `  {
    var r: f32 = ${p.init};
    for (var j = lid; j < P.len; j += ${SOFTMAX_WG}u) { r = ${p.combine('r', p.term)}; }
    part[lid] = r;
    workgroupBarrier();
    for (var s = ${SOFTMAX_WG / 2}u; s > 0u; s = s >> 1u) {
      if (lid < s) { part[lid] = ${p.combine('part[lid]', 'part[lid + s]')}; }
      workgroupBarrier();
    }
  }
  let acc${k} = part[0];
  workgroupBarrier();`).join('\n');
  return `${head}
var<workgroup> part: array<f32, ${SOFTMAX_WG}>;
${MAIN_1D(SOFTMAX_WG)}
  let row = gid;
  if (row >= P.nrows) { return; }
${rowBase}
${body}
  for (var j = lid; j < P.len; j += ${SOFTMAX_WG}u) { ${store(write)} }
}
`;
}
