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
import type { PilWeights } from '../resample-weights.js';

export type { PilFilter, PilWeights } from '../resample-weights.js';
export { pilWeights } from '../resample-weights.js';

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
