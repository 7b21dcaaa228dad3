// Deterministic RGB test images for measuring JPEG sizes: the same bytes are produced by
// scripts/jpeg_pil_sizes.py (pure Python, integer arithmetic only) so that jpeg-js here and PIL
// there encode identical pixels. Used by the tests and by the jpeg-js vs PIL measurement.

/** The probe images, from most to least compressible in spirit. */
export const PROBE_IMAGES = ['flat', 'gradient', 'smooth', 'blocks', 'smooth_noise', 'noise'] as const;
export type ProbeImage = (typeof PROBE_IMAGES)[number];

/** mulberry32: a 32-bit generator that is easy to reproduce exactly in Python. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

const CELL = 32; // smooth field: one random control point every 32 pixels, bilinear between
const BLOCK = 16; // blocks: 16×16 squares of one random colour

function smoothField(size: number, seed: number): Uint8Array {
  const next = mulberry32(seed);
  const g = Math.floor((size - 1) / CELL) + 2; // control points per side, covering the image
  const grid = new Uint8Array(g * g * 3);
  for (let i = 0; i < grid.length; i++) grid[i] = next() >>> 24;
  const out = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++) {
    const gy = Math.floor(y / CELL), fy = y % CELL;
    for (let x = 0; x < size; x++) {
      const gx = Math.floor(x / CELL), fx = x % CELL;
      for (let c = 0; c < 3; c++) {
        const p = (yy: number, xx: number) => grid[(yy * g + xx) * 3 + c];
        const v = p(gy, gx) * (CELL - fx) * (CELL - fy) + p(gy, gx + 1) * fx * (CELL - fy)
          + p(gy + 1, gx) * (CELL - fx) * fy + p(gy + 1, gx + 1) * fx * fy;
        out[(y * size + x) * 3 + c] = Math.floor(v / (CELL * CELL));
      }
    }
  }
  return out;
}

/** A size×size RGB image as interleaved uint8 (HWC). */
export function probeImage(name: ProbeImage, size: number): Uint8Array {
  const out = new Uint8Array(size * size * 3);
  const d = Math.max(size - 1, 1);
  switch (name) {
    case 'flat':
      for (let i = 0; i < size * size; i++) out.set([128, 96, 64], i * 3);
      return out;
    case 'gradient':
      for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
        out.set([Math.floor((255 * x) / d), Math.floor((255 * y) / d), Math.floor((255 * (x + y)) / (2 * d))], (y * size + x) * 3);
      }
      return out;
    case 'noise': {
      const next = mulberry32(1);
      for (let i = 0; i < out.length; i++) out[i] = next() >>> 24;
      return out;
    }
    case 'smooth':
      return smoothField(size, 2);
    case 'smooth_noise': {
      const base = smoothField(size, 3);
      const next = mulberry32(4);
      for (let i = 0; i < out.length; i++) out[i] = Math.min(255, Math.max(0, base[i] + ((next() >>> 24) % 17) - 8));
      return out;
    }
    case 'blocks': {
      const next = mulberry32(5);
      const nb = Math.ceil(size / BLOCK);
      const colours = new Uint8Array(nb * nb * 3);
      for (let i = 0; i < colours.length; i++) colours[i] = next() >>> 24;
      for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
        const b = (Math.floor(y / BLOCK) * nb + Math.floor(x / BLOCK)) * 3;
        out.set(colours.subarray(b, b + 3), (y * size + x) * 3);
      }
      return out;
    }
  }
}

/** FNV-1a over the bytes: lets the test check that Python built the very same pixels. */
export function fnv1a(bytes: Uint8Array): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
  return h >>> 0;
}
