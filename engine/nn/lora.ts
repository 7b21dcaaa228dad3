// LoRA for Linear layers, built as peft/diffusers build it: a frozen base W [out, in] plus a
// trainable low-rank update, forward = W·x + b + (alpha/r)·B·(A·x), A = lora_A [r, in] ~
// N(0, (1/r)²) and B = lora_B [out, r] = 0, so a fresh adapter changes nothing.
//
// Precision: the base may be f32 or f16 (a frozen f16 base halves its memory); the adapter is
// always f32, so its weights, gradients and optimizer state are f32. With an f16 base the
// adapter reads x cast to f32 and its output is cast to f16 before it joins W·x + b.
//
// Naming (state dicts): a LoRALinear keeps the base layer's names for the base tensors and
// adds two bias-free Linear children, as peft's lora_A / lora_B (without peft's ".default"
// adapter name and ".base_layer" prefix):
//   to_q.weight, to_q.bias            the base Linear (frozen), loadable from the original model
//   to_q.lora_A.weight  [r, in]       down projection
//   to_q.lora_B.weight  [out, r]      up projection
// Converting to/from diffusers' saved LoRA files is a separate step.

import { add, cast, mul, sub } from '../ops/elementwise.js';
import { matmul } from '../ops/matmul.js';
import { zeros } from '../ops/movement.js';
import { randomNormal } from '../ops/random.js';
import { noGrad } from '../autograd.js';
import { tidy } from '../scope.js';
import { Tensor } from '../tensor.js';
import { Linear } from './layers.js';
import { Module, ModuleList, copyInto, nextSeed } from './module.js';

export interface LoRAOptions {
  /** Rank r (default 4). */
  rank?: number;
  /** Scale numerator: scale = alpha / rank (default alpha = rank ⇒ scale 1). */
  alpha?: number;
  /** Seed of lora_A's init (default nextSeed()). */
  seed?: number;
}

/**
 * A Linear with a LoRA adapter. Built from an existing Linear, whose weight and bias tensors it
 * takes over (the base Linear is left empty; do not use it afterwards). The base tensors are
 * frozen; only lora_A and lora_B require gradients.
 */
export class LoRALinear extends Linear {
  readonly rank: number;
  readonly alpha: number;
  readonly scale: number;
  /** When false, forward is the base layer alone (ignored while merged: the update is in W). */
  enabled = true;
  private _merged = false;

  constructor(base: Linear, opts: LoRAOptions = {}) {
    const rank = opts.rank ?? 4;
    const alpha = opts.alpha ?? rank;
    if (!Number.isInteger(rank) || rank < 1) throw new Error(`LoRALinear: rank=${rank} must be a positive integer`);
    if (!Number.isFinite(alpha)) throw new Error(`LoRALinear: alpha=${alpha} must be finite`);
    if (base instanceof LoRALinear) throw new Error('LoRALinear: the layer already has a LoRA adapter');
    const weight = base.weight, bias = base.bias;
    if (weight.dtype !== 'f32' && weight.dtype !== 'f16') throw new Error(`LoRALinear: base weight ${weight.describe()} must be f32 or f16`);
    // Take over the base's tensors (no copy); the base is left without parameters.
    super(base.inFeatures, base.outFeatures, { weights: { weight, bias } });
    base.takeParameter('weight');
    base.takeParameter('bias');
    this.rank = rank;
    this.alpha = alpha;
    this.scale = alpha / rank;
    weight.requireGrad(false);
    bias?.requireGrad(false);
    const seed = opts.seed ?? nextSeed();
    const A = new Linear(base.inFeatures, rank, { weights: { weight: randomNormal([rank, base.inFeatures], seed, { std: 1 / rank, device: weight.device }), bias: null } });
    const B = new Linear(rank, base.outFeatures, { weights: { weight: zeros([base.outFeatures, rank], 'f32', weight.device), bias: null } });
    this.registerModule('lora_A', A);
    this.registerModule('lora_B', B);
  }

  get loraA(): Tensor { return (this.child('lora_A') as Linear).weight; }
  get loraB(): Tensor { return (this.child('lora_B') as Linear).weight; }
  get merged(): boolean { return this._merged; }

  override forward(x: Tensor): Tensor {
    const y = super.forward(x);
    if (this._merged || !this.enabled) return y;
    return tidy(() => {
      const x32 = x.dtype === 'f32' ? x : cast(x, 'f32');
      const up = matmul(matmul(x32, this.loraA, { transB: true }), this.loraB, { transB: true });
      const scaled = this.scale === 1 ? up : mul(up, this.scale);
      const out = add(y, scaled.dtype === y.dtype ? scaled : cast(scaled, y.dtype));
      y.dispose();
      return out;
    });
  }

  /** W += scale·B·A in place; forward then skips the adapter. No-op when already merged. */
  merge(): void {
    if (this._merged) return;
    this.applyDelta(add);
    this._merged = true;
  }

  /** W −= scale·B·A in place (undoes merge() up to f32 rounding). No-op when not merged. */
  unmerge(): void {
    if (!this._merged) return;
    this.applyDelta(sub);
    this._merged = false;
  }

  /** W ← op(W, scale·B·A), computed in f32 and stored in W's dtype (f16 rounds: unmerge is then approximate). */
  private applyDelta(op: (a: Tensor, b: Tensor) => Tensor): void {
    const w = this.weight;
    tidy(() => noGrad(() => {
      const ba = matmul(this.loraB, this.loraA);
      const delta = this.scale === 1 ? ba : mul(ba, this.scale);
      copyInto(w, op(w.dtype === 'f32' ? w : cast(w, 'f32'), delta), 'LoRALinear.merge');
    }));
  }
}

export interface InjectedLoRA {
  /** Dotted names of the replaced layers, in module order. */
  names: string[];
  layers: LoRALinear[];
}

/**
 * Replaces, in place, every Linear descendant of `root` (not already LoRA) for which
 * filter(dottedName, linear) is true by a LoRALinear wrapping it. The child's registered name
 * is kept, and a field of the parent that pointed at the old Linear (e.g. `this.to_q`) is
 * repointed, so forward code sees the LoRA layer. Does not freeze the rest of the model: call
 * root.freeze() first to train only the adapters.
 */
export function injectLoRA(root: Module, filter: (name: string, linear: Linear) => boolean, opts: LoRAOptions = {}): InjectedLoRA {
  // Depth-first over children so that the names come out in state-dict order.
  const targets: [Module, string, string, Linear][] = [];
  const visit = (parent: Module, prefix: string) => {
    for (const [n, m] of parent.namedChildren()) {
      const name = prefix ? `${prefix}.${n}` : n;
      if (m instanceof LoRALinear) continue; // its lora_A / lora_B are Linears too
      if (m instanceof Linear && filter(name, m)) targets.push([parent, n, name, m]);
      else visit(m, name);
    }
  };
  visit(root, '');
  const layers: LoRALinear[] = [];
  targets.forEach(([parent, n, , lin], i) => {
    const lora = new LoRALinear(lin, { ...opts, seed: opts.seed === undefined ? undefined : opts.seed + i });
    if (parent instanceof ModuleList) parent.set(Number(n), lora);
    else parent.registerModule(n, lora);
    const fields = parent as unknown as Record<string, unknown>;
    if (fields[n] === lin) fields[n] = lora;
    layers.push(lora);
  });
  return { names: targets.map((t) => t[2]), layers };
}
