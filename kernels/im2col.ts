// The im2col copy of engine/ops/conv2d-im2col.ts: the convolution's input windows laid out as a
// matrix, as f32, zeros where a tap falls in the padding. One invocation per output run, with the
// row's indices decoded once (lavapipe pays for each division):
//
//   cols  [K, S·OH·OW], k = (ci, ky, kx): invocation (k, s) writes the OH·OW columns of its sample.
//   colsT [S·OH·OW, K]: invocation (s, oy, ox, ci) writes the KH·KW taps of its channel.

import { DType } from '../engine/dtype.js';
import { MAIN_1D, ParamLayout, declareBindings, f16Enable } from './common.js';

export type Im2colLayout = 'cols' | 'cols4' | 'colsT';

export const im2colLayout = new ParamLayout([
  { name: 'total', type: 'u32' }, // invocations
  { name: 'S', type: 'u32' }, // samples in this dispatch
  { name: 'C', type: 'u32' },
  { name: 'H', type: 'u32' },
  { name: 'W', type: 'u32' },
  { name: 'KH', type: 'u32' },
  { name: 'KW', type: 'u32' },
  { name: 'OH', type: 'u32' },
  { name: 'OW', type: 'u32' },
  { name: 'SH', type: 'u32' },
  { name: 'SW', type: 'u32' },
  { name: 'DH', type: 'u32' },
  { name: 'DW', type: 'u32' },
  { name: 'PT', type: 'i32' },
  { name: 'PL', type: 'i32' },
  { name: 'off', type: 'u32' }, // element offset of sample 0 in the bound window of x
]);

const WG = 64;
export const IM2COL_WG = WG;

export const im2colKey = (layout: Im2colLayout, dtype: DType) => `im2col:${layout}:${dtype}`;

/**
 * Two nested loops writing consecutive elements of dst from d on: the outer one over rows of taps
 * (iy = iy0 + a·sa), the inner one over columns (ix = ix0 + b·sb), V taps per store (V = 4: one
 * vec4 store where lavapipe would make four, as it stores lane by lane).
 */
function walk(a: string, aN: string, sa: string, b: string, bN: string, sb: string, V: 1 | 4): string {
  const tap = (c: number) => `select(0.0, f32(x[select(0u, base + u32(iy) * P.W + u32(tx${c}), tok${c})]), tok${c})`;
  const taps = Array.from({ length: V }, (_, c) => `      let tx${c} = ix0 + i32((${b}${c ? ` + ${c}u` : ''}) * ${sb});
      let tok${c} = oky && tx${c} >= 0 && tx${c} < i32(P.W);`).join('\n');
  const value = V === 1 ? tap(0) : `vec4<f32>(${Array.from({ length: V }, (_, c) => tap(c)).join(', ')})`;
  return `  for (var ${a} = 0u; ${a} < ${aN}; ${a}++) {
    let iy = iy0 + i32(${a} * ${sa});
    let oky = iy >= 0 && iy < i32(P.H);
    for (var ${b} = 0u; ${b} < ${bN}; ${b} += ${V}u) {
${taps}
      dst[d] = ${value};
      d++;
    }
  }`;
}

/** x (dtype) → the matrix (f32). 'cols4' needs OW a multiple of 4. */
export function im2colWGSL(layout: Im2colLayout, dtype: DType): string {
  const V = layout === 'cols4' ? 4 : 1;
  const head = `${f16Enable(dtype)}${declareBindings([{ name: 'x', type: dtype }], [{ name: 'dst', type: V === 4 ? 'vec4<f32>' : 'f32' }], im2colLayout)}
${MAIN_1D(WG)}
  let e = gid * ${WG}u + lid;
  if (e >= P.total) { return; }
  let HW = P.H * P.W; let OHW = P.OH * P.OW; let KK = P.KH * P.KW;`;
  // Reads x[s, ci, iy, ix] or 0 outside the image (index 0 of the window is always valid).
  if (layout !== 'colsT') {
    return `${head}
  let s = e % P.S;
  let k = e / P.S;
  let ci = k / KK; let r = k % KK;
  let ky = r / P.KW; let kx = r % P.KW;
  let base = P.off + (s * P.C + ci) * HW;
  let iy0 = i32(ky * P.DH) - P.PT; let ix0 = i32(kx * P.DW) - P.PL;
  var d = (k * P.S + s) * OHW / ${V}u;
${walk('oy', 'P.OH', 'P.SH', 'ox', 'P.OW', 'P.SW', V)}
}
`;
  }
  return `${head}
  let ci = e % P.C;
  let q = e / P.C;
  let ox = q % P.OW; let q2 = q / P.OW;
  let oy = q2 % P.OH; let s = q2 / P.OH;
  let base = P.off + (s * P.C + ci) * HW;
  let iy0 = i32(oy * P.SH) - P.PT; let ix0 = i32(ox * P.SW) - P.PL;
  var d = ((s * P.OH + oy) * P.OW + ox) * P.C * KK + ci * KK;
${walk('ky', 'P.KH', 'P.DH', 'kx', 'P.KW', 'P.DW', 1)}
}
`;
}
