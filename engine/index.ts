// ddpo-webgpu's tensor engine. Runs on any GPUDevice; nothing here imports Node.
// (Node users: `import { createNodeDevice } from 'ddpo-webgpu/node'`.)

export * from './dtype.js';
export * from './shape.js';
export { Device, WANTED_FEATURES } from './device.js';
export type { DeviceOptions, Binding, DispatchSpec } from './device.js';
export type { MemoryStats } from './pool.js';
export { Tensor, tensor, setDefaultDevice, getDefaultDevice } from './tensor.js';
export { tidy, keep, scopeDepth } from './scope.js';
export { backward, noGrad, isGradEnabled } from './autograd.js';
export * from './ops/index.js';
export * from './optim.js';
export * from './io/safetensors-format.js';
export * as nn from './nn/index.js';
