// `ddpo doctor`: which adapter we get, what it offers, and what to install when there is none.

import { Device, WANTED_FEATURES } from '../engine/device.js';
import { NO_ADAPTER_HELP, adapterDescription, isSoftwareAdapter, requestNodeAdapter } from '../engine/node.js';
import { tensor, setDefaultDevice } from '../engine/tensor.js';
import { add, mul } from '../engine/ops/elementwise.js';

const LIMITS = [
  'maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupsPerDimension', 'maxStorageBuffersPerShaderStage', 'minStorageBufferOffsetAlignment',
];

function bytes(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(0)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(0)} KiB`;
  return `${n}`;
}

export async function doctor(opts: { adapter?: string; brief?: boolean }): Promise<number> {
  let adapter: GPUAdapter;
  try {
    adapter = await requestNodeAdapter(opts.adapter ?? process.env.DDPO_ADAPTER ?? 'auto');
  } catch (e) {
    console.error((e as Error).message);
    if (!(e as Error).message.includes('No WebGPU adapter')) console.error(`\n${NO_ADAPTER_HELP}`);
    return 1;
  }
  const info = adapter.info as GPUAdapterInfo & { subgroupMatrixConfigs?: { componentType: string; resultComponentType: string; M: number; N: number; K: number }[]; subgroupMinSize?: number; subgroupMaxSize?: number };
  const offered = new Set(adapter.features as unknown as Iterable<string>);
  console.log(`adapter:   ${adapterDescription(adapter)}${isSoftwareAdapter(adapter) ? '  (software: correct but slow)' : ''}`);
  console.log(`features:  ${WANTED_FEATURES.map((f) => `${f} ${offered.has(f) ? 'yes' : 'no'}`).join(', ')}`);
  if (!opts.brief) {
    if (info.subgroupMinSize) console.log(`subgroups: size ${info.subgroupMinSize}${info.subgroupMaxSize !== info.subgroupMinSize ? `–${info.subgroupMaxSize}` : ''}`);
    const cfgs = info.subgroupMatrixConfigs ?? [];
    console.log(`subgroup matrices: ${cfgs.length ? cfgs.map((c) => `${c.componentType}→${c.resultComponentType} ${c.M}×${c.N}×${c.K}`).join(', ') : 'none'}`);
    console.log('limits:');
    for (const name of LIMITS) {
      const v = (adapter.limits as unknown as Record<string, number>)[name];
      console.log(`  ${name.padEnd(36)} ${name.includes('Size') && v > 65536 ? bytes(v) : v}`);
    }
    console.log(`all features: ${[...offered].sort().join(' ')}`);
  }
  // A real dispatch proves the driver runs our kernels, not just that it enumerates.
  const dev = await Device.fromAdapter(adapter, { adapterName: adapterDescription(adapter) });
  setDefaultDevice(dev);
  const t0 = performance.now();
  const y = await add(mul(tensor([1, 2, 3]), 2), 1).data();
  const ms = performance.now() - t0;
  const ok = y[0] === 3 && y[1] === 5 && y[2] === 7;
  console.log(`self-test: ${ok ? 'ok' : `WRONG RESULT ${[...y]}`} (first dispatches incl. shader compile: ${ms.toFixed(0)} ms)`);
  if (!offered.has('shader-f16')) console.log('note: no shader-f16: models run in f32 (more memory). On NVIDIA, Dawn needs vulkan_enable_f16_on_nvidia (we set it).');
  dev.destroy();
  return ok ? 0 : 1;
}
