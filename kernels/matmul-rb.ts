// Batched matmul for software adapters: each invocation keeps an R×C block of C in registers and
// reads A and B straight from storage; no workgroup memory, no barriers (kernels/matmul.ts has the
// tiled shared-memory kernel GPUs run, and the reasons lavapipe wants this shape are in
// kernels/conv2d-rb.ts: loads are done lane by lane, so each loaded value must feed many fmas).
//
// Same uniforms (matmulLayout) and the same addressing through strides as the tiled kernel.
// Rows and columns past the edge are clamped to the last valid one and never stored, so the
// inner loop has no branches. Each output is one invocation's fma sum over k = 0..K-1 in order,
// the order of the tiled kernel too, so a row gives the same bits alone or in any batch.

import { DType } from '../engine/dtype.js';
import { at, declareBindings, f16Enable, stridedOffsets } from './common.js';
import { MatmulVariant, matmulLayout } from './matmul-layout.js';

export const MATMUL_RB = { R: 16, C: 8, WX: 4, WY: 2 } as const;

/**
 * How an operand is read: 'k4' four consecutive k as one vec4 (stride 1 along k), 'mn4' four
 * consecutive rows of A / columns of B as one vec4 (stride 1 along m / n), or 's' one scalar at a
 * time. A vec4 load costs a CPU lane little more than a scalar one, so vec4 reads cut the cost of
 * the loads (what a software adapter spends its time on) by up to 4×. Which mode runs depends on
 * the layout and alignment only, and never changes the arithmetic: every output is still the fma
 * sum over k = 0, 1, ... in order.
 */
export type LoadMode = 'k4' | 'mn4' | 's';

export interface RbModes { a: LoadMode; b: LoadMode }

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function rbWGSL(dtype: DType, modes: RbModes): string {
  const { R, C, WX, WY } = MATMUL_RB;
  const vec = (m: LoadMode) => m !== 's';
  const aT = vec(modes.a) ? `vec4<${dtype}>` : dtype, bT = vec(modes.b) ? `vec4<${dtype}>` : dtype;
  const L: string[] = [];
  L.push(f16Enable(dtype));
  L.push(declareBindings([{ name: 'A', type: aT as DType }, { name: 'B', type: bT as DType }], [{ name: 'Cm', type: dtype }], matmulLayout));
  L.push(`@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let mb = ((wid.y + P.ybase) * ${WY}u + lid.y) * ${R}u;
  let nb = ((wid.x + P.xbase) * ${WX}u + lid.x) * ${C}u;
  if (mb >= P.M || nb >= P.N) { return; }
  var offA = P.offA; var offB = P.offB; var offC = P.offC;`);
  L.push(stridedOffsets('wid.z + P.zbase', 'P.bshape', 'P.brank', [
    ['offA', (ud) => at('P.bsA', ud)], ['offB', (ud) => at('P.bsB', ud)], ['offC', (ud) => at('P.bsC', ud)],
  ]));
  // Element addresses of each row of A (at k = 0) and each column of B, clamped at the edge. In
  // 'mn4' mode the vec4 holding rows mb+4g..mb+4g+3 (columns) is addressed instead; the clamp
  // then keeps the whole vec4 inside the matrix (M, N are multiples of 4 in that mode).
  if (modes.a === 'mn4') for (const g of range(R / 4)) L.push(`  let ar${g} = offA + min(mb + ${4 * g}u, P.M - 4u);`);
  else for (const i of range(R)) L.push(`  let ar${i} = offA + min(mb + ${i}u, P.M - 1u) * P.sAm;`);
  if (modes.b === 'mn4') for (const g of range(C / 4)) L.push(`  let bc${g} = offB + min(nb + ${4 * g}u, P.N - 4u);`);
  else for (const j of range(C)) L.push(`  let bc${j} = offB + min(nb + ${j}u, P.N - 1u) * P.sBn;`);
  for (const i of range(R)) for (const j of range(C)) L.push(`  var acc${i}_${j} = 0.0;`);
  const comp = ['x', 'y', 'z', 'w'];
  // One step of k (q: which k of the 4 in this vec4 step), loads first, then R·C fmas.
  const aAt = (i: number, q: number) => modes.a === 'k4' ? `a${i}.${comp[q]}` : modes.a === 'mn4' ? `a${i >> 2}_${q}.${comp[i & 3]}` : `a${i}_${q}`;
  const bAt = (j: number, q: number) => modes.b === 'k4' ? `b${j}.${comp[q]}` : modes.b === 'mn4' ? `b${j >> 2}_${q}.${comp[j & 3]}` : `b${j}_${q}`;
  const loadsFor = (q: number, kExpr: string): string[] => {
    const out: string[] = [];
    if (modes.a === 'mn4') for (const g of range(R / 4)) out.push(`let a${g}_${q} = vec4<f32>(A[(ar${g} + (${kExpr}) * P.sAk) / 4u]);`);
    else if (modes.a === 's') for (const i of range(R)) out.push(`let a${i}_${q} = f32(A[ar${i} + (${kExpr}) * P.sAk]);`);
    if (modes.b === 'mn4') for (const g of range(C / 4)) out.push(`let b${g}_${q} = vec4<f32>(B[(bc${g} + (${kExpr}) * P.sBk) / 4u]);`);
    else if (modes.b === 's') for (const j of range(C)) out.push(`let b${j}_${q} = f32(B[bc${j} + (${kExpr}) * P.sBk]);`);
    return out;
  };
  const fmasFor = (q: number): string[] => range(R).map((i) => range(C).map((j) => `acc${i}_${j} = fma(${aAt(i, q)}, ${bAt(j, q)}, acc${i}_${j});`).join(' '));
  const anyK4 = modes.a === 'k4' || modes.b === 'k4';
  if (anyK4 || modes.a === 'mn4' || modes.b === 'mn4') {
    // Four k per iteration (K is a multiple of 4 whenever an operand is read 'k4').
    L.push(`  let K4 = P.K / 4u;
  for (var k4 = 0u; k4 < K4; k4++) {
    let k = k4 * 4u;`);
    if (modes.a === 'k4') for (const i of range(R)) L.push(`    let a${i} = vec4<f32>(A[(ar${i} + k) / 4u]);`);
    if (modes.b === 'k4') for (const j of range(C)) L.push(`    let b${j} = vec4<f32>(B[(bc${j} + k) / 4u]);`);
    for (const q of range(4)) {
      L.push('    {');
      for (const l of loadsFor(q, `k + ${q}u`)) L.push(`      ${l}`);
      for (const l of fmasFor(q)) L.push(`      ${l}`);
      L.push('    }');
    }
    L.push('  }');
    if (!anyK4) {
      // The k left over after the last full group of four.
      L.push(`  for (var k = K4 * 4u; k < P.K; k++) {`);
      for (const l of loadsFor(0, 'k')) L.push(`    ${l}`);
      for (const l of fmasFor(0)) L.push(`    ${l}`);
      L.push('  }');
    }
  } else {
    L.push(`  for (var k = 0u; k < P.K; k++) {`);
    for (const l of loadsFor(0, 'k')) L.push(`    ${l}`);
    for (const l of fmasFor(0)) L.push(`    ${l}`);
    L.push('  }');
  }
  for (const i of range(R)) {
    L.push(`  if (mb + ${i}u < P.M) {
    let cr = offC + (mb + ${i}u) * P.sCm;`);
    for (const j of range(C)) L.push(`    if (nb + ${j}u < P.N) { Cm[cr + (nb + ${j}u) * P.sCn] = ${dtype}(acc${i}_${j}); }`);
    L.push('  }');
  }
  L.push('}');
  return L.join('\n') + '\n';
}

/** The register-blocked variant for the given load modes: tileM × tileN outputs per workgroup. */
export function rbVariant(modes: RbModes): MatmulVariant {
  const name = `rb16x8:${modes.a}:${modes.b}`;
  return {
    name,
    tileM: MATMUL_RB.R * MATMUL_RB.WY,
    tileN: MATMUL_RB.C * MATMUL_RB.WX,
    threads: MATMUL_RB.WX * MATMUL_RB.WY,
    sharedBytes: 0,
    key: (dtype) => `matmul:${name}:${dtype}`,
    code: (dtype) => rbWGSL(dtype, modes),
  };
}

/**
 * The load modes an operand's layout allows: every address a vec4 read touches must be a
 * multiple of 4 elements (offset, the strides that move between vec4s, the batch strides), and
 * the vectorised extent a multiple of 4. f16 stays scalar (a vec4<f16> would need 8-byte
 * alignment of every offset, which views rarely have).
 */
export function chooseLoadMode(dtype: DType, kStride: number, mnStride: number, K: number, MN: number, offset: number, batchStrides: readonly number[]): LoadMode {
  if (dtype !== 'f32') return 's';
  const aligned = (v: number) => v % 4 === 0;
  if (!aligned(offset) || !batchStrides.every(aligned)) return 's';
  if (kStride === 1 && aligned(K) && aligned(mnStride)) return 'k4';
  if (mnStride === 1 && aligned(MN) && aligned(kStride)) return 'mn4';
  return 's';
}
