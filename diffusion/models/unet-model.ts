// diffusers' UNet2DConditionModel (SD v1.x) as an nn Module with diffusers' parameter names:
// construction from a unet/config.json object, the forward pass (with optional capture of
// intermediates for localising a mismatch against the reference) and LoRA on the attention
// projections. Browser-safe; loading is unet-load.ts (any ModelFolder), saving unet.ts (Node).
//
// dtype: an 'f16' model stores its parameters (and activations) as f16; kernels still compute in
// f32. Construction builds one top-level block at a time and converts it before building the
// next, so an f16 SD UNet never holds more than one block in f32. LoRA adapters on an f16 UNet
// are f32 (LoRALinear casts around them); full fine-tuning needs an f32 model.

import { Device } from '../../engine/device.js';
import { Tensor, getDefaultDevice, tensor } from '../../engine/tensor.js';
import { tidy } from '../../engine/scope.js';
import { noGrad } from '../../engine/autograd.js';
import { add, cast, mulScalar, silu } from '../../engine/ops/elementwise.js';
import { expand, reshape } from '../../engine/ops/movement.js';
import { timestepEmbedding } from '../../engine/ops/layers.js';
import { Conv2d, GroupNorm, Linear } from '../../engine/nn/layers.js';
import { Module, ModuleList, manualSeed } from '../../engine/nn/module.js';
import { InjectedLoRA, LoRAOptions, injectLoRA } from '../../engine/nn/lora.js';
import { UNetConfig, UNetPlan, parseUnetConfig, planUnet } from './unet-config.js';
import {
  CrossAttnDownBlock2D, CrossAttnUpBlock2D, DownBlock2D, UNetMidBlock2DCrossAttn, UpBlock2D,
} from './unet-blocks.js';

export type ModelDType = 'f32' | 'f16';

export interface UNetOptions {
  device?: Device;
  /** Parameter storage type (default f32). */
  dtype?: ModelDType;
  /** Calls manualSeed(seed) first, so the random init is reproducible. */
  seed?: number;
}

export interface UNetForwardOptions {
  /**
   * Receives intermediates by name: 'time_embedding' [B, T], 'down_blocks.i' (each down block's
   * hidden-state output), 'mid_block', 'up_blocks.i'. The caller owns (and disposes) them.
   */
  capture?: Map<string, Tensor>;
}

/** TimestepEmbedding: linear_1 → silu → linear_2. */
export class TimestepEmbedding extends Module {
  constructor(inDim: number, dim: number, opts: { device?: Device } = {}) {
    super();
    this.registerModule('linear_1', new Linear(inDim, dim, { device: opts.device }));
    this.registerModule('linear_2', new Linear(dim, dim, { device: opts.device }));
  }

  forward(x: Tensor): Tensor {
    return tidy(() => (this.child('linear_2') as Linear).forward(silu((this.child('linear_1') as Linear).forward(x))));
  }
}

/** Converts a module's parameters to `dtype` in place (each parameter replaced by its cast). */
export function castParameters(m: Module, dtype: ModelDType): void {
  noGrad(() => {
    for (const [, mod] of m.namedModules()) {
      for (const [n, p] of mod.namedParameters()) {
        if (n.includes('.') || p.dtype === dtype) continue; // own parameters only
        mod.replaceParameter(n, cast(p, dtype));
      }
    }
  });
}

type DownBlock = CrossAttnDownBlock2D | DownBlock2D;
type UpBlock = CrossAttnUpBlock2D | UpBlock2D;

export class UNet2DConditionModel extends Module {
  readonly config: UNetConfig;
  readonly plan: UNetPlan;
  /** The config as given (diffusers' snake_case keys); saveUnet writes it back. */
  readonly rawConfig: Record<string, unknown>;
  readonly dtype: ModelDType;
  readonly device: Device;

  constructor(rawConfig: Record<string, unknown>, opts: UNetOptions = {}) {
    super();
    this.rawConfig = structuredClone(rawConfig);
    this.config = parseUnetConfig(rawConfig);
    this.plan = planUnet(this.config);
    this.dtype = opts.dtype ?? 'f32';
    this.device = opts.device ?? getDefaultDevice();
    if (this.dtype === 'f16' && !this.device.hasF16) throw new Error(`UNet2DConditionModel: dtype f16 needs shader-f16, which ${this.device.adapterName} does not offer`);
    if (opts.seed !== undefined) manualSeed(opts.seed);
    const c = this.config, p = this.plan, device = this.device;
    const o = { device };
    // Registration order is diffusers': up_blocks is registered (empty) before mid_block.
    const put = <M extends Module>(name: string, m: M): M => {
      if (this.dtype !== 'f32') castParameters(m, this.dtype);
      return this.registerModule(name, m);
    };
    put('conv_in', new Conv2d(c.inChannels, c.blockOutChannels[0], c.convInKernel, { padding: (c.convInKernel - 1) / 2, device }));
    put('time_embedding', new TimestepEmbedding(c.blockOutChannels[0], p.timeEmbedDim, o));
    const down = this.registerModule('down_blocks', new ModuleList<DownBlock>());
    const up = this.registerModule('up_blocks', new ModuleList<UpBlock>());
    for (const b of p.down) {
      const m = b.type === 'CrossAttnDownBlock2D' ? new CrossAttnDownBlock2D(b, o) : new DownBlock2D(b, o);
      if (this.dtype !== 'f32') castParameters(m, this.dtype);
      down.push(m);
    }
    if (p.mid) put('mid_block', new UNetMidBlock2DCrossAttn(p.mid, o));
    for (const b of p.up) {
      const m = b.type === 'CrossAttnUpBlock2D' ? new CrossAttnUpBlock2D(b, o) : new UpBlock2D(b, o);
      if (this.dtype !== 'f32') castParameters(m, this.dtype);
      up.push(m);
    }
    put('conv_norm_out', new GroupNorm(c.normNumGroups, c.blockOutChannels[0], { eps: c.normEps, device }));
    put('conv_out', new Conv2d(c.blockOutChannels[0], c.outChannels, c.convOutKernel, { padding: (c.convOutKernel - 1) / 2, device }));
  }

  get downBlocks(): ModuleList<DownBlock> { return this.child('down_blocks') as ModuleList<DownBlock>; }
  get upBlocks(): ModuleList<UpBlock> { return this.child('up_blocks') as ModuleList<UpBlock>; }

  /** Timesteps as an f32 [B] tensor (a number or a 1-element tensor is broadcast over the batch). */
  private timesteps(timestep: number | Tensor, B: number): Tensor {
    if (typeof timestep === 'number') {
      if (!Number.isFinite(timestep)) throw new Error(`UNet2DConditionModel.forward: timestep ${timestep} is not finite`);
      return tensor(new Float32Array(B).fill(timestep), [B], 'f32', this.device);
    }
    if (timestep.size !== B && timestep.size !== 1) throw new Error(`UNet2DConditionModel.forward: timestep ${timestep.describe()} must have ${B} elements (one per sample) or 1`);
    if (timestep.rank > 1) throw new Error(`UNet2DConditionModel.forward: timestep ${timestep.describe()} must be a scalar or [B]`);
    const f = timestep.dtype === 'f32' ? timestep : cast(timestep, 'f32');
    return timestep.size === B ? reshape(f, [B]) : expand(reshape(f, [1]), [B]);
  }

  /**
   * sample [B, in_channels, H, W], timestep (number | tensor [B]), encoderHiddenStates
   * [B, L, cross_attention_dim] → the noise prediction [B, out_channels, H, W] in the model's
   * dtype. Inputs of another float dtype are cast to the model's.
   */
  forward(sample: Tensor, timestep: number | Tensor, encoderHiddenStates: Tensor, opts: UNetForwardOptions = {}): Tensor {
    const c = this.config;
    const what = `UNet2DConditionModel.forward(sample ${sample.describe()}, encoderHiddenStates ${encoderHiddenStates.describe()})`;
    if (sample.rank !== 4 || sample.shape[1] !== c.inChannels) throw new Error(`${what}: sample must be [B, ${c.inChannels}, H, W]`);
    const [B, , H, W] = sample.shape;
    const factor = 2 ** this.plan.down.filter((b) => b.downsample).length;
    if (H % factor || W % factor) throw new Error(`${what}: H and W must be multiples of ${factor} (the UNet downsamples ${Math.log2(factor)} times)`);
    if (encoderHiddenStates.rank !== 3 || encoderHiddenStates.shape[0] !== B) throw new Error(`${what}: encoderHiddenStates must be [${B}, L, D]`);
    const needD = new Set(c.crossAttentionDim);
    if (![...needD].every((d) => d === encoderHiddenStates.shape[2])) throw new Error(`${what}: encoderHiddenStates' last dimension must be the cross_attention_dim ${[...needD].join('/')}`);
    const cap = opts.capture;
    const result = tidy(() => {
      const toModel = (t: Tensor) => (t.dtype === this.dtype ? t : cast(t, this.dtype));
      const captured: Tensor[] = [];
      const keepAs = (name: string, t: Tensor) => { if (cap) { cap.set(name, t); captured.push(t); } };

      const tEmb = toModel(timestepEmbedding(this.timesteps(timestep, B), c.blockOutChannels[0], { flipSinToCos: c.flipSinToCos, downscaleFreqShift: c.freqShift }));
      const emb = (this.child('time_embedding') as TimestepEmbedding).forward(tEmb);
      keepAs('time_embedding', emb);
      const ctx = toModel(encoderHiddenStates);
      let x = toModel(sample);
      if (c.centerInputSample) x = add(mulScalar(x, 2), -1);

      let h = (this.child('conv_in') as Conv2d).forward(x);
      const skips: Tensor[] = [h];
      [...this.downBlocks].forEach((b, i) => {
        const r = b.forward(h, emb, ctx);
        skips.push(...r.skips);
        h = r.hidden;
        keepAs(`down_blocks.${i}`, h);
      });
      if (this.plan.mid) {
        h = (this.child('mid_block') as UNetMidBlock2DCrossAttn).forward(h, emb, ctx);
        keepAs('mid_block', h);
      }
      [...this.upBlocks].forEach((b, i) => {
        const n = b.numResnets;
        const mine = skips.splice(skips.length - n, n);
        h = b.forward(h, mine, emb, ctx);
        // The skips were only needed by this block (autograd keeps its own handles).
        for (const s of mine) if (!captured.includes(s)) s.dispose();
        keepAs(`up_blocks.${i}`, h);
      });
      const out = (this.child('conv_out') as Conv2d).forward((this.child('conv_norm_out') as GroupNorm).forward(h, 'silu'));
      return { out, captured };
    });
    return result.out;
  }
}

// ------------------------------------------------------------------ LoRA

/** The attention projections LoRA adapts (peft's target_modules for SD UNets). */
const LORA_TARGET = /\.attn[12]\.(to_q|to_k|to_v|to_out\.0)$/;

/**
 * Freezes the UNet and wraps to_q, to_k, to_v and to_out.0 of attn1 and attn2 in every
 * transformer block with a LoRALinear (rank default 4, alpha default rank): afterwards only the
 * adapters require gradients (unet.trainableParameters()). The model may be f32 or f16; the
 * adapters are f32 either way.
 */
export function injectUnetLoRA(unet: UNet2DConditionModel, opts: LoRAOptions = {}): InjectedLoRA {
  unet.freeze();
  const injected = injectLoRA(unet, (name) => LORA_TARGET.test(name), opts);
  if (!injected.layers.length) throw new Error('injectUnetLoRA: the UNet has no attention projections (no cross-attention blocks)');
  return injected;
}

/** The adapters' tensors only (names as in stateDict(): …to_q.lora_A.weight, …lora_B.weight). */
export function unetLoRAStateDict(unet: UNet2DConditionModel): Map<string, Tensor> {
  return new Map([...unet.namedParameters()].filter(([n]) => n.includes('.lora_A.') || n.includes('.lora_B.')));
}
