// transformers' CLIPImageProcessor (the PIL-based one), batched on the GPU, as ddpo-pytorch's
// aesthetic scorer feeds CLIP: images in [0, 1] → round(x·255) clamped to uint8 (torch.round:
// half to even) → resize so the shortest edge is `shortest_edge` with PIL's filter (bicubic;
// antialiased when shrinking) and back to uint8 → centre crop → ×1/255 → (x − mean) / std.
//
// The resize is bit-exact with PIL (engine/ops/resample.ts): the horizontal pass first, then the
// vertical one, each rounding to uint8, as Pillow does; only the rows and columns the crop keeps
// are computed. Sizes follow transformers exactly: the long edge is int(shortest·long/short)
// (truncated), the crop's offsets (size − crop) // 2.
//
// A CLIP folder's preprocessor_config.json (read by clip-vision-io.ts) is parsed with the same
// policy as model configs: the values we implement are honoured, anything else is an Error.

import { Tensor, div, mapNew, mulScalar, sub, tensor, tidy } from '../../engine/index.js';
import { PilFilter, pilResample, pilWeights } from '../../engine/ops/resample.js';

export interface ClipImageProcessorConfig {
  /** Resize so the shorter edge has this many pixels. */
  shortestEdge: number;
  cropHeight: number;
  cropWidth: number;
  resample: PilFilter;
  /** Multiplies the uint8 values (1/255). */
  rescaleFactor: number;
  mean: [number, number, number];
  std: [number, number, number];
}

/** openai/clip-vit-large-patch14's preprocessor_config.json. */
export const CLIP_IMAGE_PROCESSOR: Readonly<ClipImageProcessorConfig> = Object.freeze<ClipImageProcessorConfig>({
  shortestEdge: 224, cropHeight: 224, cropWidth: 224, resample: 'bicubic', rescaleFactor: 1 / 255,
  mean: [0.48145466, 0.4578275, 0.40821073], std: [0.26862954, 0.26130258, 0.27577711],
});

/** transformers' get_resize_output_image_size(default_to_square=False): [height, width]. */
export function clipResizeSize(h: number, w: number, shortest: number): [number, number] {
  const [short, long] = w <= h ? [w, h] : [h, w];
  const newLong = Math.trunc((shortest * long) / short);
  return w <= h ? [newLong, shortest] : [shortest, newLong];
}

/** Where the centre crop starts in an h×w image (transformers' center_crop). */
export function clipCropOffsets(h: number, w: number, cropH: number, cropW: number): { top: number; left: number } {
  return { top: Math.floor((h - cropH) / 2), left: Math.floor((w - cropW) / 2) };
}

/** torch's (x·255).round().clamp(0, 255) on f32 (the values stay f32). */
export function quantiseUnit(x: Tensor): Tensor {
  return mapNew('quantise_u8', 'clamp(round(a * 255.0), 0.0, 255.0)', [x], 'f32');
}

/**
 * uint8 images (f32 values 0..255) [N, C, H, W] → resized and centre-cropped uint8 [N, C, cropH, cropW]
 * exactly as PIL + transformers. Throws if the resized image is smaller than the crop (transformers
 * would pad; CLIP's processor never needs it since the crop equals the shortest edge).
 */
export function clipResizeCrop(u8: Tensor, cfg: ClipImageProcessorConfig = CLIP_IMAGE_PROCESSOR): Tensor {
  if (u8.rank !== 4) throw new Error(`clipResizeCrop: images ${u8.describe()} must be [N, C, H, W]`);
  const [, , H, W] = u8.shape;
  const [rh, rw] = clipResizeSize(H, W, cfg.shortestEdge);
  if (rh < cfg.cropHeight || rw < cfg.cropWidth) {
    throw new Error(`clipResizeCrop: ${H}×${W} resizes to ${rh}×${rw}, smaller than the ${cfg.cropHeight}×${cfg.cropWidth} crop (padding is not implemented)`);
  }
  const { top, left } = clipCropOffsets(rh, rw, cfg.cropHeight, cfg.cropWidth);
  return tidy(() => {
    // Pillow: horizontal pass first, then vertical, each rounding to uint8.
    const horizontal = pilResample(u8, 3, pilWeights(W, rw, cfg.resample), left, cfg.cropWidth);
    return pilResample(horizontal, 2, pilWeights(H, rh, cfg.resample), top, cfg.cropHeight);
  });
}

/** uint8 values → pixel_values: ×rescale_factor, then per channel (x − mean) / std. */
export function clipNormalise(u8: Tensor, cfg: ClipImageProcessorConfig = CLIP_IMAGE_PROCESSOR): Tensor {
  const C = u8.shape[1];
  if (C !== 3) throw new Error(`clipNormalise: images ${u8.describe()} must have 3 channels`);
  return tidy(() => {
    const mean = tensor(cfg.mean, [1, 3, 1, 1], 'f32', u8.device);
    const std = tensor(cfg.std, [1, 3, 1, 1], 'f32', u8.device);
    return div(sub(mulScalar(u8, cfg.rescaleFactor), mean), std);
  });
}

/** Images in [0, 1], NCHW f32 → CLIP's pixel_values [N, 3, cropH, cropW] (the whole chain). */
export function clipPreprocess(images: Tensor, cfg: ClipImageProcessorConfig = CLIP_IMAGE_PROCESSOR): Tensor {
  if (images.rank !== 4 || images.shape[1] !== 3) throw new Error(`clipPreprocess: images ${images.describe()} must be [N, 3, H, W] with values in [0, 1]`);
  if (images.dtype !== 'f32') throw new Error(`clipPreprocess: images ${images.describe()} must be f32`);
  return tidy(() => clipNormalise(clipResizeCrop(quantiseUnit(images), cfg), cfg));
}

// ------------------------------------------------------------------ preprocessor_config.json

/** Keys of CLIPImageProcessor's config that do not change what we compute for RGB uint8 input. */
const BENIGN = new Set(['image_processor_type', 'feature_extractor_type', 'processor_class', 'do_convert_rgb', 'input_data_format', 'data_format', 'default_to_square']);
const PIL_RESAMPLE: Record<number, PilFilter> = { 2: 'bilinear', 3: 'bicubic' };

/** Parses a preprocessor_config.json object (transformers 4.x layout, old and new `size` forms). */
export function parseClipImageProcessorConfig(json: unknown, where = 'preprocessor_config.json'): ClipImageProcessorConfig {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new Error(`${where}: not a JSON object`);
  const raw = json as Record<string, unknown>;
  const fail = (key: string, why: string): never => { throw new Error(`${where}: "${key}" = ${JSON.stringify(raw[key])} ${why}`); };
  const posInt = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 1;
  for (const key of ['do_resize', 'do_center_crop', 'do_rescale', 'do_normalize']) {
    if (raw[key] !== undefined && raw[key] !== true) fail(key, 'is not supported (only true: the CLIP pipeline)');
  }
  if (raw.default_to_square === true) fail('default_to_square', 'is not supported (CLIP resizes the shortest edge)');
  const size = raw.size ?? 224;
  let shortestEdge: number;
  if (posInt(size)) shortestEdge = size as number;
  else if (size && typeof size === 'object' && posInt((size as Record<string, unknown>).shortest_edge) && Object.keys(size).length === 1) shortestEdge = (size as { shortest_edge: number }).shortest_edge;
  else shortestEdge = fail('size', 'must be an integer or {"shortest_edge": N}');
  const crop = raw.crop_size ?? shortestEdge;
  let cropHeight: number, cropWidth: number;
  if (posInt(crop)) cropHeight = cropWidth = crop as number;
  else if (crop && typeof crop === 'object' && posInt((crop as Record<string, unknown>).height) && posInt((crop as Record<string, unknown>).width)) {
    ({ height: cropHeight, width: cropWidth } = crop as { height: number; width: number });
  } else { cropHeight = cropWidth = fail('crop_size', 'must be an integer or {"height": H, "width": W}'); }
  const rs = raw.resample ?? 3;
  const resample = PIL_RESAMPLE[rs as number] ?? fail('resample', 'is not supported (2 bilinear or 3 bicubic)');
  const factor = raw.rescale_factor ?? 1 / 255;
  if (typeof factor !== 'number' || !(factor > 0)) fail('rescale_factor', 'must be a positive number');
  const triple = (key: string, def: readonly number[]): [number, number, number] => {
    const v = raw[key] ?? def;
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) fail(key, 'must be 3 numbers (R, G, B)');
    return [...(v as number[])] as [number, number, number];
  };
  const mean = triple('image_mean', CLIP_IMAGE_PROCESSOR.mean);
  const std = triple('image_std', CLIP_IMAGE_PROCESSOR.std);
  if (std.some((x) => !(x > 0))) fail('image_std', 'must be positive');
  const interpreted = new Set(['do_resize', 'do_center_crop', 'do_rescale', 'do_normalize', 'size', 'crop_size', 'resample', 'rescale_factor', 'image_mean', 'image_std']);
  for (const key of Object.keys(raw)) {
    if (!interpreted.has(key) && !BENIGN.has(key) && !key.startsWith('_')) throw new Error(`${where}: unknown key "${key}" (it may change the preprocessing; not supported)`);
  }
  return { shortestEdge, cropHeight, cropWidth, resample, rescaleFactor: factor as number, mean, std };
}
