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
export const kernelFamilyOverride: { family?: KernelFamily; convColumns?: 4 | 8; subgroups?: boolean } = {};

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

const SWIFTSHADER_NAME = /swiftshader/i;

/**
 * Columns of the software conv2d kernels' register block (kernels/conv2d-rb.ts): 8, or 4 on
 * SwiftShader (Chromium's software adapter), whose shader compiler takes minutes on the 16×8
 * kernels and then crashes the GPU process on the stride-2 input-gradient one (measured in
 * headless Chromium 156: the device is lost at the op checks' stride-2 conv). Either width sums
 * each output in the same order, so the bits are the same; tests force 4 in Node with
 * `kernelFamilyOverride.convColumns` or DDPO_CONV_COLUMNS=4.
 */
export function convBlockColumns(dev: { adapterName: string }): 4 | 8 {
  const v = typeof process !== 'undefined' ? process.env?.DDPO_CONV_COLUMNS : undefined;
  if (v !== undefined && v !== '' && v !== '4' && v !== '8') throw new Error(`DDPO_CONV_COLUMNS=${v}: expected 4 or 8 (or unset: chosen from the adapter)`);
  return kernelFamilyOverride.convColumns ?? (v ? (Number(v) as 4 | 8) : undefined) ?? (SWIFTSHADER_NAME.test(dev.adapterName) ? 4 : 8);
}

/**
 * The subgroup size the software kernels may rely on, or null. On lavapipe a subgroup is one SIMD
 * register (8 lanes with 256-bit LLVM) and a subgroupBroadcast is a register shuffle, while a
 * buffer load costs about as much whether or not its address is the same in every lane; so a
 * kernel whose lanes all need the same 8 values is faster when each lane loads one of them and
 * the others are broadcast (kernels/matmul-rb.ts). Only a fixed size (min = max) counts, and only
 * 8, the block height those kernels are written for. `kernelFamilyOverride.subgroups = false` or
 * DDPO_SUBGROUPS=0 turns this off (tests compare both ways; same bits).
 */
export function softwareSubgroupSize(dev: { subgroupSize: number | null }): 8 | null {
  const v = typeof process !== 'undefined' ? process.env?.DDPO_SUBGROUPS : undefined;
  if (v !== undefined && v !== '' && v !== '0' && v !== '1') throw new Error(`DDPO_SUBGROUPS=${v}: expected 0 (off) or 1 (on where the adapter offers them, the default)`);
  const on = kernelFamilyOverride.subgroups ?? (v !== '0');
  return on && dev.subgroupSize === 8 ? 8 : null;
}
