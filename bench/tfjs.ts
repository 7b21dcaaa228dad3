// TF.js's WebGPU backend on the engine's own GPUDevice, as a baseline in the same process.
//
// TF.js is a devDependency: when it is missing the benchmark still runs and says why the
// baseline column is empty.

import { createRequire, register } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Device } from '../engine/device.js';
import { BenchOpts, timeIt } from './timing.js';

type TF = typeof import('@tensorflow/tfjs-core');
export type TfTensor = import('@tensorflow/tfjs-core').Tensor;
type TensorContainer = import('@tensorflow/tfjs-core').TensorContainer;
type WebGPUBackendT = InstanceType<typeof import('@tensorflow/tfjs-backend-webgpu')['WebGPUBackend']>;

export interface Tfjs {
  tf: TF;
  backend: WebGPUBackendT;
  /** null when TF.js's gradients are registered (tf.grad works), else why not. */
  gradients: string | null;
  /** Submits TF.js's recorded commands and waits until the GPU has run them. */
  sync(): Promise<void>;
}

// TF.js registers its kernels under the backend name 'webgpu', so ours must carry that name; it
// replaces the factory TF.js registers on import (which would request an adapter of its own).
const BACKEND = 'webgpu';
let registered = false;
let gradients: Promise<string | null> | null = null;

/**
 * Registers TF.js's own gradient definitions, as the @tensorflow/tfjs package does by importing
 * '@tensorflow/tfjs-core/dist/register_all_gradients'. tfjs-core's Node bundle leaves them out
 * and that module exists only unbundled, as ES modules for bundlers, which Node loads with the
 * hooks of tfjs-esm-hooks.ts. It is a second copy of tfjs-core's code, but TF.js keeps its engine
 * and its kernel and gradient registries on globalThis for exactly this case, so the gradients
 * land in the same registry and run on the same backend.
 */
function registerTfjsGradients(): Promise<string | null> {
  gradients ??= (async () => {
    try {
      register(new URL('./tfjs-esm-hooks.js', import.meta.url));
      const core = createRequire(import.meta.url).resolve('@tensorflow/tfjs-core');
      await import(pathToFileURL(join(dirname(core), 'register_all_gradients.js')).href);
      return null;
    } catch (e) {
      return `TF.js gradients not available (${(e as Error).message.split('\n')[0]})`;
    }
  })();
  return gradients;
}

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
    gradients: await registerTfjsGradients(),
    sync: async () => {
      backend.endComputePassEncoder();
      if ((backend as unknown as { commandEncoder: GPUCommandEncoder | null }).commandEncoder) backend.submitQueue();
      // The same wait as ours (on a software adapter engine/node-wait.ts: no busy polling).
      await dev.waitFor(() => dev.gpu.queue.onSubmittedWorkDone());
      dev.checkErrors('TF.js baseline'); // GPU errors from TF.js reach the device's error listener too
    },
  };
}

/**
 * Median ms of `fn` on TF.js: each iteration runs it inside tf.tidy (its intermediates freed),
 * submits and awaits the GPU work, then frees what it returned.
 */
export async function timeTfjs(t: Tfjs, name: string, opts: BenchOpts, fn: () => TensorContainer): Promise<number> {
  return timeIt(`tfjs ${name}`, opts, async () => {
    const out = t.tf.tidy(fn);
    await t.sync();
    t.tf.dispose(out);
  });
}

export interface TfjsRun {
  ms: number;
  /** The values of what `fn` returned, in order (for the benches' diff columns). */
  values: Float32Array[];
}

/**
 * Runs `fn` once for its values, then times it (timeTfjs). Where TF.js cannot run it on this
 * backend (a missing kernel, or gradients not registered), returns why instead, so the table
 * says so rather than showing a made-up figure.
 */
export async function measureTfjs(t: Tfjs, what: string, opts: BenchOpts, fn: () => TfTensor | TfTensor[], needsGradients = false): Promise<TfjsRun | string> {
  if (needsGradients && t.gradients) return t.gradients;
  try {
    const out = t.tf.tidy(fn);
    const list = Array.isArray(out) ? out : [out];
    const values = await Promise.all(list.map(async (x) => (await x.data()) as Float32Array));
    t.tf.dispose(list);
    return { ms: await timeTfjs(t, what, opts, fn), values };
  } catch (e) {
    return `TF.js ${what} failed: ${(e as Error).message.split('\n')[0]}`;
  }
}
