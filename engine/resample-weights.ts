// Pillow's resampling weights (libImaging/Resample.c's precompute_coeffs and normalize_coeffs_8bpc),
// computed on the host in float64 with Pillow's formulas and operation order, so they are the
// integers Pillow uses. Pure arithmetic with no device: the GPU pass (ops/resample.ts) and the
// host's 8-bit resize (pilResize8, for rewards that must see an image as PIL would) both use them.

export const PRECISION_BITS = 22;

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

/** One 8-bit pass on the host, as Pillow's: round-half-up fixed point, clamped to 0..255. */
function pass8(src: Uint8Array, n: number, len: number, post: number, w: PilWeights): Uint8Array {
  const out = new Uint8Array(n * w.outSize * post);
  for (let p = 0; p < n; p++) for (let o = 0; o < w.outSize; o++) {
    const first = w.bounds[2 * o], count = w.bounds[2 * o + 1];
    for (let q = 0; q < post; q++) {
      let ss = 1 << (PRECISION_BITS - 1);
      for (let j = 0; j < count; j++) ss += src[(p * len + first + j) * post + q] * w.coef[o * w.ks + j];
      const v = ss >> PRECISION_BITS;
      out[(p * w.outSize + o) * post + q] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return out;
}

/**
 * Resizes interleaved 8-bit pixels (h × w × channels) to height × width as Pillow's
 * Image.resize does: the horizontal pass, then the vertical one, each rounded back to 8 bits.
 */
export function pilResize8(pixels: Uint8Array, h: number, w: number, channels: number, height: number, width: number, filter: PilFilter = 'bicubic'): Uint8Array {
  if (pixels.length !== h * w * channels) throw new Error(`pilResize8: ${pixels.length} values are not ${h}×${w}×${channels}`);
  const horizontal = width === w ? pixels : pass8(pixels, h, w, channels, pilWeights(w, width, filter));
  return height === h ? horizontal : pass8(horizontal, 1, h, width * channels, pilWeights(h, height, filter));
}
