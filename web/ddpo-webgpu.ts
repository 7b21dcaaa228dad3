// The browser bundle's entry (built by scripts/build-web.mjs into dist/web/ddpo-webgpu.js).
// Everything exported here runs on any GPUDevice and imports no Node built-in; the build fails if
// one slips in. Files that use the file system (diffusion/load.ts, unet.ts, *-io.ts) stay out of
// this graph: models load from a ModelFolder (fetchFolder, memoryFolder) instead. The DDPO epoch
// (rl/trainer-core.ts) is here too; rewards come through a RunnerScorer (e.g. over workerRunner).

import type { ModelFolder } from '../engine/io/source.js';
import { fetchFolder } from '../engine/io/source.js';
import { LoadOptions, StableDiffusion, loadStableDiffusionFrom } from '../diffusion/load-folder.js';

export * from '../engine/index.js';
export { fetchFolder, memoryFolder, subFolder, bytesSource } from '../engine/io/source.js';
export type { ModelFolder, ByteSource } from '../engine/io/source.js';
export { parseSafetensors, loadSafetensorsFrom, readSafetensorsHeaderFrom } from '../engine/io/safetensors-load.js';
export { DDIMSchedule } from '../diffusion/schedule.js';
export type { SchedulerConfig, PredictionType } from '../diffusion/schedule.js';
export { ddimStep, stepCoefficients } from '../diffusion/ddim.js';
export { ClipTokenizer } from '../diffusion/tokenizer.js';
export { loadClipTokenizerFrom } from '../diffusion/text/load-folder.js';
export { ClipTextModel } from '../diffusion/models/clip-text-model.js';
export { loadClipTextModelFrom } from '../diffusion/models/clip-text-load.js';
export { AutoencoderKL, VaeEncoder, VaeDecoder, vaeParameterShapes } from '../diffusion/models/vae-model.js';
export { loadVaeFrom } from '../diffusion/models/vae-load.js';
export * as unetBlocks from '../diffusion/models/unet-blocks.js';
export { parseUnetConfig } from '../diffusion/models/unet-config.js';
export { UNet2DConditionModel, injectUnetLoRA, unetLoRAStateDict } from '../diffusion/models/unet-model.js';
export { loadUnetFrom } from '../diffusion/models/unet-load.js';
export { loadStableDiffusionFrom, disposeStableDiffusion } from '../diffusion/load-folder.js';
export type { StableDiffusion, LoadOptions } from '../diffusion/load-folder.js';
export { sample, sampleAsync, decodeLatents, TextEmbeddingCache } from '../diffusion/pipeline.js';
export type { SampleOptions, SampleResult, Trajectory } from '../diffusion/pipeline.js';
export { resolveConfig } from '../rl/config.js';
export type { ResolvedConfig } from '../rl/config.js';
export { createRunParts, runEpochCore } from '../rl/trainer-core.js';
export type { EpochScorer, RunParts, EpochOutcome } from '../rl/trainer-core.js';
export { RunnerScorer } from '../rewards/runner-scorer.js';
export type { RewardRunner } from '../rewards/runner-scorer.js';
export { jpegCompressibility, jpegIncompressibility } from '../rewards/jpeg.js';
export { FineTuner, fineTuneConfig, FINE_TUNE_DEFAULTS } from './fine-tune.js';
export { workerRunner } from './worker-runner.js';
export { runOpChecks, lcgValues } from './op-checks.js';
export { adapterLabel, pageDevice } from './page-device.js';
export { kernelFamily, kernelFamilyOverride } from '../engine/kernel-family.js';

/**
 * A diffusers pipeline folder from a URL (relative to the page, e.g. '../models/emoji-16/') or any
 * ModelFolder. Node's loadStableDiffusion (diffusion/load.ts) takes a path instead of a URL.
 */
export function loadStableDiffusion(folder: string | ModelFolder, opts: LoadOptions = {}): Promise<StableDiffusion> {
  const f = typeof folder === 'string' ? fetchFolder(new URL(folder, (globalThis as { location?: { href: string } }).location?.href).href) : folder;
  return loadStableDiffusionFrom(f, opts);
}
