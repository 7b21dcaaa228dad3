// CLIP's image tower (CLIPVisionModelWithProjection) and the dual encoder (CLIPModel): configs,
// modules, loading. The text tower is clip-text.ts.
export * from './clip-vision-config.js';
export * from './clip-vision-model.js';
export * from './clip-vision-io.js';
export * from './clip-image-processor.js';
