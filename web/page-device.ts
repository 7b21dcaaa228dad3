// The engine Device a page makes on its adapter. Device.fromAdapter names a device by vendor and
// device ('google' for Chromium's SwiftShader, which reports no device or description), which
// picks the GPU kernel family; SwiftShader runs a workgroup on a CPU thread, where the software
// family (register-blocked kernels) samples the emoji model about 15× faster (4 images × 8 steps:
// 4.8 s against 70 s in headless Chromium here). So the page's name also carries the architecture
// ('google swiftshader'), which selects the software family and, for SwiftShader's shader
// compiler, 4-column conv blocks (engine/kernel-family.ts).

import { Device, DeviceOptions } from '../engine/device.js';

/** 'vendor architecture device' from the adapter's info (empty parts left out). */
export function adapterLabel(adapter: GPUAdapter): string {
  const i = adapter.info;
  return [i?.vendor, i?.architecture, i?.device || i?.description].filter(Boolean).join(' ') || 'adapter';
}

export function pageDevice(adapter: GPUAdapter, opts: DeviceOptions = {}): Promise<Device> {
  return Device.fromAdapter(adapter, { adapterName: adapterLabel(adapter), ...opts });
}
