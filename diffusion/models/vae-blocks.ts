// The building blocks of diffusers' AutoencoderKL (SD v1's VAE), with diffusers' parameter
// names: ResnetBlock2D without a time embedding, the single-head spatial self-attention of the
// mid block, Downsample2D / Upsample2D, and the encoder/decoder blocks made of them.
//
// Each class registers its children in the order diffusers' __init__ does, so stateDict() lists
// names in torch's order. Each also has a static `shapes()` giving the same names and shapes
// without allocating anything: vaeParameterShapes() composes them to describe SD v1's 83 M
// parameter VAE cheaply; the tests check that both paths agree on smaller configs.
//
// GroupNorm eps is 1e-6 everywhere (diffusers passes resnet_eps=1e-6 through every VAE block).
// Per-sample results do not depend on the batch: every op used is batch-invariant.

import { add } from '../../engine/ops/elementwise.js';
import { permute, reshape } from '../../engine/ops/movement.js';
import { attention } from '../../engine/ops/attention.js';
import { torchPad } from '../../engine/ops/conv2d.js';
import { upsampleNearest2x } from '../../engine/ops/layers.js';
import { tidy } from '../../engine/scope.js';
import { Tensor } from '../../engine/tensor.js';
import { Device } from '../../engine/device.js';
import { Conv2d, GroupNorm, Linear } from '../../engine/nn/layers.js';
import { Module, ModuleList } from '../../engine/nn/module.js';

export const VAE_NORM_EPS = 1e-6;

/** Dotted name → shape, in torch's parameter order. */
export type ParamShapes = [string, number[]][];

export interface BlockOptions {
  device?: Device;
}

const join = (prefix: string, name: string) => (prefix ? `${prefix}.${name}` : name);
const convShapes = (p: string, cin: number, cout: number, k: number): ParamShapes =>
  [[join(p, 'weight'), [cout, cin, k, k]], [join(p, 'bias'), [cout]]];
const normShapes = (p: string, c: number): ParamShapes => [[join(p, 'weight'), [c]], [join(p, 'bias'), [c]]];
const linearShapes = (p: string, cin: number, cout: number): ParamShapes => [[join(p, 'weight'), [cout, cin]], [join(p, 'bias'), [cout]]];

/**
 * diffusers ResnetBlock2D with temb_channels=None (the VAE's): norm1 → silu → conv1 → norm2 →
 * silu → dropout(0) → conv2, plus the input (through a 1×1 conv_shortcut when the channel count
 * changes); output_scale_factor 1.
 */
export class VaeResnetBlock2D extends Module {
  readonly norm1: GroupNorm;
  readonly conv1: Conv2d;
  readonly norm2: GroupNorm;
  readonly conv2: Conv2d;
  readonly conv_shortcut: Conv2d | null;

  constructor(readonly inChannels: number, readonly outChannels: number, groups: number, opts: BlockOptions = {}) {
    super();
    const dev = opts.device;
    this.norm1 = this.registerModule('norm1', new GroupNorm(groups, inChannels, { eps: VAE_NORM_EPS, device: dev }));
    this.conv1 = this.registerModule('conv1', new Conv2d(inChannels, outChannels, 3, { padding: 1, device: dev }));
    this.norm2 = this.registerModule('norm2', new GroupNorm(groups, outChannels, { eps: VAE_NORM_EPS, device: dev }));
    this.conv2 = this.registerModule('conv2', new Conv2d(outChannels, outChannels, 3, { padding: 1, device: dev }));
    this.conv_shortcut = inChannels !== outChannels
      ? this.registerModule('conv_shortcut', new Conv2d(inChannels, outChannels, 1, { device: dev }))
      : null;
  }

  static shapes(p: string, cin: number, cout: number): ParamShapes {
    return [
      ...normShapes(join(p, 'norm1'), cin), ...convShapes(join(p, 'conv1'), cin, cout, 3),
      ...normShapes(join(p, 'norm2'), cout), ...convShapes(join(p, 'conv2'), cout, cout, 3),
      ...(cin !== cout ? convShapes(join(p, 'conv_shortcut'), cin, cout, 1) : []),
    ];
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = this.conv1.forward(this.norm1.forward(x, 'silu'));
      h = this.conv2.forward(this.norm2.forward(h, 'silu'));
      const skip = this.conv_shortcut ? this.conv_shortcut.forward(x) : x;
      return add(skip, h);
    });
  }
}

/**
 * The VAE mid block's attention (diffusers Attention with heads = 1, dim_head = C,
 * residual_connection=True, rescale_output_factor 1, group_norm over C): the H·W positions
 * attend to each other; q, k, v and out are Linear layers over the channels.
 */
export class VaeAttention extends Module {
  readonly group_norm: GroupNorm;
  readonly to_q: Linear;
  readonly to_k: Linear;
  readonly to_v: Linear;
  readonly to_out: ModuleList<Linear>;

  constructor(readonly channels: number, groups: number, opts: BlockOptions = {}) {
    super();
    const dev = opts.device;
    this.group_norm = this.registerModule('group_norm', new GroupNorm(groups, channels, { eps: VAE_NORM_EPS, device: dev }));
    this.to_q = this.registerModule('to_q', new Linear(channels, channels, { device: dev }));
    this.to_k = this.registerModule('to_k', new Linear(channels, channels, { device: dev }));
    this.to_v = this.registerModule('to_v', new Linear(channels, channels, { device: dev }));
    // to_out is [Linear, Dropout] in diffusers; the dropout has no parameters.
    this.to_out = this.registerModule('to_out', new ModuleList([new Linear(channels, channels, { device: dev })]));
  }

  static shapes(p: string, c: number): ParamShapes {
    return [
      ...normShapes(join(p, 'group_norm'), c),
      ...linearShapes(join(p, 'to_q'), c, c), ...linearShapes(join(p, 'to_k'), c, c),
      ...linearShapes(join(p, 'to_v'), c, c), ...linearShapes(join(p, 'to_out.0'), c, c),
    ];
  }

  forward(x: Tensor): Tensor {
    if (x.rank !== 4 || x.shape[1] !== this.channels) throw new Error(`VaeAttention(${this.channels}): input ${x.describe()} must be [B, ${this.channels}, H, W]`);
    return tidy(() => {
      const [B, C, H, W] = x.shape;
      const L = H * W;
      const seq = permute(reshape(this.group_norm.forward(x), [B, C, L]), [0, 2, 1]); // [B, L, C]
      // One head of width C: softmax(q·kᵀ/sqrt(C))·v, as diffusers' Attention(heads=1).
      const heads = (t: Tensor) => reshape(t, [B, 1, L, C]);
      const o = attention(heads(this.to_q.forward(seq)), heads(this.to_k.forward(seq)), heads(this.to_v.forward(seq)));
      // Fields and to_out.get(0) are read at call time, so layers swapped in by injectLoRA are used.
      const proj = this.to_out.get(0).forward(reshape(o, [B, L, C]));
      return add(reshape(permute(proj, [0, 2, 1]), [B, C, H, W]), x);
    });
  }
}

/** diffusers Downsample2D(use_conv=True, padding=0): F.pad(x, (0,1,0,1)) then a 3×3 stride-2 conv. */
export class VaeDownsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, opts: BlockOptions = {}) {
    super();
    // The asymmetric pad (right and bottom only) is the conv's own zero padding.
    this.conv = this.registerModule('conv', new Conv2d(channels, channels, 3, { stride: 2, padding: torchPad([0, 1, 0, 1]), device: opts.device }));
  }
  static shapes(p: string, c: number): ParamShapes { return convShapes(join(p, 'conv'), c, c, 3); }
  forward(x: Tensor): Tensor { return this.conv.forward(x); }
}

/** diffusers Upsample2D(use_conv=True): nearest 2× upsampling then a 3×3 conv. */
export class VaeUpsample2D extends Module {
  readonly conv: Conv2d;
  constructor(channels: number, opts: BlockOptions = {}) {
    super();
    this.conv = this.registerModule('conv', new Conv2d(channels, channels, 3, { padding: 1, device: opts.device }));
  }
  static shapes(p: string, c: number): ParamShapes { return convShapes(join(p, 'conv'), c, c, 3); }
  forward(x: Tensor): Tensor {
    return tidy(() => this.conv.forward(upsampleNearest2x(x)));
  }
}

/** diffusers DownEncoderBlock2D: `layers` resnets, then (unless last) a downsampler. */
export class DownEncoderBlock2D extends Module {
  readonly resnets: ModuleList<VaeResnetBlock2D>;
  readonly downsamplers: ModuleList<VaeDownsample2D> | null;

  constructor(cin: number, cout: number, layers: number, groups: number, addDownsample: boolean, opts: BlockOptions = {}) {
    super();
    this.resnets = this.registerModule('resnets', new ModuleList(
      Array.from({ length: layers }, (_, j) => new VaeResnetBlock2D(j === 0 ? cin : cout, cout, groups, opts))));
    this.downsamplers = addDownsample ? this.registerModule('downsamplers', new ModuleList([new VaeDownsample2D(cout, opts)])) : null;
  }

  static shapes(p: string, cin: number, cout: number, layers: number, addDownsample: boolean): ParamShapes {
    const out: ParamShapes = [];
    for (let j = 0; j < layers; j++) out.push(...VaeResnetBlock2D.shapes(join(p, `resnets.${j}`), j === 0 ? cin : cout, cout));
    if (addDownsample) out.push(...VaeDownsample2D.shapes(join(p, 'downsamplers.0'), cout));
    return out;
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = x;
      for (const r of this.resnets) h = r.forward(h);
      if (this.downsamplers) h = this.downsamplers.get(0).forward(h);
      return h;
    });
  }
}

/** diffusers UpDecoderBlock2D: `layers` resnets (layers_per_block + 1), then (unless last) an upsampler. */
export class UpDecoderBlock2D extends Module {
  readonly resnets: ModuleList<VaeResnetBlock2D>;
  readonly upsamplers: ModuleList<VaeUpsample2D> | null;

  constructor(cin: number, cout: number, layers: number, groups: number, addUpsample: boolean, opts: BlockOptions = {}) {
    super();
    this.resnets = this.registerModule('resnets', new ModuleList(
      Array.from({ length: layers }, (_, j) => new VaeResnetBlock2D(j === 0 ? cin : cout, cout, groups, opts))));
    this.upsamplers = addUpsample ? this.registerModule('upsamplers', new ModuleList([new VaeUpsample2D(cout, opts)])) : null;
  }

  static shapes(p: string, cin: number, cout: number, layers: number, addUpsample: boolean): ParamShapes {
    const out: ParamShapes = [];
    for (let j = 0; j < layers; j++) out.push(...VaeResnetBlock2D.shapes(join(p, `resnets.${j}`), j === 0 ? cin : cout, cout));
    if (addUpsample) out.push(...VaeUpsample2D.shapes(join(p, 'upsamplers.0'), cout));
    return out;
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = x;
      for (const r of this.resnets) h = r.forward(h);
      if (this.upsamplers) h = this.upsamplers.get(0).forward(h);
      return h;
    });
  }
}

/** diffusers UNetMidBlock2D as the VAE uses it (no time embedding): resnet, [attention, resnet]. */
export class VaeMidBlock2D extends Module {
  readonly attentions: ModuleList<VaeAttention>;
  readonly resnets: ModuleList<VaeResnetBlock2D>;

  constructor(readonly channels: number, groups: number, readonly addAttention: boolean, opts: BlockOptions = {}) {
    super();
    // diffusers registers attentions before resnets (state-dict order); without attention it
    // is an empty ModuleList (no parameters).
    this.attentions = this.registerModule('attentions', new ModuleList(addAttention ? [new VaeAttention(channels, groups, opts)] : []));
    this.resnets = this.registerModule('resnets', new ModuleList([
      new VaeResnetBlock2D(channels, channels, groups, opts), new VaeResnetBlock2D(channels, channels, groups, opts)]));
  }

  static shapes(p: string, c: number, addAttention: boolean): ParamShapes {
    return [
      ...(addAttention ? VaeAttention.shapes(join(p, 'attentions.0'), c) : []),
      ...VaeResnetBlock2D.shapes(join(p, 'resnets.0'), c, c), ...VaeResnetBlock2D.shapes(join(p, 'resnets.1'), c, c),
    ];
  }

  forward(x: Tensor): Tensor {
    return tidy(() => {
      let h = this.resnets.get(0).forward(x);
      if (this.addAttention) h = this.attentions.get(0).forward(h);
      return this.resnets.get(1).forward(h);
    });
  }
}
