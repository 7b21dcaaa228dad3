// conv2d throughput at Stable Diffusion shapes: forward, and forward + backward (dx and dw).
//
// Shapes scale with the device: on a software adapter N=1 320→320 at 32×32 and 128→128 at 64×64;
// on a GPU the real SD sizes, 320→320 at 64×64 batch 2 (UNet, 512² images) and 128→128 at
// 512×512 (the VAE's outermost blocks). Every timed iteration waits for the GPU (device.sync()).
// GFLOP/s counts 2·N·Cout·OH·OW·Cin/G·kh·kw per pass (forward + backward = 3 passes: out, dx, dw).

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Bench } from 'tinybench';
import { backward } from '../engine/autograd.js';
import type { Device } from '../engine/device.js';
import { DType } from '../engine/dtype.js';
import { Tensor } from '../engine/tensor.js';
// The ops index (not the op files alone): it also installs autograd's gradient math.
import { conv2d, randomUniform } from '../engine/ops/index.js';
import { isSoftwareName } from './matmul.js';

export interface ConvBenchOptions {
  /** Image sides H = W to run every channel configuration at (default: per device, see above). */
  sizes?: number[];
  quick?: boolean;
  /** Where the JSON results go (default bench-results/conv2d.json). */
  out?: string;
  log?: (line: string) => void;
}

export interface ConvShape { n: number; cin: number; cout: number; h: number; w: number; k: number }

export interface ConvRow {
  shape: ConvShape;
  dtype: DType;
  /** Median milliseconds of a completed forward / forward + backward. */
  fwdMs: number;
  fwdGflops: number;
  fwdBwdMs: number;
  fwdBwdGflops: number;
  samples: number;
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
    ? [{ n: 1, cin: 320, cout: 320, h: 32, w: 32, k: 3 }, { n: 1, cin: 128, cout: 128, h: 64, w: 64, k: 3 }]
    : [{ n: 2, cin: 320, cout: 320, h: 64, w: 64, k: 3 }, { n: 1, cin: 128, cout: 128, h: 512, w: 512, k: 3 }];
}

/** Median ms of a completed tinybench task. */
export function medianMs(task: Bench['tasks'][number]): { ms: number; samples: number } {
  const r = task.result;
  if (r.state !== 'completed') throw new Error(`bench ${task.name} did not complete (${r.state})${r.state === 'errored' ? `: ${r.error.message}` : ''}`);
  return { ms: r.latency.p50, samples: r.latency.samplesCount };
}

/** Iteration counts; a software adapter takes seconds per pass, so it gets a fixed few. */
export function benchOptions(quick: boolean, software: boolean) {
  if (quick) return { iterations: 2, time: 100, warmupIterations: 1, warmupTime: 0 };
  if (software) return { iterations: 3, time: 0, warmupIterations: 1, warmupTime: 0 };
  return { iterations: 5, time: 1000, warmupIterations: 2, warmupTime: 100 };
}

const pad = (s: string, w: number) => s.padStart(w);
const fmtG = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

export async function runConvBench(dev: Device, opts: ConvBenchOptions = {}): Promise<ConvReport> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const quick = !!opts.quick;
  const software = isSoftwareName(dev.adapterName);
  const shapes = defaultShapes(software, opts.sizes);
  const dtypes: ('f32' | 'f16')[] = dev.hasF16 ? ['f32', 'f16'] : ['f32'];
  log(`conv2d on ${dev.adapterName}${software ? ' (software adapter: scaled-down SD shapes)' : ''}`);
  log(`timing: median of completed passes (GPU work awaited each iteration)${quick ? ', --quick' : ''}; 3×3, stride 1, padding 1`);
  log('');
  log(`${pad('N×Cin→Cout @ H×W', 24)} ${pad('dtype', 5)} ${pad('fwd ms', 9)} ${pad('fwd GFLOP/s', 12)} ${pad('fwd+bwd ms', 11)} ${pad('fwd+bwd GFLOP/s', 16)}`);
  const rows: ConvRow[] = [];
  for (const sh of shapes) {
    const flops = 2 * sh.n * sh.cout * sh.h * sh.w * sh.cin * sh.k * sh.k; // padding 1: OH = H
    for (const dtype of dtypes) {
      const x = randomUniform([sh.n, sh.cin, sh.h, sh.w], 1, { low: -1, high: 1, dtype }).requireGrad();
      const w = randomUniform([sh.cout, sh.cin, sh.k, sh.k], 2, { low: -0.05, high: 0.05, dtype }).requireGrad();
      const b = randomUniform([sh.cout], 3, { dtype }).requireGrad();
      const g = randomUniform([sh.n, sh.cout, sh.h, sh.w], 4, { low: -1, high: 1, dtype });
      const clearGrads = () => { for (const t of [x, w, b]) { t.grad?.dispose(); t.grad = null; } };
      const bench = new Bench({ name: `conv2d ${dtype}`, ...benchOptions(quick, software) });
      bench.add('fwd', async () => {
        const out: Tensor = conv2d(x, w, b, { padding: 1 });
        await dev.sync();
        out.dispose();
      });
      bench.add('fwd+bwd', async () => {
        const out = conv2d(x, w, b, { padding: 1 });
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
      };
      rows.push(row);
      log(`${pad(`${sh.n}×${sh.cin}→${sh.cout} @ ${sh.h}×${sh.w}`, 24)} ${pad(dtype, 5)} ${pad(row.fwdMs.toFixed(1), 9)} ${pad(fmtG(row.fwdGflops), 12)} ${pad(row.fwdBwdMs.toFixed(1), 11)} ${pad(fmtG(row.fwdBwdGflops), 16)}`);
    }
  }
  const report: ConvReport = { bench: 'conv2d', date: new Date().toISOString(), adapter: dev.adapterName, software, quick, rows };
  const out = opts.out ?? 'bench-results/conv2d.json';
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  log(`\nresults written to ${out}`);
  return report;
}
