// Pretraining speed: steps/s and samples/s of each stage of `ddpo pretrain` (pretrain/trainer.ts)
// on a generated image set, with the run's config (defaults, or --config FILE, plus --set pairs),
// and the GPU time per op of a few stage-2 steps where the adapter has timestamp queries.
//
//   node dist/bench/pretrain.js [--config FILE] [--set key=value ...] [--images 16] [--steps 30] [--profile]
//
// Writes DIR/pretrain.json (DIR = --out, else $OUT, else bench-results). The first log window of
// each stage includes shader compilation, so the figures are taken from the later windows.

import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import type { ProfileEntry } from '../engine/profiler.js';
import { resolvePretrainConfig } from '../pretrain/config.js';
import { generatedImageSet } from '../pretrain/generated.js';
import { PretrainMetrics, Pretrainer } from '../pretrain/trainer.js';
import { parseSetArgs } from '../rl/config.js';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const flag = (name: string) => { const i = args.indexOf(name); return i >= 0 ? args[i + 1] : undefined; };
  const sets = args.flatMap((a, i) => (a === '--set' ? [args[i + 1]] : []));
  const steps = Number(flag('--steps') ?? 30);
  const out = flag('--out') ?? process.env.OUT ?? 'bench-results';
  const file = flag('--config');
  const cfg = resolvePretrainConfig(file ? JSON.parse(readFileSync(file, 'utf8')) : undefined, [
    ['data', '(generated)'], ['log_every', 10], ['checkpoint_every', 1000000], ['sample.every', 0],
    ['vae.steps', Math.min(steps, 20)], ['train.steps', steps], ...parseSetArgs(sets),
  ]);
  const data = generatedImageSet(Number(flag('--images') ?? 16), Number(flag('--size') ?? 16));
  const dev = await createNodeDevice({ adapter: cfg.adapter });
  setDefaultDevice(dev);
  const runDir = mkdtempSync(join(tmpdir(), 'ddpo-bench-pretrain-'));
  const rows: PretrainMetrics[] = [];
  let profile: Promise<ProfileEntry[]> | null = null;
  const profileAt = args.includes('--profile') && dev.hasTimestamps ? Math.max(steps - 3, 1) : -1;
  const t = await Pretrainer.start({
    config: cfg, data, runDir, device: dev, onMetrics: (r) => rows.push(...r),
    onProgress: (p) => {
      if (p.stage === 2 && p.step === profileAt) dev.startProfile();
      if (p.stage === 2 && p.step === profileAt + 2 && profileAt > 0) profile = dev.stopProfile();
    },
  });
  const t0 = performance.now();
  try {
    await t.run();
  } finally {
    t.dispose();
    rmSync(runDir, { recursive: true, force: true });
  }
  const later = (stage: 1 | 2) => rows.filter((r) => r.stage === stage).slice(1);
  const avg = (xs: PretrainMetrics[], k: 'steps_per_s' | 'samples_per_s') => xs.length ? xs.reduce((s, r) => s + r[k], 0) / xs.length : NaN;
  const result: Record<string, unknown> = {
    device: dev.adapterName, config: { vae: cfg.vae, unet: cfg.unet, text_encoder: cfg.text_encoder, tokenizer: cfg.tokenizer, train: { batch_size: cfg.train.batch_size } },
    images: data.images.length, size: data.size, wall_s: (performance.now() - t0) / 1000,
    stage1: { steps_per_s: avg(later(1), 'steps_per_s'), images_per_s: avg(later(1), 'samples_per_s') },
    stage2: { steps_per_s: avg(later(2), 'steps_per_s'), samples_per_s: avg(later(2), 'samples_per_s') },
    rows,
  };
  if (profile) {
    const p = (await profile) as ProfileEntry[];
    p.sort((a, b) => b.ms - a.ms);
    result.profile_2_steps = p.slice(0, 20);
  }
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, 'pretrain.json'), JSON.stringify(result, null, 2) + '\n');
  console.log(`stage 1: ${(result.stage1 as { images_per_s: number }).images_per_s.toFixed(1)} images/s; stage 2: ${(result.stage2 as { samples_per_s: number }).samples_per_s.toFixed(1)} samples/s (batch ${cfg.train.batch_size}) on ${dev.adapterName}`);
  if (result.profile_2_steps) for (const e of result.profile_2_steps as ProfileEntry[]) console.log(`  ${e.op.padEnd(28)} ${e.calls.toString().padStart(5)} calls ${e.ms.toFixed(1).padStart(8)} ms`);
  process.exit(0);
}

await main();
