// PNG output and captioned grids.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { PNG } from 'pngjs';
import { encodePNG, gridPNG } from '../cli/images.js';
import { textWidth } from '../cli/font.js';

const s = suite('images');

const img = (h: number, w: number, v: (c: number, i: number) => number) => {
  const d = new Float32Array(3 * h * w);
  for (let c = 0; c < 3; c++) for (let i = 0; i < h * w; i++) d[c * h * w + i] = v(c, i);
  return { data: d, height: h, width: w };
};

s('encodePNG writes CHW [0,1] as RGB bytes, clamped and rounded', () => {
  const png = PNG.sync.read(encodePNG(img(2, 3, (c, i) => (c === 0 ? i / 5 : c === 1 ? -1 : 2))));
  assert.is(png.width, 3); assert.is(png.height, 2);
  assert.equal([...png.data.slice(0, 8)], [0, 0, 255, 255, 51, 0, 255, 255]);
});

s('gridPNG lays out cells with captions under them', () => {
  const png = PNG.sync.read(gridPNG([img(8, 8, () => 0), img(8, 8, () => 1), img(8, 8, () => 0.5)], [['cat'], ['dog'], ['owl']], { cols: 2, upscale: 4 }));
  assert.is(png.width, 2 * (32 + 8));
  // caption pixels are dark, on white
  let dark = 0;
  for (let y = 36; y < png.height / 2; y++) for (let x = 0; x < png.width; x++) if (png.data[(y * png.width + x) * 4] < 50) dark++;
  assert.ok(dark > 20, 'caption text drawn');
  assert.is(textWidth('abc', 2), 36);
  assert.throws(() => gridPNG([img(8, 8, () => 0), img(4, 8, () => 0)]), /image 1/);
});

s.run();
