// CLIP's image preprocessing against PIL itself: test/fixtures/clip-preprocess/pil.json was
// written by scripts/clip_preprocess_pil.py (Pillow's bicubic resize, transformers' size and crop
// rules) for down- and up-sampling, non-square inputs, an unchanged size and odd crops. The GPU
// resize must be uint8-exact; the whole chain (quantise, resize, crop, normalise) must match
// transformers' float32 arithmetic; batches must not change any sample's bits.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as E from '../engine/index.js';
import {
  CLIP_IMAGE_PROCESSOR, ClipImageProcessorConfig, clipPreprocess, clipResizeCrop, clipResizeSize, parseClipImageProcessorConfig, quantiseUnit,
} from '../diffusion/models/clip-image-processor.js';
import { pilResample, pilWeights } from '../engine/ops/resample.js';
import { pilResize8 } from '../engine/resample-weights.js';
import { ProbeImage, fnv1a, probeImage } from '../rewards/probe-images.js';
import { quantise } from '../rewards/jpeg.js';
import { assertClose, assertThrows, repoRoot, testDevice } from './helpers.js';

await testDevice();
const s = suite('clip-preprocess');

interface Case {
  name: string; probe: ProbeImage; height: number; width: number; shortest_edge: number; crop_height: number; crop_width: number;
  resized: [number, number]; crop_offsets: [number, number]; input_fnv1a: number; output_fnv1a: number; output_hwc_base64: string;
}
const fixture = JSON.parse(readFileSync(join(repoRoot(), 'test', 'fixtures', 'clip-preprocess', 'pil.json'), 'utf8')) as { pil_version: string; cases: Case[] };

/** The case's input: the probe image cropped to height × width, HWC uint8. */
function caseInput(c: Case): Uint8Array {
  const side = Math.max(c.height, c.width);
  const full = probeImage(c.probe, side);
  const out = new Uint8Array(c.height * c.width * 3);
  for (let y = 0; y < c.height; y++) out.set(full.subarray(y * side * 3, (y * side + c.width) * 3), y * c.width * 3);
  return out;
}

const hwcToNchw = (hwc: Uint8Array, h: number, w: number, scale = 1): Float32Array => {
  const out = new Float32Array(3 * h * w);
  for (let p = 0; p < h * w; p++) for (let c = 0; c < 3; c++) out[c * h * w + p] = hwc[p * 3 + c] * scale;
  return out;
};
const nchwToHwc = (d: ArrayLike<number>, h: number, w: number): Uint8Array => {
  const out = new Uint8Array(3 * h * w);
  for (let p = 0; p < h * w; p++) for (let c = 0; c < 3; c++) out[p * 3 + c] = d[c * h * w + p];
  return out;
};
const cfgOf = (c: Case): ClipImageProcessorConfig => ({ ...CLIP_IMAGE_PROCESSOR, shortestEdge: c.shortest_edge, cropHeight: c.crop_height, cropWidth: c.crop_width });

/** The first differing byte, or null. */
function firstDiff(got: Uint8Array, want: Uint8Array, w: number): string | null {
  let n = 0, first = -1;
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) { n++; if (first < 0) first = i; }
  if (!n) return null;
  const p = Math.floor(first / 3);
  return `${n} of ${want.length} bytes differ; first at row ${Math.floor(p / w)}, column ${p % w}, channel ${first % 3}: ${got[first]} vs PIL ${want[first]}`;
}

s('fixture provenance: the inputs are the same bytes Python built', () => {
  assert.ok(fixture.cases.length >= 8);
  for (const c of fixture.cases) assert.is(fnv1a(caseInput(c)), c.input_fnv1a, `${c.name}: input bytes`);
});

s('sizes: the shortest edge and crop offsets follow transformers (long edge truncated)', () => {
  for (const c of fixture.cases) assert.equal(clipResizeSize(c.height, c.width, c.shortest_edge), c.resized, c.name);
  assert.equal(clipResizeSize(512, 768, 224), [224, 336]);
  assert.equal(clipResizeSize(300, 400, 224), [224, 298]);
});

s('resize + centre crop on the GPU is uint8-exact with PIL (down, up, non-square, unchanged size, odd crops)', async () => {
  for (const c of fixture.cases) {
    const x = E.tensor(hwcToNchw(caseInput(c), c.height, c.width), [1, 3, c.height, c.width]);
    const y = clipResizeCrop(x, cfgOf(c));
    const got = nchwToHwc(await y.data(), c.crop_height, c.crop_width);
    const want = new Uint8Array(Buffer.from(c.output_hwc_base64, 'base64'));
    const diff = firstDiff(got, want, c.crop_width);
    assert.ok(diff === null, `${c.name} (${c.height}×${c.width} → ${c.resized.join('×')} → ${c.crop_height}×${c.crop_width}), PIL ${fixture.pil_version}: ${diff}`);
    assert.is(fnv1a(got), c.output_fnv1a);
    x.dispose(); y.dispose();
  }
});

s('the whole chain from [0, 1] floats in a batch: every sample bit-identical to itself alone, equal to PIL, normalised as transformers', async () => {
  const c = fixture.cases.find((k) => k.name === 'down_wide')!;
  const other = { ...c, probe: 'smooth' as ProbeImage };
  const inputs = [caseInput(c), caseInput(other), caseInput(c)];
  const per = 3 * c.height * c.width;
  const data = new Float32Array(3 * per);
  inputs.forEach((img, i) => data.set(hwcToNchw(img, c.height, c.width, 1 / 255), i * per));
  const x = E.tensor(data, [3, 3, c.height, c.width]);
  const cfg = cfgOf(c);
  const px = clipPreprocess(x, cfg);
  const out = await px.data();
  const n = 3 * c.crop_height * c.crop_width;
  const alone = E.tensor(data.subarray(per, 2 * per), [1, 3, c.height, c.width]);
  const one = clipPreprocess(alone, cfg);
  assert.equal([...(await one.data())], [...out.subarray(n, 2 * n)], 'sample 1 alone = its row in the batch, bit for bit');
  assert.equal([...out.subarray(0, n)], [...out.subarray(2 * n, 3 * n)], 'the same image twice in a batch: the same bits');
  // transformers: rescale = float32(float64(u8) · (1/255)), normalize = float32((x − mean32) / std32).
  const want = new Uint8Array(Buffer.from(c.output_hwc_base64, 'base64'));
  const f = Math.fround;
  const ref = new Float64Array(n);
  for (let p = 0; p < c.crop_height * c.crop_width; p++) for (let ch = 0; ch < 3; ch++) {
    const v = f(want[p * 3 + ch] * (1 / 255));
    ref[ch * c.crop_height * c.crop_width + p] = f(f(v - f(cfg.mean[ch])) / f(cfg.std[ch]));
  }
  assertClose(out.subarray(0, n), ref, 0, 1e-6, 'pixel_values vs transformers arithmetic on the PIL bytes');
  for (const t of [x, px, alone, one]) t.dispose();
});

s('quantisation: (x·255).round().clamp(0, 255) with torch.round (half to even), on the GPU', async () => {
  const vals: number[] = [-1, -0.001, 0, 1 / 255, 0.5 / 255, 1.5 / 255, 2.5 / 255, 0.5, 127.5 / 255, 128.5 / 255, 254.5 / 255, 1, 1.2, 7];
  for (let k = 0; k < 256; k++) vals.push(k / 255, (k + 0.5) / 255, (k + 0.49) / 255);
  const x = E.tensor(vals, [vals.length]);
  const q = quantiseUnit(x);
  assert.equal([...(await q.data())], vals.map(quantise));
  x.dispose(); q.dispose();
});

s('PIL weights: windows widen with the shrink factor (antialiasing), sum to one in fixed point', () => {
  const down = pilWeights(512, 224);
  assert.is(down.ks, 11, 'support 2·512/224 = 4.57 → ceil·2 + 1 taps');
  const up = pilWeights(17, 48);
  assert.is(up.ks, 5);
  for (const w of [down, up]) for (let o = 0; o < w.outSize; o++) {
    let sum = 0;
    for (let j = 0; j < w.bounds[2 * o + 1]; j++) sum += w.coef[o * w.ks + j];
    assert.ok(Math.abs(sum - (1 << 22)) <= w.ks, `output ${o}: weights sum to ${sum}`);
  }
});

s('preprocessor_config.json: openai\'s old and new layouts parse; unsupported settings are named', async () => {
  const mean = [0.48145466, 0.4578275, 0.40821073], std = [0.26862954, 0.26130258, 0.27577711];
  const old = parseClipImageProcessorConfig({ crop_size: 224, do_center_crop: true, do_normalize: true, do_resize: true, feature_extractor_type: 'CLIPFeatureExtractor', image_mean: mean, image_std: std, resample: 3, size: 224 });
  assert.equal(old, { ...CLIP_IMAGE_PROCESSOR, mean, std });
  const neu = parseClipImageProcessorConfig({ crop_size: { height: 224, width: 224 }, do_convert_rgb: true, do_rescale: true, rescale_factor: 0.00392156862745098, size: { shortest_edge: 224 }, image_processor_type: 'CLIPImageProcessor', image_mean: mean, image_std: std, resample: 3 });
  assert.equal(neu, old);
  await assertThrows(() => parseClipImageProcessorConfig({ resample: 1 }), /"resample" = 1 is not supported/);
  await assertThrows(() => parseClipImageProcessorConfig({ do_center_crop: false }), /"do_center_crop"/);
  await assertThrows(() => parseClipImageProcessorConfig({ size: { height: 224, width: 224 } }), /"size"/);
  await assertThrows(() => parseClipImageProcessorConfig({ pad_to: 3 }), /unknown key "pad_to"/);
});

s('host 8-bit resize (pilResize8, used by the sized JPEG reward) equals the GPU pass, which equals PIL: up, down, non-square', async () => {
  for (const [h, w, H, W] of [[16, 16, 64, 64], [17, 9, 48, 30], [40, 33, 11, 16], [5, 5, 5, 12]]) {
    const px = new Uint8Array(h * w * 3);
    for (let i = 0; i < px.length; i++) px[i] = (i * 2654435761) >>> 24;
    const host = pilResize8(px, h, w, 3, H, W);
    const x = E.tensor(Float32Array.from(px), [1, h, w, 3]);
    const hor = pilResample(x, 2, pilWeights(w, W));
    const both = pilResample(hor, 1, pilWeights(h, H));
    assert.equal([...host], [...(await both.data())], `${h}×${w} → ${H}×${W}`);
    x.dispose(); hor.dispose(); both.dispose();
  }
  await assertThrows(() => pilResize8(new Uint8Array(5), 2, 2, 3, 4, 4), /pilResize8: 5 values are not 2×2×3/);
});

s.run();
