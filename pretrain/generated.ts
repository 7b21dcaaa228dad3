// A generated captioned image set, for tests and benchmarks that must not depend on downloaded
// data: discs of random colour on white, two images per caption ("a thing 0", "a thing 1", ...).

import { mulberry32 } from '../rewards/probe-images.js';
import { ImageSet } from './dataset.js';

/** n images of side `size`: a disc of random colour, centre and radius on white; captions "a thing ⌊i/2⌋". */
export function generatedImageSet(n: number, size: number, seed = 1): ImageSet {
  const next = mulberry32(seed);
  const rnd = () => next() / 4294967296;
  const images = Array.from({ length: n }, () => {
    const data = new Float32Array(3 * size * size);
    const [cx, cy, r] = [rnd() * size, rnd() * size, (0.2 + 0.3 * rnd()) * size];
    const col = [rnd(), rnd(), rnd()];
    for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
      const inside = (x - cx) ** 2 + (y - cy) ** 2 < r * r;
      for (let c = 0; c < 3; c++) data[c * size * size + y * size + x] = inside ? col[c] : 1;
    }
    return { data, height: size, width: size };
  });
  const records = images.map((_, i) => ({ file: `img${i}.png`, caption: `a thing ${Math.floor(i / 2)}`, meta: {} }));
  return { dir: '(generated)', captionsFile: '(generated)', records, images, size, captions: [...new Set(records.map((r) => r.caption))], fingerprint: `generated-${n}-${size}-${seed}` };
}

