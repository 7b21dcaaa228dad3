// Reductions over any set of axes. The input is read as [outer (kept) dims] × [inner (reduced)
// dims], each with its own shape and strides, so no transpose is materialised.
//
// Batch independence: each output element is reduced in an order that depends only on the
// number of reduced elements (never on how many outputs there are), so a sample reduced alone or
// inside a batch gives bit-identical results. 'wg': one workgroup per output, thread t sums
// elements t, t+256, ... then a fixed tree; 'seq': one thread per output, in index order.
// Software adapters run every reduction 'seq' (barriers and workgroup memory cost there), in
// workgroups of 8 (one SIMD register) so that a few hundred outputs still spread over the cores.

import { DType } from '../engine/dtype.js';
import { MAX_RANK } from '../engine/shape.js';
import { MAIN_1D, ParamLayout, at, declareBindings, f16Enable, stridedOffsets } from './common.js';

export type ReduceOp = 'sum' | 'max' | 'min';
export type ReduceMode = 'wg' | 'seq';
export const REDUCE_WG = 256;
/** Reductions of at most this many elements per output run one thread per output. */
export const SEQ_LIMIT = 64;

export const reduceLayout = new ParamLayout([
  { name: 'oshape', type: 'u32', len: MAX_RANK },
  { name: 'ostride', type: 'u32', len: MAX_RANK },
  { name: 'ishape', type: 'u32', len: MAX_RANK },
  { name: 'istride', type: 'u32', len: MAX_RANK },
  { name: 'orank', type: 'u32' },
  { name: 'irank', type: 'u32' },
  { name: 'nout', type: 'u32' },
  { name: 'ninner', type: 'u32' },
  { name: 'inoff', type: 'u32' },
  { name: 'outoff', type: 'u32' },
  { name: 'scale', type: 'f32' },
]);

export function reduceKey(op: ReduceOp, mode: ReduceMode, inType: DType, outType: DType, wg = 256): string {
  return `reduce:${op}:${mode}:${inType}>${outType}${mode === 'seq' && wg !== 256 ? `:wg${wg}` : ''}`;
}

export function reduceWGSL(op: ReduceOp, mode: ReduceMode, inType: DType, outType: DType, wg = 256): string {
  const acc = inType === 'i32' || inType === 'u32' ? inType : 'f32';
  const init = op === 'sum' ? `${acc}(0)` : acc === 'f32' ? (op === 'max' ? '-3.402823466e+38' : '3.402823466e+38') : op === 'max' ? (acc === 'i32' ? '-2147483647 - 1' : '0u') : acc === 'i32' ? '2147483647' : '4294967295u';
  const combine = (x: string, y: string) => (op === 'sum' ? `${x} + ${y}` : `${op}(${x}, ${y})`);
  const finish = op === 'sum' && acc === 'f32' ? 'r * P.scale' : 'r';
  const offsetOf = (shape: string, stride: string, rank: string, idx: string, base: string) =>
    '\n' + stridedOffsets(idx, shape, rank, [[base, (ud) => at(stride, ud)]]);
  const head = `${f16Enable(inType, outType)}
${declareBindings([{ name: 'src', type: inType }], [{ name: 'dst', type: outType }], reduceLayout)}`;
  if (mode === 'seq') {
    // One invocation per output, in index order: rows of the innermost reduced dim, each row's
    // start decoded once (the divisions stay out of the element loop, which costs them per
    // element on a CPU), then a strided walk along the row.
    return `${head}
${MAIN_1D(wg)}
  let o = gid * ${wg}u + lid;
  if (o >= P.nout) { return; }
  var base = P.inoff;${offsetOf('P.oshape', 'P.ostride', 'P.orank', 'o', 'base')}
  let last = P.irank - 1u;
  let rowLen = ${at('P.ishape', 'last')};
  let rowStride = ${at('P.istride', 'last')};
  let rows = P.ninner / rowLen;
  var r: ${acc} = ${init};
  for (var q = 0u; q < rows; q++) {
    var off = base;${offsetOf('P.ishape', 'P.istride', 'last', 'q', 'off')}
    for (var t = 0u; t < rowLen; t++) {
      r = ${combine('r', `${acc}(src[off])`)};
      off += rowStride;
    }
  }
  dst[P.outoff + o] = ${outType}(${finish});
}
`;
  }
  return `${head}
var<workgroup> part: array<${acc}, ${REDUCE_WG}>;
${MAIN_1D(REDUCE_WG)}
  let o = gid;
  if (o >= P.nout) { return; }
  var base = P.inoff;${offsetOf('P.oshape', 'P.ostride', 'P.orank', 'o', 'base')}
  var r: ${acc} = ${init};
  for (var j = lid; j < P.ninner; j += ${REDUCE_WG}u) {
    var off = base;${offsetOf('P.ishape', 'P.istride', 'P.irank', 'j', 'off')}
    r = ${combine('r', `${acc}(src[off])`)};
  }
  part[lid] = r;
  workgroupBarrier();
  for (var s = ${REDUCE_WG / 2}u; s > 0u; s = s >> 1u) {
    if (lid < s) { part[lid] = ${combine('part[lid]', 'part[lid + s]')}; }
    workgroupBarrier();
  }
  if (lid == 0u) { r = part[0]; dst[P.outoff + o] = ${outType}(${finish}); }
}
`;
}
