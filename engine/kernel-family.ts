// Which family of kernels a device runs. Software adapters (Mesa's lavapipe, SwiftShader) execute
// a workgroup on one CPU thread, eight invocations to a SIMD register; there, workgroup memory
// and barriers cost (each barrier is a coroutine switch) and every buffer load is done lane by
// lane, so the kernels that win keep a block of outputs in registers per invocation and touch no
// workgroup memory ("software" family: kernels/*-rb.ts). GPUs get the tiled shared-memory
// kernels ("gpu" family).
//
// The choice depends on the device only (and the override below), never on a shape, so a sample
// gives the same bits alone or in a batch whichever family runs.

export type KernelFamily = 'software' | 'gpu';

/**
 * Forces one family on every device (tests run each op under both; benchmarks compare them).
 * Also settable with the environment variable DDPO_KERNELS=software|gpu.
 */
export const kernelFamilyOverride: { family?: KernelFamily } = {};

const SOFTWARE_NAME = /llvmpipe|lavapipe|swiftshader|software/i;

function fromEnv(): KernelFamily | undefined {
  const v = typeof process !== 'undefined' ? process.env?.DDPO_KERNELS : undefined;
  if (v === undefined || v === '') return undefined;
  if (v !== 'software' && v !== 'gpu') throw new Error(`DDPO_KERNELS=${v}: expected "software" or "gpu" (or unset: chosen from the adapter)`);
  return v;
}

export function isSoftwareAdapterName(name: string): boolean {
  return SOFTWARE_NAME.test(name);
}

/** The kernel family for a device: the override, else DDPO_KERNELS, else from the adapter's name. */
export function kernelFamily(dev: { adapterName: string }): KernelFamily {
  return kernelFamilyOverride.family ?? fromEnv() ?? (isSoftwareAdapterName(dev.adapterName) ? 'software' : 'gpu');
}
