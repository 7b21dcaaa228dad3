// Optimizers (SGD, Adam, AdamW with PyTorch's update rules) and global gradient-norm clipping.
//
// step() records one fused in-place kernel per parameter that has a gradient (kernels/optim.ts)
// and never reads anything back, so a training step stays one submit with no sync. The only
// per-step host work is the bias-correction arithmetic, which goes to the kernel as uniforms.
//
// Precision policy (see dtype.ts): trainable parameters and optimizer state are f32. An f16
// parameter is rejected: its 10-bit mantissa would swallow most updates.

import { planChunks } from './chunk.js';
import { Device } from './device.js';
import { sqrt } from './ops/index.js';
import { keep } from './scope.js';
import { Tensor, getDefaultDevice } from './tensor.js';
import { WG, grid } from '../kernels/common.js';
import {
  CLIP_KEY, OPTIM_STATE, OptimKind, SUMSQ_KEY, SUMSQ_PER_GROUP,
  clipLayout, clipWGSL, optimKey, optimLayout, optimWGSL, sumsqLayout, sumsqWGSL,
} from '../kernels/optim.js';

/** Splits n contiguous f32 elements, shared by every operand, into windows that fit the binding limit. */
function contiguousChunks(what: string, dev: Device, n: number, buffers: readonly GPUBuffer[]) {
  return planChunks(what, [n], buffers.map((b) => ({ strides: [1], offset: 0, elementBytes: 4, bufferBytes: b.size })),
    dev.maxBindingBytes, dev.limits.minStorageBufferOffsetAlignment);
}

/** Per-parameter state: the step count (as torch keeps per parameter) and the moment buffers. */
export interface ParamState {
  step: number;
  buffers: Record<string, Tensor>;
}

/** The uniforms one optimizer family needs for one parameter's step (beyond offsets and n). */
type StepUniforms = Record<string, number>;

export abstract class Optimizer {
  /** The learning rate; may be changed between steps (schedules). */
  lr: number;
  readonly params: readonly Tensor[];
  private state = new Map<Tensor, ParamState>();
  private disposed = false;

  protected constructor(readonly name: string, params: readonly Tensor[], lr: number) {
    if (!Array.isArray(params) || params.length === 0) throw new Error(`${name}: expected a non-empty array of parameters`);
    const seen = new Set<Tensor>();
    params.forEach((p, i) => {
      if (!(p instanceof Tensor)) throw new Error(`${name}: parameter ${i} is not a Tensor`);
      if (seen.has(p)) throw new Error(`${name}: parameter ${i} ${p.describe()} appears twice`);
      seen.add(p);
      if (p.dtype === 'f16') {
        throw new Error(`${name}: parameter ${i} ${p.describe()} is f16; trainable parameters and optimizer state must be f32 (f16 is a storage type only): cast the parameter to f32 and train that`);
      }
      if (p.dtype !== 'f32') throw new Error(`${name}: parameter ${i} ${p.describe()} is not a float tensor`);
      if (p.isDisposed) throw new Error(`${name}: parameter ${i} ${p.describe()} was already disposed`);
    });
    this.params = Object.freeze([...params]);
    this.lr = lr;
    checkNumber(name, 'lr', lr, 0);
  }

  protected abstract kind(): OptimKind;
  /** Uniforms for a parameter at its `step` (1-based). */
  protected abstract uniforms(step: number): StepUniforms;

  /** Updates every parameter that has a gradient: one fused kernel each, nothing read back. */
  step(): void {
    const op = `${this.name}.step`;
    if (this.disposed) throw new Error(`${op}: the optimizer was disposed`);
    checkNumber(this.name, 'lr', this.lr, 0);
    const kind = this.kind();
    const names = OPTIM_STATE[kind];
    const label = (p: Tensor, i: number) => `${op}(parameter ${i} ${p.isDisposed ? '(disposed)' : p.describe()})`;
    // Validate everything first so that a bad gradient never leaves a half-applied step.
    this.params.forEach((p, i) => {
      const g = p.grad;
      if (!g) return;
      const what = label(p, i);
      if (g.dtype !== 'f32') throw new Error(`${what}: gradient ${g.describe()} is not f32`);
      if (g.shape.join() !== p.shape.join()) throw new Error(`${what}: gradient ${g.describe()} does not match the parameter`);
      if (g.device !== p.device) throw new Error(`${what}: gradient and parameter live on different devices`);
      p.buffer(op);
      g.buffer(op);
    });
    this.params.forEach((p, i) => {
      const g = p.grad;
      if (!g) return;
      const what = label(p, i);
      const pBuf = p.buffer(op), gBuf = g.buffer(op);
      let st = this.state.get(p);
      if (!st) {
        // keep(): a step taken inside tidy() must not dispose the optimizer's state.
        const buffers: Record<string, Tensor> = {};
        for (const nm of names) buffers[nm] = keep(new Tensor(p.device, p.shape, 'f32'));
        st = { step: 0, buffers };
        this.state.set(p, st);
      }
      st.step++;
      const u = this.uniforms(st.step);
      const sBufs = names.map((nm) => st!.buffers[nm].buffer(op));
      const dev = p.device;
      const chunks = contiguousChunks(what, dev, p.size, [gBuf, pBuf, ...sBufs]);
      for (const ch of chunks) {
        const n = ch.shape[0];
        const bind = (k: number, b: GPUBuffer) => ({ buffer: b, offset: ch.operands[k].windowOffset, size: ch.operands[k].windowSize });
        dev.dispatch({
          label: what,
          key: optimKey(kind),
          code: () => optimWGSL(kind),
          reads: [bind(0, gBuf)],
          writes: [bind(1, pBuf), ...sBufs.map((b, k) => bind(k + 2, b))],
          params: optimLayout.pack({ ...u, offs: ch.operands.map((o) => o.offset), n, first: st.step === 1 ? 1 : 0 }),
          groups: grid(Math.ceil(n / WG), dev.limits.maxComputeWorkgroupsPerDimension),
        });
      }
    });
  }

  /** Disposes every parameter's gradient and clears it. */
  zeroGrad(): void {
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
  }

  /** A parameter's step count and moment buffers (undefined before its first step). Do not dispose them. */
  stateOf(param: Tensor): Readonly<ParamState> | undefined {
    return this.state.get(param);
  }

  /** Every parameter's state, in parameter order (parameters not yet stepped are left out). */
  stateDict(): { param: Tensor; step: number; buffers: Readonly<Record<string, Tensor>> }[] {
    return this.params.filter((p) => this.state.has(p)).map((p) => ({ param: p, ...this.state.get(p)! }));
  }

  /**
   * Installs per-parameter state (the inverse of stateDict, e.g. from a checkpoint). Everything is
   * checked before anything changes: each param must be one of this optimizer's, the buffers
   * exactly this family's (names, f32, the parameter's shape and device). The optimizer takes
   * ownership of the buffers and frees any state they replace.
   */
  loadStateDict(entries: readonly { param: Tensor; step: number; buffers: Readonly<Record<string, Tensor>> }[]): void {
    const op = `${this.name}.loadStateDict`;
    if (this.disposed) throw new Error(`${op}: the optimizer was disposed`);
    const names = OPTIM_STATE[this.kind()];
    const seen = new Set<Tensor>();
    entries.forEach(({ param, step, buffers }, k) => {
      const i = this.params.indexOf(param);
      if (i < 0) throw new Error(`${op}: entry ${k} names a tensor ${param.describe()} that is not a parameter of this optimizer`);
      if (seen.has(param)) throw new Error(`${op}: parameter ${i} ${param.describe()} appears twice`);
      seen.add(param);
      if (!Number.isInteger(step) || step < 1) throw new Error(`${op}: parameter ${i} has step ${step}; a stored state has taken at least one step`);
      const got = Object.keys(buffers).sort().join(', ');
      if (got !== [...names].sort().join(', ')) throw new Error(`${op}: parameter ${i} has buffers [${got}], ${this.name} keeps [${names.join(', ')}]`);
      for (const nm of names) {
        const b = buffers[nm];
        if (b.isDisposed || b.dtype !== 'f32' || b.device !== param.device || b.shape.join() !== param.shape.join()) {
          throw new Error(`${op}: parameter ${i} ${param.describe()}: buffer "${nm}" ${b.isDisposed ? '(disposed)' : b.describe()} must be a live f32 tensor of the parameter's shape on its device`);
        }
      }
    });
    for (const { param, step, buffers } of entries) {
      const prev = this.state.get(param);
      const next: Record<string, Tensor> = {};
      for (const nm of names) next[nm] = keep(buffers[nm]);
      if (prev) for (const [nm, b] of Object.entries(prev.buffers)) if (b !== next[nm]) b.dispose();
      this.state.set(param, { step, buffers: next });
    }
  }

  /** Frees the moment buffers. The parameters and their gradients are left alone. */
  dispose(): void {
    for (const st of this.state.values()) for (const t of Object.values(st.buffers)) t.dispose();
    this.state.clear();
    this.disposed = true;
  }
}

function checkNumber(op: string, name: string, v: number, min: number, maxExclusive = Infinity): void {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v >= maxExclusive) {
    throw new Error(`${op}: ${name} = ${v} is out of range [${min}, ${maxExclusive})`);
  }
}

// ------------------------------------------------------------------ SGD

export interface SGDOptions {
  lr: number;
  momentum?: number;
  weightDecay?: number;
  nesterov?: boolean;
}

/** torch.optim.SGD (dampening 0): L2 weight decay, optional (Nesterov) momentum. */
export class SGD extends Optimizer {
  /** Fixed at construction: it decides whether a momentum buffer exists. */
  readonly momentum: number;
  weightDecay: number;
  readonly nesterov: boolean;

  constructor(params: readonly Tensor[], opts: SGDOptions) {
    if (!opts || typeof opts.lr !== 'number') throw new Error('SGD: options { lr } are required (SGD has no default learning rate)');
    super('SGD', params, opts.lr);
    this.momentum = opts.momentum ?? 0;
    this.weightDecay = opts.weightDecay ?? 0;
    this.nesterov = opts.nesterov ?? false;
    checkNumber('SGD', 'momentum', this.momentum, 0);
    checkNumber('SGD', 'weightDecay', this.weightDecay, 0);
    if (this.nesterov && this.momentum <= 0) throw new Error('SGD: Nesterov momentum requires momentum > 0');
  }

  protected kind(): OptimKind {
    return this.momentum > 0 ? 'sgd_momentum' : 'sgd';
  }

  protected uniforms(): StepUniforms {
    return { lr: this.lr, l2: this.weightDecay, decay: 1, momentum: this.momentum, nesterov: this.nesterov ? 1 : 0 };
  }
}

// ------------------------------------------------------------------ Adam, AdamW

export interface AdamOptions {
  lr?: number;
  betas?: readonly [number, number];
  eps?: number;
  weightDecay?: number;
}

abstract class AdamBase extends Optimizer {
  betas: [number, number];
  eps: number;
  weightDecay: number;

  protected constructor(name: string, params: readonly Tensor[], opts: AdamOptions, defaultDecay: number) {
    super(name, params, opts.lr ?? 1e-3);
    this.betas = [...(opts.betas ?? [0.9, 0.999])] as [number, number];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? defaultDecay;
    if (this.betas.length !== 2) throw new Error(`${name}: betas must be a pair`);
    checkNumber(name, 'betas[0]', this.betas[0], 0, 1);
    checkNumber(name, 'betas[1]', this.betas[1], 0, 1);
    checkNumber(name, 'eps', this.eps, 0);
    checkNumber(name, 'weightDecay', this.weightDecay, 0);
  }

  protected kind(): OptimKind {
    return 'adam';
  }

  /** Bias corrections in float64 on the host; the kernel gets them as f32. */
  protected biasUniforms(step: number): StepUniforms {
    const [b1, b2] = this.betas;
    const bc1 = 1 - b1 ** step;
    const bc2 = 1 - b2 ** step;
    return { lr: this.lr, beta1: b1, beta2: b2, eps: this.eps, stepSize: this.lr / bc1, bc2sqrt: Math.sqrt(bc2) };
  }
}

/** torch.optim.Adam: weight decay is an L2 term added to the gradient. */
export class Adam extends AdamBase {
  constructor(params: readonly Tensor[], opts: AdamOptions = {}) {
    super('Adam', params, opts, 0);
  }

  protected uniforms(step: number): StepUniforms {
    return { ...this.biasUniforms(step), l2: this.weightDecay, decay: 1 };
  }
}

/** torch.optim.AdamW: decoupled weight decay, p ← p·(1 - lr·wd) before the Adam update. */
export class AdamW extends AdamBase {
  constructor(params: readonly Tensor[], opts: AdamOptions = {}) {
    super('AdamW', params, opts, 1e-2);
  }

  protected uniforms(step: number): StepUniforms {
    return { ...this.biasUniforms(step), l2: 0, decay: 1 - this.lr * this.weightDecay };
  }
}

// ------------------------------------------------------------------ clipGradNorm

type Chunks = ReturnType<typeof contiguousChunks>;

/** Partial sums the sum-of-squares kernel writes for these chunks (one per SUMSQ_PER_GROUP elements of each). */
function partialCount(chunks: Chunks): number {
  return chunks.reduce((a, ch) => a + Math.ceil(ch.shape[0] / SUMSQ_PER_GROUP), 0);
}

/**
 * Sums (the squares of) the chunked elements of `src` into partials[outBase ...], one partial
 * per SUMSQ_PER_GROUP elements of each binding-sized chunk. Returns the number written.
 */
function sumsqInto(what: string, dev: Device, src: GPUBuffer, chunks: Chunks, partials: GPUBuffer, outBase: number, square: boolean): number {
  let written = 0;
  for (const ch of chunks) {
    const cn = ch.shape[0];
    const groups = Math.ceil(cn / SUMSQ_PER_GROUP);
    // The output window: partials [outBase + written, + groups), aligned like any binding. A
    // chunk holds at most maxBindingBytes/4 elements, so its partials always fit one binding.
    const [outWin] = planChunks(what, [groups], [{ strides: [1], offset: outBase + written, elementBytes: 4, bufferBytes: partials.size }],
      Infinity, dev.limits.minStorageBufferOffsetAlignment);
    const src0 = ch.operands[0], dst0 = outWin.operands[0];
    dev.dispatch({
      label: what,
      key: SUMSQ_KEY,
      code: sumsqWGSL,
      reads: [{ buffer: src, offset: src0.windowOffset, size: src0.windowSize }],
      writes: [{ buffer: partials, offset: dst0.windowOffset, size: dst0.windowSize }],
      params: sumsqLayout.pack({ n: cn, inoff: src0.offset, outoff: dst0.offset, groups, square: square ? 1 : 0 }),
      groups: grid(groups, dev.limits.maxComputeWorkgroupsPerDimension),
    });
    written += groups;
  }
  return written;
}

/**
 * torch.nn.utils.clip_grad_norm_: computes the global L2 norm of every parameter's gradient on
 * the GPU and scales each gradient in place by min(1, maxNorm / (norm + 1e-6)), reading nothing
 * back. Returns the total norm before clipping as a one-element f32 tensor (shape []), which
 * the caller owns. Parameters without a gradient are skipped.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): Tensor {
  const op = 'clipGradNorm';
  if (typeof maxNorm !== 'number' || Number.isNaN(maxNorm) || maxNorm < 0) throw new Error(`${op}: maxNorm = ${maxNorm} must be a number ≥ 0`);
  const grads: Tensor[] = [];
  params.forEach((p, i) => {
    const g = p.grad;
    if (!g) return;
    if (g.dtype !== 'f32') throw new Error(`${op}: the gradient ${g.describe()} of parameter ${i} is not f32`);
    g.buffer(op); // a disposed gradient fails here, naming the op
    grads.push(g);
  });
  const dev = grads[0]?.device ?? params[0]?.device ?? getDefaultDevice();
  for (const g of grads) if (g.device !== dev) throw new Error(`${op}: gradients live on different devices`);
  const what = `${op}(${grads.map((g) => g.describe()).join(', ')})`;

  // Pass 1: every gradient's partial sums of squares side by side in one buffer; further passes
  // fold the partials until one value is left. Order is fixed by the parameters' order.
  const plans = grads.map((g) => contiguousChunks(what, dev, g.size, [g.buffer(op)]));
  let used = plans.reduce((a, pl) => a + partialCount(pl), 0);
  let partial = new Tensor(dev, [Math.max(used, 1)], 'f32');
  if (used === 0) {
    dev.write(partial.buffer(op), 0, new Float32Array([0]));
  } else {
    let at = 0;
    grads.forEach((g, k) => { at += sumsqInto(what, dev, g.buffer(op), plans[k], partial.buffer(op), at, true); });
  }
  while (used > 1) {
    const plan = contiguousChunks(what, dev, used, [partial.buffer(op)]);
    const nextCount = partialCount(plan);
    if (nextCount >= used) throw new Error(`${what}: the binding limit (${dev.maxBindingBytes} bytes) is too small to reduce the norm`);
    const next = new Tensor(dev, [nextCount], 'f32');
    used = sumsqInto(what, dev, partial.buffer(op), plan, next.buffer(op), 0, false);
    partial.dispose();
    partial = next;
  }
  const total = new Tensor(dev, [], 'f32', partial.storageRef(op));
  partial.dispose();
  const norm = sqrt(total);
  total.dispose();

  const normBuf = norm.buffer(op);
  for (const g of grads) {
    const gBuf = g.buffer(op);
    for (const ch of contiguousChunks(what, dev, g.size, [gBuf])) {
      const o = ch.operands[0];
      const n = ch.shape[0];
      dev.dispatch({
        label: what,
        key: CLIP_KEY,
        code: clipWGSL,
        reads: [{ buffer: normBuf, offset: 0, size: 4 }],
        writes: [{ buffer: gBuf, offset: o.windowOffset, size: o.windowSize }],
        params: clipLayout.pack({ n, off: o.offset, maxNorm: Math.min(maxNorm, 3.4e38) }),
        groups: grid(Math.ceil(n / WG), dev.limits.maxComputeWorkgroupsPerDimension),
      });
    }
  }
  return norm;
}
