// 2-D convolution (NCHW) for software adapters: register-blocked implicit GEMM with no workgroup
// memory and no barriers (kernels/conv2d.ts is the tiled shared-memory family GPUs run).
//
// Why this shape: lavapipe runs eight invocations in one SIMD register and performs every
// storage load lane by lane (a bounds check and a scalar load each), while arithmetic is
// eight-wide. So the cost is in loads, and each loaded value must feed many fmas: every
// invocation owns an R×C block of the product (R rows of M by C columns of N) in registers and,
// per step of k, loads R values of A and C of B for R·C fmas. Out-of-range rows and columns are
// clamped to the last valid one (their results are never stored), and padding taps read index 0
// and select zero, so the inner loop has no branches.
//
// The products are those of kernels/conv2d.ts (the same uniforms, convLayout), except that the
// columns of fwd and dx run over every sample of the dispatch (N = samples × pixels) rather than
// one sample per z: a 4×4 feature map then fills a block as well as a 32×32 one.
//
//   fwd: M = Cout/G, N = S·OH·OW, K = Cin/G·kh·kw; z = group. A = weights, B = im2col(x).
//   dx:  M = Cin/G,  N = S·H·W,   K = Cout/G·kh·kw; z = group. B = the output gradient at the
//        output pixel each (co, ky, kx) maps the input pixel from (a gather: no atomics).
//   dw:  M = Cout/G, N = Cin/G·kh·kw, K = S·OH·OW; z = group. A = output gradient, B = im2col(x);
//        f32 output, and with flag = 1 the sum continues from the value already there (batch
//        chunks continue one sequence).
//
// Determinism and batch independence: each output is one invocation's sum over k in order
// (fwd/dx: (ci|co, ky, kx); dw: (sample, oy, ox)), with fma, whatever its position in a block or
// the number of samples. The stride and dilation of dx are compile-time constants (divisions by
// a uniform would be eight scalar divisions per lane-vector on a CPU); they change the index
// arithmetic only, never the order of the sum.

import { DType } from '../engine/dtype.js';
import { ConvMode, convLayout } from './conv2d.js';
import { declareBindings, f16Enable } from './common.js';

/**
 * Outputs per invocation (R rows × C columns) and invocations per workgroup (WX along N, WY along
 * M). C is 8, or 4 where the device asks for narrower blocks (engine/kernel-family.ts
 * convBlockColumns: SwiftShader's shader compiler crashes on the 16×8 blocks); either way each
 * output is the same sum in the same order, so the bits do not change.
 */
export const CONV_RB = { R: 16, C: 8, WX: 4, WY: 2 } as const;
/**
 * The subgroup form (adapters whose subgroups are a fixed 8 lanes; packed operands, 8 columns):
 * the workgroup is one subgroup side by side along N, so all lanes share the block's 16 rows;
 * lane s loads the vec4 of rows 4·(s mod 4).. and subgroupBroadcast hands the four vec4s round:
 * one load per lane and k instead of four. Same fmas in the same order: same bits.
 */
export const CONV_RB_SG = { R: 16, WX: 8, WY: 1 } as const;
export type ConvBlockColumns = 4 | 8;
/** The workgroup's tile of the product: BM rows by BN columns. */
export function convRbTile(cols: ConvBlockColumns = CONV_RB.C, sg = false): { BM: number; BN: number } {
  const g = sg ? CONV_RB_SG : CONV_RB;
  return { BM: g.R * g.WY, BN: cols * g.WX };
}

export interface ConvRbStatic {
  /** dx only: stride and dilation baked into the kernel. */
  SH: number; SW: number; DH: number; DW: number;
}

/**
 * packed: fwd and dx read the weights repacked with the rows of the product innermost (fwd:
 * [G, K, Cout/G]; dx: [G, Cout/G, kh·kw, Cin/G]), dw the output gradient as [N, OH·OW, Cout], so
 * the R values one k needs are R/4 vec4 reads instead of R scalar ones. Needs M (and for dw Cout)
 * a multiple of 4 (engine/ops/conv2d.ts decides).
 */
export function convRbKey(mode: ConvMode, dtype: DType, st?: ConvRbStatic, packed = false, cols: ConvBlockColumns = CONV_RB.C, sg = false): string {
  const base = mode === 'dx' && st ? `conv2d-rb:dx:${dtype}:${st.SH}x${st.SW}:${st.DH}x${st.DW}` : `conv2d-rb:${mode}:${dtype}`;
  const key = packed ? `${base}:${mode === 'dw' ? 'g4' : 'w4'}` : base;
  return (cols === CONV_RB.C ? key : `${key}:c${cols}`) + (sg ? ':sg' : '');
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** The block's fmas: acc_i_j += a_i · b_j. */
function fmas(R: number, C: number, ind: string): string {
  const out: string[] = [];
  for (let i = 0; i < R; i++) for (let j = 0; j < C; j++) out.push(`${ind}acc${i}_${j} = fma(a${i}, b${j}, acc${i}_${j});`);
  return out.join('\n');
}

export function convRbWGSL(mode: ConvMode, dtype: DType, st?: ConvRbStatic, packed = false, cols: ConvBlockColumns = CONV_RB.C, sg = false): string {
  if (sg && (!packed || cols !== 8)) throw new Error('convRbWGSL: the subgroup form needs packed operands and 8 columns');
  const { R, WX, WY } = sg ? CONV_RB_SG : CONV_RB;
  const C = cols;
  // Lane s of the subgroup form loads the vec4 of rows 4·(s mod 4).. of the block.
  const lane4 = '4u * (sid % 4u)';
  const w4 = packed && mode !== 'dw', g4 = packed && mode === 'dw';
  const wType = (w4 ? `vec4<${dtype}>` : dtype) as DType;
  const gType = (g4 ? `vec4<${dtype}>` : dtype) as DType;
  const reads = mode === 'fwd'
    ? [{ name: 'X', type: dtype }, { name: 'Wt', type: wType }, { name: 'Bias', type: dtype }]
    : mode === 'dx'
      ? [{ name: 'Gr', type: dtype }, { name: 'Wt', type: wType }]
      : [{ name: 'Gr', type: gType }, { name: 'X', type: dtype }];
  const outType: DType = mode === 'dw' ? 'f32' : dtype;
  const L: string[] = [];
  L.push(f16Enable(dtype) + (sg ? 'enable subgroups;\n' : ''));
  L.push(declareBindings(reads, [{ name: 'O', type: outType }], convLayout));
  L.push(`@compute @workgroup_size(${WX}, ${WY}, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>${sg ? ', @builtin(subgroup_invocation_id) sid: u32' : ''}) {
  let z = wid.z + P.zbase;
  let mb = ${sg ? `(wid.y + P.ybase) * ${R}u` : `((wid.y + P.ybase) * ${WY}u + lid.y) * ${R}u`};
  let nb = ((wid.x + P.xbase) * ${WX}u + lid.x) * ${C}u;
  ${sg
    // Every lane must reach the broadcasts: only the whole workgroup (one row block) leaves
    // early; a lane past N computes clamped columns and stores none.
    ? 'if (mb >= P.M) { return; }'
    : 'if (mb >= P.M || nb >= P.N) { return; }'}
  let HW = P.H * P.W; let OHW = P.OH * P.OW; let KHKW = P.KH * P.KW;`);
  for (const i of range(R)) for (const j of range(C)) L.push(`  var acc${i}_${j} = 0.0;`);
  const rowsClamped = range(R).map((i) => `  let m${i} = min(mb + ${i}u, P.M - 1u);`).join('\n');
  const colsClamped = range(C).map((j) => `  let n${j} = min(nb + ${j}u, P.N - 1u);`).join('\n');
  L.push(rowsClamped, colsClamped);

  if (mode === 'fwd') {
    // Per column: the sample's first input channel of this group and the window's top-left.
    for (const j of range(C)) {
      L.push(`  let s${j} = n${j} / OHW; let p${j} = n${j} % OHW;
  let xb${j} = P.off0 + (s${j} * P.C + z * P.CG) * HW;
  let iy0_${j} = i32((p${j} / P.OW) * P.SH) - P.PT; let ix0_${j} = i32((p${j} % P.OW) * P.SW) - i32(P.PL);`);
    }
    if (sg) L.push(`  let wqL = P.off1 + z * P.K * P.COG + min(mb + ${lane4}, P.COG - 4u);`);
    else if (w4) for (const g of range(R / 4)) L.push(`  let wq${g} = P.off1 + z * P.K * P.COG + min(mb + ${4 * g}u, P.COG - 4u);`);
    else for (const i of range(R)) L.push(`  let wr${i} = P.off1 + (z * P.COG + m${i}) * P.K;`);
    L.push(`  var k = 0u;
  for (var ci = 0u; ci < P.CG; ci++) {
    let cb = ci * HW;
    for (var ky = 0u; ky < P.KH; ky++) {
      let dy = i32(ky * P.DH);`);
    for (const j of range(C)) {
      L.push(`      let iy${j} = iy0_${j} + dy; let oky${j} = iy${j} >= 0 && iy${j} < i32(P.H);
      let rb${j} = xb${j} + cb + u32(max(iy${j}, 0)) * P.W;`);
    }
    L.push(`      for (var kx = 0u; kx < P.KW; kx++) {
        let dx = i32(kx * P.DW);`);
    for (const j of range(C)) {
      L.push(`        let ix${j} = ix0_${j} + dx; let ok${j} = oky${j} && ix${j} >= 0 && ix${j} < i32(P.W);
        let b${j} = select(0.0, f32(X[select(0u, rb${j} + u32(max(ix${j}, 0)), ok${j})]), ok${j});`);
    }
    if (w4) {
      if (sg) L.push(`        let wL = vec4<f32>(Wt[(wqL + k * P.COG) / 4u]);`, ...range(R / 4).map((g) => `        let w${g} = subgroupBroadcast(wL, ${g}u);`));
      else for (const g of range(R / 4)) L.push(`        let w${g} = vec4<f32>(Wt[(wq${g} + k * P.COG) / 4u]);`);
      for (const i of range(R)) L.push(`        let a${i} = w${i >> 2}.${'xyzw'[i & 3]};`);
    } else for (const i of range(R)) L.push(`        let a${i} = f32(Wt[wr${i} + k]);`);
    L.push(fmas(R, C, '        '));
    L.push(`        k++;
      }
    }
  }`);
    // Store with the bias.
    for (const i of range(R)) {
      L.push(`  if (mb + ${i}u < P.M) {
    var bias${i} = 0.0;
    if (P.flag != 0u) { bias${i} = f32(Bias[P.off2 + z * P.COG + m${i}]); }`);
      for (const j of range(C)) {
        L.push(`    if (nb + ${j}u < P.N) { O[P.offO + (s${j} * P.CO + z * P.COG + m${i}) * OHW + p${j}] = ${outType}(acc${i}_${j} + bias${i}); }`);
      }
      L.push('  }');
    }
  } else if (mode === 'dx') {
    if (!st) throw new Error('convRbWGSL: dx needs its stride and dilation');
    const { SH, SW, DH, DW } = st;
    // Per column: the sample's output gradient for this group and the input pixel shifted by the
    // padding; the output pixel is (ty - ky·DH)/SH where that divides.
    for (const j of range(C)) {
      L.push(`  let s${j} = n${j} / HW; let p${j} = n${j} % HW;
  let gb${j} = P.off0 + (s${j} * P.CO + z * P.COG) * OHW;
  let ty${j} = i32(p${j} / P.W) + P.PT; let tx${j} = i32(p${j} % P.W) + i32(P.PL);`);
    }
    if (sg) L.push(`  let wqL = P.off1 + z * P.COG * KHKW * P.CG + min(mb + ${lane4}, P.CG - 4u);`);
    else if (w4) for (const g of range(R / 4)) L.push(`  let wq${g} = P.off1 + z * P.COG * KHKW * P.CG + min(mb + ${4 * g}u, P.CG - 4u);`);
    else for (const i of range(R)) L.push(`  let wr${i} = P.off1 + (z * P.COG * P.CG + m${i}) * KHKW;`);
    const div = (v: string, s: number) => (s === 1 ? v : `(${v} / ${s})`);
    const divisible = (v: string, s: number) => (s === 1 ? 'true' : `(${v} % ${s}) == 0`);
    L.push(`  for (var co = 0u; co < P.COG; co++) {
    let gc = co * OHW;
    let wc = co * P.CG * KHKW;
    for (var ky = 0u; ky < P.KH; ky++) {
      let dy = i32(ky * ${DH}u);`);
    for (const j of range(C)) {
      L.push(`      let t${j} = ty${j} - dy; let oy${j} = ${div(`t${j}`, SH)};
      let oky${j} = t${j} >= 0 && ${divisible(`t${j}`, SH)} && oy${j} < i32(P.OH);
      let rb${j} = gb${j} + gc + u32(max(oy${j}, 0)) * P.OW;`);
    }
    L.push(`      for (var kx = 0u; kx < P.KW; kx++) {
        let dx = i32(kx * ${DW}u);`);
    for (const j of range(C)) {
      L.push(`        let u${j} = tx${j} - dx; let ox${j} = ${div(`u${j}`, SW)};
        let ok${j} = oky${j} && u${j} >= 0 && ${divisible(`u${j}`, SW)} && ox${j} < i32(P.OW);
        let b${j} = select(0.0, f32(Gr[select(0u, rb${j} + u32(max(ox${j}, 0)), ok${j})]), ok${j});`);
    }
    if (w4) {
      L.push(`        let r = (co * KHKW + ky * P.KW + kx) * P.CG;`);
      if (sg) L.push(`        let wL = vec4<f32>(Wt[(wqL + r) / 4u]);`, ...range(R / 4).map((g) => `        let w${g} = subgroupBroadcast(wL, ${g}u);`));
      else for (const g of range(R / 4)) L.push(`        let w${g} = vec4<f32>(Wt[(wq${g} + r) / 4u]);`);
      for (const i of range(R)) L.push(`        let a${i} = w${i >> 2}.${'xyzw'[i & 3]};`);
    } else {
      L.push(`        let r = wc + ky * P.KW + kx;`);
      for (const i of range(R)) L.push(`        let a${i} = f32(Wt[wr${i} + r]);`);
    }
    L.push(fmas(R, C, '        '));
    L.push(`      }
    }
  }`);
    for (const i of range(R)) {
      L.push(`  if (mb + ${i}u < P.M) {`);
      for (const j of range(C)) {
        L.push(`    if (nb + ${j}u < P.N) { O[P.offO + (s${j} * P.C + z * P.CG + m${i}) * HW + p${j}] = ${outType}(acc${i}_${j}); }`);
      }
      L.push('  }');
    }
  } else {
    // dw. Per column: the input channel's plane and the tap's offset; per row: the output
    // gradient's channel plane (sample 0).
    for (const j of range(C)) {
      L.push(`  let ci${j} = n${j} / KHKW; let r${j} = n${j} % KHKW;
  let xb${j} = P.off1 + (z * P.CG + ci${j}) * HW;
  let dy${j} = i32((r${j} / P.KW) * P.DH) - P.PT; let dx${j} = i32((r${j} % P.KW) * P.DW) - i32(P.PL);`);
    }
    if (sg) L.push(`  let gqL = P.off0 + z * P.COG + min(mb + ${lane4}, P.COG - 4u);`);
    else if (g4) for (const g of range(R / 4)) L.push(`  let gq${g} = P.off0 + z * P.COG + min(mb + ${4 * g}u, P.COG - 4u);`);
    else for (const i of range(R)) L.push(`  let gr${i} = P.off0 + (z * P.COG + m${i}) * OHW;`);
    L.push(`  if (P.flag != 0u) {`);
    for (const i of range(R)) for (const j of range(C)) L.push(`    acc${i}_${j} = O[P.offO + (z * P.COG + m${i}) * P.N + n${j}];`);
    L.push(`  }
  let S = P.K / OHW;
  for (var s = 0u; s < S; s++) {
    let xs = s * P.C * HW;
    let gs = s * P.CO * OHW;
    for (var oy = 0u; oy < P.OH; oy++) {
      let sy = i32(oy * P.SH);
      let go = gs + oy * P.OW;`);
    for (const j of range(C)) {
      L.push(`      let iy${j} = sy + dy${j}; let oky${j} = iy${j} >= 0 && iy${j} < i32(P.H);
      let rb${j} = xb${j} + xs + u32(max(iy${j}, 0)) * P.W;`);
    }
    L.push(`      for (var ox = 0u; ox < P.OW; ox++) {
        let sx = i32(ox * P.SW);`);
    for (const j of range(C)) {
      L.push(`        let ix${j} = sx + dx${j}; let ok${j} = oky${j} && ix${j} >= 0 && ix${j} < i32(P.W);
        let b${j} = select(0.0, f32(X[select(0u, rb${j} + u32(max(ix${j}, 0)), ok${j})]), ok${j});`);
    }
    if (g4) {
      L.push(`        let gp = (s * OHW + oy * P.OW + ox) * P.CO;`);
      if (sg) L.push(`        let gvL = vec4<f32>(Gr[(gqL + gp) / 4u]);`, ...range(R / 4).map((g) => `        let gv${g} = subgroupBroadcast(gvL, ${g}u);`));
      else for (const g of range(R / 4)) L.push(`        let gv${g} = vec4<f32>(Gr[(gq${g} + gp) / 4u]);`);
      for (const i of range(R)) L.push(`        let a${i} = gv${i >> 2}.${'xyzw'[i & 3]};`);
    } else for (const i of range(R)) L.push(`        let a${i} = f32(Gr[gr${i} + go + ox]);`);
    L.push(fmas(R, C, '        '));
    L.push(`      }
    }
  }`);
    for (const i of range(R)) {
      L.push(`  if (mb + ${i}u < P.M) {`);
      for (const j of range(C)) L.push(`    if (nb + ${j}u < P.N) { O[P.offO + (z * P.COG + m${i}) * P.N + n${j}] = acc${i}_${j}; }`);
      L.push('  }');
    }
  }
  L.push('}');
  return L.join('\n') + '\n';
}
