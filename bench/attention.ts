// Attention throughput at Stable Diffusion shapes (scaled down on a software adapter): forward,
// and forward + backward, in GFLOP/s. FLOPs are the products the kernels actually perform (see
// flops()); every timed iteration waits for the GPU (device.sync()).

import { randomValues } from './matmul.js';
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Bench } from 'tinybench';
import type { Device } from '../engine/device.js';
import { DType } from '../engine/dtype.js';
import { Tensor, tensor } from '../engine/tensor.js';
import { attention } from '../engine/ops/attention.js';
import { backward } from '../engine/autograd.js';
import { full } from '../engine/ops/movement.js';
import { isSoftwareName } from './matmul.js';

export interface AttentionBenchOptions {
  quick?: boolean;
  out?: string;
  log?: (line: string) => void;
}

interface Shape { what: string; B: number; H: number; L: number; Lk: number; D: number }

export interface AttentionRow extends Shape {
  dtype: DType;
  fwdMs: number;
  fwdGflops: number;
  fwdBwdMs: number | null;
  fwdBwdGflops: number | null;
}


/** Products the kernels perform, 2 FLOPs per multiply-add. */
function flops(s: Shape, withBackward: boolean): number {
  const per = 2 * s.L * s.Lk * s.D; // one Lq×Lk×D product (D = Dv here)
  const heads = s.B * s.H;
  // forward: QKᵀ, PV. backward: QKᵀ and dO·Vᵀ in each of the two passes, dQ, dK, dV.
  return heads * per * (withBackward ? 2 + 7 : 2);
}

async function median(dev: Device, fn: () => Promise<void>, quick: boolean): Promise<number> {
  const bench = new Bench({ iterations: quick ? 2 : 5, time: quick ? 100 : 1000, warmupIterations: 1, warmupTime: 0 });
  bench.add('x', fn);
  await bench.run();
  const r = bench.tasks[0].result;
  if (r.state !== 'completed') throw new Error(`attention bench did not complete (${r.state})`);
  void dev;
  return r.latency.p50;
}

export async function runAttentionBench(dev: Device, opts: AttentionBenchOptions = {}): Promise<AttentionRow[]> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const quick = !!opts.quick;
  const software = isSoftwareName(dev.adapterName);
  const shapes: Shape[] = software
    ? [
        { what: 'UNet 64² self (scaled: L 1024)', B: 1, H: 8, L: 1024, Lk: 1024, D: 40 },
        { what: 'UNet cross (77 tokens)', B: 1, H: 8, L: 1024, Lk: 77, D: 40 },
        { what: 'VAE mid (scaled: L 1024)', B: 1, H: 1, L: 1024, Lk: 1024, D: 512 },
      ]
    : [
        { what: 'UNet 64² self', B: 2, H: 8, L: 4096, Lk: 4096, D: 40 },
        { what: 'UNet 64² cross', B: 2, H: 8, L: 4096, Lk: 77, D: 40 },
        { what: 'UNet 32² self', B: 2, H: 8, L: 1024, Lk: 1024, D: 80 },
        { what: 'UNet 16² self', B: 2, H: 8, L: 256, Lk: 256, D: 160 },
        { what: 'CLIP causal', B: 2, H: 12, L: 77, Lk: 77, D: 64 },
        { what: 'VAE mid', B: 1, H: 1, L: 4096, Lk: 4096, D: 512 },
      ];
  const dtypes: DType[] = dev.hasF16 && !software ? ['f32', 'f16'] : ['f32'];
  log(`attention on ${dev.adapterName}${software ? ' (software adapter: scaled-down shapes)' : ''}; median of completed runs`);
  log('');
  const pad = (x: string, w: number) => x.padStart(w);
  log(`${pad('shape', 32)} ${pad('B×H×L×Lk×D', 20)} ${pad('dtype', 5)} ${pad('fwd ms', 9)} ${pad('fwd GFLOP/s', 11)} ${pad('f+b ms', 9)} ${pad('f+b GFLOP/s', 11)}`);
  const rows: AttentionRow[] = [];
  for (const s of shapes) {
    for (const dtype of dtypes) {
      const mk = (L: number, seed: number) => tensor(randomValues(s.B * s.H * L * s.D, seed), [s.B, s.H, L, s.D], dtype, dev);
      const q = mk(s.L, 1), k = mk(s.Lk, 2), v = mk(s.Lk, 3);
      const causal = s.what.startsWith('CLIP') ? tensor(Array.from({ length: s.L * s.Lk }, (_, i) => ((i % s.Lk) > Math.floor(i / s.Lk) ? -1e9 : 0)), [s.L, s.Lk], dtype, dev) : null;
      const fwdMs = await median(dev, async () => {
        const y = attention(q, k, v, { mask: causal });
        await dev.sync();
        y.dispose();
      }, quick);
      let fwdBwdMs: number | null = null;
      if (!(software && s.D === 512 && quick)) {
        const g: Tensor = full([s.B, s.H, s.L, s.D], 1e-2, dtype, dev);
        for (const t of [q, k, v]) t.requireGrad();
        fwdBwdMs = await median(dev, async () => {
          const y = attention(q, k, v, { mask: causal });
          backward(y, { grad: g });
          await dev.sync();
          y.dispose();
          for (const t of [q, k, v]) { t.grad?.dispose(); t.grad = null; }
        }, quick);
        for (const t of [q, k, v]) t.requireGrad(false);
        g.dispose();
      }
      for (const t of [q, k, v, causal]) t?.dispose();
      const row: AttentionRow = {
        ...s, dtype, fwdMs, fwdGflops: flops(s, false) / (fwdMs * 1e6),
        fwdBwdMs, fwdBwdGflops: fwdBwdMs === null ? null : flops(s, true) / (fwdBwdMs * 1e6),
      };
      rows.push(row);
      const f = (x: number | null) => (x === null ? '—' : x >= 100 ? x.toFixed(0) : x.toFixed(2));
      log(`${pad(s.what, 32)} ${pad(`${s.B}×${s.H}×${s.L}×${s.Lk}×${s.D}`, 20)} ${pad(dtype, 5)} ${pad(fwdMs.toFixed(1), 9)} ${pad(f(row.fwdGflops), 11)} ${pad(fwdBwdMs === null ? '—' : fwdBwdMs.toFixed(1), 9)} ${pad(f(row.fwdBwdGflops), 11)}`);
    }
  }
  log('GFLOP/s count the products the kernels do: forward QKᵀ and PV; forward+backward adds QKᵀ and dO·Vᵀ in each of the two backward passes, and dQ, dK, dV.');
  const out = opts.out ?? 'bench-results/attention.json';
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify({ bench: 'attention', date: new Date().toISOString(), adapter: dev.adapterName, software, quick, rows }, null, 2) + '\n');
  log(`\nresults written to ${out}`);
  return rows;
}
