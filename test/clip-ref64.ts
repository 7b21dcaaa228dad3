// Float64 references of CLIP's building blocks, written from their definitions (transformers'
// CLIPEncoderLayer: pre-LN attention with scale 1/√head_dim, quick_gelu or erf GELU MLP), for
// the text and image tower tests; and random weights with non-trivial layer norms.

import * as E from '../engine/index.js';
import { randArray } from './helpers.js';

/** Name → values on the host, in float64. */
export type Params = Map<string, Float64Array>;

export async function hostParams(m: E.nn.Module): Promise<Params> {
  const out: Params = new Map();
  for (const [n, p] of m.namedParameters()) out.set(n, Float64Array.from(await p.data()));
  return out;
}

/** Random weights; layer-norm weights in [0.5, 1.5] (ones would hide norm-parameter bugs). */
export function randomizeModule(m: E.nn.Module, seed: number, scale = 0.5): void {
  let k = seed;
  const state = new Map<string, E.Tensor>();
  for (const [n, p] of m.namedParameters()) {
    const isNormW = /(norm|layrnorm).*\.weight$/.test(n);
    state.set(n, E.tensor(randArray(p.size, k++, isNormW ? 0.5 : -scale, isNormW ? 1.5 : scale), [...p.shape]));
  }
  m.loadStateDict(state);
  for (const t of state.values()) t.dispose();
}

/** y = x·Wᵀ + b for n rows (b may be null). */
export function linear64(x: Float64Array, n: number, inF: number, outF: number, w: Float64Array, b: Float64Array | null): Float64Array {
  const y = new Float64Array(n * outF);
  for (let r = 0; r < n; r++) for (let o = 0; o < outF; o++) {
    let acc = b ? b[o] : 0;
    for (let i = 0; i < inF; i++) acc += x[r * inF + i] * w[o * inF + i];
    y[r * outF + o] = acc;
  }
  return y;
}

export function layerNorm64(x: Float64Array, n: number, D: number, w: Float64Array, b: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(n * D);
  for (let r = 0; r < n; r++) {
    let mu = 0, v = 0;
    for (let d = 0; d < D; d++) mu += x[r * D + d] / D;
    for (let d = 0; d < D; d++) v += (x[r * D + d] - mu) ** 2 / D;
    for (let d = 0; d < D; d++) y[r * D + d] = ((x[r * D + d] - mu) / Math.sqrt(v + eps)) * w[d] + b[d];
  }
  return y;
}

export function erf(x: number): number {
  // Abramowitz–Stegun 7.1.26 is too coarse for a 1e-6 check; use the series / continued fraction.
  const t = Math.abs(x);
  let r: number;
  if (t < 3) {
    let sum = t, term = t;
    for (let n = 1; n < 100; n++) { term *= -t * t / n; sum += term / (2 * n + 1); }
    r = (2 / Math.sqrt(Math.PI)) * sum;
  } else {
    let f = 0;
    for (let n = 60; n >= 1; n--) f = n / 2 / (t + f);
    r = 1 - Math.exp(-t * t) / Math.sqrt(Math.PI) / (t + f);
  }
  return x < 0 ? -r : r;
}

export interface EncoderShape {
  hiddenSize: number;
  intermediateSize: number;
  numAttentionHeads: number;
  hiddenAct: 'quick_gelu' | 'gelu';
  layerNormEps: number;
}

/** One CLIPEncoderLayer on x [B·L, D] (rows b·L + l), causal (text) or full (image) attention. */
export function encoderLayer64(x: Float64Array, B: number, L: number, cfg: EncoderShape, P: Params, p: string, causal: boolean): Float64Array {
  const D = cfg.hiddenSize, H = cfg.numAttentionHeads, hd = D / H, F = cfg.intermediateSize, N = B * L;
  const g = (n: string) => { const v = P.get(`${p}.${n}`); if (!v) throw new Error(`reference: no parameter ${p}.${n}`); return v; };
  const act = cfg.hiddenAct === 'quick_gelu' ? (v: number) => v / (1 + Math.exp(-1.702 * v)) : (v: number) => 0.5 * v * (1 + erf(v / Math.SQRT2));
  const h = layerNorm64(x, N, D, g('layer_norm1.weight'), g('layer_norm1.bias'), cfg.layerNormEps);
  const proj = (nm: string) => linear64(h, N, D, D, g(`self_attn.${nm}.weight`), g(`self_attn.${nm}.bias`));
  const q = proj('q_proj'), k = proj('k_proj'), v = proj('v_proj');
  const o = new Float64Array(N * D);
  for (let b = 0; b < B; b++) for (let hh = 0; hh < H; hh++) for (let qi = 0; qi < L; qi++) {
    const last = causal ? qi : L - 1;
    const sc: number[] = [];
    for (let kj = 0; kj <= last; kj++) {
      let dotp = 0;
      for (let e = 0; e < hd; e++) dotp += q[(b * L + qi) * D + hh * hd + e] * k[(b * L + kj) * D + hh * hd + e];
      sc.push(dotp / Math.sqrt(hd));
    }
    const mx = Math.max(...sc);
    const ex = sc.map((s) => Math.exp(s - mx));
    const z = ex.reduce((a, c) => a + c, 0);
    for (let e = 0; e < hd; e++) {
      let acc = 0;
      for (let kj = 0; kj <= last; kj++) acc += (ex[kj] / z) * v[(b * L + kj) * D + hh * hd + e];
      o[(b * L + qi) * D + hh * hd + e] = acc;
    }
  }
  const a = linear64(o, N, D, D, g('self_attn.out_proj.weight'), g('self_attn.out_proj.bias'));
  const r = x.map((xv, j) => xv + a[j]);
  const h2 = layerNorm64(r, N, D, g('layer_norm2.weight'), g('layer_norm2.bias'), cfg.layerNormEps);
  const f1 = linear64(h2, N, D, F, g('mlp.fc1.weight'), g('mlp.fc1.bias')).map(act);
  const f2 = linear64(f1, N, F, D, g('mlp.fc2.weight'), g('mlp.fc2.bias'));
  return r.map((rv, j) => rv + f2[j]);
}
