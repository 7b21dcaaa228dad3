// The building blocks of diffusers' UNet2DConditionModel as nn Modules whose parameter names are
// diffusers' (ResnetBlock2D, Attention, FeedForward/GEGLU, BasicTransformerBlock,
// Transformer2DModel, Downsample2D, Upsample2D, the down / mid / up blocks). Each is built from
// its plan in unet-config.ts. Registration order follows diffusers' so that stateDict() order
// matches torch's (a block's attentions before its resnets).
//
// Memory: every forward runs inside tidy(), so a block's intermediates are freed when it returns
// (under autograd the ops keep what backward needs as shared handles).
//
// Layers are looked up through child() at call time rather than cached in fields, so a layer
// swapped in place (injectLoRA replacing to_q or to_out.0 by a LoRALinear) is what runs.

import { Tensor } from '../../engine/tensor.js';
import { tidy } from '../../engine/scope.js';
import { add, cast, mul, mulScalar, silu } from '../../engine/ops/elementwise.js';
import { concat, permute, reshape, slice } from '../../engine/ops/movement.js';
import { attention } from '../../engine/ops/attention.js';
import { geglu, upsampleNearest2x } from '../../engine/ops/layers.js';
import { torchPad } from '../../engine/ops/conv2d.js';
import { Conv2d, GroupNorm, LayerNorm, Linear } from '../../engine/nn/layers.js';
import { Module, ModuleList } from '../../engine/nn/module.js';
import { Device } from '../../engine/device.js';
import type { DownBlockPlan, MidBlockPlan, ResnetPlan, TransformerPlan, UpBlockPlan } from './unet-config.js';

export interface BlockOptions {
  device?: Device;
}

const lin = (m: Module, name: string) => m.child(name) as Linear;
const conv = (m: Module, name: string) => m.child(name) as Conv2d;
const norm = (m: Module, name: string) => m.child(name) as GroupNorm | LayerNorm;
const gnorm = (m: Module, name: string) => m.child(name) as GroupNorm;

/** A parameter-free placeholder keeping torch's list indices (Dropout(p=0) in to_out / ff.net). */
export class Identity extends Module {
  forward(x: Tensor): Tensor { return x; }
}

/** ResnetBlock2D: norm1 → silu → conv1 (+ time_emb_proj(silu(temb))) → norm2 → silu → conv2, + shortcut. */
export class ResnetBlock2D extends Module {
  constructor(readonly plan: ResnetPlan, opts: BlockOptions = {}) {
    super();
    const { inChannels: cin, outChannels: cout, groups, eps } = plan;
    const device = opts.device;
    this.registerModule('norm1', new GroupNorm(groups, cin, { eps, device }));
    this.registerModule('conv1', new Conv2d(cin, cout, 3, { padding: 1, device }));
    this.registerModule('time_emb_proj', new Linear(plan.tembChannels, plan.timeScaleShift === 'scale_shift' ? 2 * cout : cout, { device }));
    this.registerModule('norm2', new GroupNorm(groups, cout, { eps, device }));
    this.registerModule('conv2', new Conv2d(cout, cout, 3, { padding: 1, device }));
    if (cin !== cout) this.registerModule('conv_shortcut', new Conv2d(cin, cout, 1, { device }));
  }

  /** x [B, Cin, H, W], temb [B, T] → [B, Cout, H, W]. */
  forward(x: Tensor, temb: Tensor): Tensor {
    const p = this.plan;
    if (x.rank !== 4 || x.shape[1] !== p.inChannels) throw new Error(`ResnetBlock2D(${p.inChannels}→${p.outChannels}): input ${x.describe()} must be [B, ${p.inChannels}, H, W]`);
    return tidy(() => {
      let h = conv(this, 'conv1').forward(gnorm(this, 'norm1').forward(x, 'silu'));
      const t = lin(this, 'time_emb_proj').forward(p.skipTimeAct ? temb : silu(temb));
      const B = t.shape[0], C = p.outChannels;
      if (p.timeScaleShift === 'default') {
        h = gnorm(this, 'norm2').forward(add(h, reshape(t, [B, C, 1, 1])), 'silu');
      } else {
        // scale, shift = temb.chunk(2, dim=1); h = norm2(h) * (1 + scale) + shift
        const scale = reshape(slice(t, [0, 0], [B, C]), [B, C, 1, 1]);
        const shift = reshape(slice(t, [0, C], [B, 2 * C]), [B, C, 1, 1]);
        h = silu(add(mul(norm(this, 'norm2').forward(h), add(scale, 1)), shift));
      }
      h = conv(this, 'conv2').forward(h);
      const skip = p.inChannels !== p.outChannels ? conv(this, 'conv_shortcut').forward(x) : x;
      const out = add(skip, h);
      return p.outputScaleFactor === 1 ? out : mulScalar(out, 1 / p.outputScaleFactor);
    });
  }
}

/** diffusers' Attention: to_q/to_k/to_v without bias, to_out.0 with bias; heads split by reshape. */
export class Attention extends Module {
  readonly innerDim: number;
  constructor(readonly queryDim: number, readonly kvDim: number, readonly heads: number, readonly headDim: number, readonly upcast: boolean, opts: BlockOptions = {}) {
    super();
    const device = opts.device;
    this.innerDim = heads * headDim;
    this.registerModule('to_q', new Linear(queryDim, this.innerDim, { bias: false, device }));
    this.registerModule('to_k', new Linear(kvDim, this.innerDim, { bias: false, device }));
    this.registerModule('to_v', new Linear(kvDim, this.innerDim, { bias: false, device }));
    this.registerModule('to_out', new ModuleList<Module>([new Linear(this.innerDim, queryDim, { device }), new Identity()]));
  }

  /** x [B, L, queryDim], context [B, Lk, kvDim] (null: self-attention) → [B, L, queryDim]. */
  forward(x: Tensor, context: Tensor | null = null): Tensor {
    const ctx = context ?? x;
    const what = `Attention(query ${this.queryDim}, kv ${this.kvDim}, ${this.heads} heads)`;
    if (x.rank !== 3 || x.shape[2] !== this.queryDim) throw new Error(`${what}: input ${x.describe()} must be [B, L, ${this.queryDim}]`);
    if (ctx.rank !== 3 || ctx.shape[2] !== this.kvDim || ctx.shape[0] !== x.shape[0]) throw new Error(`${what}: context ${ctx.describe()} must be [${x.shape[0]}, Lk, ${this.kvDim}]`);
    return tidy(() => {
      const [B, L] = x.shape;
      const H = this.heads, D = this.headDim;
      const split = (t: Tensor) => permute(reshape(t, [B, t.shape[1], H, D]), [0, 2, 1, 3]);
      let q = split(lin(this, 'to_q').forward(x));
      let k = split(lin(this, 'to_k').forward(ctx));
      let v = split(lin(this, 'to_v').forward(ctx));
      // upcast_attention: scores and softmax in f32 even for an f16 model (f16 scores can overflow).
      const low = this.upcast && q.dtype !== 'f32';
      if (low) { q = cast(q, 'f32'); k = cast(k, 'f32'); v = cast(v, 'f32'); }
      let o = attention(q, k, v, { scale: 1 / Math.sqrt(D) });
      if (low) o = cast(o, x.dtype);
      const merged = reshape(permute(o, [0, 2, 1, 3]), [B, L, H * D]);
      return ((this.child('to_out') as ModuleList<Module>).get(0) as Linear).forward(merged);
    });
  }
}

/** diffusers' GEGLU: proj Linear(dim, 2·inner), then hidden · gelu(gate). */
export class GEGLU extends Module {
  constructor(readonly dim: number, readonly inner: number, opts: BlockOptions = {}) {
    super();
    this.registerModule('proj', new Linear(dim, 2 * inner, { device: opts.device }));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => geglu(lin(this, 'proj').forward(x)));
  }
}

/** FeedForward with GEGLU: net.0 = GEGLU(dim, 4·dim), net.1 = dropout (none), net.2 = Linear(4·dim, dim). */
export class FeedForward extends Module {
  constructor(readonly dim: number, opts: BlockOptions = {}) {
    super();
    this.registerModule('net', new ModuleList<Module>([new GEGLU(dim, 4 * dim, opts), new Identity(), new Linear(4 * dim, dim, { device: opts.device })]));
  }

  forward(x: Tensor): Tensor {
    const net = this.child('net') as ModuleList<Module>;
    return tidy(() => (net.get(2) as Linear).forward((net.get(0) as GEGLU).forward(x)));
  }
}

/** BasicTransformerBlock: pre-norm self-attention, cross-attention and GEGLU feed-forward, each residual. */
export class BasicTransformerBlock extends Module {
  constructor(readonly dim: number, readonly plan: TransformerPlan, opts: BlockOptions = {}) {
    super();
    const { heads, headDim, crossAttentionDim, upcastAttention } = plan;
    const device = opts.device;
    this.registerModule('norm1', new LayerNorm(dim, { eps: 1e-5, device }));
    this.registerModule('attn1', new Attention(dim, plan.onlyCrossAttention ? crossAttentionDim : dim, heads, headDim, upcastAttention, opts));
    this.registerModule('norm2', new LayerNorm(dim, { eps: 1e-5, device }));
    this.registerModule('attn2', new Attention(dim, crossAttentionDim, heads, headDim, upcastAttention, opts));
    this.registerModule('norm3', new LayerNorm(dim, { eps: 1e-5, device }));
    this.registerModule('ff', new FeedForward(dim, opts));
  }

  /** x [B, L, dim], context [B, Lk, crossDim] → [B, L, dim]. */
  forward(x: Tensor, context: Tensor): Tensor {
    return tidy(() => {
      const attn1 = this.child('attn1') as Attention, attn2 = this.child('attn2') as Attention;
      let h = add(attn1.forward(norm(this, 'norm1').forward(x), this.plan.onlyCrossAttention ? context : null), x);
      h = add(attn2.forward(norm(this, 'norm2').forward(h), context), h);
      return add((this.child('ff') as FeedForward).forward(norm(this, 'norm3').forward(h)), h);
    });
  }
}

/** Transformer2DModel (continuous input): GroupNorm → proj_in → tokens → blocks → proj_out → + residual. */
export class Transformer2DModel extends Module {
  readonly innerDim: number;
  constructor(readonly plan: TransformerPlan, opts: BlockOptions = {}) {
    super();
    const device = opts.device;
    const C = plan.channels;
    this.innerDim = plan.heads * plan.headDim;
    this.registerModule('norm', new GroupNorm(plan.groups, C, { eps: 1e-6, device }));
    this.registerModule('proj_in', plan.useLinearProjection ? new Linear(C, this.innerDim, { device }) : new Conv2d(C, this.innerDim, 1, { device }));
    const blocks = new ModuleList<BasicTransformerBlock>();
    for (let l = 0; l < plan.layers; l++) blocks.push(new BasicTransformerBlock(this.innerDim, plan, opts));
    this.registerModule('transformer_blocks', blocks);
    this.registerModule('proj_out', plan.useLinearProjection ? new Linear(this.innerDim, C, { device }) : new Conv2d(this.innerDim, C, 1, { device }));
  }

  /** x [B, C, H, W], context [B, Lk, crossDim] → [B, C, H, W]. */
  forward(x: Tensor, context: Tensor): Tensor {
    const C = this.plan.channels, D = this.innerDim;
    if (x.rank !== 4 || x.shape[1] !== C) throw new Error(`Transformer2DModel(${C}): input ${x.describe()} must be [B, ${C}, H, W]`);
    return tidy(() => {
      const [B, , H, W] = x.shape;
      const linear = this.plan.useLinearProjection;
      const toTokens = (t: Tensor) => reshape(permute(t, [0, 2, 3, 1]), [B, H * W, t.shape[1]]);
      const toImage = (t: Tensor) => permute(reshape(t, [B, H, W, t.shape[2]]), [0, 3, 1, 2]);
      const n = norm(this, 'norm').forward(x);
      let h = linear ? (this.child('proj_in') as Linear).forward(toTokens(n)) : toTokens(conv(this, 'proj_in').forward(n));
      for (const block of this.child('transformer_blocks') as ModuleList<BasicTransformerBlock>) h = block.forward(h, context);
      const out = linear ? toImage((this.child('proj_out') as Linear).forward(h)) : conv(this, 'proj_out').forward(toImage(h));
      if (out.shape[1] !== C || h.shape[2] !== D) throw new Error('Transformer2DModel: internal shape error');
      return add(out, x);
    });
  }
}

/** Downsample2D: a stride-2 3×3 conv; padding 0 means diffusers' F.pad(x, (0, 1, 0, 1)) first. */
export class Downsample2D extends Module {
  constructor(readonly channels: number, readonly padding: number, opts: BlockOptions = {}) {
    super();
    const pad = padding === 0 ? torchPad([0, 1, 0, 1]) : padding;
    this.registerModule('conv', new Conv2d(channels, channels, 3, { stride: 2, padding: pad, device: opts.device }));
  }

  forward(x: Tensor): Tensor {
    return conv(this, 'conv').forward(x);
  }
}

/** Upsample2D: nearest 2× then a 3×3 conv. */
export class Upsample2D extends Module {
  constructor(readonly channels: number, opts: BlockOptions = {}) {
    super();
    this.registerModule('conv', new Conv2d(channels, channels, 3, { padding: 1, device: opts.device }));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => conv(this, 'conv').forward(upsampleNearest2x(x)));
  }
}

export interface DownBlockOutput {
  hidden: Tensor;
  /** The states this block contributes to the skip connections (the last is `hidden`). */
  skips: Tensor[];
}

/** CrossAttnDownBlock2D / DownBlock2D: (resnet, attention?) × layers, then the downsampler. */
abstract class DownBlockBase extends Module {
  constructor(readonly plan: DownBlockPlan, opts: BlockOptions = {}) {
    super();
    if (plan.attentions.length) this.registerModule('attentions', new ModuleList(plan.attentions.map((t) => new Transformer2DModel(t, opts))));
    this.registerModule('resnets', new ModuleList(plan.resnets.map((r) => new ResnetBlock2D(r, opts))));
    if (plan.downsample) this.registerModule('downsamplers', new ModuleList([new Downsample2D(plan.downsample.channels, plan.downsample.padding, opts)]));
  }

  get resnets(): ModuleList<ResnetBlock2D> { return this.child('resnets') as ModuleList<ResnetBlock2D>; }

  forward(x: Tensor, temb: Tensor, context: Tensor): DownBlockOutput {
    return tidy(() => {
      const attns = this.plan.attentions.length ? [...(this.child('attentions') as ModuleList<Transformer2DModel>)] : [];
      const skips: Tensor[] = [];
      let h = x;
      [...this.resnets].forEach((r, j) => {
        h = r.forward(h, temb);
        if (attns[j]) h = attns[j].forward(h, context);
        skips.push(h);
      });
      if (this.plan.downsample) {
        h = ((this.child('downsamplers') as ModuleList<Downsample2D>).get(0)).forward(h);
        skips.push(h);
      }
      return { hidden: h, skips };
    });
  }
}

export class CrossAttnDownBlock2D extends DownBlockBase {}
export class DownBlock2D extends DownBlockBase {}

/** UNetMidBlock2DCrossAttn: resnet, (attention, resnet) × 1. */
export class UNetMidBlock2DCrossAttn extends Module {
  constructor(readonly plan: MidBlockPlan, opts: BlockOptions = {}) {
    super();
    this.registerModule('attentions', new ModuleList(plan.attentions.map((t) => new Transformer2DModel(t, opts))));
    this.registerModule('resnets', new ModuleList(plan.resnets.map((r) => new ResnetBlock2D(r, opts))));
  }

  forward(x: Tensor, temb: Tensor, context: Tensor): Tensor {
    return tidy(() => {
      const resnets = this.child('resnets') as ModuleList<ResnetBlock2D>;
      const attns = [...(this.child('attentions') as ModuleList<Transformer2DModel>)];
      let h = resnets.get(0).forward(x, temb);
      attns.forEach((a, i) => { h = resnets.get(i + 1).forward(a.forward(h, context), temb); });
      return h;
    });
  }
}

/** UpBlock2D / CrossAttnUpBlock2D: (concat skip, resnet, attention?) × (layers + 1), then the upsampler. */
abstract class UpBlockBase extends Module {
  constructor(readonly plan: UpBlockPlan, opts: BlockOptions = {}) {
    super();
    if (plan.attentions.length) this.registerModule('attentions', new ModuleList(plan.attentions.map((t) => new Transformer2DModel(t, opts))));
    this.registerModule('resnets', new ModuleList(plan.resnets.map((r) => new ResnetBlock2D(r, opts))));
    if (plan.upsample) this.registerModule('upsamplers', new ModuleList([new Upsample2D(plan.upsample.channels, opts)]));
  }

  get numResnets(): number { return this.plan.resnets.length; }

  /**
   * skips: this block's skip states in the order they were produced (as many as resnets); they
   * are consumed last-first, as diffusers pops res_hidden_states_tuple[-1].
   */
  forward(x: Tensor, skips: readonly Tensor[], temb: Tensor, context: Tensor): Tensor {
    if (skips.length !== this.numResnets) throw new Error(`${this.typeName}: ${skips.length} skip states for ${this.numResnets} resnets`);
    return tidy(() => {
      const resnets = [...(this.child('resnets') as ModuleList<ResnetBlock2D>)];
      const attns = this.plan.attentions.length ? [...(this.child('attentions') as ModuleList<Transformer2DModel>)] : [];
      let h = x;
      resnets.forEach((r, j) => {
        const skip = skips[skips.length - 1 - j];
        if (skip.shape[0] !== h.shape[0] || skip.shape[2] !== h.shape[2] || skip.shape[3] !== h.shape[3]) {
          throw new Error(`${this.typeName}: skip state ${skip.describe()} does not fit the hidden state ${h.describe()}`);
        }
        h = r.forward(concat([h, skip], 1), temb);
        if (attns[j]) h = attns[j].forward(h, context);
      });
      if (this.plan.upsample) h = ((this.child('upsamplers') as ModuleList<Upsample2D>).get(0)).forward(h);
      return h;
    });
  }
}

export class UpBlock2D extends UpBlockBase {}
export class CrossAttnUpBlock2D extends UpBlockBase {}
