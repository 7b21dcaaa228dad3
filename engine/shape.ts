// Shape arithmetic shared by every op: sizes, strides, broadcasting and axis normalisation.

export type Shape = readonly number[];

/** Highest rank any kernel accepts: shapes and strides travel to the GPU as 8-wide uniforms. */
export const MAX_RANK = 8;

export function sizeOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

export function fmt(shape: Shape): string {
  return `[${shape.join(',')}]`;
}

export function sameShape(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function checkShape(op: string, shape: Shape): void {
  if (shape.length > MAX_RANK) throw new Error(`${op}: rank ${shape.length} of shape ${fmt(shape)} exceeds the maximum rank ${MAX_RANK}`);
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`${op}: invalid shape ${fmt(shape)}: dimensions must be non-negative integers`);
  }
}

/** NumPy broadcasting of any number of shapes; throws naming the op and all shapes. */
export function broadcastShapes(op: string, ...shapes: Shape[]): number[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out = new Array<number>(rank).fill(1);
  for (const s of shapes) {
    for (let i = 0; i < s.length; i++) {
      const o = rank - s.length + i;
      const d = s[i];
      if (d === out[o] || d === 1) continue;
      if (out[o] === 1) out[o] = d;
      else throw new Error(`${op}: shapes ${shapes.map(fmt).join(' and ')} cannot be broadcast together (dimension ${o}: ${out[o]} vs ${d})`);
    }
  }
  return out;
}

/** Strides to read a contiguous tensor of `shape` as if it had the broadcast shape `to` (0 = repeated). */
export function broadcastStrides(shape: Shape, to: Shape): number[] {
  const src = contiguousStrides(shape);
  const out = new Array<number>(to.length).fill(0);
  for (let i = 0; i < shape.length; i++) {
    const o = to.length - shape.length + i;
    out[o] = shape[i] === 1 && to[o] !== 1 ? 0 : src[i];
  }
  return out;
}

/** Normalises one axis (negative counts from the end). */
export function normAxis(op: string, axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= Math.max(rank, 1)) throw new Error(`${op}: axis ${axis} is out of range for rank ${rank}`);
  return a;
}

/** Normalises a list of axes (undefined = all), sorted and without repeats. */
export function normAxes(op: string, axes: number | readonly number[] | undefined, rank: number): number[] {
  if (axes === undefined) return Array.from({ length: rank }, (_, i) => i);
  const list = typeof axes === 'number' ? [axes] : axes;
  const out = [...new Set(list.map((a) => normAxis(op, a, rank)))].sort((x, y) => x - y);
  if (out.length !== list.length) throw new Error(`${op}: repeated axis in ${JSON.stringify(list)}`);
  return out;
}

/** Which axes of `to` were broadcast from `from` (for summing gradients back). */
export function broadcastAxes(from: Shape, to: Shape): number[] {
  const axes: number[] = [];
  for (let i = 0; i < to.length; i++) {
    const j = i - (to.length - from.length);
    if (j < 0 || (from[j] === 1 && to[i] !== 1)) axes.push(i);
  }
  return axes;
}

/**
 * A strided walk over `shape` by several operands (each with its own strides), in fewer dims:
 * size-1 dims are dropped and neighbours merged where every operand steps over the next dim
 * exactly (stride_d = stride_{d+1}·shape_{d+1}). The elements and their order are unchanged; at
 * least one dim is left.
 */
export function mergeStridedDims(shape: Shape, strides: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const keep = shape.map((d) => d !== 1);
  let sh = shape.filter((_, i) => keep[i]);
  let st = strides.map((s) => s.filter((_, i) => keep[i]));
  for (let i = sh.length - 2; i >= 0; i--) {
    if (st.every((s) => s[i] === s[i + 1] * sh[i + 1])) {
      sh = [...sh.slice(0, i), sh[i] * sh[i + 1], ...sh.slice(i + 2)];
      st = st.map((s) => [...s.slice(0, i), s[i + 1], ...s.slice(i + 2)]);
    }
  }
  if (!sh.length) { sh = [1]; st = st.map(() => [0]); }
  return { shape: sh, strides: st };
}
