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

/** 'input-t' is 'input' stored as Vᵀ [16, cols, Q]: the weight gradient's Z · Vᵀ then reads it as a plain [cols, Q] operand. */
export type WinogradKernel = 'weights-fwd' | 'weights-dx' | 'input' | 'input-t' | 'output' | 'grad' | 'weights-grad';

export const winogradKey = (k: WinogradKernel, dtype: DType) => `winograd:${k}:${dtype}`;

/** One line per cell of an n×n grid, in row-major order. */
const cells = (n: number, line: (r: number, c: number) => string) =>
  Array.from({ length: n * n }, (_, i) => line(Math.floor(i / n), i % n));

/** Σ_k coeffs[k]·term(k) as a WGSL expression (zero coefficients dropped, ±1 written bare). */
function combine(coeffs: number[], term: (k: number) => string): string {
  const terms = coeffs.map((v, k) => (v === 0 ? '' : `${v < 0 ? '-' : '+'} ${Math.abs(v) === 1 ? '' : `${Math.abs(v)} * `}${term(k)}`)).filter((t) => t);
  return terms.join(' ').replace(/^\+ /, '') || '0.0';
}

/**
 * out = M · X · Mᵀ as WGSL lets, for a small constant matrix M and a square X whose element
 * (r, c) is `x(r, c)` (every transform above has this form): first t = M·X, then out = t·Mᵀ.
 */
function sandwich(M: number[][], x: (r: number, c: number) => string, out: string): string[] {
  const n = M[0].length, m = M.length;
  const lines: string[] = [];
  for (let r = 0; r < m; r++) for (let c = 0; c < n; c++) lines.push(`  let t${r}_${c} = ${combine(M[r], (k) => x(k, c))};`);
  for (let r = 0; r < m; r++) for (let c = 0; c < m; c++) lines.push(`  let ${out}${r}_${c} = ${combine(M[c], (k) => `t${r}_${k}`)};`);
  return lines;
}

const BT = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]];
const GM = [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]];
const AT = [[1, 1, 1, 0], [0, 1, -1, -1]];
const transpose = (m: number[][]) => m[0].map((_, c) => m.map((row) => row[c]));
const AM = transpose(AT);
const GT = transpose(GM);

/** Thread i of P.total; a channel pair (p, q) per thread (the weight kernels). */
const PAIR = `  let i = gid * 256u + lid;
  if (i >= P.total) { return; }
  let p = i / P.Q;
  let q = i % P.Q;`;

/** Thread i of P.total; a channel `ch` and a column (sample n, tile t) per thread. */
const column = (ch: string) => `  let i = gid * 256u + lid;
  if (i >= P.total) { return; }
  let ${ch} = i / P.cols;
  let col = i % P.cols;
  let n = col / P.T;
  let t = col % P.T;`;

/** The first output of tile t. */
const OUT_TILE = `  let oy = (t / P.TW) * 2u;
  let ox = (t % P.TW) * 2u;`;

export function winogradWGSL(k: WinogradKernel, dtype: DType): string {
  const kernel = (reads: { name: string; type: DType }[], writes: { name: string; type: DType }[], body: string[]) =>
    [f16Enable(dtype), declareBindings(reads, writes, winogradLayout), MAIN_1D(), ...body, '}'].join('\n') + '\n';
  /** The 16 transformed values `v{r}_{c}` stored at element e = 4r + c of an [16, A, B] tensor. */
  const store16 = (name: string, A: string, a: string, b: string, B: string, v: string) =>
    cells(4, (r, c) => `  ${name}[(${r * 4 + c}u * P.${A} + ${a}) * P.${B} + ${b}] = ${v}${r}_${c};`);
  const load16 = (name: string, A: string, a: string, b: string, B: string, v: string) =>
    cells(4, (r, c) => `  let ${v}${r}_${c} = ${name}[(${r * 4 + c}u * P.${A} + ${a}) * P.${B} + ${b}];`);

  if (k === 'weights-fwd' || k === 'weights-dx') {
    // g[r][c]: forward w[p, q, r, c]; input gradient w[q, p, 2 − r, 2 − c].
    const base = k === 'weights-fwd' ? '(p * P.Q + q) * 9u' : '(q * P.P + p) * 9u';
    const tap = (r: number, c: number) => (k === 'weights-fwd' ? r * 3 + c : (2 - r) * 3 + (2 - c));
    return kernel([{ name: 'w', type: dtype }], [{ name: 'U', type: 'f32' }], [
      PAIR,
      ...cells(3, (r, c) => `  let g${r}_${c} = f32(w[${base} + ${tap(r, c)}u]);`),
      ...sandwich(GM, (r, c) => `g${r}_${c}`, 'u'),
      ...store16('U', 'P', 'p', 'q', 'Q', 'u'),
    ]);
  }
  if (k === 'input' || k === 'input-t') {
    return kernel([{ name: 'x', type: dtype }], [{ name: 'V', type: 'f32' }], [
      column('q'),
      `  let y0 = i32(t / P.TW) * 2 - P.PT;
  let x0 = i32(t % P.TW) * 2 - P.PL;
  let img = P.off + (n * P.Q + q) * P.H * P.W;`,
      // Out-of-image taps read element 0 of the image (always valid) and are zeroed by select.
      ...cells(4, (r, c) => `  let ok${r}_${c} = y0 + ${r} >= 0 && y0 + ${r} < i32(P.H) && x0 + ${c} >= 0 && x0 + ${c} < i32(P.W);
  let d${r}_${c} = select(0.0, f32(x[img + select(0u, u32(y0 + ${r}) * P.W + u32(x0 + ${c}), ok${r}_${c})]), ok${r}_${c});`),
      ...sandwich(BT, (r, c) => `d${r}_${c}`, 'v'),
      ...(k === 'input' ? store16('V', 'Q', 'q', 'col', 'cols', 'v') : store16('V', 'cols', 'col', 'q', 'Q', 'v')),
    ]);
  }
  if (k === 'grad') {
    return kernel([{ name: 'g', type: dtype }], [{ name: 'Z', type: 'f32' }], [
      column('p'),
      OUT_TILE,
      '  let img = P.off + (n * P.P + p) * P.OH * P.OW;',
      ...cells(2, (r, c) => `  let ok${r}_${c} = oy + ${r}u < P.OH && ox + ${c}u < P.OW;
  let d${r}_${c} = select(0.0, f32(g[img + select(0u, (oy + ${r}u) * P.OW + ox + ${c}u, ok${r}_${c})]), ok${r}_${c});`),
      ...sandwich(AM, (r, c) => `d${r}_${c}`, 'z'),
      ...store16('Z', 'P', 'p', 'col', 'cols', 'z'),
    ]);
  }
  if (k === 'weights-grad') {
    return kernel([{ name: 'S', type: 'f32' }], [{ name: 'dw', type: 'f32' }], [
      PAIR,
      ...load16('S', 'P', 'p', 'q', 'Q', 's'),
      ...sandwich(GT, (r, c) => `s${r}_${c}`, 'w'),
      ...cells(3, (r, c) => `  dw[(p * P.Q + q) * 9u + ${r * 3 + c}u] = w${r}_${c};`),
    ]);
  }
  return kernel([{ name: 'M', type: 'f32' }, { name: 'b', type: dtype }], [{ name: 'y', type: dtype }], [
    column('p'),
    OUT_TILE,
    ...load16('M', 'P', 'p', 'col', 'cols', 'm'),
    ...sandwich(AT, (r, c) => `m${r}_${c}`, 'o'),
    `  let bias = select(0.0, f32(b[p]), P.hasb != 0u);
  let img = P.off + (n * P.P + p) * P.OH * P.OW;`,
    ...cells(2, (r, c) => `  if (oy + ${r}u < P.OH && ox + ${c}u < P.OW) { y[img + (oy + ${r}u) * P.OW + ox + ${c}u] = ${dtype}(o${r}_${c} + bias); }`),
  ]);
}
