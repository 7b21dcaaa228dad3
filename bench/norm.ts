// groupNorm (32 groups, affine) throughput at Stable Diffusion shapes: forward and backward.
//
// On a software adapter 320 channels at 64×64 and 256 channels at 128×128; on a GPU 320 at 64×64
// batch 2 and 256 at 512×512 (the VAE decoder's outer blocks: 256 MiB per image in f32, so the
// row chunking runs). GB/s counts the unavoidable traffic: forward reads x and writes y
// (2 tensors), backward reads x and g and writes dx (3 tensors); the kernels' second pass over a
// group and the per-channel partials are not counted. Backward is timed alone: each iteration's
// forward runs (and is awaited) in an untimed beforeEach hook.

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Bench } from 'tinybench';
import { backward } from '../engine/autograd.js';
import type { Device } from '../engine/device.js';
import { DType, bytesOf } from '../engine/dtype.js';
import { Tensor } from '../engine/tensor.js';
// The ops index (not the op files alone): it also installs autograd's gradient math.
import { groupNorm, randomUniform } from '../engine/ops/index.js';
import { benchOptions, medianMs } from './conv2d.js';
import { isSoftwareName } from './matmul.js';

export interface NormBenchOptions {
  /** Image sides H = W for every channel configuration (default: per device, see above). */
  sizes?: number[];
  quick?: boolean;
  /** Where the JSON results go (default bench-results/norm.json). */
  out?: string;
  log?: (line: string) => void;
}

export interface NormShape { n: number; c: number; h: number; w: number; groups: number }

export interface NormRow {
  shape: NormShape;
  dtype: DType;
  fwdMs: number;
  fwdGBs: number;
  bwdMs: number;
  bwdGBs: number;
  samples: number;
}

export interface NormReport {
  bench: 'norm';
  date: string;
  adapter: string;
  software: boolean;
  quick: boolean;
  rows: NormRow[];
}

function defaultShapes(software: boolean, sizes?: number[]): NormShape[] {
  if (sizes) return sizes.flatMap((s) => [320, 256].map((c) => ({ n: 1, c, h: s, w: s, groups: 32 })));
  return software
    ? [{ n: 1, c: 320, h: 64, w: 64, groups: 32 }, { n: 1, c: 256, h: 128, w: 128, groups: 32 }]
    : [{ n: 2, c: 320, h: 64, w: 64, groups: 32 }, { n: 1, c: 256, h: 512, w: 512, groups: 32 }];
}

const pad = (s: string, w: number) => s.padStart(w);

export async function runNormBench(dev: Device, opts: NormBenchOptions = {}): Promise<NormReport> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const quick = !!opts.quick;
  const software = isSoftwareName(dev.adapterName);
  const shapes = defaultShapes(software, opts.sizes);
  const dtypes: ('f32' | 'f16')[] = dev.hasF16 ? ['f32', 'f16'] : ['f32'];
  log(`groupNorm on ${dev.adapterName}${software ? ' (software adapter: scaled-down SD shapes)' : ''}`);
  log(`timing: median of completed passes (GPU work awaited each iteration)${quick ? ', --quick' : ''}; GB/s = (fwd: x + y, bwd: x + g + dx) bytes / time`);
  log('');
  log(`${pad('N×C @ H×W / groups', 24)} ${pad('dtype', 5)} ${pad('fwd ms', 9)} ${pad('fwd GB/s', 9)} ${pad('bwd ms', 9)} ${pad('bwd GB/s', 9)}`);
  const rows: NormRow[] = [];
  for (const sh of shapes) {
    for (const dtype of dtypes) {
      const shape = [sh.n, sh.c, sh.h, sh.w];
      const tensorBytes = sh.n * sh.c * sh.h * sh.w * bytesOf(dtype);
      const x = randomUniform(shape, 1, { low: -2, high: 3, dtype }).requireGrad();
      const wt = randomUniform([sh.c], 2, { low: 0.5, high: 1.5, dtype }).requireGrad();
      const bs = randomUniform([sh.c], 3, { low: -0.5, high: 0.5, dtype }).requireGrad();
      const g = randomUniform(shape, 4, { low: -1, high: 1, dtype });
      const clearGrads = () => { for (const t of [x, wt, bs]) { t.grad?.dispose(); t.grad = null; } };
      let pending: Tensor | null = null;
      const bench = new Bench({ name: `groupNorm ${dtype}`, ...benchOptions(quick, software) });
      bench.add('fwd', async () => {
        const y = groupNorm(x, sh.groups, wt, bs);
        await dev.sync();
        y.dispose();
      });
      bench.add('bwd', async () => {
        backward(pending!, { grad: g });
        await dev.sync();
      }, {
        beforeEach: async () => { pending = groupNorm(x, sh.groups, wt, bs); await dev.sync(); },
        afterEach: () => { pending?.dispose(); pending = null; clearGrads(); },
      });
      await bench.run();
      for (const t of [x, wt, bs, g]) t.dispose();
      const f = medianMs(bench.tasks[0]), b = medianMs(bench.tasks[1]);
      const row: NormRow = {
        shape: sh, dtype,
        fwdMs: f.ms, fwdGBs: (2 * tensorBytes) / (f.ms * 1e6),
        bwdMs: b.ms, bwdGBs: (3 * tensorBytes) / (b.ms * 1e6),
        samples: Math.min(f.samples, b.samples),
      };
      rows.push(row);
      log(`${pad(`${sh.n}×${sh.c} @ ${sh.h}×${sh.w} / ${sh.groups}`, 24)} ${pad(dtype, 5)} ${pad(row.fwdMs.toFixed(2), 9)} ${pad(row.fwdGBs.toFixed(2), 9)} ${pad(row.bwdMs.toFixed(2), 9)} ${pad(row.bwdGBs.toFixed(2), 9)}`);
    }
  }
  const report: NormReport = { bench: 'norm', date: new Date().toISOString(), adapter: dev.adapterName, software, quick, rows };
  const out = opts.out ?? 'bench-results/norm.json';
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(report, null, 2) + '\n');
  log(`\nresults written to ${out}`);
  return report;
}
