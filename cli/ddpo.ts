#!/usr/bin/env node
// The `ddpo` command line.

import { Command } from 'commander';
import { doctor } from './doctor.js';
import { demo } from './demo.js';
import { sampleCommand } from './sample.js';

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

const collect = (v: string, prev: string[] = []) => [...prev, v];
const int = (v: string) => { const n = Number(v); if (!Number.isInteger(n)) throw new Error(`not an integer: ${v}`); return n; };
const num = (v: string) => { const n = Number(v); if (!Number.isFinite(n)) throw new Error(`not a number: ${v}`); return n; };

program.command('sample')
  .description('generate images from prompts with a diffusers-layout Stable Diffusion folder')
  .requiredOption('--model <dir>', 'pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/)')
  .option('--prompt <text>', 'a prompt (repeat for several)', collect)
  .option('--prompts <file>', 'a file with one prompt per line')
  .option('--negative <text>', 'negative prompt for guidance', '')
  .option('--steps <n>', 'DDIM steps', int, 50)
  .option('--eta <x>', 'DDIM η (0 deterministic, 1 DDPM-like)', num, 1)
  .option('--guidance <x>', 'classifier-free guidance scale', num, 5)
  .option('--seed <n>', 'random seed', int, 0)
  .option('--batch <n>', 'images per batch', int, 4)
  .option('-n, --n <n>', 'images per prompt', int, 1)
  .option('--dtype <t>', "weights' storage type: f32 or f16", 'f32')
  .option('--out <dir>', 'output folder', 'out/samples')
  .option('--adapter <which>', "'auto', 'gpu', 'cpu' or part of an adapter's name")
  .action(async (opts) => { process.exitCode = await sampleCommand(opts); });

program.parseAsync(process.argv).then(() => process.exit(process.exitCode ?? 0), (e: Error) => {
  console.error(`ddpo: ${e.message}`);
  process.exit(1);
});
