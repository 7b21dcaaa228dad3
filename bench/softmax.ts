// softmax along the last axis, forward and forward + backward, beside TF.js's WebGPU backend
// (tf.softmax, its gradient through tf.grad) on the same GPUDevice in this process.
//
// Shapes: the attention-score shapes [batch·heads, Lq, Lk] of small UNets (batch 32 × 8 heads at
// 4×4 and 8×8 feature maps, batch 8 at 16×16) and one long row (4096: our work-group-per-row
// path); a GPU adds SD-size scores. Forward + backward is timed as one pass on both sides
// because TF.js's gradient recomputes the forward. Before timing, both sides run once on the same
// inputs and the table gives max |ours − TF.js| of y and of dx, so the two compute the same thing.

import { backward } from '../engine/autograd.js';
import type { Device } from '../engine/device.js';
import { DType } from '../engine/dtype.js';
import { Tensor, tensor } from '../engine/tensor.js';
// The ops index (not the op files alone): it also installs autograd's gradient math.
import { softmax } from '../engine/ops/index.js';
import { kernelFamily } from '../engine/kernel-family.js';
import { fmtDiff, fmtMs, fmtRatio, maxAbsDiff, speedRatio, table, TfjsTiming } from './compare.js';
import { isSoftwareName, randomValues } from './matmul.js';
import { writeResults } from './results.js';
import { Tfjs, TfjsRun, measureTfjs, setupTfjs } from './tfjs.js';
import { BenchOpts, benchOptions, timeIt } from './timing.js';

export interface SoftmaxBenchOptions {
  quick?: boolean;
  /** Where the JSON results go (default bench-results/softmax.json). */
  out?: string;
  log?: (line: string) => void;
}

interface SoftmaxShape { what: string; shape: number[] }

export interface SoftmaxRow extends SoftmaxShape, TfjsTiming {
  dtype: DType;
  fwdMs: number;
  fwdBwdMs: number;
  /** max |ours − TF.js| of the probabilities and of dx, on the same inputs and upstream gradient. */
  maxDiffY: number | null;
  maxDiffDx: number | null;
}

export interface SoftmaxReport {
  bench: 'softmax';
  date: string;
  adapter: string;
  software: boolean;
  quick: boolean;
  tfjs: string;
  rows: SoftmaxRow[];
}

const SMALL: SoftmaxShape[] = [
  { what: 'UNet 4² self, b32 h8', shape: [32 * 8, 16, 16] },
  { what: 'UNet 8² self, b32 h8', shape: [32 * 8, 64, 64] },
  { what: 'UNet 16² self, b8 h8', shape: [8 * 8, 256, 256] },
  { what: 'long rows', shape: [64, 4096] },
];
const GPU_EXTRA: SoftmaxShape[] = [
  { what: 'SD 32² self, b2 h8', shape: [2 * 8, 1024, 1024] },
  { what: 'SD 64² cross, b2 h8', shape: [2 * 8, 4096, 77] },
  { what: 'SD 64² self, b2 h8', shape: [2 * 8, 4096, 4096] },
];

interface TfResult { fwd: TfjsRun | string; fwdBwd: TfjsRun | string }

/** TF.js's softmax on the same values: y and dx (for the diff columns) and its timings. */
async function tfjsSoftmax(t: Tfjs, s: SoftmaxShape, xv: Float32Array, gv: Float32Array, opts: BenchOpts): Promise<TfResult> {
  const { tf } = t;
  const x = tf.tensor(xv, s.shape), g = tf.tensor(gv, s.shape);
  try {
    const fwd = await measureTfjs(t, 'softmax', opts, () => tf.softmax(x));
    // tf.grad runs the forward, then the gradient: the same work as our forward + backward.
    const fwdBwd = await measureTfjs(t, 'softmax gradient', opts, () => tf.grad((a: typeof x) => tf.softmax(a))(x, g), true);
    return { fwd, fwdBwd };
  } finally {
    x.dispose(); g.dispose();
  }
}

export async function runSoftmaxBench(dev: Device, opts: SoftmaxBenchOptions = {}): Promise<SoftmaxReport> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const quick = !!opts.quick;
  const software = isSoftwareName(dev.adapterName);
  const shapes = software ? SMALL : [...SMALL, ...GPU_EXTRA];
  const dtypes: DType[] = dev.hasF16 ? ['f32', 'f16'] : ['f32'];
  const bopts = benchOptions(quick, software);
  const tfjs = await setupTfjs(dev);
  const tfjsNote = typeof tfjs === 'string' ? tfjs : `TF.js ${tfjs.tf.version_core} webgpu backend on the same GPUDevice (tf.softmax, tf.grad; f32)`;
  log(`softmax (last axis) on ${dev.adapterName}, ${kernelFamily(dev)} kernels; baseline: ${tfjsNote}`);
  log(`timing: median of completed passes (GPU work awaited each iteration)${quick ? ', --quick' : ''}; ours/TF.js = TF.js ms / ours ms (> 1: ours faster)`);
  log('');
  const row = table([20, 16, 5, 8, 8, 10, 8, 8, 10, 8, 8], log);
  row(['shape', '', 'dtype', 'fwd ms', 'TF.js', 'ours/TF.js', 'f+b ms', 'TF.js', 'ours/TF.js', 'max|Δy|', 'max|Δdx|']);
  const rows: SoftmaxRow[] = [];
  const notes = new Set<string>();
  for (const s of shapes) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    // Scores of a few units, as attention logits are; the upstream gradient of order 1.
    const xv = randomValues(n, 11).map((v) => 8 * v), gv = randomValues(n, 12);
    // TF.js first (f32 only): its figures stand beside both of our dtypes.
    const tf: TfResult = typeof tfjs === 'string' ? { fwd: tfjs, fwdBwd: tfjs } : await tfjsSoftmax(tfjs, s, xv, gv, bopts);
    const f = typeof tf.fwd === 'string' ? null : tf.fwd, fb = typeof tf.fwdBwd === 'string' ? null : tf.fwdBwd;
    const why = [tf.fwd, tf.fwdBwd].filter((w): w is string => typeof w === 'string');
    if (typeof tfjs !== 'string') for (const w of why) notes.add(w);
    for (const dtype of dtypes) {
      const x = tensor(xv, s.shape, dtype, dev), g = tensor(gv, s.shape, dtype, dev);
      x.requireGrad();
      const clear = () => { x.grad?.dispose(); x.grad = null; };
      const y0 = softmax(x);
      backward(y0, { grad: g });
      const y = await y0.data(), dx = await x.grad!.data();
      y0.dispose(); clear();
      const fwdMs = await timeIt(`softmax ${dtype} fwd`, bopts, async () => {
        const out: Tensor = softmax(x);
        await dev.sync();
        out.dispose();
      });
      const fwdBwdMs = await timeIt(`softmax ${dtype} fwd+bwd`, bopts, async () => {
        const out = softmax(x);
        backward(out, { grad: g });
        await dev.sync();
        out.dispose();
      }, { afterEach: clear });
      x.dispose(); g.dispose();
      const r: SoftmaxRow = {
        ...s, dtype, fwdMs, fwdBwdMs,
        tfjsFwdMs: f?.ms ?? null, tfjsFwdBwdMs: fb?.ms ?? null,
        fwdRatio: speedRatio(fwdMs, f?.ms ?? null), fwdBwdRatio: speedRatio(fwdBwdMs, fb?.ms ?? null),
        maxDiffY: f ? maxAbsDiff(y, f.values[0]) : null, maxDiffDx: fb ? maxAbsDiff(dx, fb.values[0]) : null,
        ...(why.length ? { note: why.join('; ') } : {}),
      };
      rows.push(r);
      row([s.what, s.shape.join('×'), dtype, fmtMs(fwdMs), fmtMs(r.tfjsFwdMs), fmtRatio(r.fwdRatio), fmtMs(fwdBwdMs), fmtMs(r.tfjsFwdBwdMs), fmtRatio(r.fwdBwdRatio), fmtDiff(r.maxDiffY), fmtDiff(r.maxDiffDx)]);
    }
  }
  for (const n of notes) log(n);
  if (dev.hasF16) log('f16 rows: our f16 storage (f32 arithmetic) beside TF.js in f32, which has no f16 tensors; their diffs include f16 rounding');
  const report: SoftmaxReport = { bench: 'softmax', date: new Date().toISOString(), adapter: dev.adapterName, software, quick, tfjs: tfjsNote, rows };
  writeResults('softmax', opts.out, report, log);
  return report;
}
