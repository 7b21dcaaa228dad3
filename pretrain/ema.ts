// An exponential moving average of a module's weights, held in a second module of the same
// architecture (so it can be sampled from and saved like any model): after each optimizer step,
// ema ← d·ema + (1 − d)·θ with d = min(decay, (1 + n)/(10 + n)) after n updates (diffusers'
// EMAModel warm-up, so early averages are not dominated by the random initialisation).
// One fused map kernel per parameter; the EMA module's tensors are replaced, never read back.

import { noGrad } from '../engine/autograd.js';
import { mapNew } from '../engine/ops/elementwise.js';
import { Module } from '../engine/nn/module.js';
import { Tensor } from '../engine/tensor.js';

/** Each parameter of a module by its dotted name, with the module that owns it and its local name. */
export function parameterOwners(m: Module): Map<string, [Module, string]> {
  const out = new Map<string, [Module, string]>();
  for (const [prefix, mod] of m.namedModules()) {
    for (const [n] of mod.namedParameters()) if (!n.includes('.')) out.set(prefix ? `${prefix}.${n}` : n, [mod, n]);
  }
  return out;
}

export class Ema {
  private readonly pairs: { source: Tensor; owner: Module; name: string }[] = [];

  /**
   * `target` must have the same architecture as `source`; its weights are set to the source's
   * now (unless `updates` > 0: resuming, the target already holds the average) and it is frozen.
   */
  constructor(source: Module, readonly target: Module, readonly decay: number, public updates = 0) {
    if (!(decay >= 0 && decay <= 1)) throw new Error(`Ema: decay ${decay} must be in [0, 1]`);
    const owners = parameterOwners(target);
    const src = new Map(source.namedParameters());
    for (const [name, [owner, local]] of owners) {
      const s = src.get(name);
      if (!s) throw new Error(`Ema: the source has no parameter "${name}"`);
      if (s.shape.join() !== owner.param(local).shape.join()) throw new Error(`Ema: "${name}" is ${s.describe()} in the source, ${owner.param(local).describe()} in the target`);
      this.pairs.push({ source: s, owner, name: local });
    }
    if (src.size !== owners.size) throw new Error(`Ema: the source has ${src.size} parameters, the target ${owners.size}`);
    target.freeze();
    if (updates === 0) noGrad(() => { for (const p of this.pairs) p.owner.replaceParameter(p.name, mapNew('ema_copy', 'a', [p.source], 'f32')); });
  }

  /** The decay the next update uses. */
  get currentDecay(): number {
    return Math.min(this.decay, (1 + this.updates) / (10 + this.updates));
  }

  /** One EMA step over every parameter. */
  update(): void {
    const d = this.currentDecay;
    noGrad(() => {
      for (const p of this.pairs) {
        const e = p.owner.param(p.name);
        p.owner.replaceParameter(p.name, mapNew('ema', 'a * P.s0 + b * P.s1', [e, p.source], 'f32', [d, 1 - d]));
      }
    });
    this.updates++;
  }
}
