// Attention as products on software adapters: S = Q·Kᵀ·scale, P = softmax(S), O = P·V, each a
// differentiable op (matmul, mul, softmax), so autograd supplies the backward.
//
// Where it is used (engine/ops/attention.ts): f32, no mask, a software adapter, and heads the
// row kernel (kernels/attention-rows.ts) serves worse: head sizes above its ROWS_DMAX (they fell
// to the tiled workgroup-memory kernels, which lavapipe runs at a fraction of TF.js's speed) or
// 256+ scores per head (one row per thread walks every key with loads that lavapipe pays lane by
// lane). The products run on the matmul kernels at 15-30 GFLOP/s.
//
// The score matrix is stored, Lq·Lk f32 per head; heads are taken in chunks of at most 64 MiB of
// scores. Whether a head takes this route depends on its own sizes only, never on the batch, and
// chunking splits the heads (each head's results are the same in any chunk), so a sample gives the
// same bits alone or in a batch. The bits differ from the row kernel's (another order of sums).

import type { Device } from '../device.js';
import { kernelFamily } from '../kernel-family.js';
import { sizeOf } from '../shape.js';
import { Tensor } from '../tensor.js';
import { mul } from './elementwise.js';
import { matmul } from './matmul.js';
import { concat, reshape, slice } from './movement.js';
import { softmax } from './softmax.js';

const SCORES_BUDGET = 64 << 20;
/** Bytes of scores one chunk of heads may hold. */
const scoresBudget = (dev: Device) => Math.min(SCORES_BUDGET, dev.maxBindingBytes);

function envChoice(): boolean | undefined {
  const v = typeof process !== 'undefined' ? process.env?.DDPO_ATTENTION_PRODUCTS : undefined;
  if (v === undefined || v === '') return undefined;
  if (v === '1') return true;
  if (v === '0') return false;
  throw new Error(`DDPO_ATTENTION_PRODUCTS=${v}: expected 0 (off), 1 (wherever possible) or unset (chosen by head size)`);
}

/**
 * Whether attention with these per-head sizes runs as products (see the file comment). `force`:
 * true takes the route wherever it can (f32, no mask, scores within budget), false never; unset
 * (also DDPO_ATTENTION_PRODUCTS unset): software adapters, for big heads or 256+ scores per head.
 */
export function attentionProductsApply(dev: Device, dtype: Tensor['dtype'], hasMask: boolean, Lq: number, Lk: number, D: number, Dv: number, rowsDmax: number, force?: boolean): boolean {
  const choice = force ?? envChoice();
  if (choice === false || dtype !== 'f32' || hasMask) return false;
  if (Lq === 0 || Lk === 0 || D === 0 || Dv === 0 || Lq * Lk * 4 > scoresBudget(dev)) return false;
  if (choice === true) return true;
  // Measured on lavapipe (bench/attention.ts): 4² self-attention (16×16 scores) 1.9× faster as
  // products forward + backward, 2² cross-attention (4×16) 1.1× slower; 256×256 ×40 5-9× faster.
  return kernelFamily(dev) === 'software' && (D > rowsDmax || Dv > rowsDmax || Lq * Lk >= 256);
}

/** q [...lead, Lq, D], k [...lead, Lk, D], v [...lead, Lk, Dv] (lead already common) → [...lead, Lq, Dv]. */
export function attentionProducts(q: Tensor, k: Tensor, v: Tensor, lead: number[], scale: number): Tensor {
  const Lq = q.shape[q.rank - 2], D = q.shape[q.rank - 1], Lk = k.shape[k.rank - 2], Dv = v.shape[v.rank - 1];
  const N = sizeOf(lead);
  const per = Math.max(1, Math.floor(scoresBudget(q.device) / (Lq * Lk * 4)));
  const q3 = reshape(q, [N, Lq, D]), k3 = reshape(k, [N, Lk, D]), v3 = reshape(v, [N, Lk, Dv]);
  const temps: Tensor[] = [q3, k3, v3];
  const outs: Tensor[] = [];
  try {
    for (let h0 = 0; h0 < N; h0 += per) {
      const h1 = Math.min(N, h0 + per);
      const part = (t: Tensor, L: number, W: number) => {
        if (h0 === 0 && h1 === N) return t;
        const s = slice(t, [h0, 0, 0], [h1, L, W]);
        temps.push(s);
        return s;
      };
      const qs = part(q3, Lq, D), ks = part(k3, Lk, D), vs = part(v3, Lk, Dv);
      const s = matmul(qs, ks, { transB: true });
      const ss = mul(s, scale);
      const p = softmax(ss, -1);
      temps.push(s, ss, p);
      outs.push(matmul(p, vs));
    }
    const o = outs.length === 1 ? outs[0] : concat(outs, 0);
    if (outs.length > 1) temps.push(...outs);
    else temps.push(o);
    return reshape(o, [...lead, Lq, Dv]);
  } finally {
    // Autograd keeps what the backward needs; these handles are only this function's.
    for (const t of temps) t.dispose();
  }
}
