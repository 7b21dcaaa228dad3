// AutoencoderKL's configuration as diffusers writes it in `vae/config.json`, validated.
//
// Only the values we implement are accepted: a key whose value would change the computation in
// a way we do not reproduce (another block type or activation) is an Error naming the key, so a
// checkpoint never runs silently wrong. Keys that only matter to a pipeline (scaling_factor,
// shift_factor, latents_mean/std) are kept for it; force_upcast is ignored (we choose dtypes
// ourselves).

export interface VaeConfig {
  inChannels: number;
  outChannels: number;
  /** One entry per encoder down block / decoder up block (the decoder walks it in reverse). */
  blockOutChannels: number[];
  layersPerBlock: number;
  latentChannels: number;
  normNumGroups: number;
  sampleSize: number;
  /** The pipeline multiplies encoder samples by it and divides latents by it before decode. */
  scalingFactor: number;
  /** SD3/Flux-style latent shift; null for SD v1 (pipeline-level, not used here). */
  shiftFactor: number | null;
  midBlockAddAttention: boolean;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
}

/** SD v1's VAE (CompVis/stable-diffusion-v1-4 and runwayml v1-5 `vae/config.json`). */
export const SD_V1_VAE_CONFIG: Readonly<VaeConfig> = Object.freeze({
  inChannels: 3,
  outChannels: 3,
  blockOutChannels: [128, 256, 512, 512],
  layersPerBlock: 2,
  latentChannels: 4,
  normNumGroups: 32,
  sampleSize: 512,
  scalingFactor: 0.18215,
  shiftFactor: null,
  midBlockAddAttention: true,
  useQuantConv: true,
  usePostQuantConv: true,
});

// Keys AutoencoderKL.__init__ takes that do not change encode()/decode() here.
const IGNORED = new Set(['force_upcast', 'latents_mean', 'latents_std']);

function posInt(key: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`vae config: "${key}" = ${JSON.stringify(v)} must be a positive integer`);
  return v;
}

function bool(key: string, v: unknown): boolean {
  if (typeof v !== 'boolean') throw new Error(`vae config: "${key}" = ${JSON.stringify(v)} must be true or false`);
  return v;
}

/**
 * Parses diffusers' AutoencoderKL config JSON (snake_case) into a VaeConfig. Missing keys take
 * diffusers' defaults; unknown keys and unsupported values are Errors naming the key.
 */
export function parseVaeConfig(json: Record<string, unknown>): VaeConfig {
  if (!json || typeof json !== 'object' || Array.isArray(json)) throw new Error('vae config: expected a JSON object');
  const cls = json._class_name;
  if (cls !== undefined && cls !== 'AutoencoderKL') throw new Error(`vae config: "_class_name" = ${JSON.stringify(cls)}; only AutoencoderKL is supported`);
  const known = new Set(['in_channels', 'out_channels', 'down_block_types', 'up_block_types', 'block_out_channels', 'layers_per_block',
    'act_fn', 'latent_channels', 'norm_num_groups', 'sample_size', 'scaling_factor', 'shift_factor', 'mid_block_add_attention',
    'use_quant_conv', 'use_post_quant_conv']);
  const unknown = Object.keys(json).filter((k) => !k.startsWith('_') && !known.has(k) && !IGNORED.has(k));
  if (unknown.length) throw new Error(`vae config: unsupported key(s) ${unknown.map((k) => `"${k}"`).join(', ')} (they may change the computation)`);
  const get = <T>(k: string, def: T): unknown => (json[k] === undefined ? def : json[k]);

  const boc = get('block_out_channels', [64]);
  if (!Array.isArray(boc) || boc.length < 1) throw new Error(`vae config: "block_out_channels" = ${JSON.stringify(boc)} must be a non-empty list`);
  const blockOutChannels = boc.map((c, i) => posInt(`block_out_channels[${i}]`, c));
  const n = blockOutChannels.length;
  const types = (key: string, want: string) => {
    const v = get(key, new Array(n).fill(want));
    if (!Array.isArray(v) || v.length !== n) throw new Error(`vae config: "${key}" = ${JSON.stringify(v)} must list ${n} block types (one per block_out_channels entry)`);
    const bad = v.filter((t) => t !== want);
    if (bad.length) throw new Error(`vae config: "${key}" has ${JSON.stringify(bad[0])}; only ${want} is supported`);
  };
  types('down_block_types', 'DownEncoderBlock2D');
  types('up_block_types', 'UpDecoderBlock2D');
  const act = get('act_fn', 'silu');
  if (act !== 'silu' && act !== 'swish') throw new Error(`vae config: "act_fn" = ${JSON.stringify(act)}; only "silu" is supported`);

  const normNumGroups = posInt('norm_num_groups', get('norm_num_groups', 32));
  for (const c of blockOutChannels) {
    if (c % normNumGroups) throw new Error(`vae config: "norm_num_groups" = ${normNumGroups} does not divide block_out_channels entry ${c}`);
  }
  const scalingFactor = get('scaling_factor', 0.18215);
  if (typeof scalingFactor !== 'number' || !Number.isFinite(scalingFactor) || scalingFactor === 0) throw new Error(`vae config: "scaling_factor" = ${JSON.stringify(scalingFactor)} must be a non-zero number`);
  const shift = get('shift_factor', null);
  if (shift !== null && (typeof shift !== 'number' || !Number.isFinite(shift))) throw new Error(`vae config: "shift_factor" = ${JSON.stringify(shift)} must be a number or null`);
  const sampleSize = get('sample_size', 32);
  const ss = Array.isArray(sampleSize) ? sampleSize[0] : sampleSize;

  return {
    inChannels: posInt('in_channels', get('in_channels', 3)),
    outChannels: posInt('out_channels', get('out_channels', 3)),
    blockOutChannels,
    layersPerBlock: posInt('layers_per_block', get('layers_per_block', 1)),
    latentChannels: posInt('latent_channels', get('latent_channels', 4)),
    normNumGroups,
    sampleSize: posInt('sample_size', ss),
    scalingFactor,
    shiftFactor: shift as number | null,
    midBlockAddAttention: bool('mid_block_add_attention', get('mid_block_add_attention', true)),
    useQuantConv: bool('use_quant_conv', get('use_quant_conv', true)),
    usePostQuantConv: bool('use_post_quant_conv', get('use_post_quant_conv', true)),
  };
}

/** The config as diffusers' config.json (for saving). */
export function vaeConfigToJson(c: VaeConfig): Record<string, unknown> {
  const n = c.blockOutChannels.length;
  return {
    _class_name: 'AutoencoderKL',
    act_fn: 'silu',
    block_out_channels: [...c.blockOutChannels],
    down_block_types: new Array(n).fill('DownEncoderBlock2D'),
    force_upcast: true,
    in_channels: c.inChannels,
    latent_channels: c.latentChannels,
    layers_per_block: c.layersPerBlock,
    mid_block_add_attention: c.midBlockAddAttention,
    norm_num_groups: c.normNumGroups,
    out_channels: c.outChannels,
    sample_size: c.sampleSize,
    scaling_factor: c.scalingFactor,
    shift_factor: c.shiftFactor,
    up_block_types: new Array(n).fill('UpDecoderBlock2D'),
    use_post_quant_conv: c.usePostQuantConv,
    use_quant_conv: c.useQuantConv,
  };
}
