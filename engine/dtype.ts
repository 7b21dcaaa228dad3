// Element types a tensor can hold, and what each means for storage and for WGSL.
//
// Precision policy (why f16 is "storage only"): f16 halves the memory of frozen weights and
// activations, but its 10-bit mantissa loses gradients, optimizer moments and long sums. So every
// kernel loads f16 values into f32, computes and accumulates in f32, and only rounds to f16 when it
// stores an f16 output. Trainable parameters, their gradients, optimizer state, losses and
// log-probabilities are kept in f32 by the code that creates them.

export type DType = 'f32' | 'f16' | 'i32' | 'u32';

export const DTYPES: readonly DType[] = ['f32', 'f16', 'i32', 'u32'];

export function bytesOf(dtype: DType): number {
  return dtype === 'f16' ? 2 : 4;
}

/** The WGSL type of one stored element. */
export function wgslType(dtype: DType): string {
  return dtype;
}

export function isFloat(dtype: DType): boolean {
  return dtype === 'f32' || dtype === 'f16';
}

/** The typed array used on the CPU side for uploads and readbacks. f16 is converted from/to f32. */
export type HostArray = Float32Array | Int32Array | Uint32Array;

export function hostArrayFor(dtype: DType, n: number): HostArray {
  switch (dtype) {
    case 'i32': return new Int32Array(n);
    case 'u32': return new Uint32Array(n);
    default: return new Float32Array(n);
  }
}

// ---- f16 <-> f32 conversion on the CPU (round to nearest even) ----
const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

export function f32ToF16Bits(value: number): number {
  f32buf[0] = value;
  const x = u32buf[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0); // inf / nan
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow to inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow to zero
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && (half & 1))) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (half & 1))) half++; // may carry into exponent: correct
  return sign | half;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Rounds a number to the nearest f16 value (as a JS number): what an f16 store would keep. */
export function roundToF16(x: number): number {
  return f16BitsToF32(f32ToF16Bits(x));
}
