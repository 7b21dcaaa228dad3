// Winograd F(2×2, 3×3) convolution kernels for software adapters (3×3, stride 1, dilation 1,
// one group): a 2×2 block of outputs costs 16 products per (input, output) channel pair instead of
// 36, and on lavapipe, where every loaded value costs far more than an fma, the batched product in
// the middle is the engine's register-blocked matmul at its best shape. Three kernels around it:
//
//   weights  U[e, p, q] = (G g Gᵀ)[e]   g = w[p, q] (forward) or w[q, p] rotated 180° (input
//            gradient, a stride-1 convolution of the output gradient with the flipped kernel)
//   input    V[e, q, col] = (Bᵀ d B)[e] d = the 4×4 input patch of tile col (zeros outside)
//   product  M[e] = U[e] · V[e]       (engine/ops/matmul.ts, batched over the 16 e)
//   output   y[p, tile] = Aᵀ M[·, p, col] A + bias[p], the 2×2 outputs inside the image
//
// The weight gradient runs the same algebra backwards: with the output gradient's tiles
// Z[e, p, col] = (A dY Aᵀ)[e] (dY zero outside the image), S[e] = Z[e] · V[e]ᵀ sums over the
// columns (samples and tiles), and dW[p, q] = Gᵀ S[·, p, q] G.
//
// Columns are (sample, tile) pairs, so a sample's outputs depend only on its own columns and the
// product's fixed reduction over q: bit-identical alone or in any batch. All arithmetic is f32
// (f16 tensors are read as f32 and rounded once, on the final store).
//
// Matrices (Lavin & Gray 2015): Bᵀ = [1 0 −1 0; 0 1 1 0; 0 −1 1 0; 0 1 0 −1],
// G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1], Aᵀ = [1 1 1 0; 0 1 −1 −1].

import { DType } from '../engine/dtype.js';
import { MAIN_1D, ParamLayout, declareBindings, f16Enable } from './common.js';

export const winogradLayout = new ParamLayout([
  { name: 'total', type: 'u32' }, // threads: P·Q (weights), Q·cols (input), P·cols (output)
  { name: 'P', type: 'u32' }, // output channels of this convolution
  { name: 'Q', type: 'u32' }, // input channels
  { name: 'H', type: 'u32' }, // input image
  { name: 'W', type: 'u32' },
  { name: 'OH', type: 'u32' }, // output image
  { name: 'OW', type: 'u32' },
  { name: 'TW', type: 'u32' }, // tiles per output row, ⌈OW/2⌉
  { name: 'T', type: 'u32' }, // tiles per image
  { name: 'cols', type: 'u32' }, // samples in this chunk × T
  { name: 'PT', type: 'i32' }, // padding, top and left
  { name: 'PL', type: 'i32' },
  { name: 'off', type: 'u32' }, // element offset of the image window (input or output)
  { name: 'hasb', type: 'u32' },
]);

export type WinogradKernel = 'weights-fwd' | 'weights-dx' | 'input' | 'output' | 'grad' | 'weights-grad';

export const winogradKey = (k: WinogradKernel, dtype: DType) => `winograd:${k}:${dtype}`;

const idx = (n: number) => Array.from({ length: n }, (_, i) => i);

/** Emits `out{r}{c} = Σ_k L[r][k]·in{k}{c}` … as WGSL lets, for a small constant matrix L. */
function leftMul(L: number[][], inp: (k: number, c: number) => string, out: string, cols: number): string[] {
  const lines: string[] = [];
  for (let r = 0; r < L.length; r++) {
    for (let c = 0; c < cols; c++) {
      const terms = L[r].map((v, k) => (v === 0 ? '' : `${v < 0 ? '-' : '+'} ${Math.abs(v) === 1 ? '' : `${Math.abs(v)} * `}${inp(k, c)}`)).filter((t) => t);
      const expr = terms.join(' ').replace(/^\+ /, '');
      lines.push(`  let ${out}${r}_${c} = ${expr || '0.0'};`);
    }
  }
  return lines;
}
/** out{r}{c} = Σ_k in{r}{k}·R[c][k] (multiplying by Rᵀ on the right). */
function rightMulT(R: number[][], inp: (r: number, k: number) => string, out: string, rows: number): string[] {
  const lines: string[] = [];
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < R.length; c++) {
      const terms = R[c].map((v, k) => (v === 0 ? '' : `${v < 0 ? '-' : '+'} ${Math.abs(v) === 1 ? '' : `${Math.abs(v)} * `}${inp(r, k)}`)).filter((t) => t);
      const expr = terms.join(' ').replace(/^\+ /, '');
      lines.push(`  let ${out}${r}_${c} = ${expr || '0.0'};`);
    }
  }
  return lines;
}

const BT = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]];
const GM = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]];
const AT = [[1, 1, 1, 0], [0, 1, -1, -1]];
const transpose = (m: number[][]) => m[0].map((_, c) => m.map((row) => row[c]));
const AM = transpose(AT);
const GT = transpose(GM);

export function winogradWGSL(k: WinogradKernel, dtype: DType): string {
  const L: string[] = [f16Enable(dtype)];
  if (k === 'weights-fwd' || k === 'weights-dx') {
    L.push(declareBindings([{ name: 'w', type: dtype }], [{ name: 'U', type: 'f32' }], winogradLayout));
    L.push(MAIN_1D());
    L.push(`  let i = gid * 256u + lid;
  if (i >= P.total) { return; }
  let p = i / P.Q;
  let q = i % P.Q;`);
    // g[r][c]: forward w[p, q, r, c]; input gradient w[q, p, 2 − r, 2 − c].
    const base = k === 'weights-fwd' ? '(p * P.Q + q) * 9u' : '(q * P.P + p) * 9u';
    for (const r of idx(3)) for (const c of idx(3)) {
      const tap = k === 'weights-fwd' ? r * 3 + c : (2 - r) * 3 + (2 - c);
      L.push(`  let g${r}_${c} = f32(w[${base} + ${tap}u]);`);
    }
    L.push(...leftMul(GM, (kk, c) => `g${kk}_${c}`, 't', 3));
    L.push(...rightMulT(GM, (r, kk) => `t${r}_${kk}`, 'u', 4));
    for (const r of idx(4)) for (const c of idx(4)) L.push(`  U[(${r * 4 + c}u * P.P + p) * P.Q + q] = u${r}_${c};`);
    L.push('}');
    return L.join('\n') + '\n';
  }
  if (k === 'input') {
    L.push(declareBindings([{ name: 'x', type: dtype }], [{ name: 'V', type: 'f32' }], winogradLayout));
    L.push(MAIN_1D());
    L.push(`  let i = gid * 256u + lid;
  if (i >= P.total) { return; }
  let q = i / P.cols;
  let col = i % P.cols;
  let n = col / P.T;
  let t = col % P.T;
  let y0 = i32(t / P.TW) * 2 - P.PT;
  let x0 = i32(t % P.TW) * 2 - P.PL;
  let img = P.off + (n * P.Q + q) * P.H * P.W;`);
    // Out-of-image taps read element 0 of the image (always valid) and are zeroed by select.
    for (const r of idx(4)) for (const c of idx(4)) {
      L.push(`  let ok${r}_${c} = y0 + ${r} >= 0 && y0 + ${r} < i32(P.H) && x0 + ${c} >= 0 && x0 + ${c} < i32(P.W);`);
      L.push(`  let d${r}_${c} = select(0.0, f32(x[img + select(0u, u32(y0 + ${r}) * P.W + u32(x0 + ${c}), ok${r}_${c})]), ok${r}_${c});`);
    }
    L.push(...leftMul(BT, (kk, c) => `d${kk}_${c}`, 't', 4));
    L.push(...rightMulT(BT, (r, kk) => `t${r}_${kk}`, 'v', 4));
    for (const r of idx(4)) for (const c of idx(4)) L.push(`  V[(${r * 4 + c}u * P.Q + q) * P.cols + col] = v${r}_${c};`);
    L.push('}');
    return L.join('\n') + '\n';
  }
  if (k === 'grad') {
    L.push(declareBindings([{ name: 'g', type: dtype }], [{ name: 'Z', type: 'f32' }], winogradLayout));
    L.push(MAIN_1D());
    L.push(`  let i = gid * 256u + lid;
  if (i >= P.total) { return; }
  let p = i / P.cols;
  let col = i % P.cols;
  let n = col / P.T;
  let t = col % P.T;
  let oy = (t / P.TW) * 2u;
  let ox = (t % P.TW) * 2u;
  let img = P.off + (n * P.P + p) * P.OH * P.OW;`);
    for (const r of idx(2)) for (const c of idx(2)) {
      L.push(`  let ok${r}_${c} = oy + ${r}u < P.OH && ox + ${c}u < P.OW;`);
      L.push(`  let d${r}_${c} = select(0.0, f32(g[img + select(0u, (oy + ${r}u) * P.OW + ox + ${c}u, ok${r}_${c})]), ok${r}_${c});`);
    }
    L.push(...leftMul(AM, (kk, c) => `d${kk}_${c}`, 't', 2));
    L.push(...rightMulT(AM, (r, kk) => `t${r}_${kk}`, 'z', 4));
    for (const r of idx(4)) for (const c of idx(4)) L.push(`  Z[(${r * 4 + c}u * P.P + p) * P.cols + col] = z${r}_${c};`);
    L.push('}');
    return L.join('\n') + '\n';
  }
  if (k === 'weights-grad') {
    L.push(declareBindings([{ name: 'S', type: 'f32' }], [{ name: 'dw', type: 'f32' }], winogradLayout));
    L.push(MAIN_1D());
    L.push(`  let i = gid * 256u + lid;
  if (i >= P.total) { return; }
  let p = i / P.Q;
  let q = i % P.Q;`);
    for (const r of idx(4)) for (const c of idx(4)) L.push(`  let s${r}_${c} = S[(${r * 4 + c}u * P.P + p) * P.Q + q];`);
    L.push(...leftMul(GT, (kk, c) => `s${kk}_${c}`, 't', 4));
    L.push(...rightMulT(GT, (r, kk) => `t${r}_${kk}`, 'w', 3));
    for (const r of idx(3)) for (const c of idx(3)) L.push(`  dw[(p * P.Q + q) * 9u + ${r * 3 + c}u] = w${r}_${c};`);
    L.push('}');
    return L.join('\n') + '\n';
  }
  L.push(declareBindings([{ name: 'M', type: 'f32' }, { name: 'b', type: dtype }], [{ name: 'y', type: dtype }], winogradLayout));
  L.push(MAIN_1D());
  L.push(`  let i = gid * 256u + lid;
  if (i >= P.total) { return; }
  let p = i / P.cols;
  let col = i % P.cols;
  let n = col / P.T;
  let t = col % P.T;
  let oy = (t / P.TW) * 2u;
  let ox = (t % P.TW) * 2u;`);
  for (const r of idx(4)) for (const c of idx(4)) L.push(`  let m${r}_${c} = M[(${r * 4 + c}u * P.P + p) * P.cols + col];`);
  L.push(...leftMul(AT, (kk, c) => `m${kk}_${c}`, 't', 4));
  L.push(...rightMulT(AT, (r, kk) => `t${r}_${kk}`, 'o', 2));
  L.push(`  let bias = select(0.0, f32(b[p]), P.hasb != 0u);
  let img = P.off + (n * P.P + p) * P.OH * P.OW;`);
  for (const r of idx(2)) for (const c of idx(2)) {
    L.push(`  if (oy + ${r}u < P.OH && ox + ${c}u < P.OW) { y[img + (oy + ${r}u) * P.OW + ox + ${c}u] = ${dtype}(o${r}_${c} + bias); }`);
  }
  L.push('}');
  return L.join('\n') + '\n';
}
