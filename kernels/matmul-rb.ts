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

// 8×8 blocks, eight lanes side by side along N and one along M: every lane of a workgroup reads
// the same A rows, so those loads are uniform (one load per workgroup, not per lane), and 64
// accumulators stay in registers where 16×8 spilled. Measured on 2-core lavapipe, 1024³ f32:
// 4.1 GFLOP/s with {R16 C8 WX4 WY2}, 7.0 with this shape (bench/matmul).
export const MATMUL_RB = { R: 8, C: 8, WX: 8, WY: 1 } as const;
/**
 * The subgroup form's block: the workgroup is one subgroup of 8 lanes along N; lane s loads rows
 * mb + s and mb + 8 + s of A and broadcasts them, so 16 rows cost two loads per k and the taller
 * block pays off (1024³ f32 probe: 14–17 GFLOP/s with 8 rows, 18.5–19.4 with 16).
 */
export const MATMUL_RB_SG = { R: 16, C: 8, WX: 8, WY: 1, SUBGROUP: 8 } as const;

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function rbWGSL(dtype: DType, vecB: boolean, sg: boolean): string {
  const { R, C, WX, WY } = sg ? MATMUL_RB_SG : MATMUL_RB;
  const S = MATMUL_RB_SG.SUBGROUP;
  // The subgroup form needs the workgroup to be one subgroup of S lanes side by side along N.
  if (sg && (WY !== 1 || WX !== S || R % S !== 0)) throw new Error(`matmul-rb: the subgroup form needs WY = 1, WX = ${S} and R a multiple of ${S} (have ${WX}×${WY}, R ${R})`);
  const L: string[] = [];
  L.push(f16Enable(dtype) + (sg ? 'enable subgroups;\n' : ''));
  L.push(declareBindings([{ name: 'A', type: dtype }, { name: 'B', type: vecB ? `vec4<${dtype}>` : dtype }], [{ name: 'Cm', type: dtype }], matmulLayout));
  L.push(`@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>${sg ? ', @builtin(subgroup_invocation_id) sid: u32' : ''}) {
  let mb = ${sg ? `(wid.y + P.ybase) * ${R}u` : `((wid.y + P.ybase) * ${WY}u + lid.y) * ${R}u`};
  let nb = ((wid.x + P.xbase) * ${WX}u + lid.x) * ${C}u;
  ${sg
    // Every lane must reach the broadcasts: only the whole workgroup (one row block, WY = 1)
    // leaves early; a lane past N computes clamped columns and stores none.
    ? 'if (mb >= P.M) { return; }'
    : 'if (mb >= P.M || nb >= P.N) { return; }'}
  var offA = P.offA; var offB = P.offB; var offC = P.offC;`);
  L.push(stridedOffsets('wid.z + P.zbase', 'P.bshape', 'P.brank', [
    ['offA', (ud) => at('P.bsA', ud)], ['offB', (ud) => at('P.bsB', ud)], ['offC', (ud) => at('P.bsC', ud)],
  ]));
  // With subgroups, lane s loads row mb + s and row i reaches every lane by subgroupBroadcast.
  if (sg) for (const h of range(R / S)) L.push(`  let arow${h} = offA + min(mb + ${h * S}u + sid, P.M - 1u) * P.sAm;`);
  else for (const i of range(R)) L.push(`  let ar${i} = offA + min(mb + ${i}u, P.M - 1u) * P.sAm;`);
  if (vecB) {
    // B's row k holds columns nb..nb+7 as two aligned vec4s (the host checked sBn = 1 and that
    // offB, sBk, the batch strides and N are multiples of 4, so nb < N means nb + 4 <= N). A
    // second vec4 past N is clamped to the first; its columns are never stored.
    L.push(`  let nbc = min(nb, P.N - 4u);
  let bq0 = (offB + nbc) / 4u;
  let bq1 = bq0 + select(1u, 0u, nbc + 4u >= P.N);
  let sBk4 = P.sBk / 4u;`);
  } else {
    for (const j of range(C)) L.push(`  let bc${j} = offB + min(nb + ${j}u, P.N - 1u) * P.sBn;`);
  }
  for (const i of range(R)) for (const j of range(C)) L.push(`  var acc${i}_${j} = 0.0;`);
  L.push(`  for (var k = 0u; k < P.K; k++) {
    let ka = k * P.sAk;`);
  if (vecB) {
    L.push(`    let bv0 = vec4<f32>(B[bq0 + k * sBk4]); let bv1 = vec4<f32>(B[bq1 + k * sBk4]);`);
    for (const j of range(C)) L.push(`    let b${j} = bv${j >> 2}[${j & 3}];`);
  } else {
    L.push('    let kb = k * P.sBk;');
    for (const j of range(C)) L.push(`    let b${j} = f32(B[bc${j} + kb]);`);
  }
  if (sg) for (const h of range(R / S)) L.push(`    let aL${h} = f32(A[arow${h} + ka]);`);
  for (const i of range(R)) {
    L.push(sg ? `    { let a = subgroupBroadcast(aL${Math.floor(i / S)}, ${i % S}u);` : `    { let a = f32(A[ar${i} + ka]);`);
    L.push(range(C).map((j) => `acc${i}_${j} = fma(a, b${j}, acc${i}_${j});`).join(' ') + ' }');
  }
  L.push('  }');
  for (const i of range(R)) {
    L.push(`  if (mb + ${i}u < P.M) {
    let cr = offC + (mb + ${i}u) * P.sCm;`);
    for (const j of range(C)) L.push(`    if (nb + ${j}u < P.N) { Cm[cr + (nb + ${j}u) * P.sCn] = ${dtype}(acc${i}_${j}); }`);
    L.push('  }');
  }
  L.push('}');
  return L.join('\n') + '\n';
}

function rbVariant(vecB: boolean, sg: boolean): MatmulVariant {
  const g = sg ? MATMUL_RB_SG : MATMUL_RB;
  const name = `rb${g.R}x${g.C}${sg ? '-sg' : ''}${vecB ? '-vec4b' : ''}`;
  return {
    name,
    tileM: g.R * g.WY,
    tileN: g.C * g.WX,
    threads: g.WX * g.WY,
    sharedBytes: 0,
    key: (dtype) => `matmul:${name}:${dtype}`,
    code: (dtype) => rbWGSL(dtype, vecB, sg),
  };
}

/**
 * The register-blocked variant: tileM × tileN outputs per workgroup of WX·WY invocations. Its
 * `vec4B` twin reads B four columns at a time (about 30 % faster on lavapipe at 1024³) and is used
 * for each dispatch whose B layout allows it; both do the same fmas in the same order, so they
 * give the same bits and the choice, which can depend on N, keeps a row's result independent of
 * the batch.
 */
export const RB_VARIANT: MatmulVariant = { ...rbVariant(false, false), vec4B: rbVariant(true, false) };

/**
 * The same kernels for an adapter with a fixed subgroup size of 8 (the workgroup is one
 * subgroup): each lane loads two of the block's 16 A values per k and subgroupBroadcast hands
 * them round, instead of every lane loading all of them (lavapipe pays per load instruction,
 * uniform address or not: 1024³ f32 went from 9.3 to 15 GFLOP/s with 8 rows). Same values, same
 * fmas in the same order, same bits.
 */
export const RB_SG_VARIANT: MatmulVariant = { ...rbVariant(false, true), vec4B: rbVariant(true, true) };
