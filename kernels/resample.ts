// PIL's 8-bit resampling pass (libImaging/Resample.c, ImagingResampleHorizontal/Vertical_8bpc)
// along one axis, bit-exact: each output sample is the integer sum of its input window's uint8
// values times fixed-point coefficients (22 fractional bits), plus half, shifted right by 22 and
// clamped to 0..255. Values travel as f32 holding integers, so no packing is needed.
//
// Layout: x is viewed as [pre, L, post] and resampled along L into out [pre, n, post], producing
// only outputs [o0, o0 + n) of the full resized axis (a centre crop costs nothing). Per output
// index o the host supplies its window start and length (`bounds`, 2 i32 each) and `ks`
// coefficients (i32), as Pillow's precompute_coeffs / normalize_coeffs_8bpc compute them.

import { MAIN_1D, ParamLayout, declareBindings } from './common.js';

export const resampleLayout = new ParamLayout([
  { name: 'total', type: 'u32' }, // pre·n·post outputs
  { name: 'n', type: 'u32' }, // outputs along the axis in this dispatch
  { name: 'post', type: 'u32' },
  { name: 'len', type: 'u32' }, // L, the input axis length
  { name: 'o0', type: 'u32' }, // first output index (into bounds / coefficients)
  { name: 'ks', type: 'u32' }, // coefficients per output
]);

export const RESAMPLE_KEY = 'resample:pil8:f32';

/** Reads x (f32 integers), bounds (i32 pairs), coefficients (i32); writes out (f32 integers). */
export function resampleWGSL(): string {
  return `${declareBindings([{ name: 'x', type: 'f32' }, { name: 'bounds', type: 'i32' }, { name: 'coef', type: 'i32' }], [{ name: 'dst', type: 'f32' }], resampleLayout)}
${MAIN_1D()}
  let e = gid * 256u + lid;
  if (e >= P.total) { return; }
  let q = e % P.post;
  let t = e / P.post;
  let o = t % P.n;
  let p = t / P.n;
  let oi = P.o0 + o;
  let first = u32(bounds[2u * oi]);
  let count = u32(bounds[2u * oi + 1u]);
  let base = p * P.len * P.post + q;
  var ss: i32 = 1 << 21u;
  for (var j = 0u; j < count; j++) {
    ss += i32(x[base + (first + j) * P.post]) * coef[oi * P.ks + j];
  }
  dst[e] = f32(clamp(ss >> 22u, 0, 255));
}
`;
}
