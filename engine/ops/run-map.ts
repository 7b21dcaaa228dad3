// Runs the strided map kernel over tensors, splitting it where bindings would exceed the limit.

import { bytesOf } from '../dtype.js';
import { planChunks } from '../chunk.js';
import { MAX_RANK, contiguousStrides, fmt, mergeStridedDims } from '../shape.js';
import { Tensor } from '../tensor.js';
import { WG, grid } from '../../kernels/common.js';
import { MapSpec, ROW_RUN, ROW_WG, mapKey, mapLayout, mapWGSL } from '../../kernels/map.js';
import { kernelFamily } from '../kernel-family.js';

export interface MapOperand {
  t: Tensor;
  strides: readonly number[];
  /** Element offset into the tensor's storage. */
  offset?: number;
}

export type MapKernel = Omit<MapSpec, 'contiguous'>;

function isContiguous(shape: readonly number[], strides: readonly number[]): boolean {
  const c = contiguousStrides(shape);
  return shape.every((d, i) => d === 1 || strides[i] === c[i]);
}

/** out (viewed through output.strides) = kernel(inputs) over `shape`. */
export function runMap(kernel: MapKernel, shape: readonly number[], inputs: readonly MapOperand[], output: MapOperand, scalars: readonly [number, number] = [0, 0], label?: string): void {
  const all = [...inputs, output];
  const what = label ?? `${kernel.name}(${inputs.map((o) => o.t.describe()).join(', ')}) -> ${fmt(shape)}`;
  const dev = output.t.device;
  for (const o of all) {
    if (o.t.device !== dev) throw new Error(`${what}: tensors live on different devices`);
  }
  const buffers = all.map((o) => o.t.buffer(kernel.name));
  const chunks = planChunks(what, shape, all.map((o, k) => ({
    strides: o.strides, offset: o.offset ?? 0, elementBytes: bytesOf(o.t.dtype), bufferBytes: buffers[k].size,
  })), dev.maxBindingBytes, dev.limits.minStorageBufferOffsetAlignment);
  const layout = mapLayout(inputs.length);
  const rows = kernelFamily(dev) === 'software';
  for (const ch0 of chunks) {
    // Fewer dims to decode per element, the same elements (mergeStridedDims).
    const merged = mergeStridedDims(ch0.shape, ch0.operands.map((o) => o.strides));
    const ch = { ...ch0, shape: merged.shape, operands: ch0.operands.map((o, k) => ({ ...o, strides: merged.strides[k] })) };
    const n = ch.shape.reduce((a, b) => a * b, 1);
    const contiguous = ch.operands.every((o) => isContiguous(ch.shape, o.strides));
    const spec: MapSpec = { ...kernel, contiguous, rows };
    const strides = new Array<number>(MAX_RANK * all.length).fill(0);
    ch.operands.forEach((o, k) => o.strides.forEach((s, d) => { strides[k * MAX_RANK + d] = s; }));
    dev.dispatch({
      label: what,
      key: mapKey(spec),
      code: () => mapWGSL(spec),
      reads: ch.operands.slice(0, inputs.length).map((o, k) => ({ buffer: buffers[k], offset: o.windowOffset, size: o.windowSize })),
      writes: [{ buffer: buffers[inputs.length], offset: ch.operands[inputs.length].windowOffset, size: ch.operands[inputs.length].windowSize }],
      params: layout.pack({ shape: ch.shape, strides, offs: ch.operands.map((o) => o.offset), n, rank: ch.shape.length, obase: ch.operands[inputs.length].windowOffset / bytesOf(output.t.dtype), s0: scalars[0], s1: scalars[1] }),
      groups: grid(spec.rows && contiguous ? Math.ceil(n / (ROW_RUN * ROW_WG)) : spec.rows ? Math.ceil(((n / ch.shape[ch.shape.length - 1]) * Math.ceil(ch.shape[ch.shape.length - 1] / ROW_RUN)) / ROW_WG) : Math.ceil(n / WG), dev.limits.maxComputeWorkgroupsPerDimension),
    });
  }
}
