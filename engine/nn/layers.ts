// Layers with torch.nn's parameter names, shapes and default initialisation.
//
// Init: torch's Linear/Conv2d reset_parameters() amount to uniform(±1/sqrt(fan_in)) for both
// weight and bias (kaiming_uniform with a = sqrt(5)). Values come from randomUniform with a seed
// (options.seed, else the next seed of manualSeed's counter) so a model is reproducible; they are
// not torch's values (different generator), and pretrained weights arrive by loadStateDict anyway.

import { add } from '../ops/elementwise.js';
import { conv2d, Conv2dOptions } from '../ops/conv2d.js';
import { embedding } from '../ops/gather.js';
import { matmul } from '../ops/matmul.js';
import { full } from '../ops/movement.js';
import { NormAct, groupNorm, layerNorm } from '../ops/norm.js';
import { randomNormal, randomUniform } from '../ops/random.js';
import { Device } from '../device.js';
import { Tensor, getDefaultDevice } from '../tensor.js';
import { Module, nextSeed } from './module.js';

export interface InitOptions {
  /** Init seed (default: nextSeed()). Weight and bias use seed and seed's stream at an offset. */
  seed?: number;
  device?: Device;
}

/** Token ids: an i32/u32 tensor or host ids. */
export type Indices = Tensor | ArrayLike<number>;

function uniformInit(shape: number[], bound: number, seed: number, offset: number, device?: Device): Tensor {
  return randomUniform(shape, seed, { low: -bound, high: bound, offset, device: device ?? getDefaultDevice() });
}

function checkDims(op: string, dims: Record<string, number>): void {
  for (const [k, v] of Object.entries(dims)) {
    if (!Number.isInteger(v) || v < 1) throw new Error(`${op}: ${k}=${v} must be a positive integer`);
  }
}

export interface LinearOptions extends InitOptions {
  bias?: boolean;
  /** Adopt these tensors (taking ownership) instead of initialising: weight [out, in], bias [out] or null. */
  weights?: { weight: Tensor; bias: Tensor | null };
}

/** torch.nn.Linear: weight [out, in], bias [out]; forward x [..., in] → [..., out]. */
export class Linear extends Module {
  constructor(readonly inFeatures: number, readonly outFeatures: number, opts: LinearOptions = {}) {
    super();
    checkDims('Linear', { inFeatures, outFeatures });
    if (opts.weights) {
      const { weight, bias } = opts.weights;
      if (weight.shape.join() !== `${outFeatures},${inFeatures}` || (bias && bias.shape.join() !== `${outFeatures}`)) {
        throw new Error(`Linear(${inFeatures}, ${outFeatures}): adopted weight ${weight.describe()}${bias ? ` / bias ${bias.describe()}` : ''} must be [${outFeatures}, ${inFeatures}] / [${outFeatures}]`);
      }
      this.registerParameter('weight', weight);
      this.registerParameter('bias', bias);
      return;
    }
    const seed = opts.seed ?? nextSeed();
    const bound = 1 / Math.sqrt(inFeatures);
    this.registerParameter('weight', uniformInit([outFeatures, inFeatures], bound, seed, 0, opts.device));
    this.registerParameter('bias', opts.bias ?? true ? uniformInit([outFeatures], bound, seed, outFeatures * inFeatures, opts.device) : null);
  }

  get weight(): Tensor { return this.param('weight'); }
  get bias(): Tensor | null { return this.paramOrNull('bias'); }

  forward(x: Tensor): Tensor {
    if (x.rank < 1 || x.shape[x.rank - 1] !== this.inFeatures) {
      throw new Error(`Linear(${this.inFeatures}, ${this.outFeatures}): input ${x.describe()} must end in ${this.inFeatures}`);
    }
    const y = matmul(x, this.weight, { transB: true });
    const b = this.bias;
    if (!b) return y;
    const out = add(y, b);
    y.dispose();
    return out;
  }
}

export interface Conv2dLayerOptions extends InitOptions, Conv2dOptions {
  bias?: boolean;
}

/** torch.nn.Conv2d: weight [cout, cin/groups, kh, kw], bias [cout]. */
export class Conv2d extends Module {
  readonly kernelSize: [number, number];
  readonly conv: Conv2dOptions;

  constructor(readonly inChannels: number, readonly outChannels: number, kernelSize: number | readonly [number, number], opts: Conv2dLayerOptions = {}) {
    super();
    const [kh, kw] = typeof kernelSize === 'number' ? [kernelSize, kernelSize] : kernelSize;
    const groups = opts.groups ?? 1;
    checkDims('Conv2d', { inChannels, outChannels, kh, kw, groups });
    if (inChannels % groups || outChannels % groups) throw new Error(`Conv2d: groups=${groups} must divide inChannels=${inChannels} and outChannels=${outChannels}`);
    this.kernelSize = [kh, kw];
    this.conv = { stride: opts.stride, padding: opts.padding, dilation: opts.dilation, groups };
    const seed = opts.seed ?? nextSeed();
    const fanIn = (inChannels / groups) * kh * kw;
    const bound = 1 / Math.sqrt(fanIn);
    const wShape = [outChannels, inChannels / groups, kh, kw];
    this.registerParameter('weight', uniformInit(wShape, bound, seed, 0, opts.device));
    this.registerParameter('bias', opts.bias ?? true ? uniformInit([outChannels], bound, seed, outChannels * fanIn, opts.device) : null);
  }

  get weight(): Tensor { return this.param('weight'); }
  get bias(): Tensor | null { return this.paramOrNull('bias'); }

  forward(x: Tensor): Tensor {
    return conv2d(x, this.weight, this.bias, this.conv);
  }
}

export interface NormOptions {
  eps?: number;
  /** Learnable per-channel weight (ones) and bias (zeros); default true. */
  affine?: boolean;
  device?: Device;
}

function affineParams(m: Module, n: number, affine: boolean, device?: Device): void {
  const dev = device ?? getDefaultDevice();
  m.registerParameter('weight', affine ? full([n], 1, 'f32', dev) : null);
  m.registerParameter('bias', affine ? full([n], 0, 'f32', dev) : null);
}

/** torch.nn.GroupNorm(groups, channels): weight, bias [channels]. */
export class GroupNorm extends Module {
  readonly eps: number;
  constructor(readonly numGroups: number, readonly numChannels: number, opts: NormOptions = {}) {
    super();
    checkDims('GroupNorm', { numGroups, numChannels });
    if (numChannels % numGroups) throw new Error(`GroupNorm: ${numGroups} groups do not divide ${numChannels} channels`);
    this.eps = opts.eps ?? 1e-5;
    affineParams(this, numChannels, opts.affine ?? true, opts.device);
  }

  get weight(): Tensor | null { return this.paramOrNull('weight'); }
  get bias(): Tensor | null { return this.paramOrNull('bias'); }

  /** act 'silu': silu(GroupNorm(x)) in one kernel each way (what every resnet block computes). */
  forward(x: Tensor, act: NormAct = 'none'): Tensor {
    return groupNorm(x, this.numGroups, this.weight ?? undefined, this.bias ?? undefined, this.eps, act);
  }
}

/** torch.nn.LayerNorm(dim) over the last dimension: weight, bias [dim]. */
export class LayerNorm extends Module {
  readonly eps: number;
  constructor(readonly dim: number, opts: NormOptions = {}) {
    super();
    checkDims('LayerNorm', { dim });
    this.eps = opts.eps ?? 1e-5;
    affineParams(this, dim, opts.affine ?? true, opts.device);
  }

  get weight(): Tensor | null { return this.paramOrNull('weight'); }
  get bias(): Tensor | null { return this.paramOrNull('bias'); }

  forward(x: Tensor): Tensor {
    return layerNorm(x, this.weight ?? undefined, this.bias ?? undefined, this.eps);
  }
}

/** torch.nn.Embedding(n, dim): weight [n, dim] ~ N(0, 1) as torch. */
export class Embedding extends Module {
  constructor(readonly numEmbeddings: number, readonly embeddingDim: number, opts: InitOptions = {}) {
    super();
    checkDims('Embedding', { numEmbeddings, embeddingDim });
    const seed = opts.seed ?? nextSeed();
    this.registerParameter('weight', randomNormal([numEmbeddings, embeddingDim], seed, { device: opts.device ?? getDefaultDevice() }));
  }

  get weight(): Tensor { return this.param('weight'); }

  /** ids: an i32/u32 tensor, or host ids with their shape. Output [...ids.shape, dim]. */
  forward(ids: Indices, shape?: readonly number[]): Tensor {
    return embedding(this.weight, ids, shape);
  }
}
