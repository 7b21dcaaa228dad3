// 2-D convolution (NCHW) as implicit GEMM: forward, input gradient and weight gradient.
//
// All three are the same tiled product C[m, n] = Σ_k A[m, k]·B[k, n] (the register-tiled layout
// of kernels/matmul.ts: 16×16 threads, 4×4 outputs each, a 64×64 tile, K slabs of 16 in shared
// memory). What differs is how A and B are *gathered* and where C lands; im2col is never
// materialised, each tile load computes the image position of its element on the fly:
//
//   fwd: M = Cout/G, N = OH·OW, K = Cin/G·kh·kw. A = weights, B = im2col(x). z = sample·G + group.
//   dx:  M = Cin/G,  N = H·W,  K = Cout/G·kh·kw. A = weights (transposed per group), B = the
//        output gradient gathered at the (oy, ox) each (co, ky, kx) maps the input pixel from —
//        a transposed convolution written as a gather: no atomics, one thread per dx element.
//   dw:  M = Cout/G, N = Cin/G·kh·kw, K = S·OH·OW (samples × output pixels). A = output
//        gradient, B = im2col(x). z = group. Accumulates in f32 and, with flag = 1, starts from
//        the value already in the output, so a batch split into chunks continues exactly the same
//        fma sequence as one dispatch over the whole batch.
//
// Determinism and batch independence: each output element is accumulated by one thread over
// k = 0..K-1 in order with fma, whatever the tile position or the number of samples (no split-K);
// out-of-range rows/columns/ks read as zero and are never stored. So fwd and dx of one sample are
// bit-identical alone or inside a batch.
//
// Every shape, stride, pad and offset is a uniform: one pipeline per (mode, dtype). A sample too
// large for one binding runs as row bands through this same kernel (engine/ops/conv2d-bands.ts):
// only H, OH and PT change per band.

import { DType } from '../engine/dtype.js';
import { ParamLayout, declareBindings, f16Enable } from './common.js';

export type ConvMode = 'fwd' | 'dx' | 'dw';

export const convLayout = new ParamLayout([
  { name: 'C', type: 'u32' }, // input channels (all groups)
  { name: 'H', type: 'u32' },
  { name: 'W', type: 'u32' },
  { name: 'CO', type: 'u32' }, // output channels (all groups)
  { name: 'OH', type: 'u32' },
  { name: 'OW', type: 'u32' },
  { name: 'KH', type: 'u32' },
  { name: 'KW', type: 'u32' },
  { name: 'SH', type: 'u32' },
  { name: 'SW', type: 'u32' },
  { name: 'DH', type: 'u32' },
  { name: 'DW', type: 'u32' },
  // Top padding. i32: a row band (engine/ops/conv2d-bands.ts) shifts it, below zero for a band
  // wholly inside the bottom padding.
  { name: 'PT', type: 'i32' },
  { name: 'PL', type: 'u32' }, // left padding (bottom/right are implied by OH/OW)
  { name: 'CG', type: 'u32' }, // C / groups
  { name: 'COG', type: 'u32' }, // CO / groups
  { name: 'G', type: 'u32' },
  { name: 'M', type: 'u32' },
  { name: 'N', type: 'u32' },
  { name: 'K', type: 'u32' },
  /** Element offsets of the first two (three for fwd) read bindings and the write binding in their windows. */
  { name: 'off0', type: 'u32' },
  { name: 'off1', type: 'u32' },
  { name: 'off2', type: 'u32' },
  { name: 'offO', type: 'u32' },
  /** fwd: 1 when a bias is bound. dw: 1 to accumulate onto the output's current value. */
  { name: 'flag', type: 'u32' },
  { name: 'xbase', type: 'u32' },
  { name: 'ybase', type: 'u32' },
  { name: 'zbase', type: 'u32' },
]);

/** The largest tile (BM rows of M): its threads and workgroup memory bound what a device must offer. */
export const CONV_TILE = { BM: 64, BN: 64, BK: 16, wgX: 16, wgY: 16 } as const;
export const CONV_THREADS = CONV_TILE.wgX * CONV_TILE.wgY;
/** Shared memory of the kernel: two 16×(16+1) vec4 slabs. */
export const CONV_SHARED_BYTES = 16 * CONV_TILE.BK * (CONV_TILE.wgX + 1 + CONV_TILE.wgY + 1);

/**
 * Rows of M per tile: 16, 32 or 64, the least that covers M. A 64-row tile over a 16-channel
 * conv would spend three quarters of its threads on zero rows (a software device pays for
 * them in full). Which tile runs never changes a result: each output is still one thread's
 * in-order sum over k.
 */
export function convTileRows(M: number): 16 | 32 | 64 {
  return M <= 16 ? 16 : M <= 32 ? 32 : 64;
}

export function convKey(mode: ConvMode, dtype: DType, BM: number = CONV_TILE.BM): string {
  return `conv2d:${mode}:${dtype}:${BM}`;
}

/**
 * Per mode: A is linear in m (aBase(z, k) + m·aStride()), B's k-dependent part is decoded once
 * per k into a Tap and reused for the 4 columns a thread loads, and C's element (m, n) lives at
 * cRow(z, m) + n. Hoisting the index arithmetic this way keeps the unrolled loads and stores
 * small, which matters for lavapipe's LLVM compile time (seconds per pipeline otherwise).
 */
function gathers(mode: ConvMode): string {
  const khkw = `(P.KH * P.KW)`;
  const tap = `struct Tap { base: u32, dy: i32, dx: i32 }`;
  if (mode === 'fwd') {
    return `${tap}
fn aBase(z: u32, k: u32) -> u32 { return P.off1 + (z % P.G) * P.COG * P.K + k; }
fn aStride() -> u32 { return P.K; }
fn tapB(z: u32, k: u32) -> Tap {
  let s = z / P.G; let g = z % P.G;
  let ci = k / ${khkw}; let r = k % ${khkw};
  let ky = r / P.KW; let kx = r % P.KW;
  return Tap(P.off0 + (s * P.C + g * P.CG + ci) * P.H * P.W, i32(ky * P.DH) - i32(P.PT), i32(kx * P.DW) - i32(P.PL));
}
fn readB(t: Tap, n: u32) -> f32 {
  let iy = i32((n / P.OW) * P.SH) + t.dy;
  let ix = i32((n % P.OW) * P.SW) + t.dx;
  if (iy < 0 || ix < 0 || iy >= i32(P.H) || ix >= i32(P.W)) { return 0.0; }
  return f32(X[t.base + u32(iy) * P.W + u32(ix)]);
}
fn cRow(z: u32, m: u32) -> u32 { return P.offO + ((z / P.G) * P.CO + (z % P.G) * P.COG + m) * P.N; }`;
  }
  if (mode === 'dx') {
    return `${tap}
fn aBase(z: u32, k: u32) -> u32 {
  let co = k / ${khkw}; let r = k % ${khkw};
  return P.off1 + ((z % P.G) * P.COG + co) * P.CG * ${khkw} + r;
}
fn aStride() -> u32 { return ${khkw}; }
fn tapB(z: u32, k: u32) -> Tap {
  let s = z / P.G; let g = z % P.G;
  let co = k / ${khkw}; let r = k % ${khkw};
  let ky = r / P.KW; let kx = r % P.KW;
  return Tap(P.off0 + (s * P.CO + g * P.COG + co) * P.OH * P.OW, i32(P.PT) - i32(ky * P.DH), i32(P.PL) - i32(kx * P.DW));
}
// The output pixel whose window puts this tap on input pixel n, if there is one.
fn readB(t: Tap, n: u32) -> f32 {
  let ty = i32(n / P.W) + t.dy;
  let tx = i32(n % P.W) + t.dx;
  if (ty < 0 || tx < 0) { return 0.0; }
  let uy = u32(ty); let ux = u32(tx);
  if (uy % P.SH != 0u || ux % P.SW != 0u) { return 0.0; }
  let oy = uy / P.SH; let ox = ux / P.SW;
  if (oy >= P.OH || ox >= P.OW) { return 0.0; }
  return f32(Gr[t.base + oy * P.OW + ox]);
}
fn cRow(z: u32, m: u32) -> u32 { return P.offO + ((z / P.G) * P.C + (z % P.G) * P.CG + m) * P.N; }`;
  }
  return `${tap}
fn aBase(z: u32, k: u32) -> u32 {
  let ohw = P.OH * P.OW;
  return P.off0 + ((k / ohw) * P.CO + z * P.COG) * ohw + k % ohw;
}
fn aStride() -> u32 { return P.OH * P.OW; }
fn tapB(z: u32, k: u32) -> Tap {
  let ohw = P.OH * P.OW;
  let s = k / ohw; let p = k % ohw;
  return Tap(P.off1 + (s * P.C + z * P.CG) * P.H * P.W, i32((p / P.OW) * P.SH) - i32(P.PT), i32((p % P.OW) * P.SW) - i32(P.PL));
}
fn readB(t: Tap, n: u32) -> f32 {
  let ci = n / ${khkw}; let r = n % ${khkw};
  let iy = t.dy + i32((r / P.KW) * P.DH);
  let ix = t.dx + i32((r % P.KW) * P.DW);
  if (iy < 0 || ix < 0 || iy >= i32(P.H) || ix >= i32(P.W)) { return 0.0; }
  return f32(X[t.base + (ci * P.H + u32(iy)) * P.W + u32(ix)]);
}
fn cRow(z: u32, m: u32) -> u32 { return P.offO + (z * P.COG + m) * P.N; }`;
}

export function convWGSL(mode: ConvMode, dtype: DType, BM: number = CONV_TILE.BM): string {
  const { BN, BK, wgX } = CONV_TILE;
  const wgY = BM / 4;
  const threads = wgX * wgY;
  const ldA = wgY + 1, ldB = wgX + 1;
  const reads = mode === 'fwd'
    ? [{ name: 'X', type: dtype }, { name: 'Wt', type: dtype }, { name: 'Bias', type: dtype }]
    : mode === 'dx'
      ? [{ name: 'Gr', type: dtype }, { name: 'Wt', type: dtype }]
      : [{ name: 'Gr', type: dtype }, { name: 'X', type: dtype }];
  const outType: DType = mode === 'dw' ? 'f32' : dtype;
  const comp = ['x', 'y', 'z', 'w'];
  const L: string[] = [];
  L.push(f16Enable(dtype));
  L.push(declareBindings(reads, [{ name: 'O', type: outType }], convLayout));
  L.push(`var<workgroup> As: array<vec4<f32>, ${BK * ldA}>;`);
  L.push(`var<workgroup> Bs: array<vec4<f32>, ${BK * ldB}>;`);
  L.push(gathers(mode));
  L.push(`@compute @workgroup_size(${wgX}, ${wgY}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let z = wid.z + P.zbase;
  let row0 = (wid.y + P.ybase) * ${BM}u;
  let col0 = (wid.x + P.xbase) * ${BN}u;
  let tx = lid3.x; let ty = lid3.y;
  let c0 = col0 + tx * 4u;
  var acc: array<vec4<f32>, 4>;
${mode === 'dw' ? `  // Continue the sum of an earlier batch chunk: the same fma sequence as one dispatch.
  if (P.flag != 0u) {
    for (var i = 0u; i < 4u; i++) {
      let r = row0 + ty * 4u + i;
      if (r < P.M) {
        let base = cRow(z, r) + c0;
        for (var j = 0u; j < 4u; j++) { if (c0 + j < P.N) { acc[i][j] = O[base + j]; } }
      }
    }
  }
` : ''}  // One vec4 of A (4 rows at one k) per thread per slab, and ${BK}·${BN / 4} vec4 of B (4 columns
  // at one k) shared out over the ${threads} threads.
  let aK = lid & ${BK - 1}u; let aM4 = lid >> 4u;
  for (var k0 = 0u; k0 < P.K; k0 += ${BK}u) {
    {
      var v = vec4<f32>(0.0);
      let gk = k0 + aK;
      if (gk < P.K) {
        let base = aBase(z, gk); let st = aStride();
        for (var q = 0u; q < 4u; q++) {
          let gm = row0 + aM4 * 4u + q;
          if (gm < P.M) { v[q] = f32(${mode === 'dw' ? 'Gr' : 'Wt'}[base + gm * st]); }
        }
      }
      As[aK * ${ldA}u + aM4] = v;
    }
    for (var bi = lid; bi < ${BK * BN / 4}u; bi += ${threads}u) {
      let bN4 = bi & ${BN / 4 - 1}u; let bK = bi >> 4u;
      var v = vec4<f32>(0.0);
      let gk = k0 + bK;
      if (gk < P.K) {
        let t = tapB(z, gk);
        for (var q = 0u; q < 4u; q++) {
          let gn = col0 + bN4 * 4u + q;
          if (gn < P.N) { v[q] = readB(t, gn); }
        }
      }
      Bs[bK * ${ldB}u + bN4] = v;
    }
    workgroupBarrier();
    let kEnd = min(${BK}u, P.K - k0);
    for (var kk = 0u; kk < kEnd; kk++) {
      let a = As[kk * ${ldA}u + ty];
      let b = Bs[kk * ${ldB}u + tx];
${[0, 1, 2, 3].map((i) => `      acc[${i}] = fma(vec4<f32>(a.${comp[i]}), b, acc[${i}]);`).join('\n')}
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let r = row0 + ty * 4u + i;
    if (r < P.M) {
      let base = cRow(z, r) + c0;
${mode === 'fwd' ? `      var bias = 0.0;
      if (P.flag != 0u) { bias = f32(Bias[P.off2 + (z % P.G) * P.COG + r]); }
      for (var j = 0u; j < 4u; j++) { if (c0 + j < P.N) { O[base + j] = ${outType}(acc[i][j] + bias); } }`
    : `      for (var j = 0u; j < 4u; j++) { if (c0 + j < P.N) { O[base + j] = ${outType}(acc[i][j]); } }`}
    }
  }
}
`);
  return L.join('\n');
}
