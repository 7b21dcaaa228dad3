// The engine's view of one GPUDevice: pipelines (compiled once, cached by kernel key), a buffer
// pool, and a command recorder that batches many dispatches into one compute pass and submits
// them together. Nothing here waits on the GPU except read(), which is the only sync point.
//
// Nothing in this file needs Node: a browser or another engine hands us its GPUDevice through
// Device.fromGPUDevice(). engine/node.ts is the Node-only way to get one from Dawn.

import { DispatchProfiler, ProfileEntry, ProfileGrouping } from './profiler.js';
import { BufferPool, MemoryStats } from './pool.js';

/** Features we ask for when the adapter offers them. */
export const WANTED_FEATURES = ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix', 'timestamp-query'] as const;

export interface DeviceOptions {
  /**
   * Largest storage-buffer binding the engine will use, in bytes. Defaults to the device's
   * maxStorageBufferBindingSize; tests lower it to exercise the chunked paths on small tensors.
   */
  maxBindingBytes?: number;
  /** Submit after this many recorded dispatches even if nothing is read (default 256). */
  dispatchesPerSubmit?: number;
  /** Name of the adapter, for messages. */
  adapterName?: string;
  /**
   * Wraps every wait for the GPU (sync, read-back). Node devices (engine/node.ts) pass one that
   * keeps Dawn's binding from busy-polling a core meanwhile (engine/node-wait.ts). Default: none.
   */
  waitFor?: <T>(work: () => Promise<T>) => Promise<T>;
}

/** A range of a buffer bound to one kernel binding. */
export interface Binding {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

export interface DispatchSpec {
  /** What a person reads in an error: the op and its shapes. */
  label: string;
  /** Unique per WGSL source: the pipeline cache key. */
  key: string;
  /** Builds the WGSL the first time `key` is seen. */
  code: () => string;
  reads: Binding[];
  writes: Binding[];
  /** Uniform parameters (≤ 4 KiB), bound after the storage bindings. */
  params: Uint32Array;
  groups: [number, number, number];
}

const UNIFORM_ALIGN = 256;
const ARENA_BYTES = 1 << 20;

export class Device {
  readonly features: ReadonlySet<string>;
  readonly limits: GPUSupportedLimits;
  readonly pool: BufferPool;
  readonly adapterName: string;
  maxBindingBytes: number;
  private readonly dispatchesPerSubmit: number;

  private pipelines = new Map<string, { pipeline: GPUComputePipeline; layout: GPUBindGroupLayout }>();
  private layouts = new Map<string, GPUBindGroupLayout>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private recorded = 0;
  private arena: GPUBuffer;
  private arenaHost = new Uint8Array(ARENA_BYTES);
  private arenaUsed = 0;
  private errors: string[] = [];
  private lostMessage: string | null = null;
  private destroyed = false;
  /** Dispatches recorded since creation (for benchmarks and tests). */
  dispatchCount = 0;
  submitCount = 0;
  private profiler: DispatchProfiler | null = null;

  /**
   * Whether destroy() may destroy the GPUDevice: only when the engine requested it
   * (fromAdapter). A host's device (fromGPUDevice) outlives the engine's use of it.
   */
  private readonly ownsGPU: boolean;
  /** Runs `work`, which awaits a GPU promise, the way this device waits (DeviceOptions.waitFor). */
  readonly waitFor: <T>(work: () => Promise<T>) => Promise<T>;
  /**
   * The adapter's subgroup size when subgroups are enabled and the size is fixed (min = max); else
   * null. Read once: kernel selection asks on every matmul and convolution.
   */
  readonly subgroupSize: number | null;

  private constructor(readonly gpu: GPUDevice, opts: DeviceOptions, owns: boolean) {
    this.ownsGPU = owns;
    this.features = new Set(gpu.features as unknown as Iterable<string>);
    this.limits = gpu.limits;
    this.adapterName = opts.adapterName ?? 'unknown adapter';
    this.maxBindingBytes = Math.min(opts.maxBindingBytes ?? Infinity, gpu.limits.maxStorageBufferBindingSize);
    this.dispatchesPerSubmit = opts.dispatchesPerSubmit ?? 256;
    this.waitFor = opts.waitFor ?? ((work) => work());
    const info = (gpu as unknown as { adapterInfo?: { subgroupMinSize?: number; subgroupMaxSize?: number } }).adapterInfo;
    const min = info?.subgroupMinSize, max = info?.subgroupMaxSize;
    this.subgroupSize = this.features.has('subgroups') && typeof min === 'number' && min > 0 && min === max ? min : null;
    this.pool = new BufferPool((bytes) => this.createStorageBuffer(bytes));
    this.arena = gpu.createBuffer({ label: 'uniform arena', size: ARENA_BYTES, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
    gpu.addEventListener('uncapturederror', (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      this.errors.push(`${e.constructor?.name ?? 'GPUError'}: ${e.message}`);
    });
    gpu.lost.then((info) => {
      if (!this.destroyed) this.lostMessage = `${info.reason}: ${info.message}`;
    });
  }

  /** Wraps a GPUDevice that someone else created (a browser page, another engine). */
  static fromGPUDevice(gpu: GPUDevice, opts: DeviceOptions = {}): Device {
    return new Device(gpu, opts, false);
  }

  /** Requests a device from an adapter with every wanted feature it offers and its full limits. */
  static async fromAdapter(adapter: GPUAdapter, opts: DeviceOptions = {}): Promise<Device> {
    const offered = new Set(adapter.features as unknown as Iterable<string>);
    const requiredFeatures = WANTED_FEATURES.filter((f) => offered.has(f)) as GPUFeatureName[];
    const requiredLimits: Record<string, number> = {};
    for (const name of [
      'maxStorageBufferBindingSize', 'maxBufferSize', 'maxComputeWorkgroupStorageSize',
      'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY',
      'maxComputeWorkgroupSizeZ', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupsPerDimension',
    ]) {
      const v = (adapter.limits as unknown as Record<string, number>)[name];
      if (typeof v === 'number') requiredLimits[name] = v;
    }
    const gpu = await adapter.requestDevice({ requiredFeatures, requiredLimits, label: 'ddpo-webgpu' });
    const info = adapter.info;
    const adapterName = opts.adapterName ?? ([info?.vendor, info?.device || info?.description].filter(Boolean).join(' ') || 'adapter');
    return new Device(gpu, { ...opts, adapterName }, true);
  }

  get hasF16(): boolean { return this.features.has('shader-f16'); }
  get hasSubgroups(): boolean { return this.features.has('subgroups'); }
  get hasSubgroupMatrix(): boolean { return this.features.has('chromium-experimental-subgroup-matrix'); }
  get hasTimestamps(): boolean { return this.features.has('timestamp-query'); }

  // ---------------------------------------------------------------- memory

  private createStorageBuffer(bytes: number): GPUBuffer {
    this.checkAlive('allocate');
    if (bytes > this.limits.maxBufferSize) {
      throw new Error(`allocation of ${bytes} bytes exceeds this device's maxBufferSize (${this.limits.maxBufferSize}); use smaller batches`);
    }
    this.gpu.pushErrorScope('out-of-memory');
    const buffer = this.gpu.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    this.gpu.popErrorScope().then((e) => {
      if (e) this.errors.push(`out of GPU memory allocating ${bytes} bytes: ${e.message}`);
    });
    return buffer;
  }

  memory(): MemoryStats {
    return this.pool.snapshot();
  }

  /** Frees every pooled buffer back to the driver. */
  trim(): void {
    this.flush();
    this.pool.trim();
  }

  // ---------------------------------------------------------------- kernels

  private layoutFor(reads: number, writes: number): GPUBindGroupLayout {
    const key = `${reads}r${writes}w`;
    let layout = this.layouts.get(key);
    if (!layout) {
      const entries: GPUBindGroupLayoutEntry[] = [];
      for (let i = 0; i < reads + writes; i++) {
        entries.push({ binding: i, visibility: GPUShaderStage.COMPUTE, buffer: { type: i < reads ? 'read-only-storage' : 'storage' } });
      }
      entries.push({ binding: reads + writes, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'uniform' } });
      layout = this.gpu.createBindGroupLayout({ label: key, entries });
      this.layouts.set(key, layout);
    }
    return layout;
  }

  private pipelineFor(spec: DispatchSpec) {
    let p = this.pipelines.get(spec.key);
    if (!p) {
      const layout = this.layoutFor(spec.reads.length, spec.writes.length);
      const code = spec.code();
      this.gpu.pushErrorScope('validation');
      const module = this.gpu.createShaderModule({ label: spec.key, code });
      const pipeline = this.gpu.createComputePipeline({
        label: spec.key,
        layout: this.gpu.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: 'main' },
      });
      this.gpu.popErrorScope().then((e) => {
        if (e) this.errors.push(`shader for ${spec.label} (kernel ${spec.key}) failed to compile: ${e.message}\n${code}`);
      });
      p = { pipeline, layout };
      this.pipelines.set(spec.key, p);
    }
    return p;
  }

  /** Number of compiled pipelines (tests check that shapes do not create new ones). */
  get pipelineCount(): number { return this.pipelines.size; }

  /** Records one dispatch. It runs when the batch is submitted (by flush() or read()). */
  dispatch(spec: DispatchSpec): void {
    this.checkAlive(spec.label);
    const maxGroups = this.limits.maxComputeWorkgroupsPerDimension;
    if (spec.groups.some((g) => g > maxGroups)) {
      throw new Error(`${spec.label}: dispatch of ${spec.groups.join('×')} workgroups exceeds the limit ${maxGroups} per dimension`);
    }
    if (spec.groups.some((g) => g === 0)) return;
    for (const b of [...spec.reads, ...spec.writes]) {
      if (b.size > this.maxBindingBytes) {
        throw new Error(`${spec.label}: a binding of ${b.size} bytes exceeds the binding limit of ${this.maxBindingBytes} bytes; this op has no chunked path for it: use a smaller batch or shape`);
      }
    }
    const { pipeline, layout } = this.pipelineFor(spec);
    const paramBytes = spec.params.byteLength;
    const slot = Math.ceil(Math.max(paramBytes, 16) / UNIFORM_ALIGN) * UNIFORM_ALIGN;
    if (this.arenaUsed + slot > ARENA_BYTES || this.recorded >= this.dispatchesPerSubmit) this.flush();
    const offset = this.arenaUsed;
    this.arenaHost.set(new Uint8Array(spec.params.buffer, spec.params.byteOffset, paramBytes), offset);
    this.arenaUsed += slot;
    const entries: GPUBindGroupEntry[] = [];
    let i = 0;
    for (const b of [...spec.reads, ...spec.writes]) entries.push({ binding: i++, resource: { buffer: b.buffer, offset: b.offset, size: b.size } });
    entries.push({ binding: i, resource: { buffer: this.arena, offset, size: Math.max(paramBytes, 16) } });
    const bindGroup = this.gpu.createBindGroup({ label: spec.label, layout, entries });
    const pass = this.profiler ? this.profiledPass(spec.label, spec.key) : this.computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(spec.groups[0], spec.groups[1], spec.groups[2]);
    this.recorded++;
    this.dispatchCount++;
  }

  private computePass(): GPUComputePassEncoder {
    if (!this.encoder) this.encoder = this.gpu.createCommandEncoder();
    if (!this.pass) this.pass = this.encoder.beginComputePass();
    return this.pass;
  }

  /** The command encoder with no compute pass open, for commands recorded outside passes. */
  private encoderOutsidePass(): GPUCommandEncoder {
    if (this.pass) { this.pass.end(); this.pass = null; }
    if (!this.encoder) this.encoder = this.gpu.createCommandEncoder();
    return this.encoder;
  }

  /** A pass of its own for one dispatch, timed by the profiler. */
  private profiledPass(label: string, key: string): GPUComputePassEncoder {
    const profiler = this.profiler!;
    const encoder = this.encoderOutsidePass();
    if (profiler.full) profiler.resolve(encoder);
    this.pass = encoder.beginComputePass({ timestampWrites: profiler.next(label, key) });
    return this.pass;
  }

  /**
   * Starts timing every dispatch on the GPU (needs the 'timestamp-query' feature). Each dispatch
   * then runs in a pass of its own, which costs time: use it to find hot ops, not for totals.
   * `by: 'kernel'` groups by pipeline key instead of op name.
   */
  startProfile(opts: { by?: ProfileGrouping } = {}): void {
    if (!this.hasTimestamps) throw new Error(`profile: this device (${this.adapterName}) lacks the 'timestamp-query' feature`);
    if (this.profiler) throw new Error('profile: a profile is already running');
    this.flush();
    this.profiler = new DispatchProfiler(this.gpu, opts.by ?? 'op');
  }

  /** Stops the profile; GPU milliseconds and calls per op, slowest first. */
  async stopProfile(): Promise<ProfileEntry[]> {
    const profiler = this.profiler;
    if (!profiler) throw new Error('profile: no profile is running (call startProfile first)');
    profiler.resolve(this.encoderOutsidePass());
    this.profiler = null;
    await this.sync();
    return this.waitFor(() => profiler.report());
  }

  /** Records a buffer-to-buffer copy in order with the dispatches. */
  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.checkAlive('copy');
    this.encoderOutsidePass().copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
    this.recorded++;
  }

  /**
   * Writes host data into a buffer. Pending work is submitted first: queue.writeBuffer runs
   * before any command buffer submitted after it, and a pooled buffer may still be read by
   * recorded work.
   */
  write(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    this.checkAlive('upload');
    this.flush();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const padded = bytes.byteLength % 4 ? (() => { const p = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4); p.set(bytes); return p; })() : bytes;
    this.gpu.queue.writeBuffer(buffer, offset, padded);
  }

  /** Submits everything recorded so far. Does not wait. */
  flush(): void {
    if (this.pass) { this.pass.end(); this.pass = null; }
    if (!this.encoder) return;
    if (this.arenaUsed) this.gpu.queue.writeBuffer(this.arena, 0, this.arenaHost, 0, this.arenaUsed);
    this.gpu.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.arenaUsed = 0;
    this.recorded = 0;
    this.submitCount++;
  }

  /** Reads bytes back: the one place the engine waits for the GPU. */
  async read(buffer: GPUBuffer, offset: number, bytes: number, label = 'read'): Promise<ArrayBuffer> {
    this.checkAlive(label);
    const size = Math.ceil(bytes / 4) * 4;
    const staging = this.gpu.createBuffer({ size: Math.max(size, 4), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.copy(buffer, offset, staging, 0, size);
    this.flush();
    try {
      await this.waitFor(() => staging.mapAsync(GPUMapMode.READ));
    } catch (e) {
      staging.destroy();
      this.checkErrors(label);
      this.checkAlive(label);
      throw new Error(`${label}: reading back from the GPU failed: ${(e as Error).message}`);
    }
    const out = staging.getMappedRange().slice(0, bytes);
    staging.unmap();
    staging.destroy();
    this.checkErrors(label);
    return out;
  }

  /** Waits until the GPU has finished all submitted work; then reports any GPU error. */
  async sync(): Promise<void> {
    this.flush();
    await this.waitFor(() => this.gpu.queue.onSubmittedWorkDone());
    this.checkErrors('sync');
  }

  /** Throws the GPU errors reported since the last check, if any. */
  checkErrors(context: string): void {
    if (this.errors.length) {
      const msgs = this.errors.splice(0);
      throw new Error(`GPU error detected at ${context}:\n${msgs.join('\n')}`);
    }
  }

  private checkAlive(what: string): void {
    if (this.destroyed) throw new Error(`${what}: the device has been destroyed`);
    if (this.lostMessage) throw new Error(`${what}: the GPU device was lost (${this.lostMessage}); create a new device and reload the model`);
  }

  /**
   * Frees the engine's buffers and marks this Device unusable. The GPUDevice itself is destroyed
   * only when the engine created it (fromAdapter); a host's device (fromGPUDevice) stays alive.
   */
  destroy(): void {
    if (this.destroyed) return;
    this.flush();
    this.destroyed = true;
    this.pool.trim();
    this.arena.destroy();
    if (this.ownsGPU) this.gpu.destroy();
  }
}
