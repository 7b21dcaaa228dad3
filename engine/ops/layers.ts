// Small layers Stable Diffusion's UNet needs: nearest 2× upsampling, non-overlapping average
// pooling, GEGLU and the sinusoidal timestep embedding. All run on existing kernels (the strided
// map kernel and the reduction) so they add at most a few map pipelines, never a new shader kind.

import { noGrad, record } from '../autograd.js';
import { DType, isFloat } from '../dtype.js';
import { contiguousStrides } from '../shape.js';
import { Tensor, tensor } from '../tensor.js';
import { helpersFor } from '../../kernels/math.js';
import { cast, cos, mul, mulScalar, sin } from './elementwise.js';
import { concat, pad, reshape } from './movement.js';
import { mean, sum } from './reduce.js';
import { runMap } from './run-map.js';

const ctypeOf = (d: DType) => (isFloat(d) ? 'f32' : d) as 'f32' | 'i32' | 'u32';

/**
 * torch.nn.functional.interpolate(x, scale_factor=2, mode='nearest') for x [N,C,H,W].
 * One strided copy: the output viewed as [N,C,H,2,W,2] reads x with stride 0 on the two size-2
 * axes. Backward sums each 2×2 block (a reduction over those axes of the same view).
 */
export function upsampleNearest2x(x: Tensor): Tensor {
  if (x.rank !== 4) throw new Error(`upsampleNearest2x: expected x [N,C,H,W], got ${x.describe()}`);
  const [n, c, h, w] = x.shape;
  const out = new Tensor(x.device, [n, c, 2 * h, 2 * w], x.dtype);
  const view = [n, c, h, 2, w, 2];
  const xs = contiguousStrides(x.shape);
  // Same name/expression as movement's copy, so the pipeline is shared with permute/slice/etc.
  runMap({ name: 'copy', inTypes: [x.dtype], outType: x.dtype, ctype: ctypeOf(x.dtype), expr: 'a' },
    view, [{ t: x, strides: [xs[0], xs[1], xs[2], 0, xs[3], 0] }], { t: out, strides: contiguousStrides(view) }, [0, 0],
    `upsampleNearest2x(${x.describe()})`);
  return record('upsampleNearest2x', [x], out, [], (g) => {
    const gv = reshape(g, view);
    const gx = sum(gv, [3, 5]);
    gv.dispose();
    return [gx];
  });
}

/**
 * torch.nn.functional.avg_pool2d(x, k, stride) for the non-overlapping case only (stride = k,
 * H and W divisible by k), as SD's downsamplers use it: a mean over the k×k axes of a reshape.
 */
export function avgPool2d(x: Tensor, kernelSize = 2, stride = kernelSize): Tensor {
  const k = kernelSize;
  const what = `avgPool2d(${x.describe()}, kernelSize=${kernelSize}, stride=${stride})`;
  if (x.rank !== 4) throw new Error(`${what}: expected x [N,C,H,W]`);
  if (!isFloat(x.dtype)) throw new Error(`${what}: expected a float tensor`);
  if (!Number.isInteger(k) || k < 1) throw new Error(`${what}: kernelSize must be a positive integer`);
  if (stride !== k) throw new Error(`${what}: only stride = kernelSize (non-overlapping windows) is supported`);
  const [n, c, h, w] = x.shape;
  if (h % k !== 0 || w % k !== 0) throw new Error(`${what}: H=${h} and W=${w} must be divisible by ${k}`);
  const v = reshape(x, [n, c, h / k, k, w / k, k]);
  const out = mean(v, [3, 5]);
  v.dispose();
  return out;
}

const GELU_OF_B = '(0.5 * b * (1.0 + erf_f(b * 0.70710678118654752)))';
const DGELU_OF_B = '(0.5 * (1.0 + erf_f(b * 0.70710678118654752)) + b * exp(-0.5 * b * b) * 0.39894228040143268)';

/**
 * diffusers' GEGLU after its projection: x [..., 2D] → hidden · gelu(gate) [..., D], where
 * hidden = x[..., :D] and gate = x[..., D:] (exact erf GELU). One fused map pass reads both
 * halves of x in place (two operands on the same buffer at different offsets); backward writes
 * the two halves of dx with two more fused passes, so no intermediate is kept but x itself.
 */
export function geglu(x: Tensor): Tensor {
  const what = `geglu(${x.describe()})`;
  if (x.rank < 1) throw new Error(`${what}: expected x [..., 2D]`);
  if (!isFloat(x.dtype)) throw new Error(`${what}: expected a float tensor`);
  const two = x.shape[x.rank - 1];
  if (two % 2 !== 0) throw new Error(`${what}: the last dimension ${two} must be even (hidden and gate halves)`);
  const d = two / 2;
  const shape = [...x.shape.slice(0, -1), d];
  // Reading x over `shape`: rows step by 2D, columns by 1; the gate half starts D further on.
  const xStrides = [...contiguousStrides(x.shape).slice(0, -1), 1];
  const out = new Tensor(x.device, shape, x.dtype);
  const fwd = `a * ${GELU_OF_B}`;
  runMap({ name: 'geglu', inTypes: [x.dtype, x.dtype], outType: x.dtype, ctype: 'f32', expr: fwd, helpers: helpersFor(fwd) },
    shape, [{ t: x, strides: xStrides, offset: 0 }, { t: x, strides: xStrides, offset: d }], { t: out, strides: contiguousStrides(shape) }, [0, 0], what);
  return record('geglu', [x], out, [x], (g, [xs]) => {
    const gx = new Tensor(g.device, x.shape, g.dtype);
    const gs = contiguousStrides(shape);
    const a = { t: xs, strides: xStrides, offset: 0 }, b = { t: xs, strides: xStrides, offset: d }, c = { t: g, strides: gs };
    // d/dhidden = g·gelu(gate); d/dgate = g·hidden·gelu'(gate).
    const dh = `c * ${GELU_OF_B}`, dg = `c * a * ${DGELU_OF_B}`;
    runMap({ name: 'geglu_dh', inTypes: [xs.dtype, xs.dtype, g.dtype], outType: g.dtype, ctype: 'f32', expr: dh, helpers: helpersFor(dh) },
      shape, [a, b, c], { t: gx, strides: xStrides, offset: 0 }, [0, 0], `geglu_grad(${x.describe()})`);
    runMap({ name: 'geglu_dg', inTypes: [xs.dtype, xs.dtype, g.dtype], outType: g.dtype, ctype: 'f32', expr: dg, helpers: helpersFor(dg) },
      shape, [a, b, c], { t: gx, strides: xStrides, offset: d }, [0, 0], `geglu_grad(${x.describe()})`);
    return [gx];
  });
}

export interface TimestepEmbeddingOptions {
  /** Put cos first (SD v1's UNet: true). */
  flipSinToCos?: boolean;
  /** diffusers' downscale_freq_shift (SD v1's UNet: 0). */
  downscaleFreqShift?: number;
  scale?: number;
  maxPeriod?: number;
}

/**
 * diffusers' get_timestep_embedding: timesteps [N] → [N, dim] f32 sinusoidal features.
 * Frequencies are computed on the host in float32 steps exactly as torch does
 * (exp(−ln(maxPeriod)·i / (half − shift))); the argument t·freq (then ·scale) is rounded to f32
 * like torch's. Timesteps are constants: no gradient flows to them (runs under noGrad).
 */
export function timestepEmbedding(timesteps: Tensor, dim: number, opts: TimestepEmbeddingOptions = {}): Tensor {
  const { flipSinToCos = false, downscaleFreqShift = 1, scale = 1, maxPeriod = 10000 } = opts;
  const what = `timestepEmbedding(${timesteps.describe()}, dim=${dim})`;
  if (timesteps.rank !== 1) throw new Error(`${what}: timesteps must be 1-D [N]`);
  if (!Number.isInteger(dim) || dim < 2) throw new Error(`${what}: dim must be an integer >= 2`);
  const half = Math.floor(dim / 2);
  const denom = half - downscaleFreqShift;
  if (denom === 0) throw new Error(`${what}: half (${half}) − downscaleFreqShift (${downscaleFreqShift}) is 0; the frequencies would be NaN`);
  const f = Math.fround;
  const lnP = f(-Math.log(maxPeriod));
  const freqs = new Float32Array(half);
  for (let i = 0; i < half; i++) freqs[i] = f(Math.exp(f(f(lnP * i) / denom)));
  return noGrad(() => {
    const tf = timesteps.dtype === 'f32' ? timesteps : cast(timesteps, 'f32');
    const t2 = reshape(tf, [timesteps.shape[0], 1]);
    if (tf !== timesteps) tf.dispose();
    const fr = tensor(freqs, [1, half], 'f32', timesteps.device);
    let arg = mul(t2, fr);
    t2.dispose(); fr.dispose();
    if (scale !== 1) { const s = mulScalar(arg, scale); arg.dispose(); arg = s; }
    const sn = sin(arg), cs = cos(arg);
    arg.dispose();
    let out = concat(flipSinToCos ? [cs, sn] : [sn, cs], 1);
    sn.dispose(); cs.dispose();
    if (dim % 2 === 1) { const p = pad(out, [[0, 0], [0, 1]]); out.dispose(); out = p; }
    return out;
  });
}
