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

/** x (dtype) → the matrix (f32). */
export function im2colWGSL(layout: Im2colLayout, dtype: DType): string {
  const head = `${f16Enable(dtype)}${declareBindings([{ name: 'x', type: dtype }], [{ name: 'dst', type: 'f32' }], im2colLayout)}
${MAIN_1D(WG)}
  let e = gid * ${WG}u + lid;
  if (e >= P.total) { return; }
  let HW = P.H * P.W; let OHW = P.OH * P.OW; let KK = P.KH * P.KW;`;
  // Reads x[s, ci, iy, ix] or 0 outside the image (index 0 of the window is always valid).
  const tap = (iy: string, ix: string, base: string) => `select(0.0, f32(x[select(0u, ${base} + u32(${iy}) * P.W + u32(${ix}), ok)]), ok)`;
  if (layout === 'cols4') {
    // OW a multiple of 4: four taps of a row per vec4 store (lavapipe stores lane by lane, so a
    // vec4 is one store where four scalars are four).
    return `${f16Enable(dtype)}${declareBindings([{ name: 'x', type: dtype }], [{ name: 'dst', type: 'vec4<f32>' }], im2colLayout)}
${MAIN_1D(WG)}
  let e = gid * ${WG}u + lid;
  if (e >= P.total) { return; }
  let HW = P.H * P.W; let OHW = P.OH * P.OW; let KK = P.KH * P.KW;
  let s = e % P.S;
  let k = e / P.S;
  let ci = k / KK; let r = k % KK;
  let ky = r / P.KW; let kx = r % P.KW;
  let base = P.off + (s * P.C + ci) * HW;
  let iy0 = i32(ky * P.DH) - P.PT; let ix0 = i32(kx * P.DW) - P.PL;
  var d = (k * P.S + s) * OHW / 4u;
  for (var oy = 0u; oy < P.OH; oy++) {
    let iy = iy0 + i32(oy * P.SH);
    let oky = iy >= 0 && iy < i32(P.H);
    for (var ox = 0u; ox < P.OW; ox += 4u) {
      var v = vec4<f32>(0.0);
      for (var c = 0u; c < 4u; c++) {
        let ix = ix0 + i32((ox + c) * P.SW);
        let ok = oky && ix >= 0 && ix < i32(P.W);
        v[c] = ${tap('iy', 'ix', 'base')};
      }
      dst[d] = v;
      d++;
    }
  }
}
`;
  }
  if (layout === 'cols') {
    return `${head}
  let s = e % P.S;
  let k = e / P.S;
  let ci = k / KK; let r = k % KK;
  let ky = r / P.KW; let kx = r % P.KW;
  let base = P.off + (s * P.C + ci) * HW;
  let iy0 = i32(ky * P.DH) - P.PT; let ix0 = i32(kx * P.DW) - P.PL;
  var d = (k * P.S + s) * OHW;
  for (var oy = 0u; oy < P.OH; oy++) {
    let iy = iy0 + i32(oy * P.SH);
    let oky = iy >= 0 && iy < i32(P.H);
    for (var ox = 0u; ox < P.OW; ox++) {
      let ix = ix0 + i32(ox * P.SW);
      let ok = oky && ix >= 0 && ix < i32(P.W);
      dst[d] = ${tap('iy', 'ix', 'base')};
      d++;
    }
  }
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
  for (var ky = 0u; ky < P.KH; ky++) {
    let iy = iy0 + i32(ky * P.DH);
    let oky = iy >= 0 && iy < i32(P.H);
    for (var kx = 0u; kx < P.KW; kx++) {
      let ix = ix0 + i32(kx * P.DW);
      let ok = oky && ix >= 0 && ix < i32(P.W);
      dst[d] = ${tap('iy', 'ix', 'base')};
      d++;
    }
  }
}
`;
}
