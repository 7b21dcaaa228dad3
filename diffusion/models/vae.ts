// diffusers' AutoencoderKL (SD v1's VAE): config, blocks, model, and diffusers-folder I/O.
// See vae-model.ts for encode/decode semantics and vae-io.ts for checkpoint key handling.

export * from './vae-config.js';
export * from './vae-blocks.js';
export * from './vae-model.js';
export * from './vae-load.js';
export * from './vae-io.js';
