// Entry point of `npm run bench` (node dist/bench/run.js [names...] [--sizes 256,512] [--quick] [--out FILE]).
// Creates the device through Dawn and runs the named benchmarks (default: all).

import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice } from '../engine/tensor.js';
import { runAttentionBench } from './attention.js';
import { runConvBench } from './conv2d.js';
import { runMatmulBench } from './matmul.js';
import { runNormBench } from './norm.js';
import { runModelsBench } from './models.js';
import { runSoftmaxBench } from './softmax.js';
import { runUnetStepBench } from './unet-step.js';

const BENCHES = {
  matmul: runMatmulBench,
  conv2d: runConvBench,
  norm: runNormBench,
  attention: runAttentionBench,
  softmax: runSoftmaxBench,
  models: runModelsBench, // SD networks at tiny/small; SD v1 size on a GPU: node dist/bench/models.js --sd-v1
  'unet-step': runUnetStepBench, // the small UNet's training step at batch 32 (samples/s)
} as const;
type Name = keyof typeof BENCHES;

const USAGE = `usage: node dist/bench/run.js [${Object.keys(BENCHES).join('|')}...] [--sizes 256,512,1024] [--quick] [--out FILE]
  --sizes  matmul: comma-separated N for N×N×N products (default 256,512,1024,2048; 1024 at most on a software adapter);
           conv2d, norm: image sides H = W (default: SD shapes scaled to the device)
           (attention, softmax: fixed shapes per device)
  --quick  fewer iterations
  --out    JSON results file (default bench-results/<bench>.json)`;

function parseArgs(argv: string[]): { names: Name[]; sizes?: number[]; quick: boolean; out?: string } {
  const names: Name[] = [];
  let sizes: number[] | undefined, out: string | undefined, quick = false;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = a.includes('=') ? a.slice(a.indexOf('=') + 1) : argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value\n${USAGE}`);
      return v;
    };
    if (a === '--quick') quick = true;
    else if (a === '--sizes' || a.startsWith('--sizes=')) {
      sizes = value().split(',').map((s) => Number(s.trim()));
      if (!sizes.length || sizes.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--sizes takes positive integers separated by commas\n${USAGE}`);
    } else if (a === '--out' || a.startsWith('--out=')) out = value();
    else if (a === '--help' || a === '-h') { console.log(USAGE); process.exit(0); }
    else if (a in BENCHES) names.push(a as Name);
    else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  return { names: names.length ? names : (Object.keys(BENCHES) as Name[]), sizes, quick, out };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const dev = await createNodeDevice();
  setDefaultDevice(dev);
  for (const name of args.names) {
    await BENCHES[name](dev, { sizes: args.sizes, quick: args.quick, out: args.out });
  }
  dev.destroy();
}

main().then(
  () => process.exit(0), // Dawn keeps the event loop alive
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  },
);
