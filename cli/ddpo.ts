#!/usr/bin/env node
// The `ddpo` command line.

import { Command } from 'commander';
import { doctor } from './doctor.js';
import { demo } from './demo.js';

process.env.XDG_RUNTIME_DIR ??= '/tmp';

const program = new Command();
program.name('ddpo').description('DDPO on WebGPU: a tensor engine and RL fine-tuning for diffusion models').version('0.1.0');

program.command('doctor')
  .description('print the WebGPU adapter, its features and limits, and what to install if none is found')
  .option('--adapter <which>', "'auto' (default), 'gpu', 'cpu', or part of an adapter's name (env DDPO_ADAPTER)")
  .option('--brief', 'one line each for the adapter and the features we use')
  .action(async (opts) => { process.exitCode = await doctor(opts); });

program.command('demo')
  .description('train a small MLP on the best device so the loss visibly falls (engine smoke test)')
  .option('--steps <n>', 'training steps', (v) => parseInt(v, 10), 300)
  .option('--hidden <n>', 'hidden width', (v) => parseInt(v, 10), 64)
  .option('--batch <n>', 'batch size', (v) => parseInt(v, 10), 256)
  .option('--lr <x>', 'AdamW learning rate', parseFloat, 1e-2)
  .option('--seed <n>', 'random seed', (v) => parseInt(v, 10), 0)
  .option('--out <dir>', 'where to write the loss curve', 'out')
  .option('--adapter <which>', "'auto', 'gpu', 'cpu' or part of an adapter's name")
  .action(async (opts) => { process.exitCode = await demo(opts); });

program.parseAsync(process.argv).then(() => process.exit(process.exitCode ?? 0), (e: Error) => {
  console.error(`ddpo: ${e.message}`);
  process.exit(1);
});
