// The strided map kernel: out[o] = f(in0[a0], in1[a1], ...) where every operand (the output too)
// is addressed as offset + Σ idx_d·stride_d over one shared shape. Broadcasting (stride 0),
// permute, transpose, slice, expand, pad and concat are all this kernel with different strides,
// so they share one pipeline per expression and dtype combination.

import { DType } from '../engine/dtype.js';
import { MAX_RANK } from '../engine/shape.js';
import { MAIN_1D, ParamLayout, at, declareBindings, f16Enable, stridedOffsets } from './common.js';

export type ComputeType = 'f32' | 'i32' | 'u32';

export interface MapSpec {
  /** Names the pipeline; together with types and `contiguous` it is the cache key. */
  name: string;
  inTypes: DType[];
  outType: DType;
  /** The type operands are converted to before `expr` runs (f32 for every float dtype). */
  ctype: ComputeType;
  /** A WGSL expression of type ctype over the inputs a, b, c, the scalars P.s0, P.s1 and the output address P.obase + o{nIn}. */
  expr: string;
  /** Extra WGSL (helper functions) placed before main. */
  helpers?: string;
  /** All operands laid out contiguously in the same shape: skip index arithmetic. */
  contiguous: boolean;
  /**
   * Software adapters: each invocation walks ROW_RUN elements, along the last dim for strided
   * operands (decoding its position once: the per-element divisions of the one-element form
   * dominate there) or consecutive ones for contiguous operands (lavapipe pays per invocation
   * and per workgroup: 64K-element adds ran 1.9× faster this way in a probe). The same values
   * either way: an elementwise op has no order.
   */
  rows?: boolean;
}

/** Elements per invocation of the row form. */
export const ROW_RUN = 16;
/** Workgroup size of the row form. */
export const ROW_WG = 64;

const NAMES = ['a', 'b', 'c', 'd'];

export function mapLayout(nIn: number): ParamLayout {
  return new ParamLayout([
    { name: 'shape', type: 'u32', len: MAX_RANK },
    { name: 'strides', type: 'u32', len: MAX_RANK * (nIn + 1) },
    { name: 'offs', type: 'u32', len: 4 },
    { name: 'n', type: 'u32' },
    { name: 'rank', type: 'u32' },
    // Where the output's bound window starts, in elements: P.obase + o{last} is the absolute
    // element address in the output buffer (arange needs it when the op is split into chunks).
    { name: 'obase', type: 'u32' },
    { name: 's0', type: 'f32' },
    { name: 's1', type: 'f32' },
  ]);
}

export function mapKey(s: MapSpec): string {
  return `map:${s.name}:${s.inTypes.join(',')}>${s.outType}:${s.ctype}:${s.contiguous ? (s.rows ? 'cr' : 'c') : s.rows ? 'r' : 's'}`;
}

export function mapWGSL(s: MapSpec): string {
  const n = s.inTypes.length;
  const layout = mapLayout(n);
  const reads = s.inTypes.map((t, k) => ({ name: `in${k}`, type: t }));
  const addr: string[] = [];
  for (let k = 0; k <= n; k++) addr.push(`o${k}`);
  let index: string;
  if (s.contiguous) {
    index = addr.map((o, k) => `  let ${o} = ${at('P.offs', `${k}u`)} + i;`).join('\n');
  } else {
    index = [
      ...addr.map((o, k) => `  var ${o} = ${at('P.offs', `${k}u`)};`),
      stridedOffsets('i', 'P.shape', 'P.rank', addr.map((o, k) => [o, (ud) => at('P.strides', `${k * MAX_RANK}u + ${ud}`)])),
    ].join('\n');
  }
  const loads = s.inTypes.map((_, k) => `  let ${NAMES[k]} = ${s.ctype}(in${k}[o${k}]);`).join('\n');
  if (!s.contiguous && s.rows) return rowsWGSL(s, reads, layout, addr, loads);
  if (s.contiguous && s.rows) {
    return `${f16Enable(...s.inTypes, s.outType)}
${declareBindings(reads, [{ name: 'dst', type: s.outType }], layout)}
${s.helpers ?? ''}
${MAIN_1D(ROW_WG)}
  let i0 = (gid * ${ROW_WG}u + lid) * ${ROW_RUN}u;
  let i1 = min(i0 + ${ROW_RUN}u, P.n);
  for (var i = i0; i < i1; i++) {
  ${index.split('\n').join('\n  ')}
  ${loads.split('\n').join('\n  ')}
    dst[o${n}] = ${s.outType}(${s.expr});
  }
}
`;
  }
  return `${f16Enable(...s.inTypes, s.outType)}
${declareBindings(reads, [{ name: 'dst', type: s.outType }], layout)}
${s.helpers ?? ''}
${MAIN_1D()}
  let i = gid * 256u + lid;
  if (i >= P.n) { return; }
${index}
${loads}
  dst[o${n}] = ${s.outType}(${s.expr});
}
`;
}

/** The row form: invocation id → (row q, run c of ROW_RUN elements along the last dim). */
function rowsWGSL(s: MapSpec, reads: { name: string; type: DType }[], layout: ParamLayout, addr: string[], loads: string): string {
  const n = s.inTypes.length;
  const lastStride = (k: number) => at('P.strides', `${k * MAX_RANK}u + last`);
  return `${f16Enable(...s.inTypes, s.outType)}
${declareBindings(reads, [{ name: 'dst', type: s.outType }], layout)}
${s.helpers ?? ''}
${MAIN_1D(ROW_WG)}
  let last = P.rank - 1u;
  let L = ${at('P.shape', 'last')};
  let runs = (L + ${ROW_RUN - 1}u) / ${ROW_RUN}u;
  let id = gid * ${ROW_WG}u + lid;
  if (id >= (P.n / L) * runs) { return; }
  let q = id / runs;
  let t0 = (id % runs) * ${ROW_RUN}u;
${addr.map((o, k) => `  var ${o} = ${at('P.offs', `${k}u`)} + t0 * ${lastStride(k)};`).join('\n')}
${stridedOffsets('q', 'P.shape', 'last', addr.map((o, k) => [o, (ud) => at('P.strides', `${k * MAX_RANK}u + ${ud}`)]))}
  let t1 = min(t0 + ${ROW_RUN}u, L);
  for (var t = t0; t < t1; t++) {
  ${loads.split('\n').join('\n  ')}
    dst[o${n}] = ${s.outType}(${s.expr});
${addr.map((o, k) => `    ${o} += ${lastStride(k)};`).join('\n')}
  }
}
`;
}
