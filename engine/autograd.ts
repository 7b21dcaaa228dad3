// Reverse-mode autograd over a tape. Each op records a Node with its inputs and a backward rule
// written next to its forward (engine/ops/*). Saved tensors are shared handles on the forward's
// storage, freed when the node is released: after backward(), or by tidy() when nothing returned
// can reach the node.
//
// Broadcasting is undone once, here: a rule returns its gradient in the shape of the op's output
// (or any shape its input was broadcast to), and backward() sums it down to the input's shape
// (as tinygrad's walk does), so no rule repeats that reduction.

import { GraphPiece, keep, trackNode } from './scope.js';
import { GradNode, Tensor } from './tensor.js';
import { sameShape } from './shape.js';

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs fn without recording a graph (inference, optimizer updates, gradient math). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Backward rule: receives the output's gradient, returns one gradient (or null) per input. */
export type BackwardRule = (grad: Tensor) => (Tensor | null)[];

export class Node implements GradNode, GraphPiece {
  private released = false;
  constructor(
    readonly op: string,
    readonly inputs: readonly Tensor[],
    private readonly rule: BackwardRule,
    private readonly saved: Tensor[],
  ) {}

  *parents(): Iterable<GraphPiece> {
    for (const t of this.inputs) if (t.node) yield t.node as Node;
  }

  run(grad: Tensor): (Tensor | null)[] {
    if (this.released) throw new Error(`backward through ${this.op}: this part of the graph was already released (by an earlier backward() or by tidy()); pass {retainGraph: true} to backward twice`);
    return this.rule(grad);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    for (const t of this.saved) t.dispose();
    this.saved.length = 0;
  }
}

/** Does this op need a graph node? */
export function needsGrad(inputs: readonly Tensor[]): boolean {
  return gradEnabled && inputs.some((t) => t.requiresGrad);
}

/**
 * Attaches a node to `out` if any input requires a gradient. `save` lists tensors the rule
 * reads; they are kept alive (as shared handles) until the node is released. The rule receives
 * those handles in the same order.
 */
export function record(op: string, inputs: readonly Tensor[], out: Tensor, save: readonly Tensor[], rule: (grad: Tensor, saved: Tensor[]) => (Tensor | null)[]): Tensor {
  if (!needsGrad(inputs)) return out;
  const handles = save.map((t) => keep(new Tensor(t.device, t.shape, t.dtype, t.storageRef(op))));
  const node = new Node(op, inputs, (g) => rule(g, handles), handles);
  out.requiresGrad = true;
  out.node = node;
  trackNode(node);
  return out;
}

// Gradient arithmetic is injected by ops/index.ts to avoid an import cycle.
export interface GradMath {
  add(a: Tensor, b: Tensor): Tensor;
  /** Always a new tensor, even when the dtype is unchanged. */
  cast(a: Tensor, dtype: 'f32' | 'f16'): Tensor;
  ones(shape: readonly number[], dtype: 'f32' | 'f16', device: Tensor['device']): Tensor;
  /** x summed over the axes that broadcasting from `shape` added or stretched, reshaped to `shape`. */
  sumTo(x: Tensor, shape: readonly number[]): Tensor;
}
let math: GradMath | null = null;
export function setGradMath(m: GradMath): void {
  math = m;
}

export interface BackwardOptions {
  /** Gradient of the output (default: ones, which requires a one-element output). */
  grad?: Tensor;
  /** Keep the graph for another backward() (default false: saved tensors are freed). */
  retainGraph?: boolean;
}

/** Could a tensor of shape `from` have been broadcast to `to` (NumPy rules)? */
function broadcastsTo(from: readonly number[], to: readonly number[]): boolean {
  if (from.length > to.length) return false;
  const lead = to.length - from.length;
  return from.every((d, i) => d === to[lead + i] || d === 1);
}

/**
 * Accumulates d(output)/d(leaf) into leaf.grad for every leaf that requires a gradient.
 * Leaf gradients are f32 whatever the leaf's dtype.
 */
export function backward(output: Tensor, opts: BackwardOptions = {}): void {
  const m = math;
  if (!m) throw new Error('backward: engine ops not loaded');
  if (!output.requiresGrad) throw new Error(`backward: output ${output.describe()} does not require a gradient (no input had requiresGrad, or it was computed under noGrad)`);
  if (!opts.grad && output.size !== 1) throw new Error(`backward: output ${output.describe()} is not a scalar; pass {grad} of the same shape`);
  if (opts.grad && opts.grad.shape.join() !== output.shape.join()) throw new Error(`backward: grad ${opts.grad.describe()} does not match output ${output.describe()}`);

  // Topological order of tensors reachable through nodes.
  const order: Tensor[] = [];
  const visited = new Set<Tensor>();
  const visit = (root: Tensor) => {
    const stack: [Tensor, number][] = [[root, 0]];
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [t, i] = top;
      const node = t.node as Node | null;
      if (i === 0) {
        if (visited.has(t)) { stack.pop(); continue; }
        visited.add(t);
      }
      if (node && i < node.inputs.length) {
        top[1]++;
        const child = node.inputs[i];
        if (child.requiresGrad && !visited.has(child)) stack.push([child, 0]);
      } else {
        stack.pop();
        order.push(t);
      }
    }
  };
  visit(output);

  noGrad(() => {
    // grads: the gradient pending for each tensor of the walk. One gradient tensor may be
    // pending for several tensors at once (a rule that passes its gradient through, or gives one
    // tensor to two inputs): `holders` counts its entries, and a tensor the walk made (`owned`)
    // is freed when its last entry goes. Sharing instead of copying saves one full-size copy per
    // pass-through (residual adds, reshapes), the values are the same.
    const grads = new Map<Tensor, Tensor>();
    const holders = new Map<Tensor, number>();
    const owned = new Set<Tensor>();
    const hold = (g: Tensor) => holders.set(g, (holders.get(g) ?? 0) + 1);
    const release = (g: Tensor) => {
      const n = (holders.get(g) ?? 0) - 1;
      if (n > 0) { holders.set(g, n); return; }
      holders.delete(g);
      if (owned.has(g)) { owned.delete(g); g.dispose(); }
    };
    const seed = opts.grad ?? m.ones(output.shape, output.dtype === 'f16' ? 'f16' : 'f32', output.device);
    if (!opts.grad) owned.add(seed);
    grads.set(output, seed);
    hold(seed);
    for (let k = order.length - 1; k >= 0; k--) {
      const t = order[k];
      const g = grads.get(t);
      if (!g) continue;
      grads.delete(t);
      const node = t.node as Node | null;
      if (!node) {
        if (t.requiresGrad) {
          // The gradient can become .grad as is when the walk made it, it is f32 and nothing
          // else is waiting for it; otherwise .grad gets its own f32 copy.
          let g32: Tensor;
          if (g.dtype === 'f32' && owned.has(g) && holders.get(g) === 1) { g32 = g; owned.delete(g); }
          else g32 = m.cast(g, 'f32');
          if (t.grad) {
            const sum = m.add(t.grad, g32);
            t.grad.dispose();
            g32.dispose();
            t.grad = keep(sum);
          } else {
            t.grad = keep(g32);
          }
        }
        release(g);
        continue;
      }
      const raw = node.run(g);
      if (!opts.retainGraph) node.release();
      // Gradients in a broadcast shape are summed down to their input's shape; a rule's own
      // tensor that this replaces is freed (never the incoming g).
      const inGrads = raw.map((gi, i) => {
        const inp = node.inputs[i];
        if (!gi || !inp.requiresGrad || sameShape(gi.shape, inp.shape)) return gi;
        if (!broadcastsTo(inp.shape, gi.shape)) throw new Error(`backward of ${node.op}: gradient ${gi.describe()} does not match input ${inp.describe()} (nor is the input broadcast to it)`);
        return m.sumTo(gi, inp.shape);
      });
      const stillUsed = new Set<Tensor | null>([g, ...inGrads]);
      for (const gi of new Set(raw)) if (gi && !stillUsed.has(gi)) gi.dispose();
      // Everything the rule returned other than g itself is the walk's to free.
      for (const gi of inGrads) if (gi && gi !== g) owned.add(gi);
      node.inputs.forEach((inp, i) => {
        const gi = inGrads[i];
        if (!gi || !inp.requiresGrad) return;
        const prev = grads.get(inp);
        if (prev) {
          const sum = m.add(prev, gi);
          owned.add(sum);
          grads.set(inp, sum);
          hold(sum);
          release(prev);
        } else {
          grads.set(inp, gi);
          hold(gi);
        }
      });
      // Rule outputs no input took (an input that needs no gradient) are freed here.
      for (const gi of new Set(inGrads)) if (gi && gi !== g && !holders.has(gi) && owned.has(gi)) { owned.delete(gi); gi.dispose(); }
      release(g);
    }
  });
}
