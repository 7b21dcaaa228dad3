// Image preparation for training sets: decoding PNG/JPEG files, compositing transparent images
// onto white, and resizing with a proper filter (area averaging or bicubic, never nearest), on
// the host in float. Images are CHW float in [0, 1] (cli/images.ts's RGBImage), 3 channels.

import { PNG } from 'pngjs';
import jpeg from 'jpeg-js';
import type { RGBImage } from '../cli/images.js';

/** 8-bit RGBA pixels, row-major, 4 bytes a pixel (straight, not premultiplied, alpha). */
export interface RGBA8 {
  width: number;
  height: number;
  data: Uint8Array;
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Decodes a PNG or JPEG file's bytes (told apart by their signature); `file` names it in errors. */
export function decodeImage(bytes: Uint8Array, file: string): RGBA8 {
  const isPng = PNG_SIGNATURE.every((b, i) => bytes[i] === b);
  const isJpeg = bytes[0] === 0xff && bytes[1] === 0xd8;
  if (!isPng && !isJpeg) throw new Error(`${file}: not a PNG or JPEG file (unrecognised signature)`);
  try {
    if (isPng) {
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      return { width: png.width, height: png.height, data: new Uint8Array(png.data.buffer, png.data.byteOffset, png.data.byteLength) };
    }
    const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: true, maxMemoryUsageInMB: 256 });
    return { width: img.width, height: img.height, data: img.data };
  } catch (e) {
    throw new Error(`${file}: cannot decode the ${isPng ? 'PNG' : 'JPEG'} (${(e as Error).message}); the file is corrupt or truncated`);
  }
}

/**
 * Composites straight-alpha RGBA onto a white background: c·α + 1·(1 − α) per channel, giving a
 * CHW RGB image in [0, 1]. (Compositing before resizing equals resizing premultiplied colour and
 * then compositing, so transparent pixels' hidden colours never bleed into the result.)
 */
export function compositeOnWhite(img: RGBA8): RGBImage {
  const { width: w, height: h, data } = img;
  const n = w * h;
  const out = new Float32Array(3 * n);
  for (let p = 0; p < n; p++) {
    const a = data[4 * p + 3] / 255;
    for (let c = 0; c < 3; c++) out[c * n + p] = (data[4 * p + c] / 255) * a + (1 - a);
  }
  return { data: out, height: h, width: w };
}

export type ResizeFilter = 'area' | 'bicubic';
export const RESIZE_FILTERS: readonly ResizeFilter[] = ['area', 'bicubic'];

/** Keys' cubic convolution kernel with a = −0.5 (what PIL's BICUBIC uses). */
function cubic(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** Per output index: the first source index and the normalised weights of the sources it reads. */
function weights(inSize: number, outSize: number, filter: ResizeFilter): { start: number; w: Float64Array }[] {
  const scale = inSize / outSize;
  const out: { start: number; w: Float64Array }[] = [];
  for (let i = 0; i < outSize; i++) {
    let lo: number, hi: number, f: (j: number) => number;
    if (filter === 'area') {
      // Exact coverage: output pixel i spans [i·s, (i+1)·s) of the source; a source pixel counts
      // by the length of its overlap (upscaling, s < 1, this is linear-ish interpolation of boxes).
      const a = i * scale, b = (i + 1) * scale;
      lo = Math.floor(a); hi = Math.min(inSize, Math.ceil(b));
      f = (j) => Math.max(0, Math.min(b, j + 1) - Math.max(a, j));
    } else {
      // PIL's antialiased resampling: the kernel is stretched by the scale when shrinking.
      const support = 2 * Math.max(scale, 1), centre = (i + 0.5) * scale, k = Math.max(scale, 1);
      lo = Math.max(0, Math.floor(centre - support)); hi = Math.min(inSize, Math.ceil(centre + support));
      f = (j) => cubic((j + 0.5 - centre) / k);
    }
    const w = new Float64Array(hi - lo);
    let total = 0;
    for (let j = lo; j < hi; j++) { w[j - lo] = f(j); total += w[j - lo]; }
    for (let j = 0; j < w.length; j++) w[j] /= total;
    out.push({ start: lo, w });
  }
  return out;
}

/** Resizes a CHW image to height × width: separable, rows then columns, clamped to [0, 1]. */
export function resizeImage(img: RGBImage, height: number, width: number, filter: ResizeFilter = 'area'): RGBImage {
  if (!RESIZE_FILTERS.includes(filter)) throw new Error(`resizeImage: filter "${filter}" is not one of ${RESIZE_FILTERS.join(', ')}`);
  if (!Number.isInteger(height) || !Number.isInteger(width) || height < 1 || width < 1) throw new Error(`resizeImage: size ${height}×${width} must be positive integers`);
  const { height: h, width: w, data } = img;
  const C = data.length / (h * w);
  if (height === h && width === w) return { data: new Float32Array(data), height, width };
  const wx = weights(w, width, filter), wy = weights(h, height, filter);
  const tmp = new Float64Array(C * h * width);
  for (let c = 0; c < C; c++) for (let y = 0; y < h; y++) for (let x = 0; x < width; x++) {
    const { start, w: ws } = wx[x];
    let s = 0;
    for (let k = 0; k < ws.length; k++) s += ws[k] * data[(c * h + y) * w + start + k];
    tmp[(c * h + y) * width + x] = s;
  }
  const out = new Float32Array(C * height * width);
  for (let c = 0; c < C; c++) for (let y = 0; y < height; y++) {
    const { start, w: ws } = wy[y];
    for (let x = 0; x < width; x++) {
      let s = 0;
      for (let k = 0; k < ws.length; k++) s += ws[k] * tmp[(c * h + start + k) * width + x];
      out[(c * height + y) * width + x] = Math.min(1, Math.max(0, s));
    }
  }
  return { data: out, height, width };
}

/** Rounds an image to 8 bits per channel (what a PNG stores), so training sees exactly the file's values. */
export function quantise8(img: RGBImage): RGBImage {
  return { ...img, data: img.data.map((v) => Math.round(Math.min(1, Math.max(0, v)) * 255) / 255) };
}

/** The centred square of an image (the shorter side's length), so a resize keeps its aspect. */
export function centreCrop(img: RGBImage): RGBImage {
  const { height: h, width: w, data } = img;
  const side = Math.min(h, w);
  if (h === w) return img;
  const y0 = Math.floor((h - side) / 2), x0 = Math.floor((w - side) / 2);
  const C = data.length / (h * w);
  const out = new Float32Array(C * side * side);
  for (let c = 0; c < C; c++) for (let y = 0; y < side; y++) for (let x = 0; x < side; x++) out[(c * side + y) * side + x] = data[(c * h + y0 + y) * w + x0 + x];
  return { data: out, height: side, width: side };
}
