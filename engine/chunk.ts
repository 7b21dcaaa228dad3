// Splitting strided problems so that no binding exceeds the binding limit.
//
// A strided operand reads element offset + Σ idx_d·stride_d. If every operand's extent fits in
// one binding, the op runs as one dispatch. Otherwise we split along the outermost dimension k
// whose single slice fits, enumerate the indices of the dimensions before k on the CPU, and bind
// a window of each buffer (aligned to minStorageBufferOffsetAlignment) per chunk.

export interface StridedOperand {
  strides: readonly number[];
  /** Offset in elements into the buffer. */
  offset: number;
  elementBytes: number;
  bufferBytes: number;
}

export interface ChunkOperand {
  strides: number[];
  /** Offset in elements from the start of the bound window. */
  offset: number;
  windowOffset: number;
  windowSize: number;
}

export interface Chunk {
  shape: number[];
  operands: ChunkOperand[];
}

function extent(shape: readonly number[], strides: readonly number[], from: number): number {
  let e = 1;
  for (let d = from; d < shape.length; d++) e += (shape[d] - 1) * strides[d];
  return e;
}

/** A binding of the whole of t's elements (rounded up to a 4-byte multiple, at least 4 bytes). */
export function wholeBinding(t: { bytes: number; buffer(op: string): GPUBuffer }, op: string): { buffer: GPUBuffer; offset: number; size: number } {
  return { buffer: t.buffer(op), offset: 0, size: Math.max(4, Math.ceil(t.bytes / 4) * 4) };
}

/** The aligned window of op's buffer holding elements [base, base + elems), and base's offset in it. */
export function bindingWindow(op: Pick<StridedOperand, 'elementBytes' | 'bufferBytes'>, base: number, elems: number, align: number): { windowOffset: number; windowSize: number; offset: number } {
  const startBytes = base * op.elementBytes;
  const windowOffset = Math.floor(startBytes / align) * align;
  const end = Math.min(op.bufferBytes, Math.ceil(((base + elems) * op.elementBytes) / 4) * 4);
  return { windowOffset, windowSize: Math.max(4, end - windowOffset), offset: (startBytes - windowOffset) / op.elementBytes };
}

/**
 * Splits along a dimension below `splittable` (default: any). Reductions pass the number of
 * kept dimensions so that a reduced run is never split.
 */
export function planChunks(op: string, shape: readonly number[], operands: readonly StridedOperand[], maxBinding: number, align: number, splittable = shape.length): Chunk[] {
  const rank = shape.length;
  if (shape.some((d) => d === 0)) return [];
  const fits = (k: number, count: number) => operands.every((o) => {
    const elems = (count - 1) * (k < rank ? o.strides[k] : 0) + extent(shape, o.strides, k + 1);
    return elems * o.elementBytes + align <= maxBinding;
  });
  const whole = operands.every((o) => {
    const w = bindingWindow(o, o.offset, extent(shape, o.strides, 0), align);
    return w.windowSize <= maxBinding;
  });
  if (whole || rank === 0) {
    return [{
      shape: [...shape],
      operands: operands.map((o) => ({ strides: [...o.strides], ...bindingWindow(o, o.offset, extent(shape, o.strides, 0), align) })),
    }];
  }
  let k = 0;
  while (k < splittable && !fits(k, 1)) k++;
  if (k === splittable) throw new Error(`${op}: one slice of this op does not fit the binding limit of ${maxBinding} bytes and it cannot be split further; use smaller shapes`);
  // Largest slice count along k that fits.
  let lo = 1, hi = shape[k];
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(k, mid)) lo = mid; else hi = mid - 1;
  }
  const count = lo;
  const outer = shape.slice(0, k);
  const nOuter = outer.reduce((a, b) => a * b, 1);
  const chunks: Chunk[] = [];
  const idx = new Array<number>(k).fill(0);
  for (let n = 0; n < nOuter; n++) {
    let r = n;
    for (let d = k - 1; d >= 0; d--) { idx[d] = r % outer[d]; r = Math.floor(r / outer[d]); }
    for (let i0 = 0; i0 < shape[k]; i0 += count) {
      const c = Math.min(count, shape[k] - i0);
      const sub = [c, ...shape.slice(k + 1)];
      chunks.push({
        shape: sub,
        operands: operands.map((o) => {
          let base = o.offset + i0 * o.strides[k];
          for (let d = 0; d < k; d++) base += idx[d] * o.strides[d];
          const strides = [o.strides[k], ...o.strides.slice(k + 1)];
          return { strides, ...bindingWindow(o, base, extent(sub, strides, 0), align) };
        }),
      });
    }
  }
  return chunks;
}
