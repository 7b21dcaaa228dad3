// Image resampling exactly as PIL's Image.resize does it for 8-bit images (Pillow's
// libImaging/Resample.c): separable passes, each output sample a weighted sum of an input window
// with fixed-point integer weights, rounded and clamped back to uint8 after every pass. When
// shrinking, the filter's support grows with the scale factor (PIL's antialiasing), so a 512 →
// 224 bicubic pass reads about 11 inputs per output instead of 4.
//
// The weights are computed on the host in float64 with Pillow's formulas and operation order
// (precompute_coeffs, then normalize_coeffs_8bpc), so they are the same integers Pillow uses; the
// GPU pass (kernels/resample.ts) is integer arithmetic, so results are bit-identical to PIL's.
// Values are uint8 held in f32 tensors. Forward only (no gradient): it serves reward models.

import { fmt, normAxis } from '../shape.js';
import { Tensor, tensor } from '../tensor.js';
import { WG, grid } from '../../kernels/common.js';
import { RESAMPLE_KEY, resampleLayout, resampleWGSL } from '../../kernels/resample.js';

const PRECISION_BITS = 22;

export type PilFilter = 'bicubic' | 'bilinear';

/** Pillow's filters: support and kernel (bicubic with a = −0.5). */
const FILTERS: Record<PilFilter, { support: number; f: (x: number) => number }> = {
  bicubic: {
    support: 2,
    f: (x) => {
      const a = -0.5;
      if (x < 0) x = -x;
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
  bilinear: { support: 1, f: (x) => { if (x < 0) x = -x; return x < 1 ? 1 - x : 0; } },
};

/** The integer weights of one resampling pass: per output, its window [bounds[2o], +bounds[2o+1]) and ks weights. */
export interface PilWeights {
  inSize: number;
  outSize: number;
  ks: number;
  bounds: Int32Array;
  coef: Int32Array;
}

/** Pillow's weights for resizing an axis of inSize samples to outSize (identity when equal: PIL skips that pass). */
export function pilWeights(inSize: number, outSize: number, filter: PilFilter = 'bicubic'): PilWeights {
  if (!Number.isInteger(inSize) || !Number.isInteger(outSize) || inSize < 1 || outSize < 1) {
    throw new Error(`pilWeights: sizes must be positive integers, got ${inSize} → ${outSize}`);
  }
  if (inSize === outSize) {
    const bounds = new Int32Array(2 * outSize), coef = new Int32Array(outSize);
    for (let o = 0; o < outSize; o++) { bounds[2 * o] = o; bounds[2 * o + 1] = 1; coef[o] = 1 << PRECISION_BITS; }
    return { inSize, outSize, ks: 1, bounds, coef };
  }
  const { support: base, f } = FILTERS[filter];
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = base * filterscale;
  const ks = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(2 * outSize), coef = new Int32Array(outSize * ks);
  const k = new Float64Array(ks);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const ss = 1 / filterscale;
    // C's (int) truncates toward zero.
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) { const w = f((x + xmin - center + 0.5) * ss); k[x] = w; ww += w; }
    for (let x = 0; x < ks; x++) {
      const w = x < xmax ? (ww !== 0 ? k[x] / ww : k[x]) : 0;
      coef[o * ks + x] = w < 0 ? Math.trunc(-0.5 + w * (1 << PRECISION_BITS)) : Math.trunc(0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[2 * o] = xmin;
    bounds[2 * o + 1] = xmax;
  }
  return { inSize, outSize, ks, bounds, coef };
}

/**
 * One PIL resampling pass along `axis` of x (f32 holding uint8 values 0..255): outputs
 * [from, from + count) of the resized axis (default all). Returns a new f32 tensor of uint8 values.
 */
export function pilResample(x: Tensor, axis: number, w: PilWeights, from = 0, count = w.outSize): Tensor {
  const a = normAxis('pilResample', axis, x.rank);
  const label = `pilResample(${x.describe()}, axis=${axis}, ${w.inSize} → ${w.outSize}, outputs [${from}, ${from + count}))`;
  if (x.dtype !== 'f32') throw new Error(`${label}: x must be f32 holding uint8 values, got ${x.dtype}`);
  if (x.shape[a] !== w.inSize) throw new Error(`${label}: axis ${axis} of ${fmt(x.shape)} has ${x.shape[a]} samples, the weights are for ${w.inSize}`);
  if (!Number.isInteger(from) || !Number.isInteger(count) || from < 0 || count < 1 || from + count > w.outSize) {
    throw new Error(`${label}: outputs [${from}, ${from + count}) are not within [0, ${w.outSize})`);
  }
  const dev = x.device;
  const pre = x.shape.slice(0, a).reduce((p, d) => p * d, 1);
  const post = x.shape.slice(a + 1).reduce((p, d) => p * d, 1);
  const outShape = [...x.shape];
  outShape[a] = count;
  const out = new Tensor(dev, outShape, 'f32');
  for (const [what, bytes] of [['input', x.size * 4], ['output', out.size * 4]] as const) {
    if (bytes > dev.maxBindingBytes) throw new Error(`${label}: the ${what} (${bytes} bytes) exceeds the binding limit of ${dev.maxBindingBytes} bytes; resample fewer images at a time`);
  }
  const bounds = tensor(w.bounds, [w.bounds.length], 'i32', dev);
  const coef = tensor(w.coef, [w.coef.length], 'i32', dev);
  const op = 'pilResample';
  try {
    const total = pre * count * post;
    dev.dispatch({
      label,
      key: RESAMPLE_KEY,
      code: resampleWGSL,
      reads: [x.buffer(op), bounds.buffer(op), coef.buffer(op)].map((buffer) => ({ buffer, offset: 0, size: buffer.size })),
      writes: [{ buffer: out.buffer(op), offset: 0, size: out.buffer(op).size }],
      params: resampleLayout.pack({ total, n: count, post, len: w.inSize, o0: from, ks: w.ks }),
      groups: grid(Math.ceil(total / WG), dev.limits.maxComputeWorkgroupsPerDimension),
    });
  } finally {
    bounds.dispose();
    coef.dispose();
  }
  return out;
}
