// Images as users see them: PNG files and captioned grids.
// An image here is CHW float in [0, 1] (3 channels), as the pipeline returns them.

import { PNG } from 'pngjs';
import type { ImageBatch } from '../rewards/types.js';
import { GLYPH_H, drawText, textWidth } from './font.js';

export interface RGBImage {
  /** CHW, 3 channels, values in [0, 1] (clamped when written). */
  data: Float32Array;
  height: number;
  width: number;
}

/** The images of an NCHW batch (what sampling reads back and rewards score), each a copy. */
export function batchImages(b: ImageBatch): RGBImage[] {
  if (b.c !== 3) throw new Error(`batchImages: expected 3-channel images, got ${b.n}×${b.c}×${b.h}×${b.w}`);
  const per = b.c * b.h * b.w;
  return Array.from({ length: b.n }, (_, i) => ({ data: b.data.slice(i * per, (i + 1) * per), height: b.h, width: b.w }));
}

function toByte(v: number): number {
  return Math.max(0, Math.min(255, Math.round(v * 255)));
}

/** Encodes one image as PNG bytes. */
export function encodePNG(img: RGBImage): Buffer {
  const { width: w, height: h, data } = img;
  if (data.length !== 3 * w * h) throw new Error(`encodePNG: ${data.length} values do not make a 3×${h}×${w} image`);
  const png = new PNG({ width: w, height: h });
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const o = (y * w + x) * 4, p = y * w + x;
    png.data[o] = toByte(data[p]); png.data[o + 1] = toByte(data[w * h + p]); png.data[o + 2] = toByte(data[2 * w * h + p]); png.data[o + 3] = 255;
  }
  return PNG.sync.write(png);
}

/** Fits a caption into `maxChars` characters per line, at most `lines` lines (an ellipsis marks a cut). */
function wrap(text: string, maxChars: number, lines: number): string[] {
  const words = text.split(/\s+/).filter(Boolean);
  const out: string[] = [];
  let cur = '';
  for (const w of words) {
    const next = cur ? `${cur} ${w}` : w;
    if (next.length <= maxChars) { cur = next; continue; }
    if (cur) out.push(cur);
    cur = w.length > maxChars ? w.slice(0, maxChars) : w;
  }
  if (cur) out.push(cur);
  if (out.length > lines) { out.length = lines; out[lines - 1] = out[lines - 1].slice(0, Math.max(0, maxChars - 1)) + '~'; }
  return out;
}

/**
 * A grid of images with up to `captionLines` lines of caption under each (e.g. the prompt and its
 * reward). Images are upscaled by an integer factor (to about 192 px) so that small samples stay
 * legible, and captions are drawn at twice the font size wherever a cell is wide enough for it.
 */
export function gridPNG(images: RGBImage[], captions: string[][] = [], opts: { cols?: number; upscale?: number; captionLines?: number; captionScale?: number } = {}): Buffer {
  if (!images.length) throw new Error('gridPNG: no images');
  const h0 = images[0].height, w0 = images[0].width;
  const up = opts.upscale ?? Math.max(1, Math.floor(192 / Math.max(h0, w0)));
  const cols = opts.cols ?? Math.min(images.length, Math.ceil(Math.sqrt(images.length)));
  const rows = Math.ceil(images.length / cols);
  const cw = w0 * up, ch = h0 * up, pad = 4;
  const scale = opts.captionScale ?? (cw >= 160 ? 2 : 1);
  const lineH = (GLYPH_H + 3) * scale;
  const capLines = opts.captionLines ?? (captions.length ? Math.max(...captions.map((c) => c.length), 1) + 1 : 0);
  const cellW = cw + 2 * pad, cellH = ch + 2 * pad + capLines * lineH;
  const W = cols * cellW, H = rows * cellH;
  const png = new PNG({ width: W, height: H });
  png.data.fill(255);
  const set = (x: number, y: number, r: number, g: number, b: number) => {
    if (x < 0 || y < 0 || x >= W || y >= H) return;
    const o = (y * W + x) * 4;
    png.data[o] = r; png.data[o + 1] = g; png.data[o + 2] = b; png.data[o + 3] = 255;
  };
  images.forEach((img, k) => {
    if (img.height !== h0 || img.width !== w0) throw new Error(`gridPNG: image ${k} is ${img.height}×${img.width}, the first is ${h0}×${w0}`);
    const gx = (k % cols) * cellW + pad, gy = Math.floor(k / cols) * cellH + pad;
    const n = h0 * w0;
    for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) {
      const p = Math.floor(y / up) * w0 + Math.floor(x / up);
      set(gx + x, gy + y, toByte(img.data[p]), toByte(img.data[n + p]), toByte(img.data[2 * n + p]));
    }
    const maxChars = Math.max(1, Math.floor(cw / textWidth('x', scale)));
    const lines = (captions[k] ?? []).flatMap((c) => wrap(c, maxChars, capLines)).slice(0, capLines);
    lines.forEach((line, i) => drawText(line, gx, gy + ch + 3 + i * lineH, scale, (x, y) => set(x, y, 20, 20, 20)));
  });
  return PNG.sync.write(png);
}
