// A Tensor is a shape, a dtype and a reference to GPU storage. Storage is reference counted so
// that reshape/detach views and tensors saved for backward share memory; the buffer returns to
// the pool when the last reference is disposed.

import { Device } from './device.js';
import { DType, HostArray, bytesOf, f16BitsToF32, f32ToF16Bits, hostArrayFor } from './dtype.js';
import { GraphPiece, Tracked, track } from './scope.js';
import { Shape, checkShape, fmt, sizeOf } from './shape.js';

export class Storage {
  refs = 1;
  constructor(readonly device: Device, readonly buffer: GPUBuffer, readonly bytes: number) {}
  release(): void {
    if (--this.refs === 0) this.device.pool.release(this.buffer);
  }
}

/** What autograd needs from a graph node; implemented in autograd.ts. */
export interface GradNode extends GraphPiece {
  readonly op: string;
}

let defaultDevice: Device | null = null;

export function setDefaultDevice(d: Device | null): void {
  defaultDevice = d;
}

export function getDefaultDevice(): Device {
  if (!defaultDevice) throw new Error('no default device: call setDefaultDevice(await createNodeDevice()) or pass a device');
  return defaultDevice;
}

let nextId = 1;

export class Tensor implements Tracked {
  readonly id = nextId++;
  readonly shape: readonly number[];
  /** True for parameters and inputs we want gradients for; set by requireGrad(). */
  requiresGrad = false;
  /** Accumulated gradient of a leaf (always f32; see dtype.ts). */
  grad: Tensor | null = null;
  /** The op that produced this tensor, when it was produced under autograd. */
  node: GradNode | null = null;
  private storage: Storage | null;

  constructor(readonly device: Device, shape: Shape, readonly dtype: DType, storage?: Storage) {
    checkShape('tensor', shape);
    if (dtype === 'f16' && !device.hasF16) throw new Error(`tensor: dtype f16 needs the device feature shader-f16, which ${device.adapterName} does not offer; use f32`);
    this.shape = Object.freeze([...shape]);
    const bytes = this.size * bytesOf(dtype);
    if (storage) {
      if (storage.bytes < bytes) throw new Error(`tensor: storage of ${storage.bytes} bytes is too small for ${fmt(shape)} ${dtype}`);
      storage.refs++;
      this.storage = storage;
    } else {
      this.storage = new Storage(device, device.pool.acquire(bytes), bytes);
    }
    track(this);
  }

  get size(): number { return sizeOf(this.shape); }
  get rank(): number { return this.shape.length; }
  get bytes(): number { return this.size * bytesOf(this.dtype); }
  get isDisposed(): boolean { return this.storage === null; }

  /** The storage's GPU buffer; `op` names the caller in the error for a disposed tensor. */
  buffer(op = 'tensor'): GPUBuffer {
    if (!this.storage) throw new Error(`${op}: a tensor ${this.describe()} was used after dispose()`);
    return this.storage.buffer;
  }

  /** @internal */
  storageRef(op = 'tensor'): Storage {
    if (!this.storage) throw new Error(`${op}: a tensor ${this.describe()} was used after dispose()`);
    return this.storage;
  }

  describe(): string {
    return `${fmt(this.shape)} ${this.dtype}`;
  }

  /** Marks a leaf as trainable. Returns this. */
  requireGrad(on = true): this {
    if (on && this.dtype !== 'f32' && this.dtype !== 'f16') throw new Error(`requireGrad: ${this.describe()} is not a float tensor`);
    this.requiresGrad = on;
    return this;
  }

  get isLeaf(): boolean { return this.node === null; }

  dispose(): void {
    if (!this.storage) return;
    this.storage.release();
    this.storage = null;
  }

  /** Copies the values to the host (f16 comes back as f32). */
  async data(): Promise<HostArray> {
    const buf = this.buffer('data');
    const raw = await this.device.read(buf, 0, this.bytes, `data() of ${this.describe()}`);
    if (this.dtype === 'f16') {
      const h = new Uint16Array(raw);
      const out = new Float32Array(h.length);
      for (let i = 0; i < h.length; i++) out[i] = f16BitsToF32(h[i]);
      return out;
    }
    const out = hostArrayFor(this.dtype, this.size);
    out.set(new (out.constructor as Float32ArrayConstructor)(raw));
    return out;
  }

  /** The value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item(): tensor ${this.describe()} has ${this.size} elements, not 1`);
    return (await this.data())[0];
  }

  toString(): string {
    return `Tensor${fmt(this.shape)} ${this.dtype}${this.requiresGrad ? ' requiresGrad' : ''}${this.node ? ` (${this.node.op})` : ''}`;
  }
}

/** Uploads host values as a tensor. */
export function tensor(values: ArrayLike<number>, shape?: Shape, dtype: DType = 'f32', device = getDefaultDevice()): Tensor {
  const shp = shape ?? [values.length];
  const n = sizeOf(shp);
  if (values.length !== n) throw new Error(`tensor: ${values.length} values do not fill shape ${fmt(shp)} (${n} elements)`);
  const t = new Tensor(device, shp, dtype);
  if (n === 0) return t;
  let data: ArrayBufferView;
  if (dtype === 'f16') {
    const h = new Uint16Array(n);
    for (let i = 0; i < n; i++) h[i] = f32ToF16Bits(values[i]);
    data = h;
  } else {
    const arr = hostArrayFor(dtype, n);
    for (let i = 0; i < n; i++) arr[i] = values[i];
    data = arr;
  }
  device.write(t.buffer('tensor'), 0, data);
  return t;
}

/** Wraps an existing tensor's storage under a new shape (same element count): no copy. */
export function viewOf(t: Tensor, shape: Shape): Tensor {
  return new Tensor(t.device, shape, t.dtype, t.storageRef('reshape'));
}
