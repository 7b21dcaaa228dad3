#!/usr/bin/env node
// The `ddpo` command line.

import { Command, InvalidArgumentError } from 'commander';
import { doctor } from './doctor.js';
import { demo } from './demo.js';
import { sampleCommand } from './sample.js';
import { inspectCommand } from './inspect.js';
import { configCommand, evalCommand, trainCommand } from './train.js';
import { dataEmojiCommand, dataImagesCommand } from './data.js';
import { exportCommand, pretrainCommand } from './pretrain.js';
import { rewardServerCommand } from './reward-server.js';
import { evalModelCommand, judgeCommand } from './judge.js';

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
// commander names the flag when a parser throws InvalidArgumentError ("option '--epochs <n>' argument '2.5' is invalid").
const int = (v: string) => { const n = Number(v); if (!Number.isInteger(n)) throw new InvalidArgumentError(`not an integer: ${v}`); return n; };
const num = (v: string) => { const n = Number(v); if (!Number.isFinite(n)) throw new InvalidArgumentError(`not a number: ${v}`); return n; };
// `ddpo sample` checks its numbers itself, all at once and with their valid ranges (cli/sample.ts).
const raw = (v: string) => (v.trim() === '' ? NaN : Number(v));

program.command('sample')
  .description('generate images from prompts with a diffusers-layout Stable Diffusion folder (or the built-in tiny model); writes a PNG per image, grid.png and samples.json')
  .requiredOption('--model <dir>', "pipeline folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/), or 'tiny' (the small random model ddpo train --model tiny --seed S starts from)")
  .option('--prompt <text>', 'a prompt (repeat for several)', collect)
  .option('--prompts <file>', 'a file with one prompt per line')
  .option('--negative <text>', 'negative prompt for guidance', '')
  .option('--steps <n>', "DDIM steps, 1 to the scheduler's maximum (999 for SD v1)", raw, 50)
  .option('--eta <x>', 'DDIM η ≥ 0 (0 deterministic, 1 DDPM-like)', raw, 1)
  .option('--guidance <x>', 'classifier-free guidance scale ≥ 0 (1: none)', raw, 5)
  .option('--seed <n>', 'noise seed (and the tiny model\'s initialisation), an integer ≥ 0', raw, 0)
  .option('--batch <n>', 'images per batch, ≥ 1', raw, 4)
  .option('-n, --n <n>', 'images per prompt, ≥ 1', raw, 1)
  .option('--dtype <t>', "weights' storage type: f32 or f16", 'f32')
  .option('--out <dir>', 'output folder (refused when it holds earlier PNGs, unless --overwrite)', 'out/samples')
  .option('--overwrite', 'replace the PNGs and samples.json already in --out')
  .option('--adapter <which>', "'auto', 'gpu', 'cpu' or part of an adapter's name")
  .action(async (opts) => { process.exitCode = await sampleCommand(opts); });

program.command('inspect')
  .description('parameter names, shapes, dtypes and counts of a diffusers folder (headers only; checked against its configs) or of a named config')
  .argument('[dir]', 'pipeline folder (model_index.json, unet/, vae/, text_encoder/), one component folder, a CLIP folder, or (with --check-values) a .safetensors file or checkpoint folder')
  .option('--config <name>', 'a named config instead of a folder: sd-v1, tiny, small, clip-vit-l-14 (CLIPModel) or clip-vit-l-14-vision (CLIPVisionModelWithProjection)')
  .option('--part <part>', 'only unet, vae or text_encoder')
  .option('--json', 'print { name: shape } (one part) or { part: { name: shape } }')
  .option('--summary', 'counts per top-level module only, no per-parameter lines')
  .option('--check-values', 'also read every weight and report tensors holding NaN/Inf (a folder, a .safetensors file or a checkpoint folder); exit code 1 if any')
  .action(async (dir, opts) => { process.exitCode = await inspectCommand(dir, opts); });

const trainFlags = (c: Command) => c
  .option('--config <file>', 'run config (JSON); every key has a default, see docs/config.md')
  .option('--set <key=value>', 'override any config key by its dotted name, e.g. --set train.lr=1e-4 (repeatable)', collect)
  .option('--epochs <n>', 'epochs (config key epochs)', int)
  .option('--out <dir>', 'run folder (config key out)')
  .option('--model <dir>', "diffusers folder, or 'tiny' (config key model)")
  .option('--algorithm <name>', "'ddpo-is', 'ddpo-sf', 'rwr' or 'rwr-sparse'")
  .option('--prompts <set>', "'simple_animals', 'animal_activities', FILE or FILE:FROM-TO")
  .option('--reward <name>', "a built-in name ('jpeg_compressibility', 'brightness', ...) or a reward config as JSON (e.g. '{\"aesthetic\": {...}}')")
  .option('--seed <n>', 'seed of every random stream', int)
  .option('--dtype <t>', 'frozen base weights: f32 or f16')
  .option('--adapter <which>', "'auto', 'gpu', 'cpu' or part of an adapter's name");

trainFlags(program.command('train')
  .description('fine-tune a diffusion model on a reward with DDPO; writes metrics, grids, curves and report.html to the run folder'))
  .option('--resume <dir>', 'continue the run in this folder from its last checkpoint')
  .option('--overwrite', "start a new run in --out even though an earlier run's files are there (they are deleted)")
  .action(async (opts) => { process.exitCode = await trainCommand(opts); });

program.command('eval')
  .description("a checkpoint's reward on held-out prompts (mean ± std); writes eval.json")
  .requiredOption('--checkpoint <dir>', 'a run folder written by ddpo train, or its checkpoint/ folder')
  .option('--prompts <set>', "'simple_animals', 'animal_activities', FILE or FILE:FROM-TO (default: the run's prompts)")
  .option('--prompt <text>', 'an explicit prompt (repeatable; cycled over the n samples)', collect)
  .option('-n, --n <n>', 'samples', int, 32)
  .option('--seed <n>', 'seed of prompt choice and noise (use one the run did not train on)', int, 12345)
  .option('--batch <n>', 'samples per sampling batch (default: the run\'s sample.batch_size)', int)
  .option('--config <file>', "the run's config, when the checkpoint has no config.json in or above it")
  .option('--set <key=value>', 'override a config key (e.g. sample.steps)', collect)
  .option('--out <file>', 'where to write the result (default: eval.json in the run folder)')
  .option('--adapter <which>', "'auto', 'gpu', 'cpu' or part of an adapter's name")
  .action(async (opts) => { process.exitCode = await evalCommand(opts); });

const data = program.command('data').description('build a captioned image set for ddpo pretrain');
data.command('emoji')
  .description('emoji from the npm packages emoji-datasource-google (Noto, Apache-2.0) and -twitter (Twemoji, CC-BY-4.0), fetched into a cache on first use')
  .requiredOption('--out <dir>', 'the set folder to write (images/, metadata.jsonl, dataset.json, ATTRIBUTION.md)')
  .option('--vendor <names>', 'google, twitter or both (comma-separated or repeated; default both)', collect)
  .option('--category <name>', 'keep only this category, e.g. "Animals & Nature" or animals-nature (repeatable)', collect)
  .option('--subcategory <name>', 'keep only this subcategory, e.g. animal-mammal (repeatable)', collect)
  .option('--animals', "only the DDPO paper's 45 animals (captions \"a cat\", ...)")
  .option('--only <names>', 'only these emoji: animal words, short names or codes (comma-separated or repeated)', collect)
  .option('--size <px>', 'image side in pixels', int, 32)
  .option('--filter <f>', 'resize filter: area or bicubic', 'area')
  .option('--package <path>', 'read this package tarball or folder instead of fetching (repeatable, one per vendor)', collect)
  .option('--cache <dir>', 'package cache (default $DDPO_CACHE or ~/.cache/ddpo-webgpu)')
  .option('--version <v>', 'emoji-datasource version (default the pinned one)')
  .option('--force', 'replace --out if it exists')
  .action(async (opts) => { process.exitCode = await dataEmojiCommand(opts); });
data.command('images')
  .description('any folder of images with a captions file (metadata.jsonl or captions.tsv) → square images of one size, composited onto white')
  .requiredOption('--from <dir>', 'the source folder (read only)')
  .requiredOption('--out <dir>', 'the set folder to write')
  .option('--size <px>', 'image side in pixels (centre-cropped to square first)', int, 32)
  .option('--filter <f>', 'resize filter: area or bicubic', 'area')
  .option('--force', 'replace --out if it exists')
  .action(async (opts) => { process.exitCode = await dataImagesCommand(opts); });

program.command('pretrain')
  .description('train a small Stable Diffusion model from scratch on a captioned image set: VAE, then UNet + CLIP text encoder; writes OUT/model/ (diffusers layout)')
  .option('--data <dir>', 'the image set (metadata.jsonl or captions.tsv beside square images; see ddpo data)')
  .option('--out <dir>', 'run folder (config key out)')
  .option('--config <file>', 'pretrain config (JSON); every key has a default, see docs/pretrain-config.md')
  .option('--set <key=value>', 'override any config key by its dotted name, e.g. --set train.steps=5000 (repeatable)', collect)
  .option('--steps <n>', 'stage-2 steps (config key train.steps)', int)
  .option('--seed <n>', 'seed of every random stream', int)
  .option('--resume <dir>', 'continue the run in this folder from its last checkpoint')
  .option('--adapter <which>', "'auto', 'gpu', 'cpu' or part of an adapter's name")
  .option('--print-config', 'print the resolved config and exit')
  .option('--docs', 'print the markdown table of every option (docs/pretrain-config.md)')
  .action(async (opts) => { process.exitCode = await pretrainCommand(opts); });

program.command('export')
  .description("write a pretraining run's EMA model (its last checkpoint) as a diffusers folder")
  .requiredOption('--run <dir>', 'the run folder of ddpo pretrain')
  .requiredOption('--out <dir>', 'the pipeline folder to write')
  .option('--dtype <t>', 'weights f32 or f16', 'f32')
  .option('--adapter <which>', "'auto', 'gpu', 'cpu' or part of an adapter's name")
  .action(async (opts) => { process.exitCode = await exportCommand(opts); });
program.command('reward-server')
  .description('serve a reward over HTTP (rewards/service/README.md) for `reward: {"service": {"url": ...}}` runs or any client')
  .requiredOption('--reward <reward>', "a built-in name, a reward config as JSON (e.g. '{\"aesthetic\": {\"clip\": DIR, \"head\": FILE}}'), or PATH#EXPORT")
  .requiredOption('--port <n>', 'port to listen on (0: any free port, printed)', int)
  .option('--host <addr>', 'address to listen on (0.0.0.0 to serve other machines)', '127.0.0.1')
  .option('--args <json>', 'PATH#EXPORT: a JSON list of arguments for the factory')
  .option('--thread <where>', "PATH#EXPORT: 'worker' (default) or 'main' (the factory gets {device} after its args)")
  .option('--workers <n>', 'worker threads for worker rewards', int)
  .option('--retries <n>', 'rescoring rounds for samples the reward drops (default 1)', int)
  .option('--adapter <which>', "'auto', 'gpu', 'cpu' or part of an adapter's name (for rewards on the GPU)")
  .action(async (opts) => { process.exitCode = await rewardServerCommand(opts); });

program.command('judge')
  .description("train the recognisability judge (a small classifier over an image set's captions) on its real images")
  .requiredOption('--data <dir>', 'the image set the model was trained on')
  .requiredOption('--out <dir>', 'where to write the judge (config.json, model.safetensors); e.g. MODEL/judge')
  .option('--steps <n>', 'training steps (batches of 64 augmented images)', int, 400)
  .option('--seed <n>', 'seed of initialisation and augmentation', int, 0)
  .option('--adapter <which>', "'auto', 'gpu', 'cpu' or part of an adapter's name")
  .action(async (opts) => { process.exitCode = await judgeCommand(opts); });

program.command('eval-model')
  .description("a model's recognisability: the judge's top-1 accuracy on samples for every prompt it knows, at fixed seeds")
  .requiredOption('--model <dir>', 'pipeline folder (diffusers layout)')
  .option('--judge <dir>', 'the judge (default MODEL/judge)')
  .option('-n, --n <n>', 'samples per prompt', int, 4)
  .option('--seed <n>', 'noise seed', int, 0)
  .option('--steps <n>', 'DDIM steps', int, 25)
  .option('--guidance <x>', 'classifier-free guidance scale', num, 3)
  .option('--eta <x>', 'DDIM η', num, 0)
  .option('--out <file>', 'result JSON (default MODEL/eval-model.json; the grid goes beside it as .png)')
  .option('--adapter <which>', "'auto', 'gpu', 'cpu' or part of an adapter's name")
  .action(async (opts) => { process.exitCode = await evalModelCommand(opts); });

trainFlags(program.command('config')
  .description('print the resolved run config (defaults < --config < flags), or with --docs every option and its default'))
  .option('--resume <dir>', 'resolve as a resume of this run folder would')
  .option('--docs', 'print the markdown table of every option (docs/config.md)')
  .action(async (opts) => { process.exitCode = await configCommand(opts); });

program.parseAsync(process.argv).then(() => process.exit(process.exitCode ?? 0), (e: Error) => {
  console.error(`ddpo: ${e.message}`);
  process.exit(1);
});
