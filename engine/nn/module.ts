// Module: PyTorch-style containers of named parameters and child modules.
//
// Parameters live in a per-module Map (not in fields) so that the dotted names of
// namedParameters() / stateDict() follow registration order exactly as torch's do, and so that
// a parameter can be replaced (loadStateDict of a different dtype) without stale references:
// layers read their tensors through getters (`get weight() { return this.param('weight') }`).
// Parameters are keep()-ed so that no tidy() scope disposes them; the module owns them until
// dispose().

import { cast } from '../ops/elementwise.js';
import { noGrad } from '../autograd.js';
import { keep } from '../scope.js';
import { Tensor } from '../tensor.js';
import { fmt } from '../shape.js';

export interface LoadStateDictOptions {
  /** Missing and unexpected keys are an Error (default true). Mis-shaped keys always are. */
  strict?: boolean;
}

export interface LoadStateDictResult {
  missing: string[];
  unexpected: string[];
}

let seedCounter = 0x5eed;

/** Sets the counter layers draw their default init seeds from (like torch.manual_seed). */
export function manualSeed(seed: number): void {
  if (!Number.isInteger(seed) || seed < 0) throw new Error(`manualSeed: seed ${seed} must be a non-negative integer`);
  seedCounter = seed;
}

/** The next default init seed: layers built in the same order after manualSeed(s) get the same values. */
export function nextSeed(): number {
  return seedCounter++;
}

/**
 * Writes src's values into dst in place (dst keeps its identity, so optimizers and other
 * holders stay valid). src is cast to dst's dtype first if needed. Returns false when an
 * in-place copy is impossible (a byte count not a multiple of 4: odd-length f16).
 */
export function copyInto(dst: Tensor, src: Tensor, op = 'copyInto'): boolean {
  if (dst.shape.join() !== src.shape.join()) throw new Error(`${op}: source ${src.describe()} does not match destination ${dst.describe()}`);
  if (dst.bytes % 4 !== 0) return false;
  if (dst.size === 0) return true;
  const v = src.dtype === dst.dtype ? src : noGrad(() => cast(src, dst.dtype));
  try {
    dst.device.copy(v.buffer(op), 0, dst.buffer(op), 0, dst.bytes);
  } finally {
    if (v !== src) v.dispose();
  }
  return true;
}

export class Module {
  private readonly _params = new Map<string, Tensor | null>();
  private readonly _children = new Map<string, Module>();

  /** Name of the layer type in error messages. */
  get typeName(): string {
    return this.constructor.name;
  }

  /**
   * Registers (or re-registers) a parameter. The module takes ownership: the tensor is kept out
   * of tidy scopes and disposed with the module. Float32 parameters require gradients unless
   * `trainable` is false; other dtypes never do. null registers an absent optional parameter.
   */
  registerParameter(name: string, t: Tensor | null, trainable = true): Tensor | null {
    checkName(this, name);
    if (this._children.has(name)) throw new Error(`${this.typeName}.registerParameter: "${name}" is already a child module`);
    if (t) {
      keep(t);
      t.requireGrad(trainable && t.dtype === 'f32');
    }
    this._params.set(name, t);
    return t;
  }

  /** Registers (or replaces, keeping its position) a child module. Returns it. */
  registerModule<M extends Module>(name: string, m: M): M {
    checkName(this, name);
    if (!(m instanceof Module)) throw new Error(`${this.typeName}.registerModule: "${name}" is not a Module`);
    if (this._params.has(name)) throw new Error(`${this.typeName}.registerModule: "${name}" is already a parameter`);
    this._children.set(name, m);
    return m;
  }

  /** The parameter registered as `name` (throws if absent or never registered). */
  param(name: string): Tensor {
    const t = this._params.get(name);
    if (!t) throw new Error(`${this.typeName}: parameter "${name}" is ${this._params.has(name) ? 'absent (registered as null)' : 'not registered'}`);
    return t;
  }

  /** The parameter registered as `name`, or null. */
  paramOrNull(name: string): Tensor | null {
    return this._params.get(name) ?? null;
  }

  /**
   * Replaces a registered parameter by a new tensor (taking ownership), disposing the old one
   * and its gradient. The new tensor inherits the old one's requiresGrad.
   */
  replaceParameter(name: string, t: Tensor): void {
    const old = this._params.get(name);
    if (old === undefined) throw new Error(`${this.typeName}.replaceParameter: "${name}" is not registered`);
    if (old === t) return;
    const trainable = old ? old.requiresGrad : true;
    if (old) { old.grad?.dispose(); old.grad = null; old.dispose(); }
    keep(t);
    t.requireGrad(trainable && t.dtype === 'f32');
    this._params.set(name, t);
  }

  /** Removes a parameter from this module without disposing it (ownership passes to the caller). */
  takeParameter(name: string): Tensor | null {
    const t = this._params.get(name);
    if (t === undefined) throw new Error(`${this.typeName}.takeParameter: "${name}" is not registered`);
    this._params.delete(name);
    return t;
  }

  child(name: string): Module {
    const m = this._children.get(name);
    if (!m) throw new Error(`${this.typeName}: no child module "${name}"`);
    return m;
  }

  *namedChildren(): Iterable<[string, Module]> {
    yield* this._children;
  }

  /** This module (name = prefix) and all descendants, depth first, dotted names. */
  *namedModules(prefix = ''): Iterable<[string, Module]> {
    yield [prefix, this];
    for (const [n, m] of this._children) yield* m.namedModules(prefix ? `${prefix}.${n}` : n);
  }

  /** Own parameters first, then each child's, in registration order; dotted names as torch. */
  *namedParameters(prefix = ''): Iterable<[string, Tensor]> {
    for (const [n, t] of this._params) if (t) yield [prefix ? `${prefix}.${n}` : n, t];
    for (const [n, m] of this._children) yield* m.namedParameters(prefix ? `${prefix}.${n}` : n);
  }

  parameters(): Tensor[] {
    return [...this.namedParameters()].map(([, t]) => t);
  }

  /** The parameters that currently require gradients (what to give an optimizer). */
  trainableParameters(): Tensor[] {
    return this.parameters().filter((t) => t.requiresGrad);
  }

  /** Name → parameter tensor (the module's own tensors, not copies: do not dispose them). */
  stateDict(): Map<string, Tensor> {
    return new Map(this.namedParameters());
  }

  /**
   * Loads values from `state` (name → tensor; the caller keeps ownership of those tensors).
   * Everything is checked before anything is written: every missing, unexpected, mis-shaped
   * or non-float key is listed in one Error. Values are copied into the existing parameters
   * (cast to their dtype); an odd-length f16 parameter is replaced instead.
   */
  loadStateDict(state: Map<string, Tensor> | Record<string, Tensor>, opts: LoadStateDictOptions = {}): LoadStateDictResult {
    const strict = opts.strict ?? true;
    const map = state instanceof Map ? state : new Map(Object.entries(state));
    const owners = new Map<string, [Module, string]>();
    for (const [prefix, m] of this.namedModules()) {
      for (const [n, t] of m._params) if (t) owners.set(prefix ? `${prefix}.${n}` : n, [m, n]);
    }
    const missing = [...owners.keys()].filter((k) => !map.has(k));
    const unexpected = [...map.keys()].filter((k) => !owners.has(k));
    const bad: string[] = [];
    for (const [k, [m, n]] of owners) {
      const src = map.get(k);
      if (!src) continue;
      const p = m.param(n);
      if (!(src instanceof Tensor)) bad.push(`${k}: not a Tensor`);
      else if (src.isDisposed) bad.push(`${k}: the tensor was disposed`);
      else if (src.shape.join() !== p.shape.join()) bad.push(`${k}: shape ${fmt(src.shape)} in the state dict, ${fmt(p.shape)} in the model`);
      else if (src.dtype !== 'f32' && src.dtype !== 'f16') bad.push(`${k}: dtype ${src.dtype} is not a float type`);
    }
    if (bad.length || (strict && (missing.length || unexpected.length))) {
      const lines = [`${this.typeName}.loadStateDict: the state dict does not fit the model`];
      if (missing.length && strict) lines.push(`  missing keys (${missing.length}): ${missing.join(', ')}`);
      if (unexpected.length && strict) lines.push(`  unexpected keys (${unexpected.length}): ${unexpected.join(', ')}`);
      if (bad.length) lines.push(`  mis-shaped keys (${bad.length}):`, ...bad.map((b) => `    ${b}`));
      throw new Error(lines.join('\n'));
    }
    for (const [k, [m, n]] of owners) {
      const src = map.get(k);
      if (!src) continue;
      const p = m.param(n);
      if (!copyInto(p, src, `loadStateDict "${k}"`)) {
        m.replaceParameter(n, noGrad(() => cast(src, p.dtype)));
      }
    }
    return { missing, unexpected };
  }

  /** Stops gradients to every parameter (requiresGrad off). Returns this. */
  freeze(): this {
    for (const t of this.parameters()) t.requireGrad(false);
    return this;
  }

  /** Requires gradients for every f32 parameter. Returns this. */
  unfreeze(): this {
    for (const t of this.parameters()) if (t.dtype === 'f32') t.requireGrad(true);
    return this;
  }

  /** Disposes every parameter's gradient. */
  zeroGrad(): void {
    for (const t of this.parameters()) { t.grad?.dispose(); t.grad = null; }
  }

  /** Disposes every parameter and gradient of this module and its descendants. */
  dispose(): void {
    for (const t of this.parameters()) { t.grad?.dispose(); t.grad = null; t.dispose(); }
  }
}

function checkName(m: Module, name: string): void {
  if (typeof name !== 'string' || name === '' || name.includes('.')) throw new Error(`${m.typeName}: bad member name "${name}" (non-empty, no dots)`);
}

/** A list of modules, named "0", "1", ... as torch.nn.ModuleList. */
export class ModuleList<M extends Module = Module> extends Module {
  private items: M[] = [];

  constructor(modules: Iterable<M> = []) {
    super();
    for (const m of modules) this.push(m);
  }

  push(m: M): this {
    this.registerModule(String(this.items.length), m);
    this.items.push(m);
    return this;
  }

  get length(): number {
    return this.items.length;
  }

  get(i: number): M {
    const m = this.items[i < 0 ? this.items.length + i : i];
    if (!m) throw new Error(`ModuleList.get(${i}): index out of range for ${this.items.length} modules`);
    return m;
  }

  /** Replaces item i in place (injectLoRA uses this). */
  set(i: number, m: M): void {
    this.get(i);
    this.items[i] = m;
    this.registerModule(String(i), m);
  }

  [Symbol.iterator](): Iterator<M> {
    return this.items[Symbol.iterator]();
  }
}
