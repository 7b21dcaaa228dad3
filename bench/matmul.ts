// Square matmul throughput, ours against TF.js's WebGPU backend on the same GPUDevice.
//
// Every timed iteration waits for the GPU to finish (device.sync() for ours, submit plus
// onSubmittedWorkDone for TF.js), so the figures are completed products, not recorded commands.

import { Bench } from 'tinybench';
import type { Device } from '../engine/device.js';
import { DType } from '../engine/dtype.js';
import { isSoftwareAdapterName } from '../engine/kernel-family.js';
import { Tensor, tensor } from '../engine/tensor.js';
import { matmul } from '../engine/ops/matmul.js';
import { maxRelDiff } from './compare.js';
import { writeResults } from './results.js';
import { setupTfjs } from './tfjs.js';

export interface MatmulBenchOptions {
  /** Sizes N of the N×N×N products (default 256, 512, 1024, 2048; 1024 at most on a software adapter). */
  sizes?: number[];
  /** Fewer iterations and a shorter time budget. */
  quick?: boolean;
  /** Where the JSON results go (default bench-results/matmul.json). */
  out?: string;
  log?: (line: string) => void;
}

export interface Timing {
  /** Median and mean milliseconds per completed product. */
  medianMs: number;
  meanMs: number;
  samples: number;
  /** 2·N³ / median. */
  gflops: number;
}

export interface MatmulRow {
  n: number;
  dtype: DType;
  ours: Timing;
  /** TF.js on the same device; always f32 (TF.js has no f16 tensors). */
  tfjs: Timing | null;
  /** ours.gflops / tfjs.gflops. */
  ratio: number | null;
  /** max |ours - TF.js| / max |TF.js| over the whole product: both computed the same thing. */
  maxRelDiff: number | null;
}

export interface MatmulReport {
  bench: 'matmul';
  date: string;
  adapter: string;
  software: boolean;
  features: { f16: boolean; subgroups: boolean; subgroupMatrix: boolean };
  quick: boolean;
  tfjs: string;
  rows: MatmulRow[];
}

export const DEFAULT_SIZES = [256, 512, 1024, 2048];

export function isSoftwareName(name: string): boolean {
  return isSoftwareAdapterName(name);
}

/** Deterministic values in [−0.5, 0.5) (an LCG): benchmark inputs need no statistics, only repeatability. */
export function randomValues(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 32 - 0.5;
  }
  return out;
}

function timing(n: number, task: Bench['tasks'][number]): Timing {
  const r = task.result;
  if (r.state !== 'completed') {
    const why = r.state === 'errored' ? `: ${r.error.message}` : '';
    throw new Error(`bench ${task.name} did not complete (${r.state})${why}`);
  }
  const medianMs = r.latency.p50;
  return { medianMs, meanMs: r.latency.mean, samples: r.latency.samplesCount, gflops: (2 * n ** 3) / (medianMs * 1e6) };
}

const pad = (s: string, w: number) => s.padStart(w);
const fmtG = (x: number | null | undefined) => (x == null ? '—' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

export async function runMatmulBench(dev: Device, opts: MatmulBenchOptions = {}): Promise<MatmulReport> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const quick = !!opts.quick;
  const software = isSoftwareName(dev.adapterName);
  let sizes = opts.sizes;
  if (!sizes) {
    sizes = software ? DEFAULT_SIZES.filter((n) => n <= 1024) : DEFAULT_SIZES;
    if (software) log(`software adapter (${dev.adapterName}): default sizes stop at 1024; pass --sizes 256,512,1024,2048 for more`);
  }
  const tfjs = await setupTfjs(dev);
  const tfjsNote = typeof tfjs === 'string' ? tfjs : `TF.js ${tfjs.tf.version_core} webgpu backend on the same GPUDevice`;
  log(`matmul on ${dev.adapterName}; baseline: ${tfjsNote}`);
  log(`timing: median of completed products (GPU work awaited each iteration)${quick ? ', --quick' : ''}`);

  const benchOpts = quick
    ? { iterations: 2, time: 100, warmupIterations: 1, warmupTime: 0 }
    : { iterations: 5, time: 1000, warmupIterations: 2, warmupTime: 100 };
  const dtypes: DType[] = dev.hasF16 ? ['f32', 'f16'] : ['f32'];
  const rows: MatmulRow[] = [];
  log('');
  log(`${pad('N', 6)} ${pad('dtype', 5)} ${pad('ours GFLOP/s', 13)} ${pad('TF.js GFLOP/s', 14)} ${pad('ours/TF.js', 10)} ${pad('ours ms', 9)} ${pad('TF.js ms', 9)} ${pad('max rel diff', 12)}`);

  for (const n of sizes) {
    const av = randomValues(n * n, 1 + n), bv = randomValues(n * n, 2 + n);
    // TF.js first (f32 only): its figure stands beside both of our dtypes.
    let tfTiming: Timing | null = null;
    let tfOut: Float32Array | null = null;
    if (typeof tfjs !== 'string') {
      const { tf } = tfjs;
      const ta = tf.tensor2d(av, [n, n]), tb = tf.tensor2d(bv, [n, n]);
      const first = tf.matMul(ta, tb);
      tfOut = (await first.data()) as Float32Array;
      first.dispose();
      const bench = new Bench({ name: `tfjs ${n}`, ...benchOpts });
      bench.add(`tfjs f32 ${n}`, async () => {
        const c = tf.matMul(ta, tb);
        await tfjs.sync();
        c.dispose();
      });
      await bench.run();
      tfTiming = timing(n, bench.tasks[0]);
      ta.dispose(); tb.dispose();
    }
    for (const dtype of dtypes) {
      const a: Tensor = tensor(av, [n, n], dtype, dev), b: Tensor = tensor(bv, [n, n], dtype, dev);
      const first = matmul(a, b);
      const ours = await first.data();
      first.dispose();
      const bench = new Bench({ name: `ours ${dtype} ${n}`, ...benchOpts });
      bench.add(`ours ${dtype} ${n}`, async () => {
        const c = matmul(a, b);
        await dev.sync();
        c.dispose();
      });
      await bench.run();
      a.dispose(); b.dispose();
      const t = timing(n, bench.tasks[0]);
      const row: MatmulRow = {
        n, dtype, ours: t, tfjs: tfTiming,
        ratio: tfTiming ? t.gflops / tfTiming.gflops : null,
        maxRelDiff: tfOut ? maxRelDiff(ours, tfOut) : null,
      };
      rows.push(row);
      log(`${pad(String(n), 6)} ${pad(dtype, 5)} ${pad(fmtG(t.gflops), 13)} ${pad(fmtG(tfTiming?.gflops) + (tfTiming && dtype !== 'f32' ? ' (f32)' : ''), 14)} ${pad(row.ratio == null ? '—' : row.ratio.toFixed(2), 10)} ${pad(t.medianMs.toFixed(2), 9)} ${pad(tfTiming ? tfTiming.medianMs.toFixed(2) : '—', 9)} ${pad(row.maxRelDiff == null ? '—' : row.maxRelDiff.toExponential(1), 12)}`);
    }
  }
  if (dev.hasF16) log('f16 rows: our f16 storage (f32 accumulation) beside TF.js in f32, which has no f16 tensors');

  const report: MatmulReport = {
    bench: 'matmul',
    date: new Date().toISOString(),
    adapter: dev.adapterName,
    software,
    features: { f16: dev.hasF16, subgroups: dev.hasSubgroups, subgroupMatrix: dev.hasSubgroupMatrix },
    quick,
    tfjs: tfjsNote,
    rows,
  };
  writeResults('matmul', opts.out, report, log);
  return report;
}
