// Rewards for DDPO: the reward contract, the JPEG rewards, weighted combinations, and the
// worker-thread pool that scores batches off the main thread.

export * from './types.js';
export * from './jpeg.js';
export * from './combine.js';
export * from './score.js';
export * from './load.js';
export * from './pool.js';
