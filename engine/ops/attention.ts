// Scaled dot-product attention: softmax(q·kᵀ·scale + mask)·v over heads.
//
// This first version composes matmul and softmax (autograd comes from them) and materialises the
// score matrix. The memory-efficient tiled kernel replaces the body of attention() keeping this
// signature, so model code written against it does not change.

import { Tensor } from '../tensor.js';
import { fmt } from '../shape.js';
import { add, mulScalar } from './elementwise.js';
import { matmul } from './matmul.js';
import { softmax } from './softmax.js';

export interface AttentionOptions {
  /** Additive mask broadcastable to [B, H, Lq, Lk] (e.g. CLIP's causal mask as [Lq, Lk] with −1e9 above the diagonal). */
  mask?: Tensor | null;
  /** Multiplies q·kᵀ; default 1/sqrt(D). */
  scale?: number;
}

/**
 * q [B, H, Lq, D], k [B, H, Lk, D], v [B, H, Lk, Dv] → [B, H, Lq, Dv]. Any leading dims are
 * allowed as long as q, k and v agree on them (they broadcast like matmul batch dims).
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const label = `attention(q ${q.describe()}, k ${k.describe()}, v ${v.describe()})`;
  if (q.rank < 2 || k.rank < 2 || v.rank < 2) throw new Error(`${label}: q, k and v need at least 2 dims [L, D]`);
  const D = q.shape[q.rank - 1];
  if (k.shape[k.rank - 1] !== D) throw new Error(`${label}: q and k head sizes differ (${D} vs ${k.shape[k.rank - 1]})`);
  if (k.shape[k.rank - 2] !== v.shape[v.rank - 2]) throw new Error(`${label}: k and v lengths differ (${fmt(k.shape)} vs ${fmt(v.shape)})`);
  const scale = opts.scale ?? 1 / Math.sqrt(D);
  const scores = matmul(q, k, { transB: true });
  const scaled = mulScalar(scores, scale);
  scores.dispose();
  let logits = scaled;
  if (opts.mask) {
    logits = add(scaled, opts.mask);
    scaled.dispose();
  }
  const p = softmax(logits, -1);
  logits.dispose();
  const out = matmul(p, v);
  p.dispose();
  return out;
}
