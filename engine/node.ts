// The Node-only way to get a Device: Dawn's Node binding (npm `webgpu`). Everything else in
// engine/ works on any GPUDevice, so a browser or another engine never imports this file.

import { create, globals } from 'webgpu';
import { Device, DeviceOptions } from './device.js';
import { isSoftwareAdapterName } from './kernel-family.js';
import { gentleWait } from './node-wait.js';

/**
 * Dawn toggles: allow_unsafe_apis exposes experimental features (subgroup matrices);
 * vulkan_enable_f16_on_nvidia is needed for shader-f16 (and f16 subgroup matrices) on NVIDIA.
 */
export const DAWN_TOGGLES = ['allow_unsafe_apis', 'vulkan_enable_f16_on_nvidia'] as const;
export const DAWN_FLAGS = [`enable-dawn-features=${DAWN_TOGGLES.join(',')}`];

export interface NodeDeviceOptions extends DeviceOptions {
  /**
   * Which adapter: 'auto' (a hardware GPU if there is one, else the software one), 'gpu'
   * (hardware only), 'cpu' (the software fallback, e.g. lavapipe), or part of an adapter's name.
   * Default: the DDPO_ADAPTER environment variable, else 'auto'.
   */
  adapter?: string;
}

// One Dawn instance per flag set, created on first use. Creating a second instance in a process
// that later starts worker threads crashed Dawn here, so a choice creates only the one it needs.
const instances = new Map<string, GPU>();

function dawn(extra: string[] = []): GPU {
  // DDPO_DAWN_TOGGLES adds Dawn toggles (comma-separated), e.g. for kernel experiments.
  const more = process.env.DDPO_DAWN_TOGGLES ? [`enable-dawn-features=${[...DAWN_TOGGLES, process.env.DDPO_DAWN_TOGGLES].join(',')}`] : DAWN_FLAGS;
  const flags = [...more, ...extra];
  const key = flags.join('|');
  let gpu = instances.get(key);
  if (!gpu) {
    Object.assign(globalThis, globals); // GPUBufferUsage and friends, as in a browser
    gpu = create(flags);
    instances.set(key, gpu);
  }
  return gpu;
}

export function adapterDescription(adapter: GPUAdapter): string {
  const info = adapter.info;
  return [info.vendor, info.architecture, info.device, info.description].filter((s) => s).join(' / ') || 'unnamed adapter';
}

export function isSoftwareAdapter(adapter: GPUAdapter): boolean {
  return isSoftwareAdapterName(adapterDescription(adapter)) || (adapter.info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true;
}

export const NO_ADAPTER_HELP = [
  'No WebGPU adapter was found.',
  'On Linux without a GPU, install Mesa >= 24 (lavapipe): `bash scripts/setup-vulkan.sh`',
  '(on Debian bookworm this takes mesa-vulkan-drivers and libvulkan1 from bookworm-backports).',
  'With an NVIDIA GPU, install its driver with Vulkan support and the Vulkan loader (libvulkan1).',
  'Check with `ddpo doctor`.',
].join('\n');

/** Finds an adapter by the rule in NodeDeviceOptions.adapter. */
export async function requestNodeAdapter(choice = process.env.DDPO_ADAPTER ?? 'auto'): Promise<GPUAdapter> {
  Object.assign(globalThis, globals);
  const want = choice.toLowerCase();
  let adapter: GPUAdapter | null = null;
  if (want === 'cpu') {
    adapter = await dawn(['adapter=llvmpipe']).requestAdapter();
    if (!adapter || !isSoftwareAdapter(adapter)) adapter = await dawn().requestAdapter({ forceFallbackAdapter: true });
  } else if (want === 'auto' || want === 'gpu') {
    adapter = await dawn().requestAdapter({ powerPreference: 'high-performance' });
    if (want === 'gpu' && (!adapter || isSoftwareAdapter(adapter))) {
      throw new Error(`DDPO_ADAPTER=gpu: no hardware GPU adapter found (got ${adapter ? adapterDescription(adapter) : 'none'}). Install the GPU's Vulkan driver, or use DDPO_ADAPTER=auto.`);
    }
  } else {
    adapter = await dawn([`adapter=${choice}`]).requestAdapter();
    if (adapter && !adapterDescription(adapter).toLowerCase().includes(want)) {
      throw new Error(`DDPO_ADAPTER=${choice}: no adapter matches; found ${adapterDescription(adapter)}. Run \`ddpo doctor\`.`);
    }
  }
  if (!adapter) throw new Error(NO_ADAPTER_HELP);
  return adapter;
}

/** Creates a Device on the best adapter (or the chosen one) through Dawn. */
export async function createNodeDevice(opts: NodeDeviceOptions = {}): Promise<Device> {
  process.env.XDG_RUNTIME_DIR ??= '/tmp'; // quiets Mesa's warnings
  const adapter = await requestNodeAdapter(opts.adapter);
  // On a software adapter, waits without Dawn's busy polling (engine/node-wait.ts), which takes a
  // core from the adapter's own threads; a GPU keeps the exact, busy wait (its latency matters
  // more than one core). A caller's own waitFor wins.
  const waitFor = isSoftwareAdapter(adapter) ? gentleWait : undefined;
  return Device.fromAdapter(adapter, { ...(waitFor ? { waitFor } : {}), ...opts, adapterName: adapterDescription(adapter) });
}
