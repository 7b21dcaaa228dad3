// Opt-in checks of conv2d and groupNorm at Stable Diffusion sizes (npm run test:slow), each
// against a float64 reference computed for a random sample of output elements only (the full
// reference would take minutes on the CPU). Each test logs how long the GPU part took.
//
// - conv2d 320→320 3×3 at 64×64, batch 1 (a UNet block at 512² images).
// - conv2d 128→128 3×3 at 512×512 (the VAE's outer blocks; 128 MiB per sample, exactly the
//   lavapipe binding limit) under a lowered limit of 32 MiB, so that the row-band path runs at
//   scale.
// - groupNorm over 256 channels × 512×512 with 32 groups: 256 MiB per image in f32, above the
//   real 128 MiB binding limit, so the norm's chunking runs; forward sampled, dx sampled,
//   dweight/dbias in full.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../../engine/index.js';
import { planBands } from '../../engine/ops/conv2d-bands.js';
import { rng, testDevice } from '../helpers.js';

const dev = await testDevice();
const s = suite('layers (SD sizes)');

function seconds(t0: number): string {
  return `${((performance.now() - t0) / 1000).toFixed(1)} s`;
}

/** n distinct flat indices into [0, size), seeded, plus the given fixed ones. */
function sampleIndices(size: number, n: number, seed: number, fixed: number[] = []): number[] {
  const r = rng(seed);
  const set = new Set(fixed.filter((i) => i >= 0 && i < size));
  while (set.size < n + fixed.length && set.size < size) set.add(Math.floor(r() * size));
  return [...set];
}

interface ConvCase { C: number; CO: number; H: number; W: number; K: number; pad: number }

/**
 * conv2d forward on random inputs; `fixedRows` output rows (band edges) are sampled besides
 * ~50 random elements. Σ|x·w| bounds the f32 error: fma in order over K terms stays within
 * 1e-5·Σ|x·w|, while one wrong tap would be off by about Σ|x·w|/K (K ≥ 1152 here: 30×+).
 */
async function checkConv(c: ConvCase, seed: number, fixedRows: number[] = []): Promise<string> {
  const { C, CO, H, W, K, pad } = c;
  const x = E.randomUniform([1, C, H, W], seed, { low: -1, high: 1 });
  const w = E.randomUniform([CO, C, K, K], seed + 1, { low: -1, high: 1 });
  const b = E.randomUniform([CO], seed + 2, { low: -1, high: 1 });
  const t0 = performance.now();
  const out = E.conv2d(x, w, b, { padding: pad });
  const got = await out.data();
  const gpu = seconds(t0);
  const [xv, wv, bv] = [await x.data(), await w.data(), await b.data()];
  const OH = H + 2 * pad - K + 1, OW = W + 2 * pad - K + 1;
  assert.equal([...out.shape], [1, CO, OH, OW]);
  const fixed = fixedRows.flatMap((oy) => [oy * OW, (CO - 1) * OH * OW + oy * OW + OW - 1, Math.floor(CO / 2) * OH * OW + oy * OW + Math.floor(OW / 2)]);
  for (const o of sampleIndices(CO * OH * OW, 50, seed + 3, [0, CO * OH * OW - 1, ...fixed])) {
    const co = Math.floor(o / (OH * OW)), oy = Math.floor(o / OW) % OH, ox = o % OW;
    let ref = bv[co], mag = Math.abs(bv[co]);
    for (let ci = 0; ci < C; ci++) {
      for (let ky = 0; ky < K; ky++) {
        const iy = oy + ky - pad;
        if (iy < 0 || iy >= H) continue;
        for (let kx = 0; kx < K; kx++) {
          const ix = ox + kx - pad;
          if (ix < 0 || ix >= W) continue;
          const t = xv[(ci * H + iy) * W + ix] * wv[((co * C + ci) * K + ky) * K + kx];
          ref += t; mag += Math.abs(t);
        }
      }
    }
    const tol = 1e-5 * mag + 1e-6;
    assert.ok(Math.abs(got[o] - ref) <= tol, `conv2d ${C}→${CO} @ ${H}×${W}: out[${co},${oy},${ox}] = ${got[o]}, reference ${ref} (tolerance ${tol})`);
  }
  for (const t of [x, w, b, out]) t.dispose();
  return gpu;
}

s('conv2d 320→320 3×3 at 64×64 (batch 1) on sampled outputs', async () => {
  const gpu = await checkConv({ C: 320, CO: 320, H: 64, W: 64, K: 3, pad: 1 }, 10);
  console.log(`  conv2d 320→320 3×3 @ 64×64: ${gpu} (forward, including read-back)`);
});

s('conv2d 128→128 3×3 at 512×512 in row bands (lowered binding limit) on sampled outputs', async () => {
  const c: ConvCase = { C: 128, CO: 128, H: 512, W: 512, K: 3, pad: 1 };
  const limit = 32 << 20; // one sample is 128 MiB: bands of about 120 rows
  const geo = E.conv2dGeometry([1, c.C, c.H, c.W], [c.CO, c.C, c.K, c.K], { padding: c.pad }, 'test');
  const bands = planBands('fwd', geo, limit, 4, 'test');
  assert.ok(bands.length >= 4, `expected several bands, got ${bands.length}`);
  // Sample both sides of every band edge, where a wrong halo would show.
  const edges = bands.slice(1).flatMap((b) => [b.r0 - 1, b.r0]);
  const saved = dev.maxBindingBytes;
  let gpu: string;
  try {
    dev.maxBindingBytes = limit;
    gpu = await checkConv(c, 20, edges);
  } finally {
    dev.maxBindingBytes = saved;
  }
  console.log(`  conv2d 128→128 3×3 @ 512×512 in ${bands.length} row bands: ${gpu} (forward, including read-back)`);
});

s('groupNorm over 256 channels × 512×512, 32 groups (256 MiB image, above the binding limit)', async () => {
  const [N, C, H, W, G] = [1, 256, 512, 512, 32];
  const S = H * W, cpg = C / G, L = cpg * S, eps = 1e-5;
  assert.ok(N * C * S * 4 > dev.maxBindingBytes, 'the image should exceed the real binding limit');
  // Offset and spread so that a variance computed carelessly (E[x²] − E[x]²) would show.
  const x = E.randomUniform([N, C, H, W], 30, { low: 2, high: 5 }).requireGrad();
  const wt = E.randomUniform([C], 31, { low: 0.5, high: 1.5 }).requireGrad();
  const bs = E.randomUniform([C], 32, { low: -0.5, high: 0.5 }).requireGrad();
  const g = E.randomUniform([N, C, H, W], 33, { low: -1, high: 1 });
  const t0 = performance.now();
  const y = E.groupNorm(x, G, wt, bs, eps);
  const yv = await y.data();
  const fwd = seconds(t0);
  const t1 = performance.now();
  E.backward(y, { grad: g });
  const dx = await x.grad!.data();
  const dwv = await wt.grad!.data(), dbv = await bs.grad!.data();
  const bwd = seconds(t1);
  const xv = await x.data(), gv = await g.data(), wv = await wt.data(), bv = await bs.data();

  // float64 statistics of every group (the sampled elements touch most groups anyway), then the
  // sums backward needs: Σ g·w and Σ g·w·x̂ per group, Σ g·x̂ and Σ g per channel.
  const mean = new Float64Array(N * G), rstd = new Float64Array(N * G);
  const sgw = new Float64Array(N * G), sgwx = new Float64Array(N * G);
  const dwRef = new Float64Array(C), dbRef = new Float64Array(C);
  for (let r = 0; r < N * G; r++) {
    const base = r * L;
    let m = 0;
    for (let i = 0; i < L; i++) m += xv[base + i];
    m /= L;
    let v = 0;
    for (let i = 0; i < L; i++) { const d = xv[base + i] - m; v += d * d; }
    mean[r] = m; rstd[r] = 1 / Math.sqrt(v / L + eps);
    for (let i = 0; i < L; i++) {
      const c = (r % G) * cpg + Math.floor(i / S);
      const xh = (xv[base + i] - m) * rstd[r];
      const gg = gv[base + i];
      sgw[r] += gg * wv[c]; sgwx[r] += gg * wv[c] * xh;
      dwRef[c] += gg * xh; dbRef[c] += gg;
    }
  }
  for (const i of sampleIndices(N * C * S, 50, 34, [0, N * C * S - 1, L - 1, L])) {
    const r = Math.floor(i / L), c = Math.floor(i / S) % C;
    const xh = (xv[i] - mean[r]) * rstd[r];
    const yRef = xh * wv[c] + bv[c];
    assert.ok(Math.abs(yv[i] - yRef) <= 1e-4 + 1e-4 * Math.abs(yRef), `groupNorm y[${i}] = ${yv[i]}, reference ${yRef}`);
    const dxRef = rstd[r] * (gv[i] * wv[c] - sgw[r] / L - xh * (sgwx[r] / L));
    assert.ok(Math.abs(dx[i] - dxRef) <= 1e-4 + 1e-3 * Math.abs(dxRef), `groupNorm dx[${i}] = ${dx[i]}, reference ${dxRef}`);
  }
  // Per-channel sums of 262144 terms of size ≈ 1: f32 partials leave ≈ 1e-3 absolute error.
  for (let c = 0; c < C; c++) {
    assert.ok(Math.abs(dwv[c] - dwRef[c]) <= 2e-2 + 1e-4 * Math.abs(dwRef[c]), `groupNorm dweight[${c}] = ${dwv[c]}, reference ${dwRef[c]}`);
    assert.ok(Math.abs(dbv[c] - dbRef[c]) <= 2e-2 + 1e-4 * Math.abs(dbRef[c]), `groupNorm dbias[${c}] = ${dbv[c]}, reference ${dbRef[c]}`);
  }
  for (const t of [x, wt, bs, g, y]) t.dispose();
  for (const t of [x, wt, bs]) { t.grad?.dispose(); t.grad = null; }
  console.log(`  groupNorm 256 × 512×512 / 32 groups: forward ${fwd}, backward ${bwd} (each including read-back of 256 MiB)`);
});

s.run();
