// The small UNet of issue 10's target, trained at batch 32 on 8×8×4 latents: forward, and forward
// + backward with every parameter trainable (full fine-tuning), in samples/s. Optionally the
// profiler's view of where the GPU time goes.
//
//   node dist/bench/unet-step.js [--batch 32] [--iters 3] [--profile op|kernel|label] [--kernels software|gpu] [--out FILE]
//
// The model: UNet2DConditionModel with block_out_channels (64, 128, 128), layers_per_block 1,
// cross-attention at the two lower levels (down: Down, CrossAttnDown, CrossAttnDown; up:
// CrossAttnUp, CrossAttnUp, Up), attention_head_dim 8 (8 heads of 16 at 128 channels), groups 32,
// cross_attention_dim 64, a 16-token context. Random weights (seed 1).

import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Device } from '../engine/device.js';
import type { ProfileGrouping } from '../engine/profiler.js';
import { backward } from '../engine/autograd.js';
import { KernelFamily, kernelFamily, kernelFamilyOverride } from '../engine/kernel-family.js';
import { tidy } from '../engine/scope.js';
import { mean, mul, randomNormal } from '../engine/ops/index.js';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import { UNet2DConditionModel } from '../diffusion/models/unet.js';

export const STEP_UNET_CONFIG = {
  _class_name: 'UNet2DConditionModel',
  act_fn: 'silu', center_input_sample: false, downsample_padding: 1, flip_sin_to_cos: true, freq_shift: 0,
  in_channels: 4, out_channels: 4, mid_block_scale_factor: 1, norm_eps: 1e-5,
  attention_head_dim: 8, block_out_channels: [64, 128, 128], cross_attention_dim: 64,
  down_block_types: ['DownBlock2D', 'CrossAttnDownBlock2D', 'CrossAttnDownBlock2D'],
  up_block_types: ['CrossAttnUpBlock2D', 'CrossAttnUpBlock2D', 'UpBlock2D'],
  layers_per_block: 1, norm_num_groups: 32, sample_size: 8,
};

export interface UnetStepResult {
  adapter: string;
  family: KernelFamily;
  batch: number;
  forwardMs: number;
  trainMs: number;
  forwardSamplesPerS: number;
  trainSamplesPerS: number;
  profile?: { op: string; calls: number; ms: number }[];
}

async function median(dev: Device, n: number, fn: () => void): Promise<number> {
  fn(); await dev.sync(); // warm-up: shader compiles
  const ts: number[] = [];
  for (let i = 0; i < n; i++) { const t0 = performance.now(); fn(); await dev.sync(); ts.push(performance.now() - t0); }
  ts.sort((a, b) => a - b);
  return ts[Math.floor(ts.length / 2)];
}

export async function runUnetStep(dev: Device, opts: { batch?: number; iters?: number; profile?: ProfileGrouping } = {}): Promise<UnetStepResult> {
  const batch = opts.batch ?? 32, iters = opts.iters ?? 3;
  const unet = new UNet2DConditionModel(STEP_UNET_CONFIG, { device: dev, seed: 1 });
  const x = randomNormal([batch, 4, 8, 8], 1, { device: dev });
  const ctx = randomNormal([batch, 16, 64], 2, { device: dev });
  const params = [...unet.parameters()];
  const clear = () => { for (const p of params) { p.grad?.dispose(); p.grad = null; } };
  try {
    const fwd = () => tidy(() => { unet.forward(x, 500, ctx); });
    const train = () => {
      const loss = tidy(() => { const e = unet.forward(x, 500, ctx); return mean(mul(e, e)); });
      backward(loss);
      loss.dispose();
      clear();
    };
    const forwardMs = await median(dev, iters, fwd);
    const trainMs = await median(dev, iters, train);
    let profile: UnetStepResult['profile'];
    if (opts.profile) {
      dev.startProfile({ by: opts.profile });
      train();
      profile = (await dev.stopProfile()).sort((a, b) => b.ms - a.ms);
    }
    return { adapter: dev.adapterName, family: kernelFamily(dev), batch, forwardMs, trainMs, forwardSamplesPerS: (1000 * batch) / forwardMs, trainSamplesPerS: (1000 * batch) / trainMs, profile };
  } finally {
    clear();
    for (const t of [x, ctx]) t.dispose();
    unet.dispose();
  }
}

/** `npm run bench unet-step`: prints the figures and writes bench-results/unet-step.json (or opts.out). */
export async function runUnetStepBench(dev: Device, opts: { quick?: boolean; out?: string; log?: (l: string) => void } = {}): Promise<UnetStepResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const r = await runUnetStep(dev, { iters: opts.quick ? 1 : 3 });
  printResult(r, log);
  const out = opts.out ?? 'bench-results/unet-step.json';
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, JSON.stringify(r, null, 2) + '\n');
  return r;
}

function printResult(r: UnetStepResult, log: (l: string) => void): void {
  log(`UNet (64,128,128) 8×8 latents, batch ${r.batch}, ${r.family} kernels on ${r.adapter}`);
  log(`  forward            ${r.forwardMs.toFixed(0).padStart(7)} ms  ${r.forwardSamplesPerS.toFixed(1)} samples/s`);
  log(`  forward + backward ${r.trainMs.toFixed(0).padStart(7)} ms  ${r.trainSamplesPerS.toFixed(1)} samples/s`);
  if (r.profile) {
    const total = r.profile.reduce((a, e) => a + e.ms, 0);
    log(`  profile of one forward + backward: ${total.toFixed(0)} ms GPU, ${r.profile.reduce((a, e) => a + e.calls, 0)} dispatches`);
    for (const e of r.profile.slice(0, Number(process.env.PROFILE_ROWS ?? 15))) log(`    ${e.op.padEnd(48)} ${String(e.calls).padStart(5)} ${e.ms.toFixed(1).padStart(9)} ms ${(100 * e.ms / total).toFixed(1).padStart(5)} %`);
  }
}

async function main(argv: string[]): Promise<void> {
  const arg = (name: string) => { const i = argv.indexOf(name); return i >= 0 ? argv[i + 1] : undefined; };
  const kernels = arg('--kernels');
  if (kernels) kernelFamilyOverride.family = kernels as KernelFamily;
  const dev = await createNodeDevice();
  setDefaultDevice(dev);
  const r = await runUnetStep(dev, { batch: Number(arg('--batch') ?? 32), iters: Number(arg('--iters') ?? 3), profile: arg('--profile') as ProfileGrouping | undefined });
  printResult(r, (l) => console.log(l));
  const out = arg('--out');
  if (out) { mkdirSync(dirname(out), { recursive: true }); writeFileSync(out, JSON.stringify(r, null, 2) + '\n'); }
  dev.destroy();
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(() => process.exit(0), (e) => { console.error(e instanceof Error ? e.message : e); process.exit(1); });
}
