// The browser bundle's entry (built by scripts/build-web.mjs into dist/web/ddpo-webgpu.js).
// Everything exported here runs on any GPUDevice and imports no Node built-in; the build fails if
// one slips in. Files that read weights from disk (diffusion/models/unet.ts, load.ts, *-io.ts)
// stay out of this graph.

export * from '../engine/index.js';
export { DDIMSchedule } from '../diffusion/schedule.js';
export type { SchedulerConfig, PredictionType } from '../diffusion/schedule.js';
export { ddimStep, stepCoefficients } from '../diffusion/ddim.js';
export { ClipTokenizer } from '../diffusion/tokenizer.js';
export { ClipTextModel } from '../diffusion/models/clip-text-model.js';
export { AutoencoderKL, VaeEncoder, VaeDecoder, vaeParameterShapes } from '../diffusion/models/vae-model.js';
export * as unetBlocks from '../diffusion/models/unet-blocks.js';
export { parseUnetConfig } from '../diffusion/models/unet-config.js';
export { runOpChecks, lcgValues } from './op-checks.js';
export { kernelFamily, kernelFamilyOverride } from '../engine/kernel-family.js';
