// The engine's random generator on the CPU: the same counter-based Philox-4x32-10 stream that
// kernels/random.ts computes on the GPU, with the same mapping from (seed, offset, element) to
// values. Tests compare the GPU against it; users can use it to reproduce a GPU tensor's values
// (or a part of them) without a device.
//
// The stream (shared with the GPU, see kernels/random.ts):
//   key     = (seed mod 2^32, floor(seed / 2^32))              seed: an integer in [0, 2^53)
//   element c = offset + i of a tensor lies in Philox block b = floor(c / 4), lane c mod 4;
//   block b is philox4x32_10(counter = (b mod 2^32, floor(b / 2^32), 0, 0), key).
//   bits    = word[lane]
//   uniform = (bits >> 8) · 2^-24 in [0, 1), then low + (high - low)·u in f32 arithmetic
//   normal  = Box–Muller on the block's two word pairs (w0, w1) and (w2, w3):
//             u1 = ((w >> 8) + 1)·2^-24 in (0, 1], u2 = (w' >> 8)·2^-24,
//             r = sqrt(-2 ln u1), θ = 2π·u2 − π, lanes 0..3 = r0·cos θ0, r0·sin θ0, r1·cos θ1, r1·sin θ1.
// Because element c depends only on (seed, offset + i), a tensor's values never depend on how
// the GPU work was laid out, and a larger offset shifts the stream: element i with offset k is
// element i + k with offset 0.

// The constants are the kernel's (kernels/random.ts); this reference reads them from there.
import { PHILOX_M0, PHILOX_M1, PHILOX_ROUNDS, PHILOX_W0, PHILOX_W1 } from '../kernels/random.js';

/** High 32 bits of the 64-bit product of two u32 (exact: every partial product fits a double). */
function mulhi32(a: number, b: number): number {
  const al = a & 0xffff, ah = a >>> 16, bl = b & 0xffff, bh = b >>> 16;
  const ll = al * bl, lh = al * bh, hl = ah * bl, hh = ah * bh;
  const mid = (ll >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (hh + (lh >>> 16) + (hl >>> 16) + Math.floor(mid / 65536)) >>> 0;
}

/** Philox-4x32-10 of one 128-bit counter under a 64-bit key. */
export function philox4x32(counter: readonly number[], key: readonly number[]): [number, number, number, number] {
  let c0 = counter[0] >>> 0, c1 = counter[1] >>> 0, c2 = counter[2] >>> 0, c3 = counter[3] >>> 0;
  let k0 = key[0] >>> 0, k1 = key[1] >>> 0;
  for (let r = 0; r < PHILOX_ROUNDS; r++) {
    if (r > 0) { k0 = (k0 + PHILOX_W0) >>> 0; k1 = (k1 + PHILOX_W1) >>> 0; }
    const hi0 = mulhi32(PHILOX_M0, c0), lo0 = Math.imul(PHILOX_M0, c0) >>> 0;
    const hi1 = mulhi32(PHILOX_M1, c2), lo1 = Math.imul(PHILOX_M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  return [c0, c1, c2, c3];
}

const TWO32 = 4294967296;

/** The key words of a seed; throws unless the seed is an integer in [0, 2^53). */
export function seedKey(op: string, seed: number): [number, number] {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`${op}: seed ${seed} must be an integer in [0, 2^53)`);
  return [seed % TWO32, Math.floor(seed / TWO32)];
}

/** Checks an offset (a non-negative integer below 2^53 with room for n elements). */
export function checkOffset(op: string, offset: number, n: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + n)) {
    throw new Error(`${op}: offset ${offset} must be an integer in [0, 2^53 - ${n}] (this tensor has ${n} elements)`);
  }
}

/** Visits the Philox blocks that cover elements [offset, offset + n): fn(block words, first element index, first lane, lanes). */
function eachBlock(n: number, seed: number, offset: number, fn: (w: number[], i: number, lane: number, end: number) => void, op: string): void {
  const key = seedKey(op, seed);
  checkOffset(op, offset, n);
  let i = 0;
  while (i < n) {
    const c = offset + i;
    const b = Math.floor(c / 4);
    const lane = c - b * 4;
    const w = philox4x32([b % TWO32, Math.floor(b / TWO32), 0, 0], key);
    const end = Math.min(4, lane + (n - i));
    fn(w, i, lane, end);
    i += end - lane;
  }
}

/** n raw u32 words of the stream from `offset`. */
export function randomBitsRef(n: number, seed: number, offset = 0): Uint32Array {
  const out = new Uint32Array(n);
  eachBlock(n, seed, offset, (w, i, lane, end) => { for (let l = lane; l < end; l++) out[i + l - lane] = w[l]; }, 'randomBitsRef');
  return out;
}

/** The uniform in [0, 1) that one word gives: its top 24 bits, exact in f32. */
export function bitsToUnit(w: number): number {
  return (w >>> 8) * 2 ** -24;
}

/** The largest f32 (or f16, for 'f16') strictly below x: uniforms are clamped to it so they stay below `high` after rounding. */
export function floatBelow(x: number, dtype: 'f32' | 'f16'): number {
  if (dtype === 'f32') {
    const f = new Float32Array([x]);
    const u = new Uint32Array(f.buffer);
    if (f[0] >= x) {
      // Step one ulp toward -inf.
      if (f[0] === 0) { u[0] = 0x80000001; } else if (f[0] > 0) u[0] -= 1; else u[0] += 1;
    }
    return f[0];
  }
  // f16: walk the f16 grid (at most a few steps).
  let bits = f32ToF16Round(x);
  let v = f16ToNumber(bits);
  while (v >= x) {
    bits = v > 0 ? bits - 1 : v === 0 ? 0x8001 : bits + 1;
    v = f16ToNumber(bits);
  }
  return v;
}

// Minimal f16 helpers (kept local so this file has no engine imports and runs anywhere).
function f16ToNumber(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f, mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}
function f32ToF16Round(x: number): number {
  // Nearest f16 by search on the magnitude (only used for clamping bounds, so speed is irrelevant).
  const sign = x < 0 ? 0x8000 : 0;
  const a = Math.abs(x);
  let lo = 0, hi = 0x7c00;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (f16ToNumber(mid) <= a) lo = mid; else hi = mid - 1; }
  return sign | lo;
}

export interface UniformRefOptions {
  offset?: number;
  low?: number;
  high?: number;
  /** The dtype the GPU stores; 'f16' only changes the clamp below `high` (round the result to f16 yourself). */
  dtype?: 'f32' | 'f16';
}

/** The f32 scalars a uniform draw uses: low, high − low and the clamp below high. */
export function uniformParams(op: string, low: number, high: number, dtype: 'f32' | 'f16'): { low: number; scale: number; below: number } {
  if (!Number.isFinite(low) || !Number.isFinite(high) || !(low < high)) throw new Error(`${op}: need finite low < high, got [${low}, ${high})`);
  if (!Number.isFinite(Math.fround(high - low)) || !Number.isFinite(Math.fround(low))) throw new Error(`${op}: the range [${low}, ${high}) overflows f32`);
  const below = floatBelow(high, dtype);
  if (below < Math.fround(low)) throw new Error(`${op}: the range [${low}, ${high}) holds no ${dtype} value`);
  return { low: Math.fround(low), scale: Math.fround(high - low), below };
}

/** n uniforms in [low, high), exactly the f32 values the GPU computes (as float64 numbers). */
export function randomUniformRef(n: number, seed: number, opts: UniformRefOptions = {}): Float64Array {
  const { low, scale, below } = uniformParams('randomUniformRef', opts.low ?? 0, opts.high ?? 1, opts.dtype ?? 'f32');
  const bits = randomBitsRef(n, seed, opts.offset ?? 0);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const v = Math.fround(low + Math.fround(scale * bitsToUnit(bits[i])));
    out[i] = Math.min(v, below);
  }
  return out;
}

export interface NormalRefOptions {
  offset?: number;
  mean?: number;
  std?: number;
}

/** The two standard normals (cos and sin branch) that a pair of words gives, in float64. */
export function boxMuller(wa: number, wb: number): [number, number] {
  const u1 = ((wa >>> 8) + 1) * 2 ** -24;
  const u2 = (wb >>> 8) * 2 ** -24;
  const r = Math.sqrt(-2 * Math.log(u1));
  const theta = 2 * Math.PI * u2 - Math.PI;
  return [r * Math.cos(theta), r * Math.sin(theta)];
}

/** n normals (mean + std·z) in float64; the GPU's f32 values agree within the tolerance in random.ts. */
export function randomNormalRef(n: number, seed: number, opts: NormalRefOptions = {}): Float64Array {
  const mean = opts.mean ?? 0, std = opts.std ?? 1;
  const out = new Float64Array(n);
  eachBlock(n, seed, opts.offset ?? 0, (w, i, lane, end) => {
    const z = [...boxMuller(w[0], w[1]), ...boxMuller(w[2], w[3])];
    for (let l = lane; l < end; l++) out[i + l - lane] = mean + std * z[l];
  }, 'randomNormalRef');
  return out;
}

/** The keep mask dropout(x, p, seed, offset) uses: 1 where the uniform is ≥ p (in f32). */
export function dropoutMaskRef(n: number, p: number, seed: number, offset = 0): Uint8Array {
  const bits = randomBitsRef(n, seed, offset);
  const pf = Math.fround(p);
  return Uint8Array.from(bits, (w) => (bitsToUnit(w) >= pf ? 1 : 0));
}
