// TF.js's WebGPU backend on the engine's own GPUDevice, as a baseline in the same process.
//
// TF.js is a devDependency: when it is missing the benchmark still runs and says why the
// baseline column is empty.

import type { Device } from '../engine/device.js';

type TF = typeof import('@tensorflow/tfjs-core');
type WebGPUBackendT = InstanceType<typeof import('@tensorflow/tfjs-backend-webgpu')['WebGPUBackend']>;

export interface Tfjs {
  tf: TF;
  backend: WebGPUBackendT;
  /** Submits TF.js's recorded commands and waits until the GPU has run them. */
  sync(): Promise<void>;
}

// TF.js registers its kernels under the backend name 'webgpu', so ours must carry that name; it
// replaces the factory TF.js registers on import (which would request an adapter of its own).
const BACKEND = 'webgpu';
let registered = false;

/** Registers and selects a TF.js WebGPU backend that uses `dev.gpu`, or explains why it cannot. */
export async function setupTfjs(dev: Device): Promise<Tfjs | string> {
  // TF.js only checks that navigator.gpu exists (WebGPUBackend's constructor refuses otherwise);
  // it never asks it for an adapter because we hand the backend our device. The stub makes sure
  // that nothing quietly opens a second adapter.
  const g = globalThis as { navigator?: { gpu?: unknown } };
  if (!g.navigator?.gpu) {
    const gpu = {
      requestAdapter: async () => { throw new Error('bench: TF.js must use the shared device, not request its own adapter'); },
      getPreferredCanvasFormat: () => 'rgba8unorm',
      wgslLanguageFeatures: new Set<string>(),
    };
    Object.defineProperty(globalThis, 'navigator', { value: { ...(g.navigator ?? {}), gpu }, configurable: true, writable: true });
  }
  let tf: TF, WebGPUBackend: typeof import('@tensorflow/tfjs-backend-webgpu')['WebGPUBackend'];
  try {
    tf = await import('@tensorflow/tfjs-core');
    ({ WebGPUBackend } = await import('@tensorflow/tfjs-backend-webgpu'));
  } catch (e) {
    return `TF.js not available (${(e as Error).message.split('\n')[0]}); install the devDependencies`;
  }
  if (!registered) {
    // Small ops may otherwise run on the CPU; we want TF.js's GPU kernels.
    tf.env().set('WEBGPU_CPU_FORWARD', false);
    if (tf.engine().registryFactory[BACKEND]) tf.removeBackend(BACKEND);
    registered = true;
    tf.registerBackend(BACKEND, () => new WebGPUBackend(dev.gpu, { vendor: '', architecture: '', device: '', description: dev.adapterName } as GPUAdapterInfo), 10);
  }
  if (!(await tf.setBackend(BACKEND))) return 'TF.js could not initialise its WebGPU backend on this device';
  await tf.ready();
  const backend = tf.backend() as WebGPUBackendT;
  return {
    tf,
    backend,
    sync: async () => {
      backend.endComputePassEncoder();
      if ((backend as unknown as { commandEncoder: GPUCommandEncoder | null }).commandEncoder) backend.submitQueue();
      await dev.gpu.queue.onSubmittedWorkDone();
      dev.checkErrors('TF.js baseline'); // GPU errors from TF.js reach the device's error listener too
    },
  };
}
