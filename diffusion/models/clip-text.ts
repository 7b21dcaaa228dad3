// The CLIP text encoder (transformers' CLIPTextModel): config, module, loading and saving.
export * from './clip-config.js';
export * from './clip-text-model.js';
export * from './clip-text-io.js';
export * from './clip-text-load.js';
