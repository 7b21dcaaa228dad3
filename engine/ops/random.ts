// Seeded random tensors from the counter-based Philox-4x32-10 stream (kernels/random.ts), and
// dropout built on it. The stream is a pure function of (seed, element counter): element i of a
// tensor drawn with `offset` uses counter offset + i, so
//   - the same (seed, offset, shape) gives the same tensor on every call and every dispatch layout;
//   - bits and uniforms are bit-identical to engine/random-ref.ts (and so across devices);
//   - normals use f32 sqrt/log/sin/cos, which devices implement to a few ulps: they match the
//     float64 reference within 1e-5·std absolute (lavapipe: at most 1.2e-6 over 2^20 samples;
//     the tests check 1e-5). The WGSL spec alone only promises sin/cos to 2^-11 absolute on
//     [-π, π], i.e. up to ~3e-3·std on a device that used all of that slack.
// Draws that must be independent need disjoint counter ranges: advance the offset by the
// number of elements drawn (RandomStream does this), or use different seeds.

import { record } from '../autograd.js';
import { DType, bytesOf, isFloat } from '../dtype.js';
import { checkShape, fmt, sizeOf } from '../shape.js';
import { Tensor, getDefaultDevice } from '../tensor.js';
import { Device } from '../device.js';
import { WG, grid } from '../../kernels/common.js';
import { RandomMode, randomKey, randomLayout, randomWGSL } from '../../kernels/random.js';
import { checkOffset, seedKey, uniformParams } from '../random-ref.js';
import { mapNew } from './elementwise.js';

interface Draw {
  op: string;
  mode: RandomMode;
  shape: readonly number[];
  dtype: DType;
  seed: number;
  offset: number;
  a: number;
  b: number;
  below: number;
  device?: Device;
}

function draw(d: Draw): Tensor {
  checkShape(d.op, d.shape);
  const n = sizeOf(d.shape);
  const what = `${d.op}(${fmt(d.shape)} ${d.dtype})`;
  const [k0, k1] = seedKey(what, d.seed);
  checkOffset(what, d.offset, n);
  const dev = d.device ?? getDefaultDevice();
  const out = new Tensor(dev, d.shape, d.dtype);
  if (n === 0) return out;
  const buf = out.buffer(d.op);
  const eb = bytesOf(d.dtype);
  // Split the output into windows that fit one binding, each starting at an aligned byte offset.
  const align = dev.limits.minStorageBufferOffsetAlignment;
  const step = Math.floor(dev.maxBindingBytes / align) * align / eb;
  if (step < 1) throw new Error(`${d.op}: the binding limit ${dev.maxBindingBytes} is below the offset alignment ${align}`);
  const label = `${d.op}(${fmt(d.shape)} ${d.dtype}, seed=${d.seed}, offset=${d.offset})`;
  for (let start = 0; start < n; start += step) {
    const count = Math.min(step, n - start);
    const c = d.offset + start;
    const block = Math.floor(c / 4);
    const shift = c - block * 4;
    const bytes = Math.min(buf.size - start * eb, Math.ceil((count * eb) / 4) * 4);
    dev.dispatch({
      label,
      key: randomKey(d.mode, d.dtype),
      code: () => randomWGSL(d.mode, d.dtype),
      reads: [],
      writes: [{ buffer: buf, offset: start * eb, size: bytes }],
      params: randomLayout.pack({
        blo: block % 4294967296, bhi: Math.floor(block / 4294967296), shift, n: count, k0, k1,
        outoff: 0, guard: 0, a: d.a, b: d.b, below: d.below,
      }),
      groups: grid(Math.ceil((count + shift) / 4 / WG), dev.limits.maxComputeWorkgroupsPerDimension),
    });
  }
  return out;
}

function floatDtype(op: string, shape: readonly number[], dtype: DType): 'f32' | 'f16' {
  if (dtype !== 'f32' && dtype !== 'f16') throw new Error(`${op}(${fmt(shape)}): dtype ${dtype} is not a float type (use randomBits for integers)`);
  return dtype;
}

/**
 * Raw u32 words of the Philox stream: element i is word (offset + i) of the stream for `seed`
 * (an integer in [0, 2^53); its low and high 32 bits form the Philox key).
 */
export function randomBits(shape: readonly number[], seed: number, offset = 0, device?: Device): Tensor {
  return draw({ op: 'randomBits', mode: 'bits', shape, dtype: 'u32', seed, offset, a: 0, b: 0, below: 0, device });
}

export interface UniformOptions {
  /** Counter of element 0 (default 0). */
  offset?: number;
  low?: number;
  high?: number;
  dtype?: 'f32' | 'f16';
  device?: Device;
}

/**
 * Uniform values in [low, high): u = (bits >> 8)·2^-24, then low + (high − low)·u in f32,
 * clamped to the largest value of dtype below high (rounding could otherwise reach high).
 * The [0, 1) stream is exact; with other bounds the f32 arithmetic is correctly rounded, so the
 * values are identical on every device and equal to randomUniformRef. f16 rounds on store.
 */
export function randomUniform(shape: readonly number[], seed: number, opts: UniformOptions = {}): Tensor {
  const dtype = floatDtype('randomUniform', shape, opts.dtype ?? 'f32');
  const { low, scale, below } = uniformParams(`randomUniform(${fmt(shape)} ${dtype})`, opts.low ?? 0, opts.high ?? 1, dtype);
  return draw({ op: 'randomUniform', mode: 'uniform', shape, dtype, seed, offset: opts.offset ?? 0, a: low, b: scale, below, device: opts.device });
}

export interface NormalOptions {
  offset?: number;
  mean?: number;
  std?: number;
  dtype?: 'f32' | 'f16';
  device?: Device;
}

/**
 * Normal values mean + std·z, z from Box–Muller in f32 on the block's word pairs (see
 * engine/random-ref.ts for the exact recipe). |z| ≤ 5.77 (u1 ≥ 2^-24). Agrees with
 * randomNormalRef within 1e-5·std on the devices we test (see the file comment).
 */
export function randomNormal(shape: readonly number[], seed: number, opts: NormalOptions = {}): Tensor {
  const dtype = floatDtype('randomNormal', shape, opts.dtype ?? 'f32');
  const mean = opts.mean ?? 0, std = opts.std ?? 1;
  if (!Number.isFinite(mean) || !Number.isFinite(std) || std < 0) throw new Error(`randomNormal(${fmt(shape)} ${dtype}): need finite mean and std ≥ 0, got mean ${mean}, std ${std}`);
  return draw({ op: 'randomNormal', mode: 'normal', shape, dtype, seed, offset: opts.offset ?? 0, a: mean, b: std, below: 0, device: opts.device });
}

/**
 * Inverted dropout: keeps x[i] where the uniform u_i (randomUniform(x.shape, seed, {offset}))
 * is ≥ p, scaled by 1/(1 − p); zero elsewhere. p = 0 is a copy, p = 1 gives zeros. Backward
 * recomputes the same mask from (seed, offset) instead of saving it, so it costs no memory.
 * The keep decision is exact (u and p in f32), so masks match dropoutMaskRef on every device.
 */
export function dropout(x: Tensor, p: number, seed: number, offset = 0): Tensor {
  if (!isFloat(x.dtype)) throw new Error(`dropout: ${x.describe()} is not a float tensor`);
  if (!(p >= 0 && p <= 1)) throw new Error(`dropout: probability ${p} for ${x.describe()} is not in [0, 1]`);
  const scale = p === 1 ? 0 : 1 / (1 - p);
  const apply = (v: Tensor) => {
    const u = randomUniform(x.shape, seed, { offset, device: x.device });
    try {
      return mapNew('dropout', 'select(0.0, a * P.s0, b >= P.s1)', [v, u], v.dtype, [scale, p], 'f32');
    } finally {
      u.dispose();
    }
  };
  const out = apply(x);
  return record('dropout', [x], out, [], (g) => [apply(g)]);
}

/**
 * A seed plus a running counter: each draw takes the next `size` counters, so successive draws
 * are independent and the whole sequence is reproducible from the seed (and resumable from
 * `offset`).
 */
export class RandomStream {
  constructor(readonly seed: number, public offset = 0, readonly device?: Device) {
    seedKey('RandomStream', seed);
    checkOffset('RandomStream', offset, 0);
  }

  private take(shape: readonly number[]): number {
    const at = this.offset;
    this.offset += sizeOf(shape);
    return at;
  }

  bits(shape: readonly number[]): Tensor {
    return randomBits(shape, this.seed, this.take(shape), this.device);
  }

  uniform(shape: readonly number[], opts: Omit<UniformOptions, 'offset' | 'device'> = {}): Tensor {
    return randomUniform(shape, this.seed, { ...opts, offset: this.take(shape), device: this.device });
  }

  normal(shape: readonly number[], opts: Omit<NormalOptions, 'offset' | 'device'> = {}): Tensor {
    return randomNormal(shape, this.seed, { ...opts, offset: this.take(shape), device: this.device });
  }

  dropout(x: Tensor, p: number): Tensor {
    return dropout(x, p, this.seed, this.take(x.shape));
  }
}
