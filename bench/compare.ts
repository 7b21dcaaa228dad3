// Comparing our results with TF.js's: the benches time the same computation on both, and these
// differences show that it is the same computation.

/** max |a − b| over all elements. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`maxAbsDiff: ${a.length} values beside ${b.length}`);
  let diff = 0;
  for (let i = 0; i < b.length; i++) diff = Math.max(diff, Math.abs(a[i] - b[i]));
  return diff;
}

/** max |a − b| / max |b|: the difference relative to the reference's scale (b is the reference). */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 0;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  const diff = maxAbsDiff(a, b);
  return scale ? diff / scale : diff;
}

/** The TF.js columns every forward / forward+backward bench row carries. */
export interface TfjsTiming {
  /** TF.js (f32) on the same device; null where TF.js is missing or failed (see note). */
  tfjsFwdMs: number | null;
  tfjsFwdBwdMs: number | null;
  /** TF.js ms / ours ms: above 1, ours is faster. */
  fwdRatio: number | null;
  fwdBwdRatio: number | null;
  note?: string;
}

const pad = (s: string, w: number) => s.padStart(w);

/** One table: right-aligned columns of the given widths, '—' for a missing value. */
export function table(widths: number[], log: (line: string) => void) {
  return (cells: (string | null)[]) => log(cells.map((c, i) => pad(c ?? '—', widths[i])).join(' '));
}

export const fmtMs = (ms: number | null) => (ms === null ? null : ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2));
export const fmtRatio = (r: number | null) => (r === null ? null : r.toFixed(2));
export const fmtDiff = (d: number | null) => (d === null ? null : d.toExponential(1));
/** ours / TF.js as a speed ratio: TF.js time over ours (> 1: we are faster). */
export const speedRatio = (oursMs: number | null, tfMs: number | null) => (oursMs === null || tfMs === null ? null : tfMs / oursMs);
