// Counter-based random numbers: Philox-4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random
// numbers: as easy as 1, 2, 3", SC'11). Each thread computes one 128-bit block (4 words) for
// counter = (block index as 64 bits, 0, 0) under key = the seed's two words, and writes the
// elements of the tensor that fall in that block. Element c = offset + i always comes from block
// floor(c / 4), lane c mod 4, so values never depend on the dispatch layout or on chunking.
// engine/random-ref.ts is the same stream on the CPU; keep the two in step.
//
// WGSL has no u64: the 32×32→64-bit products are assembled from 16-bit halves.

import { DType } from '../engine/dtype.js';
import { MAIN_1D, ParamLayout, declareBindings, f16Enable } from './common.js';

/** Philox-4x32's round multipliers and Weyl key increments (Salmon et al., SC'11). */
export const PHILOX_M0 = 0xd2511f53;
export const PHILOX_M1 = 0xcd9e8d57;
export const PHILOX_W0 = 0x9e3779b9;
export const PHILOX_W1 = 0xbb67ae85;
export const PHILOX_ROUNDS = 10;

export type RandomMode = 'bits' | 'uniform' | 'normal';

export const randomLayout = new ParamLayout([
  { name: 'blo', type: 'u32' }, // first block index, low and high words
  { name: 'bhi', type: 'u32' },
  { name: 'shift', type: 'u32' }, // lane of the first element in the first block
  { name: 'n', type: 'u32' },
  { name: 'k0', type: 'u32' },
  { name: 'k1', type: 'u32' },
  { name: 'outoff', type: 'u32' },
  { name: 'guard', type: 'u32' }, // always 0: see uniform below
  { name: 'a', type: 'f32' }, // uniform: low; normal: mean
  { name: 'b', type: 'f32' }, // uniform: high - low; normal: std
  { name: 'below', type: 'f32' }, // uniform: largest stored value below high
]);

const hex = (v: number) => `0x${v.toString(16)}u`;

export const PHILOX_WGSL = `
// (hi, lo) words of the 64-bit product a·b.
fn mulhilo(a: u32, b: u32) -> vec2<u32> {
  let al = a & 0xffffu; let ah = a >> 16u;
  let bl = b & 0xffffu; let bh = b >> 16u;
  let ll = al * bl; let lh = al * bh; let hl = ah * bl; let hh = ah * bh;
  let mid = (ll >> 16u) + (lh & 0xffffu) + (hl & 0xffffu);
  return vec2<u32>(hh + (lh >> 16u) + (hl >> 16u) + (mid >> 16u), a * b);
}

fn philox4x32(ctr: vec4<u32>, key: vec2<u32>) -> vec4<u32> {
  var c = ctr;
  var k = key;
  for (var r = 0u; r < ${PHILOX_ROUNDS}u; r++) {
    if (r > 0u) { k = k + vec2<u32>(${hex(PHILOX_W0)}, ${hex(PHILOX_W1)}); }
    let p0 = mulhilo(${hex(PHILOX_M0)}, c.x);
    let p1 = mulhilo(${hex(PHILOX_M1)}, c.z);
    c = vec4<u32>(p1.x ^ c.y ^ k.x, p1.y, p0.x ^ c.w ^ k.y, p0.y);
  }
  return c;
}
`;

export function randomKey(mode: RandomMode, outType: DType): string {
  return `random:${mode}:${outType}`;
}

export function randomWGSL(mode: RandomMode, outType: DType): string {
  let values: string;
  if (mode === 'bits') {
    values = '  let v = w;';
  } else if (mode === 'uniform') {
    // The uniform is exact: 24 bits times 2^-24. Scaling is low + scale·u in f32; the xor with
    // the always-zero P.guard forces the product to be rounded on its own, so that no compiler
    // can contract it with the add into an fma (which rounds once and would differ from the CPU
    // reference and from other devices). The clamp keeps results below high after rounding.
    values = `  let u = vec4<f32>(w >> vec4<u32>(8u)) * ${2 ** -24};
  let prod = bitcast<vec4<f32>>(bitcast<vec4<u32>>(u * P.b) ^ vec4<u32>(P.guard));
  let v = min(vec4<f32>(P.a) + prod, vec4<f32>(P.below));`;
  } else {
    // Box–Muller: u1 in (0, 1] so log never sees 0; θ in [-π, π), where WGSL's sin and cos
    // accuracy is specified. Near u1 = 1, r = sqrt(-2 ln u1) is small and amplifies log's
    // absolute error (WGSL only promises 2^-21 there, and lavapipe's is ~1e-7, enough for
    // errors of 1e-4 in r): there -ln u1 = -ln(1 - s) comes from its series in s = 1 - u1
    // (exact in f32), truncated where the next term is below f32 resolution.
    values = `  let top = vec2<u32>(w.x >> 8u, w.z >> 8u);
  let u1 = vec2<f32>(top + vec2<u32>(1u)) * ${2 ** -24};
  let s = vec2<f32>(vec2<u32>(16777215u) - top) * ${2 ** -24};
  let series = s * (1.0 + s * (0.5 + s * (0.33333333333 + s * (0.25 + s * (0.2 + s * (0.16666666667 + s * 0.14285714286))))));
  let nlog = select(-log(u1), series, s < vec2<f32>(0.0625));
  let r = sqrt(2.0 * nlog);
  let u2 = vec2<f32>(f32(w.y >> 8u), f32(w.w >> 8u)) * ${2 ** -24};
  let th = u2 * 6.2831853071795864 - 3.1415926535897932;
  let z = vec4<f32>(r.x * cos(th.x), r.x * sin(th.x), r.y * cos(th.y), r.y * sin(th.y));
  let v = vec4<f32>(P.a) + vec4<f32>(P.b) * z;`;
  }
  return `${f16Enable(outType)}
${declareBindings([], [{ name: 'dst', type: outType }], randomLayout)}
${PHILOX_WGSL}
${MAIN_1D()}
  let t = gid * 256u + lid;
  if (t * 4u >= P.n + P.shift) { return; }
  let blo = P.blo + t;
  let bhi = P.bhi + select(0u, 1u, blo < P.blo);
  let w = philox4x32(vec4<u32>(blo, bhi, 0u, 0u), vec2<u32>(P.k0, P.k1));
${values}
  for (var l = 0u; l < 4u; l++) {
    let e = t * 4u + l;
    if (e < P.shift || e - P.shift >= P.n) { continue; }
    dst[P.outoff + e - P.shift] = ${outType}(v[l]);
  }
}
`;
}
