// Gathering rows by index (indexSelect, embedding) and its deterministic backward.
//
// Layout: x is viewed as [pre, V, post] (V = the indexed axis), the output as [pre, n, post]
// with out[p, k, q] = x[p, idx[k], q]. A dispatch covers a chunk of pre (cp rows of it), of the
// index positions (ck), and a window of table rows [v0, v0 + cv): it writes only the outputs
// whose index falls in its window, so a table larger than one binding is covered by several
// dispatches that each bind a slice of it. Indices outside [0, V) produce zeros, written by the
// chunk whose window starts at row 0.
//
// Backward (no float atomics in WGSL): 'links' finds, for each position k, the next position
// with the same index (a linked list per distinct index, in index order) and whether k is the
// first; then 'grad' runs one thread per (p, first position, q) that walks its list summing the
// gradient rows in position order and writes the table row once. The sum order depends only on
// the index values, so results are deterministic and batch-independent.

import { DType } from '../engine/dtype.js';
import { MAIN_1D, ParamLayout, declareBindings, f16Enable } from './common.js';

export type IndexType = 'i32' | 'u32';

export const gatherLayout = new ParamLayout([
  { name: 'total', type: 'u32' }, // threads: cp·ck·post
  { name: 'ck', type: 'u32' }, // index positions in this chunk (grad: all n)
  { name: 'post', type: 'u32' },
  { name: 'xps', type: 'u32' }, // x's stride along pre: V·post
  { name: 'ops', type: 'u32' }, // out's (grad: g's) stride along pre: n·post
  { name: 'vtot', type: 'u32' }, // V
  { name: 'v0', type: 'u32' },
  { name: 'cv', type: 'u32' },
  { name: 'xoff', type: 'u32' },
  { name: 'ioff', type: 'u32' },
  { name: 'ooff', type: 'u32' },
  { name: 'n', type: 'u32' }, // links: number of indices
]);

export const LINK_END = 0xffffffff;

/** WGSL: `valid` and `id` (u32) from raw index `raw`. */
function decode(it: IndexType): string {
  return it === 'i32'
    ? '  let valid = raw >= 0 && u32(raw) < P.vtot;\n  let id = u32(raw);'
    : '  let valid = raw < P.vtot;\n  let id = raw;';
}

export function gatherKey(kind: 'fwd' | 'grad' | 'links', xType: DType, it: IndexType, outType: DType): string {
  return `gather:${kind}:${xType}:${it}>${outType}`;
}

/** Entry point of the forward and backward kernels: element e of the output window, split into
 *  (p, k, q) = (pre-row, position in the chunk of indices, post offset). */
const MAIN_POSITION = `${MAIN_1D()}
  let e = gid * 256u + lid;
  if (e >= P.total) { return; }
  let q = e % P.post;
  let t = e / P.post;
  let k = t % P.ck;
  let p = t / P.ck;`;

/** Forward: reads x (window), idx (window); writes out (window). */
export function gatherWGSL(xType: DType, it: IndexType): string {
  const zero = `${xType}(0)`;
  return `${f16Enable(xType)}
${declareBindings([{ name: 'x', type: xType }, { name: 'idx', type: it }], [{ name: 'dst', type: xType }], gatherLayout)}
${MAIN_POSITION}
  let raw = idx[P.ioff + k];
${decode(it)}
  let o = P.ooff + p * P.ops + k * P.post + q;
  if (!valid) {
    if (P.v0 == 0u) { dst[o] = ${zero}; }
    return;
  }
  if (id < P.v0 || id - P.v0 >= P.cv) { return; }
  dst[o] = x[P.xoff + p * P.xps + (id - P.v0) * P.post + q];
}
`;
}

/** links[k] = next position with the same index (or LINK_END); links[n + k] = 1 if k is the first. */
export function linksWGSL(it: IndexType): string {
  return `${declareBindings([{ name: 'idx', type: it }], [{ name: 'links', type: 'u32' }], gatherLayout)}
${MAIN_1D()}
  let k = gid * 256u + lid;
  if (k >= P.n) { return; }
  let me = idx[k];
  var first = 1u;
  for (var j = 0u; j < k; j++) {
    if (idx[j] == me) { first = 0u; break; }
  }
  var next = ${LINK_END}u;
  for (var j = k + 1u; j < P.n; j++) {
    if (idx[j] == me) { next = j; break; }
  }
  links[k] = next;
  links[P.n + k] = first;
}
`;
}

/** Backward: reads g (window of cp pre-rows, all positions), idx, links; writes gx (window of table rows). */
export function gatherGradWGSL(gType: DType, it: IndexType, outType: DType): string {
  return `${f16Enable(gType, outType)}
${declareBindings([{ name: 'g', type: gType }, { name: 'idx', type: it }, { name: 'links', type: 'u32' }], [{ name: 'dst', type: outType }], gatherLayout)}
${MAIN_POSITION}
  if (links[P.ck + k] == 0u) { return; }
  let raw = idx[k];
${decode(it)}
  if (!valid || id < P.v0 || id - P.v0 >= P.cv) { return; }
  let gb = P.ooff + p * P.ops + q;
  var s = f32(g[gb + k * P.post]);
  var j = links[k];
  for (var guard = 0u; guard < P.ck && j != ${LINK_END}u; guard++) {
    s += f32(g[gb + j * P.post]);
    j = links[j];
  }
  dst[P.xoff + p * P.xps + (id - P.v0) * P.post + q] = ${outType}(s);
}
`;
}
