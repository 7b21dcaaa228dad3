// Row bands for a convolution whose single sample does not fit one storage binding.
//
// In NCHW the rows of one band of ALL channels are not contiguous (channel stride H·W), so a
// band cannot be bound in place: conv2d.ts gathers each band into a small contiguous tensor,
// runs the unchanged kernel on it with the band's geometry, and scatters the result back. This
// file is the pure arithmetic: which rows each band writes, which rows of the gathered operand
// it needs (the halo of dilated kernel rows, clipped at the image borders), and the geometry
// that makes the kernel see exactly the taps of the whole-image pass.
//
// Why that is bit-identical: the kernel finds a tap's row as oy·SH + ky·DH − PT (fwd, dw) or
// from iy + PT − ky·DH (dx). Shifting the output rows by r0 and the gathered rows by s0 and
// setting PT' = PT + s0 − r0·SH (fwd, dw) or PT' = r0 + PT − s0·SH (dx) maps every tap onto the
// same image element (or the same padding zero) as before, and the reduction order over k is
// unchanged. Rows outside [0, H) are still padding in the band because the band holds every
// in-image row its taps reach. PT' may be negative for a band wholly in the bottom padding;
// the kernel reads PT as i32.

import type { Conv2dGeometry } from './conv2d.js';

export type BandMode = 'fwd' | 'dx' | 'dw';

export interface ConvBand {
  /** Rows [r0, r1) of the pass's result: output rows for fwd/dw, input rows for dx. */
  r0: number;
  r1: number;
  /** Rows [s0, s1) of the gathered operand: x rows for fwd/dw, output-gradient rows for dx. */
  s0: number;
  s1: number;
  /** The geometry of one sample restricted to the band (N = 1). */
  geo: Conv2dGeometry;
}

/** The rows one band needs and its geometry. */
export function bandOf(mode: BandMode, geo: Conv2dGeometry, r0: number, r1: number): ConvBand {
  const { H, OH, SH, DH, KH, PT } = geo;
  const reach = (KH - 1) * DH;
  if (mode === 'dx') {
    // Input rows [r0, r1) read output rows oy with oy·SH = iy + PT − ky·DH. Taking the lower end
    // with floor (not ceil) keeps PT' ≥ reach ≥ 0; an extra row is harmless.
    let s0 = Math.max(0, Math.floor((r0 + PT - reach) / SH));
    let s1 = Math.min(OH, Math.floor((r1 - 1 + PT) / SH) + 1);
    // Rows no window reaches (trailing rows a stride skips): keep one gradient row bound.
    s0 = Math.min(s0, OH - 1);
    s1 = Math.max(s1, s0 + 1);
    return { r0, r1, s0, s1, geo: { ...geo, N: 1, H: r1 - r0, OH: s1 - s0, PT: r0 + PT - s0 * SH } };
  }
  // Output rows [r0, r1) read input rows oy·SH − PT + ky·DH.
  let s0 = Math.max(0, r0 * SH - PT);
  let s1 = Math.min(H, (r1 - 1) * SH - PT + reach + 1);
  // A band wholly inside the padding reads no row; bind one anyway (its taps stay out of range).
  s0 = Math.min(s0, H - 1);
  s1 = Math.max(s1, s0 + 1);
  return { r0, r1, s0, s1, geo: { ...geo, N: 1, H: s1 - s0, OH: r1 - r0, PT: PT + s0 - r0 * SH } };
}

/** Bytes of the two banded operands of a band of R result rows (an upper bound over positions). */
function bandBytes(mode: BandMode, geo: Conv2dGeometry, R: number, elementBytes: number): number[] {
  const { C, W, CO, OW, SH, DH, KH } = geo;
  const reach = (KH - 1) * DH;
  const round4 = (b: number) => Math.ceil(b / 4) * 4;
  if (mode === 'dx') {
    // floor(b/SH) − floor(a/SH) over b − a = R − 1 + reach: one more row when a stride splits.
    const gRows = Math.floor((R - 1 + reach) / SH) + (SH > 1 ? 2 : 1);
    return [round4(C * R * W * elementBytes), round4(CO * gRows * OW * elementBytes)];
  }
  const xRows = (R - 1) * SH + reach + 1;
  return [round4(CO * R * OW * elementBytes), round4(C * xRows * W * elementBytes)];
}

/**
 * Splits one sample's result rows into bands of near-equal height whose gathered operands each
 * fit a binding of maxBinding bytes. Throws (with `label`) when even a one-row band does not.
 */
export function planBands(mode: BandMode, geo: Conv2dGeometry, maxBinding: number, elementBytes: number, label: string): ConvBand[] {
  const rows = mode === 'dx' ? geo.H : geo.OH;
  const fits = (R: number) => bandBytes(mode, geo, R, elementBytes).every((b) => b <= maxBinding);
  if (!fits(1)) {
    const need = Math.max(...bandBytes(mode, geo, 1, elementBytes));
    throw new Error(`${label}: even a band of one row (with its ${(geo.KH - 1) * geo.DH}-row halo) needs a ${need}-byte binding, above the storage-binding limit of ${maxBinding} bytes; use fewer channels or a narrower image`);
  }
  // Largest fitting height (bytes grow with R), then even bands.
  let lo = 1, hi = rows;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid; else hi = mid - 1;
  }
  const count = Math.ceil(rows / lo);
  const R = Math.ceil(rows / count);
  const bands: ConvBand[] = [];
  for (let r0 = 0; r0 < rows; r0 += R) bands.push(bandOf(mode, geo, r0, Math.min(rows, r0 + R)));
  return bands;
}
