// Batched matrix multiplication: C[b] = A[b] · B[b] with every operand read through strides.
//
// Each operand is addressed as offset + Σ batchIdx_d·batchStride_d + row·rowStride + col·colStride,
// so a transpose is two swapped strides and a broadcast batch dimension is stride 0: neither costs
// a copy. Shapes, strides and offsets are uniforms, so one pipeline per (variant, dtype) serves
// every shape.
//
// Batch independence: every output element is accumulated by one thread over k = 0, 1, ..., K-1
// with fma, the same order whatever M, N or the batch size (no split-K); where a tile overhangs
// the matrix, the extra rows and columns are computed from zeros and never stored. So a row
// computed alone equals the same row inside a larger matrix or batch, bit for bit. Variants added
// later (a subgroup-matrix path for devices with hasSubgroupMatrix, say) must be chosen per device
// and dtype, never per shape, for the same reason: see selectMatmulVariant.

import { DType } from '../engine/dtype.js';
import { KernelFamily, softwareSubgroupSize } from '../engine/kernel-family.js';
import { at, declareBindings, f16Enable, stridedOffsets } from './common.js';
import { MatmulVariant, matmulLayout, vec4BApplies } from './matmul-layout.js';
import { MATMUL_RB_SG, RB_SG_VARIANT, RB_VARIANT } from './matmul-rb.js';

/**
 * Geometry of the register-tiled shared-memory kernel. Each thread owns a 4×4 block of outputs
 * (four vec4 accumulators), so a workgroup computes (4·wgY) × (4·wgX) outputs.
 */
export interface TiledConfig {
  /** Threads per workgroup along N (x) and M (y). */
  wgX: number;
  wgY: number;
  /** Depth of the K slab staged in shared memory per step. */
  bk: number;
}

export const TILED_64: TiledConfig = { wgX: 16, wgY: 16, bk: 16 };

/** Outputs per thread along each of M and N: one vec4 per row. */
const TM = 4;

/**
 * The portable kernel. Shared memory holds the A slab as As[k][m/4] and the B slab as
 * Bs[k][n/4], both vec4, so each step of the inner loop is two vec4 loads (A broadcast across a
 * row of threads, B consecutive across threads) feeding 16 fmas. Thread (tx, ty) owns rows
 * 4·ty..4·ty+3 and columns 4·tx..4·tx+3 of the tile.
 */
export function tiledVariant(c: TiledConfig = TILED_64): MatmulVariant {
  const threads = c.wgX * c.wgY;
  const BM = c.wgY * TM, BN = c.wgX * TM, BK = c.bk;
  const { ldA, ldB } = strides(c);
  if ((BK * BM / 4) % threads || (BK * BN / 4) % threads) throw new Error(`matmul: tile ${BM}×${BN}×${BK} does not divide among ${threads} threads`);
  const name = `tiled${BM}x${BN}x${BK}`;
  return {
    name,
    tileM: BM,
    tileN: BN,
    threads,
    sharedBytes: 16 * BK * (ldA + ldB),
    key: (dtype) => `matmul:${name}:${dtype}`,
    code: (dtype) => tiledWGSL(c, dtype),
  };
}

/**
 * Row pitch of the shared tiles in vec4s. One vec4 of padding: when an operand's k index is the
 * fast one, consecutive threads fill consecutive k rows, which without it would all land on the
 * same shared-memory banks.
 */
function strides(c: TiledConfig): { ldA: number; ldB: number } {
  return { ldA: c.wgY + 1, ldB: c.wgX + 1 };
}

function log2(n: number): number {
  const l = Math.log2(n);
  if (!Number.isInteger(l)) throw new Error(`matmul: tile size ${n} is not a power of two`);
  return l;
}

function tiledWGSL(c: TiledConfig, dtype: DType): string {
  const threads = c.wgX * c.wgY;
  const BM = c.wgY * TM, BN = c.wgX * TM, BK = c.bk;
  const { ldA, ldB } = strides(c);
  const A4 = BM / 4, B4 = BN / 4;
  const loadsA = (BK * A4) / threads, loadsB = (BK * B4) / threads;
  const lines: string[] = [];
  const L = (s: string) => lines.push(s);

  // Loads: slot e of a tile is one vec4 (four rows of A, or four columns of B, at one k). The
  // operand's stride-1 index varies fastest across threads so that a warp reads consecutive
  // addresses whichever way the operand is laid out (a uniform choice: no divergence).
  const loadA = (i: number) => {
    L(`    {`);
    L(`      let e = lid + ${i * threads}u;`);
    L(`      let kk = select(e >> ${log2(A4)}u, e & ${BK - 1}u, aKFast);`);
    L(`      let m4 = select(e & ${A4 - 1}u, e >> ${log2(BK)}u, aKFast);`);
    L(`      let gk = k0 + kk;`);
    L(`      var v = vec4<f32>(0.0);`);
    L(`      if (gk < P.K) {`);
    for (let q = 0; q < 4; q++) {
      L(`        { let gm = row0 + m4 * 4u + ${q}u; if (gm < P.M) { v[${q}] = f32(A[offA + gm * P.sAm + gk * P.sAk]); } }`);
    }
    L(`      }`);
    L(`      As[kk * ${ldA}u + m4] = v;`);
    L(`    }`);
  };
  const loadB = (i: number) => {
    L(`    {`);
    L(`      let e = lid + ${i * threads}u;`);
    L(`      let n4 = select(e >> ${log2(BK)}u, e & ${B4 - 1}u, bNFast);`);
    L(`      let kk = select(e & ${BK - 1}u, e >> ${log2(B4)}u, bNFast);`);
    L(`      let gk = k0 + kk;`);
    L(`      var v = vec4<f32>(0.0);`);
    L(`      if (gk < P.K) {`);
    for (let q = 0; q < 4; q++) {
      L(`        { let gn = col0 + n4 * 4u + ${q}u; if (gn < P.N) { v[${q}] = f32(B[offB + gk * P.sBk + gn * P.sBn]); } }`);
    }
    L(`      }`);
    L(`      Bs[kk * ${ldB}u + n4] = v;`);
    L(`    }`);
  };

  L(f16Enable(dtype));
  L(declareBindings([{ name: 'A', type: dtype }, { name: 'B', type: dtype }], [{ name: 'C', type: dtype }], matmulLayout));
  L(`var<workgroup> As: array<vec4<f32>, ${BK * ldA}>;`);
  L(`var<workgroup> Bs: array<vec4<f32>, ${BK * ldB}>;`);
  L(`@compute @workgroup_size(${c.wgX}, ${c.wgY}, 1)`);
  L(`fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>, @builtin(local_invocation_index) lid: u32) {`);
  L(`  var offA = P.offA; var offB = P.offB; var offC = P.offC;`);
  L(stridedOffsets('wid.z + P.zbase', 'P.bshape', 'P.brank', [
    ['offA', (ud) => at('P.bsA', ud)], ['offB', (ud) => at('P.bsB', ud)], ['offC', (ud) => at('P.bsC', ud)],
  ]));
  L(`  let row0 = (wid.y + P.ybase) * ${BM}u;`);
  L(`  let col0 = (wid.x + P.xbase) * ${BN}u;`);
  L(`  let tx = lid3.x; let ty = lid3.y;`);
  L(`  let aKFast = P.aKFast != 0u; let bNFast = P.bNFast != 0u;`);
  for (let i = 0; i < TM; i++) L(`  var acc${i} = vec4<f32>(0.0);`);
  L(`  for (var k0 = 0u; k0 < P.K; k0 += ${BK}u) {`);
  for (let i = 0; i < loadsA; i++) loadA(i);
  for (let i = 0; i < loadsB; i++) loadB(i);
  L(`    workgroupBarrier();`);
  // The bound stops at K in the last slab (the zero padding past K would add nothing), and a
  // bound that is not a constant keeps LLVM (lavapipe) from unrolling the slab, which cost ~5 s
  // of shader compile per dtype.
  L(`    let kEnd = min(${BK}u, P.K - k0);`);
  L(`    for (var kk = 0u; kk < kEnd; kk++) {`);
  L(`      let a = As[kk * ${ldA}u + ty];`);
  L(`      let b = Bs[kk * ${ldB}u + tx];`);
  const comp = ['x', 'y', 'z', 'w'];
  for (let i = 0; i < TM; i++) L(`      acc${i} = fma(vec4<f32>(a.${comp[i]}), b, acc${i});`);
  L(`    }`);
  L(`    workgroupBarrier();`);
  L(`  }`);
  L(`  let c0 = col0 + tx * 4u;`);
  for (let i = 0; i < TM; i++) {
    L(`  {`);
    L(`    let r = row0 + ty * 4u + ${i}u;`);
    L(`    if (r < P.M) {`);
    L(`      let base = offC + r * P.sCm;`);
    for (let j = 0; j < 4; j++) {
      L(`      if (c0 + ${j}u < P.N) { C[base + (c0 + ${j}u) * P.sCn] = ${dtype}(acc${i}.${comp[j]}); }`);
    }
    L(`    }`);
    L(`  }`);
  }
  L(`}`);
  return lines.join('\n') + '\n';
}

/**
 * The kernel for a device and dtype: the register-blocked kernel (kernels/matmul-rb.ts) on
 * software adapters (its subgroup form where the adapter's subgroups are a fixed 8 lanes), the
 * tiled one elsewhere; a subgroup-matrix (tensor core) variant would be returned here when
 * device.hasSubgroupMatrix. The choice must not depend on the shape (see batch independence above).
 */
export function selectMatmulVariant(family: KernelFamily, features: { hasSubgroupMatrix: boolean; subgroupSize: number | null }, _dtype: DType): MatmulVariant {
  if (family !== 'software') return DEFAULT_VARIANT;
  return softwareSubgroupSize(features) === MATMUL_RB_SG.SUBGROUP ? RB_SG_VARIANT : RB_VARIANT;
}

const DEFAULT_VARIANT = tiledVariant(TILED_64);

export { matmulLayout, vec4BApplies };
export type { MatmulVariant };
