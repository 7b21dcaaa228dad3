// groupNorm (32 groups, affine) and layerNorm (affine, last axis): forward, backward, and
// forward + backward, beside TF.js's WebGPU backend on the same GPUDevice in this process.
//
// Shapes: on a software adapter the small UNet's group norms (batch 32: 64 channels at 8×8, 128 at
// 4×4) and its transformer's layer norm (batch 32 × 16 tokens × 128), 320 channels at 64×64 and
// 256 at 128×128 (scaled-down SD), SD's 64² layer norm at batch 1 and CLIP's; on a GPU 320 at
// 64×64 batch 2 and 256 at 512×512 (the VAE decoder's outer blocks: 256 MiB per image in f32, so
// the row chunking runs). GB/s counts the unavoidable traffic: forward reads x and writes y
// (2 tensors), backward reads x and g and writes dx (3 tensors); the kernels' second pass over a
// group and the per-channel partials are not counted. Backward is timed alone (each iteration's
// forward runs, and is awaited, in an untimed hook) and as forward + backward; TF.js has only
// the latter (tf.grads recomputes the forward), so that is the column beside it.
//
// TF.js has neither op; each is composed the standard way in our NCHW layout (the same values,
// so the results compare element for element; the reduction runs over the contiguous last axis,
// TF.js's easiest case): x → [N, G, C/G·H·W], tf.moments over the last axis, (x − mean)·rsqrt(var
// + eps), back to [N, C, H, W], × weight + bias per channel. layerNorm: moments over the last axis.

import { backward } from '../engine/autograd.js';
import type { Device } from '../engine/device.js';
import { DType, bytesOf } from '../engine/dtype.js';
import { Tensor, tensor } from '../engine/tensor.js';
// The ops index (not the op files alone): it also installs autograd's gradient math.
import { groupNorm, layerNorm } from '../engine/ops/index.js';
import { kernelFamily } from '../engine/kernel-family.js';
import { fmtDiff, fmtMs, fmtRatio, maxAbsDiff, maxRelDiff, speedRatio, table, TfjsTiming } from './compare.js';
import { isSoftwareName, randomValues } from './matmul.js';
import { writeResults } from './results.js';
import { TfTensor, Tfjs, TfjsRun, measureTfjs, setupTfjs } from './tfjs.js';
import { BenchOpts, benchOptions, timeIt } from './timing.js';

export interface NormBenchOptions {
  /** Image sides H = W for groupNorm at 320 and 256 channels (default: per device, see above). */
  sizes?: number[];
  quick?: boolean;
  /** Where the JSON results go (default bench-results/norm.json). */
  out?: string;
  log?: (line: string) => void;
}

/** groupNorm over [N, C, H, W] (groups set) or layerNorm over the last axis of `shape`. */
export interface NormCase { op: 'groupNorm' | 'layerNorm'; what: string; shape: number[]; groups?: number }

export interface NormRow extends NormCase, TfjsTiming {
  dtype: DType;
  fwdMs: number;
  fwdGBs: number;
  bwdMs: number;
  bwdGBs: number;
  fwdBwdMs: number;
  /** max |ours − TF.js| of y and of dx; of dweight and dbias relative to TF.js's largest (they sum over rows). */
  maxDiffY: number | null;
  maxDiffDx: number | null;
  maxRelDiffAffine: number | null;
}

export interface NormReport {
  bench: 'norm';
  date: string;
  adapter: string;
  software: boolean;
  quick: boolean;
  tfjs: string;
  rows: NormRow[];
}

const gn = (what: string, n: number, c: number, h: number): NormCase => ({ op: 'groupNorm', what, shape: [n, c, h, h], groups: 32 });
const ln = (what: string, rows: number, d: number): NormCase => ({ op: 'layerNorm', what, shape: [rows, d] });

function defaultCases(software: boolean, sizes?: number[]): NormCase[] {
  if (sizes) return sizes.flatMap((s) => [320, 256].map((c) => gn(`${c} ch @ ${s}²`, 1, c, s)));
  return software
    ? [
      gn('small UNet 8²', 32, 64, 8), gn('small UNet 4²', 32, 128, 4),
      gn('SD 64² (batch 1)', 1, 320, 64), gn('VAE (scaled: 128²)', 1, 256, 128),
      ln('small UNet 4² tokens', 32 * 16, 128), ln('SD 64² tokens (batch 1)', 4096, 320), ln('CLIP text', 77, 768),
    ]
    : [
      gn('SD 64² (batch 2)', 2, 320, 64), gn('VAE 512²', 1, 256, 512),
      ln('SD 64² tokens (batch 2)', 2 * 4096, 320), ln('CLIP text (batch 2)', 2 * 77, 768),
    ];
}

const EPS = 1e-5;
const describe = (c: NormCase) => `${c.shape.join('×')}${c.groups ? ` /${c.groups}` : ''}`;
const affineLen = (c: NormCase) => (c.op === 'groupNorm' ? c.shape[1] : c.shape[c.shape.length - 1]);

/** TF.js's composition of the case's op (see the header). */
function tfNorm(t: Tfjs, c: NormCase, x: TfTensor, w: TfTensor, b: TfTensor): TfTensor {
  const { tf } = t;
  if (c.op === 'layerNorm') {
    const { mean, variance } = tf.moments(x, -1, true);
    return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, EPS))), w), b);
  }
  const [n, ch] = c.shape;
  const g = c.groups!;
  const xg = tf.reshape(x, [n, g, x.size / (n * g)]);
  const { mean, variance } = tf.moments(xg, 2, true);
  const xn = tf.reshape(tf.mul(tf.sub(xg, mean), tf.rsqrt(tf.add(variance, EPS))), c.shape);
  const per = [1, ch, ...c.shape.slice(2).map(() => 1)];
  return tf.add(tf.mul(xn, tf.reshape(w, per)), tf.reshape(b, per));
}

interface Inputs { x: Float32Array; w: Float32Array; b: Float32Array; g: Float32Array }
interface TfResult { fwd: TfjsRun | string; fwdBwd: TfjsRun | string }

/** TF.js's composition on the same values: y, then dx, dweight, dbias, and its timings. */
async function tfjsNorm(t: Tfjs, c: NormCase, v: Inputs, opts: BenchOpts): Promise<TfResult> {
  const { tf } = t;
  const C = affineLen(c);
  const x = tf.tensor(v.x, c.shape), w = tf.tensor(v.w, [C]), b = tf.tensor(v.b, [C]), g = tf.tensor(v.g, c.shape);
  try {
    const f = (xs: TfTensor, ws: TfTensor, bs: TfTensor) => tfNorm(t, c, xs, ws, bs);
    const fwd = await measureTfjs(t, c.op, opts, () => f(x, w, b));
    // tf.grads runs the forward, then the gradients: the same work as our forward + backward.
    const fwdBwd = await measureTfjs(t, `${c.op} gradient`, opts, () => tf.grads(f as (...args: TfTensor[]) => TfTensor)([x, w, b], g), true);
    return { fwd, fwdBwd };
  } finally {
    tf.dispose([x, w, b, g]);
  }
}

export async function runNormBench(dev: Device, opts: NormBenchOptions = {}): Promise<NormReport> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const quick = !!opts.quick;
  const software = isSoftwareName(dev.adapterName);
  const cases = defaultCases(software, opts.sizes);
  const dtypes: DType[] = dev.hasF16 ? ['f32', 'f16'] : ['f32'];
  const bopts = benchOptions(quick, software);
  const tfjs = await setupTfjs(dev);
  const tfjsNote = typeof tfjs === 'string' ? tfjs : `TF.js ${tfjs.tf.version_core} webgpu backend on the same GPUDevice (composed from tf.moments; tf.grads; f32)`;
  log(`groupNorm and layerNorm on ${dev.adapterName}${software ? ' (software adapter: small-UNet and scaled-down SD shapes)' : ''}, ${kernelFamily(dev)} kernels; baseline: ${tfjsNote}`);
  log(`timing: median of completed passes (GPU work awaited each iteration)${quick ? ', --quick' : ''}; GB/s = (fwd: x + y, bwd: x + g + dx) bytes / time; ours/TF.js = TF.js ms / ours ms (> 1: ours faster)`);
  log('');
  const row = table([9, 24, 20, 5, 8, 6, 8, 10, 8, 8, 10, 8, 6, 8, 8, 9], log);
  row(['op', '', 'shape', 'dtype', 'fwd ms', 'GB/s', 'TF.js', 'ours/TF.js', 'f+b ms', 'TF.js', 'ours/TF.js', 'bwd ms', 'GB/s', 'max|Δy|', 'max|Δdx|', 'Δdw,db rel']);
  const rows: NormRow[] = [];
  const notes = new Set<string>();
  for (const c of cases) {
    const n = c.shape.reduce((a, b) => a * b, 1), C = affineLen(c);
    const v: Inputs = {
      x: randomValues(n, 1).map((u) => 5 * u + 0.5), // [−2, 3): a mean and a scale to remove
      w: randomValues(C, 2).map((u) => u + 1), b: randomValues(C, 3), g: randomValues(n, 4).map((u) => 2 * u),
    };
    // TF.js first (f32 only): its figures stand beside both of our dtypes.
    const tf: TfResult = typeof tfjs === 'string' ? { fwd: tfjs, fwdBwd: tfjs } : await tfjsNorm(tfjs, c, v, bopts);
    const f = typeof tf.fwd === 'string' ? null : tf.fwd, fb = typeof tf.fwdBwd === 'string' ? null : tf.fwdBwd;
    const why = [tf.fwd, tf.fwdBwd].filter((w): w is string => typeof w === 'string');
    if (typeof tfjs !== 'string') for (const w of why) notes.add(w);
    for (const dtype of dtypes) {
      const x = tensor(v.x, c.shape, dtype, dev).requireGrad();
      const wt = tensor(v.w, [C], dtype, dev).requireGrad(), bs = tensor(v.b, [C], dtype, dev).requireGrad();
      const g = tensor(v.g, c.shape, dtype, dev);
      const params = [x, wt, bs];
      const clearGrads = () => { for (const p of params) { p.grad?.dispose(); p.grad = null; } };
      const ours = (): Tensor => (c.op === 'groupNorm' ? groupNorm(x, c.groups!, wt, bs, EPS) : layerNorm(x, wt, bs, EPS));
      const y0 = ours();
      backward(y0, { grad: g });
      const y = await y0.data(), grads = await Promise.all(params.map((p) => p.grad!.data()));
      y0.dispose(); clearGrads();
      const fwdMs = await timeIt(`${c.op} ${dtype} fwd`, bopts, async () => {
        const out = ours();
        await dev.sync();
        out.dispose();
      });
      let pending: Tensor | null = null;
      const bwdMs = await timeIt(`${c.op} ${dtype} bwd`, bopts, async () => {
        backward(pending!, { grad: g });
        await dev.sync();
      }, {
        beforeEach: async () => { pending = ours(); await dev.sync(); },
        afterEach: () => { pending?.dispose(); pending = null; clearGrads(); },
      });
      const fwdBwdMs = await timeIt(`${c.op} ${dtype} fwd+bwd`, bopts, async () => {
        const out = ours();
        backward(out, { grad: g });
        await dev.sync();
        out.dispose();
      }, { afterEach: clearGrads });
      for (const p of [x, wt, bs, g]) p.dispose();
      const tensorBytes = n * bytesOf(dtype);
      const r: NormRow = {
        ...c, dtype,
        fwdMs, fwdGBs: (2 * tensorBytes) / (fwdMs * 1e6), bwdMs, bwdGBs: (3 * tensorBytes) / (bwdMs * 1e6), fwdBwdMs,
        tfjsFwdMs: f?.ms ?? null, tfjsFwdBwdMs: fb?.ms ?? null,
        fwdRatio: speedRatio(fwdMs, f?.ms ?? null), fwdBwdRatio: speedRatio(fwdBwdMs, fb?.ms ?? null),
        maxDiffY: f ? maxAbsDiff(y, f.values[0]) : null,
        maxDiffDx: fb ? maxAbsDiff(grads[0], fb.values[0]) : null,
        maxRelDiffAffine: fb ? Math.max(maxRelDiff(grads[1], fb.values[1]), maxRelDiff(grads[2], fb.values[2])) : null,
        ...(why.length ? { note: why.join('; ') } : {}),
      };
      rows.push(r);
      row([c.op, c.what, describe(c), dtype, fmtMs(fwdMs), r.fwdGBs.toFixed(2), fmtMs(r.tfjsFwdMs), fmtRatio(r.fwdRatio),
        fmtMs(fwdBwdMs), fmtMs(r.tfjsFwdBwdMs), fmtRatio(r.fwdBwdRatio), fmtMs(bwdMs), r.bwdGBs.toFixed(2),
        fmtDiff(r.maxDiffY), fmtDiff(r.maxDiffDx), fmtDiff(r.maxRelDiffAffine)]);
    }
  }
  for (const n of notes) log(n);
  if (dev.hasF16) log('f16 rows: our f16 storage (f32 statistics) beside TF.js in f32, which has no f16 tensors; their diffs include f16 rounding');
  const report: NormReport = { bench: 'norm', date: new Date().toISOString(), adapter: dev.adapterName, software, quick, tfjs: tfjsNote, rows };
  writeResults('norm', opts.out, report, log);
  return report;
}
