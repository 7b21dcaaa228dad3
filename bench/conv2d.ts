// conv2d throughput: forward, and forward + backward (dx and dw), beside TF.js's WebGPU backend
// (forward, NHWC: its native layout, the same arithmetic) on the same GPUDevice in this process.
//
// Shapes scale with the device: on a software adapter the small-UNet shapes (64→64 at 8×8 and
// 128→128 at 4×4, batch 32), 320→320 at 32×32 (3×3 and 1×1, batch 1) and a stride-2 3×3
// downsampler; on a GPU the real SD sizes, 320→320 at 64×64 batch 2 (UNet, 512² images) and
// 128→128 at 512×512 (the VAE's outermost blocks). Every timed iteration waits for the GPU.
// GFLOP/s counts 2·N·Cout·OH·OW·Cin·kh·kw per pass (forward + backward = 3 passes: out, dx, dw).

import { Bench } from 'tinybench';
import { backward } from '../engine/autograd.js';
import type { Device } from '../engine/device.js';
import { DType } from '../engine/dtype.js';
import { Tensor } from '../engine/tensor.js';
// The ops index (not the op files alone): it also installs autograd's gradient math.
import { conv2d, randomUniform } from '../engine/ops/index.js';
import { kernelFamily } from '../engine/kernel-family.js';
import { isSoftwareName } from './matmul.js';
import { writeResults } from './results.js';
import { setupTfjs, timeTfjs } from './tfjs.js';
import { benchOptions, medianMs } from './timing.js';

export interface ConvBenchOptions {
  /** Image sides H = W to run every channel configuration at (default: per device, see above). */
  sizes?: number[];
  quick?: boolean;
  /** Where the JSON results go (default bench-results/conv2d.json). */
  out?: string;
  log?: (line: string) => void;
}

export interface ConvShape { n: number; cin: number; cout: number; h: number; w: number; k: number; stride?: number }

export interface ConvRow {
  shape: ConvShape;
  dtype: DType;
  /** Median milliseconds of a completed forward / forward + backward. */
  fwdMs: number;
  fwdGflops: number;
  fwdBwdMs: number;
  fwdBwdGflops: number;
  samples: number;
  /** TF.js forward (f32) on the same device, and ours / TF.js in GFLOP/s; null without TF.js. */
  tfjsFwdMs: number | null;
  ratio: number | null;
}

export interface ConvReport {
  bench: 'conv2d';
  date: string;
  adapter: string;
  software: boolean;
  quick: boolean;
  rows: ConvRow[];
}

const CHANNELS = [320, 128];

function defaultShapes(software: boolean, sizes?: number[]): ConvShape[] {
  if (sizes) return sizes.flatMap((s) => CHANNELS.map((c) => ({ n: 1, cin: c, cout: c, h: s, w: s, k: 3 })));
  return software
    ? [
      { n: 32, cin: 64, cout: 64, h: 8, w: 8, k: 3 }, { n: 32, cin: 128, cout: 128, h: 4, w: 4, k: 3 },
      { n: 1, cin: 320, cout: 320, h: 32, w: 32, k: 3 }, { n: 1, cin: 320, cout: 320, h: 32, w: 32, k: 1 },
      { n: 8, cin: 64, cout: 64, h: 16, w: 16, k: 3, stride: 2 },
    ]
    : [{ n: 2, cin: 320, cout: 320, h: 64, w: 64, k: 3 }, { n: 1, cin: 128, cout: 128, h: 512, w: 512, k: 3 }];
}

const pad = (s: string, w: number) => s.padStart(w);
const fmtG = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

export async function runConvBench(dev: Device, opts: ConvBenchOptions = {}): Promise<ConvReport> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const quick = !!opts.quick;
  const software = isSoftwareName(dev.adapterName);
  const shapes = defaultShapes(software, opts.sizes);
  const dtypes: ('f32' | 'f16')[] = dev.hasF16 ? ['f32', 'f16'] : ['f32'];
  const tfjs = await setupTfjs(dev);
  const tfjsNote = typeof tfjs === 'string' ? tfjs : `TF.js ${tfjs.tf.version_core} webgpu backend on the same GPUDevice (forward, NHWC, f32)`;
  log(`conv2d on ${dev.adapterName}${software ? ' (software adapter: small-UNet shapes)' : ''}, ${kernelFamily(dev)} kernels; baseline: ${tfjsNote}`);
  log(`timing: median of completed passes (GPU work awaited each iteration)${quick ? ', --quick' : ''}; padding (k−1)/2`);
  log('');
  log(`${pad('N×Cin→Cout @ H×W, k, s', 30)} ${pad('dtype', 5)} ${pad('fwd ms', 9)} ${pad('GFLOP/s', 8)} ${pad('TF.js ms', 9)} ${pad('ours/TF.js', 10)} ${pad('fwd+bwd ms', 11)} ${pad('GFLOP/s', 8)}`);
  const rows: ConvRow[] = [];
  for (const sh of shapes) {
    const stride = sh.stride ?? 1, padding = (sh.k - 1) >> 1;
    const oh = Math.floor((sh.h + 2 * padding - sh.k) / stride) + 1, ow = Math.floor((sh.w + 2 * padding - sh.k) / stride) + 1;
    const flops = 2 * sh.n * sh.cout * oh * ow * sh.cin * sh.k * sh.k;
    // TF.js first (f32 only): its figure stands beside both of our dtypes.
    let tfMs: number | null = null;
    if (typeof tfjs !== 'string') {
      const { tf } = tfjs;
      const tx = tf.randomUniform([sh.n, sh.h, sh.w, sh.cin], -1, 1) as import('@tensorflow/tfjs-core').Tensor4D;
      const tw = tf.randomUniform([sh.k, sh.k, sh.cin, sh.cout], -0.05, 0.05) as import('@tensorflow/tfjs-core').Tensor4D;
      const pads: [[number, number], [number, number], [number, number], [number, number]] = [[0, 0], [padding, padding], [padding, padding], [0, 0]];
      tfMs = await timeTfjs(tfjs, 'conv2d fwd', benchOptions(quick, software), () => tf.conv2d(tx, tw, stride, padding === 0 ? 'valid' : pads));
      tx.dispose(); tw.dispose();
    }
    for (const dtype of dtypes) {
      const x = randomUniform([sh.n, sh.cin, sh.h, sh.w], 1, { low: -1, high: 1, dtype }).requireGrad();
      const w = randomUniform([sh.cout, sh.cin, sh.k, sh.k], 2, { low: -0.05, high: 0.05, dtype }).requireGrad();
      const b = randomUniform([sh.cout], 3, { dtype }).requireGrad();
      const g = randomUniform([sh.n, sh.cout, oh, ow], 4, { low: -1, high: 1, dtype });
      const clearGrads = () => { for (const t of [x, w, b]) { t.grad?.dispose(); t.grad = null; } };
      const bench = new Bench({ name: `conv2d ${dtype}`, ...benchOptions(quick, software) });
      bench.add('fwd', async () => {
        const out: Tensor = conv2d(x, w, b, { padding, stride });
        await dev.sync();
        out.dispose();
      });
      bench.add('fwd+bwd', async () => {
        const out = conv2d(x, w, b, { padding, stride });
        backward(out, { grad: g });
        await dev.sync();
        out.dispose();
      }, { afterEach: clearGrads });
      await bench.run();
      clearGrads();
      for (const t of [x, w, b, g]) t.dispose();
      const f = medianMs(bench.tasks[0]), fb = medianMs(bench.tasks[1]);
      const row: ConvRow = {
        shape: sh, dtype,
        fwdMs: f.ms, fwdGflops: flops / (f.ms * 1e6),
        fwdBwdMs: fb.ms, fwdBwdGflops: (3 * flops) / (fb.ms * 1e6),
        samples: Math.min(f.samples, fb.samples),
        tfjsFwdMs: tfMs, ratio: tfMs === null ? null : tfMs / f.ms,
      };
      rows.push(row);
      log(`${pad(`${sh.n}×${sh.cin}→${sh.cout} @ ${sh.h}×${sh.w}, ${sh.k}×${sh.k}, s${stride}`, 30)} ${pad(dtype, 5)} ${pad(row.fwdMs.toFixed(1), 9)} ${pad(fmtG(row.fwdGflops), 8)} ${pad(tfMs === null ? '—' : tfMs.toFixed(1), 9)} ${pad(row.ratio === null ? '—' : row.ratio.toFixed(2), 10)} ${pad(row.fwdBwdMs.toFixed(1), 11)} ${pad(fmtG(row.fwdBwdGflops), 8)}`);
    }
  }
  const report: ConvReport = { bench: 'conv2d', date: new Date().toISOString(), adapter: dev.adapterName, software, quick, rows };
  writeResults('conv2d', opts.out, report, log);
  return report;
}
