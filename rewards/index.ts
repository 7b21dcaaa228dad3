// Rewards for DDPO: the reward contract, the JPEG rewards, brightness (a check that training
// moves a model), weighted combinations, and the worker-thread pool that scores batches off the
// main thread.

export * from './types.js';
export * from './jpeg.js';
export * from './brightness.js';
export * from './combine.js';
export * from './score.js';
export * from './load.js';
export * from './pool.js';
