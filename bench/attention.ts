// Attention throughput, forward and forward + backward, beside TF.js's WebGPU backend on the same
// GPUDevice in this process. TF.js has no fused attention; its baseline is the standard
// composition softmax(Q·Kᵀ·scale [+ mask])·V with tf.matMul (transposeB) and tf.softmax over
// [B·H, L, D], its backward through tf.grads (which recomputes the forward, so the column beside
// it is our forward + backward).
//
// Shapes: on a software adapter the small UNet's (batch 32, 8 heads of 16: self-attention at 4×4,
// cross-attention to its 16-token context at 2×2) and scaled-down SD ones (L 256 self, L 1024
// cross to 77 tokens, the VAE's single 512-wide head at L 256; L 1024 self took 7 s forward and
// 14 s forward + backward per pass here, too long for a bench run); on a GPU the real SD sizes.
// GFLOP/s count the products our kernels perform (see flops()); every timed iteration waits for
// the GPU. Before timing, both sides run once on the same q, k, v and upstream gradient, and the
// table gives max |ours − TF.js| / max |TF.js| of the output and of dq, dk, dv.

import { backward } from '../engine/autograd.js';
import type { Device } from '../engine/device.js';
import { DType } from '../engine/dtype.js';
import { Tensor, tensor } from '../engine/tensor.js';
import { attention } from '../engine/ops/attention.js';
import { kernelFamily } from '../engine/kernel-family.js';
import { fmtDiff, fmtMs, fmtRatio, maxRelDiff, speedRatio, table, TfjsTiming } from './compare.js';
import { isSoftwareName, randomValues } from './matmul.js';
import { writeResults } from './results.js';
import { TfTensor, Tfjs, TfjsRun, measureTfjs, setupTfjs } from './tfjs.js';
import { BenchOpts, benchOptions, timeIt } from './timing.js';

export interface AttentionBenchOptions {
  quick?: boolean;
  /** Where the JSON results go (default bench-results/attention.json). */
  out?: string;
  log?: (line: string) => void;
}

interface Shape { what: string; B: number; H: number; L: number; Lk: number; D: number; causal?: boolean }

export interface AttentionRow extends Shape, TfjsTiming {
  dtype: DType;
  fwdMs: number;
  fwdGflops: number;
  fwdBwdMs: number;
  fwdBwdGflops: number;
  /** max |ours − TF.js| / max |TF.js| of the output, and the largest of that over dq, dk, dv. */
  maxRelDiffOut: number | null;
  maxRelDiffGrads: number | null;
}

export interface AttentionReport {
  bench: 'attention';
  date: string;
  adapter: string;
  software: boolean;
  quick: boolean;
  tfjs: string;
  rows: AttentionRow[];
}

const SOFTWARE: Shape[] = [
  { what: 'small UNet 4² self', B: 32, H: 8, L: 16, Lk: 16, D: 16 },
  { what: 'small UNet 2² cross (16 tokens)', B: 32, H: 8, L: 4, Lk: 16, D: 16 },
  { what: 'UNet self (scaled: L 256)', B: 1, H: 8, L: 256, Lk: 256, D: 40 },
  { what: 'UNet cross (77 tokens)', B: 1, H: 8, L: 1024, Lk: 77, D: 40 },
  { what: 'VAE mid (scaled: L 256)', B: 1, H: 1, L: 256, Lk: 256, D: 512 },
];
const GPU: Shape[] = [
  { what: 'UNet 64² self', B: 2, H: 8, L: 4096, Lk: 4096, D: 40 },
  { what: 'UNet 64² cross', B: 2, H: 8, L: 4096, Lk: 77, D: 40 },
  { what: 'UNet 32² self', B: 2, H: 8, L: 1024, Lk: 1024, D: 80 },
  { what: 'UNet 16² self', B: 2, H: 8, L: 256, Lk: 256, D: 160 },
  { what: 'CLIP causal', B: 2, H: 12, L: 77, Lk: 77, D: 64, causal: true },
  { what: 'VAE mid', B: 1, H: 1, L: 4096, Lk: 4096, D: 512 },
];

/** Products the kernels perform, 2 FLOPs per multiply-add. */
function flops(s: Shape, withBackward: boolean): number {
  const per = 2 * s.L * s.Lk * s.D; // one Lq×Lk×D product (D = Dv here)
  const heads = s.B * s.H;
  // forward: QKᵀ, PV. backward: QKᵀ and dO·Vᵀ in each of the two passes, dQ, dK, dV.
  return heads * per * (withBackward ? 2 + 7 : 2);
}

/**
 * The causal mask, added to the scores by our op and TF.js's composition alike: −1e4 above the
 * diagonal (finite in f16 too; exp of it is 0 in f32).
 */
const causalMask = (L: number, Lk: number) => Float32Array.from({ length: L * Lk }, (_, i) => ((i % Lk) > Math.floor(i / Lk) ? -1e4 : 0));

interface Inputs { q: Float32Array; k: Float32Array; v: Float32Array; g: Float32Array; mask: Float32Array | null }
interface TfResult { fwd: TfjsRun | string; fwdBwd: TfjsRun | string }

/** TF.js's composition on the same values: the output, then dq, dk, dv, and its timings. */
async function tfjsAttention(t: Tfjs, s: Shape, v: Inputs, opts: BenchOpts): Promise<TfResult> {
  const { tf } = t;
  const heads = s.B * s.H, scale = 1 / Math.sqrt(s.D);
  const q = tf.tensor3d(v.q, [heads, s.L, s.D]), k = tf.tensor3d(v.k, [heads, s.Lk, s.D]), vv = tf.tensor3d(v.v, [heads, s.Lk, s.D]);
  const g = tf.tensor3d(v.g, [heads, s.L, s.D]);
  const mask = v.mask ? tf.tensor2d(v.mask, [s.L, s.Lk]) : null;
  try {
    const f = (qs: TfTensor, ks: TfTensor, vs: TfTensor) => {
      const scores = tf.mul(tf.matMul(qs, ks, false, true), scale);
      return tf.matMul(tf.softmax(mask ? tf.add(scores, mask) : scores), vs);
    };
    const fwd = await measureTfjs(t, 'attention', opts, () => f(q, k, vv));
    const fwdBwd = await measureTfjs(t, 'attention gradient', opts, () => tf.grads(f as (...args: TfTensor[]) => TfTensor)([q, k, vv], g), true);
    return { fwd, fwdBwd };
  } finally {
    tf.dispose([q, k, vv, g, ...(mask ? [mask] : [])]);
  }
}

export async function runAttentionBench(dev: Device, opts: AttentionBenchOptions = {}): Promise<AttentionReport> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const quick = !!opts.quick;
  const software = isSoftwareName(dev.adapterName);
  const shapes = software ? SOFTWARE : GPU;
  const dtypes: DType[] = dev.hasF16 && !software ? ['f32', 'f16'] : ['f32'];
  const bopts = benchOptions(quick, software);
  const tfjs = await setupTfjs(dev);
  const tfjsNote = typeof tfjs === 'string' ? tfjs : `TF.js ${tfjs.tf.version_core} webgpu backend on the same GPUDevice (softmax(Q·Kᵀ·scale)·V from tf.matMul and tf.softmax; tf.grads; f32)`;
  log(`attention on ${dev.adapterName}${software ? ' (software adapter: small-UNet and scaled-down SD shapes)' : ''}, ${kernelFamily(dev)} kernels; baseline: ${tfjsNote}`);
  log(`timing: median of completed passes (GPU work awaited each iteration)${quick ? ', --quick' : ''}; ours/TF.js = TF.js ms / ours ms (> 1: ours faster)`);
  log('');
  const row = table([31, 20, 5, 8, 7, 8, 10, 8, 7, 8, 10, 8, 10], log);
  row(['shape', 'B×H×L×Lk×D', 'dtype', 'fwd ms', 'GFLOP/s', 'TF.js', 'ours/TF.js', 'f+b ms', 'GFLOP/s', 'TF.js', 'ours/TF.js', 'Δout rel', 'Δdq,dk,dv']);
  const rows: AttentionRow[] = [];
  const notes = new Set<string>();
  for (const s of shapes) {
    const nq = s.B * s.H * s.L * s.D, nk = s.B * s.H * s.Lk * s.D;
    const v: Inputs = { q: randomValues(nq, 1), k: randomValues(nk, 2), v: randomValues(nk, 3), g: randomValues(nq, 4), mask: s.causal ? causalMask(s.L, s.Lk) : null };
    // TF.js first (f32 only): its figures stand beside both of our dtypes.
    const tf: TfResult = typeof tfjs === 'string' ? { fwd: tfjs, fwdBwd: tfjs } : await tfjsAttention(tfjs, s, v, bopts);
    const f = typeof tf.fwd === 'string' ? null : tf.fwd, fb = typeof tf.fwdBwd === 'string' ? null : tf.fwdBwd;
    const why = [tf.fwd, tf.fwdBwd].filter((w): w is string => typeof w === 'string');
    if (typeof tfjs !== 'string') for (const w of why) notes.add(w);
    for (const dtype of dtypes) {
      const q = tensor(v.q, [s.B, s.H, s.L, s.D], dtype, dev).requireGrad();
      const k = tensor(v.k, [s.B, s.H, s.Lk, s.D], dtype, dev).requireGrad();
      const vt = tensor(v.v, [s.B, s.H, s.Lk, s.D], dtype, dev).requireGrad();
      const g = tensor(v.g, [s.B, s.H, s.L, s.D], dtype, dev);
      const mask = v.mask ? tensor(v.mask, [s.L, s.Lk], dtype, dev) : null;
      const params = [q, k, vt];
      const clearGrads = () => { for (const p of params) { p.grad?.dispose(); p.grad = null; } };
      const y0 = attention(q, k, vt, { mask });
      backward(y0, { grad: g });
      const out = await y0.data(), grads = await Promise.all(params.map((p) => p.grad!.data()));
      y0.dispose(); clearGrads();
      const fwdMs = await timeIt(`attention ${dtype} fwd`, bopts, async () => {
        const y: Tensor = attention(q, k, vt, { mask });
        await dev.sync();
        y.dispose();
      });
      const fwdBwdMs = await timeIt(`attention ${dtype} fwd+bwd`, bopts, async () => {
        const y = attention(q, k, vt, { mask });
        backward(y, { grad: g });
        await dev.sync();
        y.dispose();
      }, { afterEach: clearGrads });
      for (const t of [q, k, vt, g, mask]) t?.dispose();
      const r: AttentionRow = {
        ...s, dtype,
        fwdMs, fwdGflops: flops(s, false) / (fwdMs * 1e6), fwdBwdMs, fwdBwdGflops: flops(s, true) / (fwdBwdMs * 1e6),
        tfjsFwdMs: f?.ms ?? null, tfjsFwdBwdMs: fb?.ms ?? null,
        fwdRatio: speedRatio(fwdMs, f?.ms ?? null), fwdBwdRatio: speedRatio(fwdBwdMs, fb?.ms ?? null),
        maxRelDiffOut: f ? maxRelDiff(out, f.values[0]) : null,
        maxRelDiffGrads: fb ? Math.max(...grads.map((gr, i) => maxRelDiff(gr, fb.values[i]))) : null,
        ...(why.length ? { note: why.join('; ') } : {}),
      };
      rows.push(r);
      const gf = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(2));
      row([s.what, `${s.B}×${s.H}×${s.L}×${s.Lk}×${s.D}`, dtype, fmtMs(fwdMs), gf(r.fwdGflops), fmtMs(r.tfjsFwdMs), fmtRatio(r.fwdRatio),
        fmtMs(fwdBwdMs), gf(r.fwdBwdGflops), fmtMs(r.tfjsFwdBwdMs), fmtRatio(r.fwdBwdRatio), fmtDiff(r.maxRelDiffOut), fmtDiff(r.maxRelDiffGrads)]);
    }
  }
  for (const n of notes) log(n);
  log('GFLOP/s count the products our kernels do: forward QKᵀ and PV; forward+backward adds QKᵀ and dO·Vᵀ in each of the two backward passes, and dQ, dK, dV.');
  if (dtypes.includes('f16')) log('f16 rows: our f16 storage (f32 arithmetic) beside TF.js in f32, which has no f16 tensors; their diffs include f16 rounding');
  const report: AttentionReport = { bench: 'attention', date: new Date().toISOString(), adapter: dev.adapterName, software, quick, tfjs: tfjsNote, rows };
  writeResults('attention', opts.out, report, log);
  return report;
}
