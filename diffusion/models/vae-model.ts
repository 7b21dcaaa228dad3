// diffusers' AutoencoderKL (Stable Diffusion v1's VAE) with diffusers' parameter names.
//
//   encode(image [B, in, H, W] in [-1, 1]) → { mean, logvar } [B, latent, H/f, W/f]
//       (f = 2^(blocks−1); logvar clamped to [−30, 20] as DiagonalGaussianDistribution does)
//   decode(latent [B, latent, h, w]) → image [B, out, h·f, w·f]
//
// Neither applies scaling_factor: the pipeline multiplies encoder samples by it and divides
// latents by it before decode(), as diffusers' pipelines do.
//
// Both run the batch in micro-batches (default 1 sample at a time) and concatenate: at 512²,
// one sample's largest activation (256 ch × 512 × 512 f32 = 256 MiB) is already near common
// binding limits, so whole batches of 8 would not fit. Results per sample are identical
// whatever the micro-batch size, because every op is batch-invariant.

import { cast, clamp } from '../../engine/ops/elementwise.js';
import { concat, slice } from '../../engine/ops/movement.js';
import { noGrad } from '../../engine/autograd.js';
import { tidy } from '../../engine/scope.js';
import { Tensor } from '../../engine/tensor.js';
import { Device } from '../../engine/device.js';
import { Conv2d, GroupNorm } from '../../engine/nn/layers.js';
import { Module, ModuleList } from '../../engine/nn/module.js';
import { DownEncoderBlock2D, ParamShapes, UpDecoderBlock2D, VAE_NORM_EPS, VaeMidBlock2D } from './vae-blocks.js';
import { VaeConfig } from './vae-config.js';

export interface VaeOptions {
  device?: Device;
}

export interface VaeRunOptions {
  /** Samples per pass (default: the model's microBatch, 1 unless set). */
  microBatch?: number;
}

/** diffusers Encoder (double_z): conv_in, down blocks, mid block, norm, silu, conv_out → 2·latent channels. */
export class VaeEncoder extends Module {
  readonly conv_in: Conv2d;
  readonly down_blocks: ModuleList<DownEncoderBlock2D>;
  readonly mid_block: VaeMidBlock2D;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(readonly config: VaeConfig, opts: VaeOptions = {}) {
    super();
    const { blockOutChannels: boc, normNumGroups: g, layersPerBlock } = config;
    const dev = opts.device;
    const last = boc[boc.length - 1];
    this.conv_in = this.registerModule('conv_in', new Conv2d(config.inChannels, boc[0], 3, { padding: 1, device: dev }));
    this.down_blocks = this.registerModule('down_blocks', new ModuleList(boc.map((cout, i) =>
      new DownEncoderBlock2D(i === 0 ? boc[0] : boc[i - 1], cout, layersPerBlock, g, i < boc.length - 1, { device: dev }))));
    this.mid_block = this.registerModule('mid_block', new VaeMidBlock2D(last, g, config.midBlockAddAttention, { device: dev }));
    this.conv_norm_out = this.registerModule('conv_norm_out', new GroupNorm(g, last, { eps: VAE_NORM_EPS, device: dev }));
    this.conv_out = this.registerModule('conv_out', new Conv2d(last, 2 * config.latentChannels, 3, { padding: 1, device: dev }));
  }

  static shapes(p: string, c: VaeConfig): ParamShapes {
    const boc = c.blockOutChannels, last = boc[boc.length - 1];
    return [
      [`${p}.conv_in.weight`, [boc[0], c.inChannels, 3, 3]], [`${p}.conv_in.bias`, [boc[0]]],
      ...boc.flatMap((cout, i) => DownEncoderBlock2D.shapes(`${p}.down_blocks.${i}`, i === 0 ? boc[0] : boc[i - 1], cout, c.layersPerBlock, i < boc.length - 1)),
      ...VaeMidBlock2D.shapes(`${p}.mid_block`, last, c.midBlockAddAttention),
      [`${p}.conv_norm_out.weight`, [last]], [`${p}.conv_norm_out.bias`, [last]],
      [`${p}.conv_out.weight`, [2 * c.latentChannels, last, 3, 3]], [`${p}.conv_out.bias`, [2 * c.latentChannels]],
    ];
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = this.conv_in.forward(x);
      for (const b of this.down_blocks) h = b.forward(h);
      h = this.mid_block.forward(h);
      return this.conv_out.forward(this.conv_norm_out.forward(h, 'silu'));
    });
  }
}

/** diffusers Decoder: conv_in, mid block, up blocks (reversed channels, layers_per_block + 1 resnets), norm, silu, conv_out. */
export class VaeDecoder extends Module {
  readonly conv_in: Conv2d;
  readonly up_blocks: ModuleList<UpDecoderBlock2D>;
  readonly mid_block: VaeMidBlock2D;
  readonly conv_norm_out: GroupNorm;
  readonly conv_out: Conv2d;

  constructor(readonly config: VaeConfig, opts: VaeOptions = {}) {
    super();
    const { blockOutChannels: boc, normNumGroups: g, layersPerBlock } = config;
    const dev = opts.device;
    const rev = [...boc].reverse();
    this.conv_in = this.registerModule('conv_in', new Conv2d(config.latentChannels, rev[0], 3, { padding: 1, device: dev }));
    // diffusers registers up_blocks before mid_block (state-dict order), though mid runs first.
    this.up_blocks = this.registerModule('up_blocks', new ModuleList(rev.map((cout, i) =>
      new UpDecoderBlock2D(i === 0 ? rev[0] : rev[i - 1], cout, layersPerBlock + 1, g, i < rev.length - 1, { device: dev }))));
    this.mid_block = this.registerModule('mid_block', new VaeMidBlock2D(rev[0], g, config.midBlockAddAttention, { device: dev }));
    this.conv_norm_out = this.registerModule('conv_norm_out', new GroupNorm(g, boc[0], { eps: VAE_NORM_EPS, device: dev }));
    this.conv_out = this.registerModule('conv_out', new Conv2d(boc[0], config.outChannels, 3, { padding: 1, device: dev }));
  }

  static shapes(p: string, c: VaeConfig): ParamShapes {
    const rev = [...c.blockOutChannels].reverse();
    return [
      [`${p}.conv_in.weight`, [rev[0], c.latentChannels, 3, 3]], [`${p}.conv_in.bias`, [rev[0]]],
      ...rev.flatMap((cout, i) => UpDecoderBlock2D.shapes(`${p}.up_blocks.${i}`, i === 0 ? rev[0] : rev[i - 1], cout, c.layersPerBlock + 1, i < rev.length - 1)),
      ...VaeMidBlock2D.shapes(`${p}.mid_block`, rev[0], c.midBlockAddAttention),
      [`${p}.conv_norm_out.weight`, [c.blockOutChannels[0]]], [`${p}.conv_norm_out.bias`, [c.blockOutChannels[0]]],
      [`${p}.conv_out.weight`, [c.outChannels, c.blockOutChannels[0], 3, 3]], [`${p}.conv_out.bias`, [c.outChannels]],
    ];
  }

  forward(z: Tensor): Tensor {
    return tidy(() => {
      let h = this.mid_block.forward(this.conv_in.forward(z));
      for (const b of this.up_blocks) h = b.forward(h);
      return this.conv_out.forward(this.conv_norm_out.forward(h, 'silu'));
    });
  }
}

export interface VaeModelOptions extends VaeOptions {
  /** Default samples per encode/decode pass (default 1). */
  microBatch?: number;
}

function checkMicroBatch(op: string, n: number): number {
  if (!Number.isInteger(n) || n < 1) throw new Error(`${op}: microBatch=${n} must be a positive integer`);
  return n;
}

/** diffusers AutoencoderKL: encoder, decoder, quant_conv, post_quant_conv. */
export class AutoencoderKL extends Module {
  readonly encoder: VaeEncoder;
  readonly decoder: VaeDecoder;
  readonly quant_conv: Conv2d | null;
  readonly post_quant_conv: Conv2d | null;
  microBatch: number;

  constructor(readonly config: VaeConfig, opts: VaeModelOptions = {}) {
    super();
    const dev = opts.device;
    const L = config.latentChannels;
    this.microBatch = checkMicroBatch('AutoencoderKL', opts.microBatch ?? 1);
    this.encoder = this.registerModule('encoder', new VaeEncoder(config, { device: dev }));
    this.decoder = this.registerModule('decoder', new VaeDecoder(config, { device: dev }));
    this.quant_conv = config.useQuantConv ? this.registerModule('quant_conv', new Conv2d(2 * L, 2 * L, 1, { device: dev })) : null;
    this.post_quant_conv = config.usePostQuantConv ? this.registerModule('post_quant_conv', new Conv2d(L, L, 1, { device: dev })) : null;
  }

  /** The dtype of the parameters (inputs are cast to it; outputs come in it). */
  get dtype(): Tensor['dtype'] {
    return this.encoder.conv_in.weight.dtype;
  }

  get device(): Device {
    return this.encoder.conv_in.weight.device;
  }

  /** image [B, in_channels, H, W] in [−1, 1] → the posterior's mean and logvar [B, latent, H/f, W/f]. */
  encode(image: Tensor, opts: VaeRunOptions = {}): { mean: Tensor; logvar: Tensor } {
    const c = this.config;
    if (image.rank !== 4 || image.shape[1] !== c.inChannels) throw new Error(`AutoencoderKL.encode: image ${image.describe()} must be [B, ${c.inChannels}, H, W]`);
    const L = c.latentChannels;
    const [mean, logvar] = this.microBatched('AutoencoderKL.encode', image, opts, (x) => {
      let moments = this.encoder.forward(x);
      if (this.quant_conv) moments = this.quant_conv.forward(moments);
      const [b, , h, w] = moments.shape;
      const m = slice(moments, [0, 0, 0, 0], [b, L, h, w]);
      const lv = clamp(slice(moments, [0, L, 0, 0], [b, 2 * L, h, w]), -30, 20);
      return [m, lv];
    });
    return { mean, logvar };
  }

  /** latent [B, latent_channels, h, w] (already divided by scaling_factor) → image [B, out_channels, h·f, w·f]. */
  decode(latent: Tensor, opts: VaeRunOptions = {}): Tensor {
    const c = this.config;
    if (latent.rank !== 4 || latent.shape[1] !== c.latentChannels) throw new Error(`AutoencoderKL.decode: latent ${latent.describe()} must be [B, ${c.latentChannels}, h, w]`);
    return this.microBatched('AutoencoderKL.decode', latent, opts, (z) => {
      const h = this.post_quant_conv ? this.post_quant_conv.forward(z) : z;
      return [this.decoder.forward(h)];
    })[0];
  }

  /** Runs fn on slices of at most microBatch samples (cast to the model's dtype) and concatenates each output over the batch. */
  private microBatched(op: string, x: Tensor, opts: VaeRunOptions, fn: (x: Tensor) => Tensor[]): Tensor[] {
    const mb = checkMicroBatch(op, opts.microBatch ?? this.microBatch);
    const B = x.shape[0];
    if (B === 0) throw new Error(`${op}: empty batch ${x.describe()}`);
    return tidy(() => {
      const input = x.dtype === this.dtype ? x : cast(x, this.dtype);
      if (B <= mb) return fn(input);
      const parts: Tensor[][] = [];
      for (let s = 0; s < B; s += mb) {
        const e = Math.min(B, s + mb);
        parts.push(tidy(() => fn(slice(input, [s], [e]))));
      }
      return parts[0].map((_, k) => concat(parts.map((p) => p[k]), 0));
    });
  }

  /** Casts every parameter to dtype in place (f16 parameters do not require gradients). Returns this. */
  toDtype(dtype: 'f32' | 'f16'): this {
    if (dtype === 'f16' && !this.device.hasF16) throw new Error(`AutoencoderKL.toDtype: f16 needs shader-f16, which ${this.device.adapterName} does not offer`);
    const todo: [Module, string, Tensor][] = [];
    for (const [, m] of this.namedModules()) {
      // namedParameters() without a prefix names a module's own parameters without dots.
      for (const [n, t] of m.namedParameters()) if (!n.includes('.') && t.dtype !== dtype) todo.push([m, n, t]);
    }
    for (const [m, n, t] of todo) m.replaceParameter(n, noGrad(() => cast(t, dtype)));
    return this;
  }

  /** Names and shapes of every parameter for a config, in torch's order, without allocating. */
  static parameterShapes(config: VaeConfig): ParamShapes {
    return vaeParameterShapes(config);
  }
}

/** Every parameter name and shape of AutoencoderKL(config), in torch's order; allocates nothing. */
export function vaeParameterShapes(c: VaeConfig): ParamShapes {
  const L = c.latentChannels;
  return [
    ...VaeEncoder.shapes('encoder', c),
    ...VaeDecoder.shapes('decoder', c),
    ...(c.useQuantConv ? [['quant_conv.weight', [2 * L, 2 * L, 1, 1]], ['quant_conv.bias', [2 * L]]] as ParamShapes : []),
    ...(c.usePostQuantConv ? [['post_quant_conv.weight', [L, L, 1, 1]], ['post_quant_conv.bias', [L]]] as ParamShapes : []),
  ];
}
