// Opt-in attention checks (npm run test:slow): Stable Diffusion's real sequence lengths (4096
// tokens: 8 heads × 40 and the VAE's single 512-wide head) against the float64 formula on a
// sample of output rows, with timings; and the GPU tile configurations (more threads per row for
// wide heads, head-size-specific kernels) run on whatever adapter this is.

import { suite } from 'uvu';
import * as E from '../../engine/index.js';
import { assertClose, randArray, randTensor, testDevice } from '../helpers.js';

const dev = await testDevice();
const s = suite('attention (slow)');

/** float64 attention output of one query row of head h (q, k, v contiguous [H, L, D]). */
function refRow(q: Float64Array, k: Float64Array, v: Float64Array, h: number, i: number, L: number, D: number): Float64Array {
  const scale = 1 / Math.sqrt(D);
  const sc = new Float64Array(L);
  let m = -Infinity;
  for (let j = 0; j < L; j++) {
    let a = 0;
    for (let c = 0; c < D; c++) a += q[(h * L + i) * D + c] * k[(h * L + j) * D + c];
    sc[j] = a * scale;
    m = Math.max(m, sc[j]);
  }
  let z = 0;
  for (let j = 0; j < L; j++) { sc[j] = Math.exp(sc[j] - m); z += sc[j]; }
  const out = new Float64Array(D);
  for (let j = 0; j < L; j++) for (let c = 0; c < D; c++) out[c] += (sc[j] / z) * v[(h * L + j) * D + c];
  return out;
}

async function longSequence(H: number, D: number, seed: number): Promise<void> {
  const L = 4096;
  const Q = randTensor([1, H, L, D], seed, -2, 2), K = randTensor([1, H, L, D], seed + 1, -2, 2), V = randTensor([1, H, L, D], seed + 2);
  const t0 = Date.now();
  const y = E.attention(Q.t, K.t, V.t);
  const out = await y.data();
  const ms = Date.now() - t0;
  console.log(`  attention 1×${H}×${L}×${D} forward: ${ms} ms on ${dev.adapterName}`);
  const picks = randArray(16, seed + 3, 0, 1);
  for (const p of picks) {
    const r = Math.floor(p * H * L), h = Math.floor(r / L), i = r % L;
    assertClose(out.subarray(r * D, (r + 1) * D), refRow(Q.x, K.x, V.x, h, i, L, D), 1e-4, 1e-5, `head ${h} row ${i}`);
  }
  for (const t of [Q.t, K.t, V.t, y]) t.dispose();
}

s('4096 tokens, 8 heads × 40 (UNet 64×64 self-attention)', () => longSequence(8, 40, 1));
s('4096 tokens, one head × 512 (VAE mid-block)', () => longSequence(1, 512, 11));

s('GPU tile configurations (threads per row 4/8/16, per-head-size kernels) forward and backward', async () => {
  const saved = { ...E.attentionTuning };
  try {
    E.attentionTuning.software = false;
    E.attentionTuning.unroll = false; // same arithmetic as the unrolled form, without the long compile here
    for (const [D, Lq, Lk] of [[40, 33, 70], [160, 20, 37], [512, 19, 23]]) {
      const Q = randTensor([1, 2, Lq, D], D, -1, 1), K = randTensor([1, 2, Lk, D], D + 1, -1, 1), V = randTensor([1, 2, Lk, D], D + 2, -1, 1);
      E.attentionTuning.software = true;
      const ref = (() => {
        for (const t of [Q.t, K.t, V.t]) t.requireGrad();
        const y = E.attention(Q.t, K.t, V.t);
        E.backward(E.sum(E.mul(y, y)));
        return y;
      })();
      const refs = await Promise.all([ref, Q.t.grad!, K.t.grad!, V.t.grad!].map((t) => t.data()));
      for (const t of [Q.t, K.t, V.t]) { t.grad!.dispose(); t.grad = null; }
      E.attentionTuning.software = false;
      const y = E.attention(Q.t, K.t, V.t);
      E.backward(E.sum(E.mul(y, y)));
      const got = await Promise.all([y, Q.t.grad!, K.t.grad!, V.t.grad!].map((t) => t.data()));
      // The software family is itself checked against float64 in test/attention.test.ts.
      got.forEach((g, n) => assertClose(g, refs[n], 1e-4, 1e-5, `D ${D} ${['out', 'dq', 'dk', 'dv'][n]}`));
      for (const t of [Q.t, K.t, V.t]) { t.grad?.dispose(); t.dispose(); }
      ref.dispose(); y.dispose();
    }
  } finally {
    E.attentionTuning.software = saved.software;
    E.attentionTuning.unroll = saved.unroll;
  }
});

s.run();
