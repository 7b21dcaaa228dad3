// Explicit lifetimes: tidy(fn) disposes every tensor created inside fn that fn does not return,
// and releases the autograd graph pieces that nothing returned can still reach.

export interface Tracked {
  dispose(): void;
  readonly isDisposed: boolean;
}

/** A piece of the autograd graph that holds GPU memory (saved tensors) until released. */
export interface GraphPiece {
  release(): void;
  /** The pieces this one leads to (its inputs' nodes), for reachability. */
  parents(): Iterable<GraphPiece>;
}

interface Scope {
  tensors: Set<Tracked>;
  nodes: GraphPiece[];
}

const stack: Scope[] = [];

export function track(t: Tracked): void {
  stack[stack.length - 1]?.tensors.add(t);
}

export function trackNode(n: GraphPiece): void {
  stack[stack.length - 1]?.nodes.push(n);
}

/** Removes a tensor from every open scope so that no tidy() disposes it. Returns it. */
export function keep<T extends Tracked>(t: T): T {
  for (const s of stack) s.tensors.delete(t);
  return t;
}

function collect(value: unknown, out: Set<Tracked>, seen = new Set<unknown>()): void {
  if (!value || typeof value !== 'object' || seen.has(value)) return;
  seen.add(value);
  if ('dispose' in value && 'isDisposed' in value) { out.add(value as Tracked); return; }
  if (Array.isArray(value)) { for (const v of value) collect(v, out, seen); return; }
  if (Object.getPrototypeOf(value) === Object.prototype || value instanceof Map) {
    for (const v of value instanceof Map ? value.values() : Object.values(value)) collect(v, out, seen);
  }
}

/**
 * Runs fn; afterwards disposes the tensors it created that are not in its result (a tensor, or
 * arrays / plain objects / Maps holding tensors). Synchronous only: an async fn would let its
 * tensors escape the scope, so a returned Promise is an Error.
 */
export function tidy<T>(fn: () => T): T {
  const scope: Scope = { tensors: new Set(), nodes: [] };
  stack.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    stack.pop();
    for (const t of scope.tensors) t.dispose();
    for (const n of scope.nodes) n.release();
    throw e;
  }
  stack.pop();
  if (result instanceof Promise) {
    throw new Error('tidy(): the function returned a Promise; tidy only scopes synchronous code (await outside it)');
  }
  const kept = new Set<Tracked>();
  collect(result, kept);
  for (const t of scope.tensors) {
    if (kept.has(t)) track(t); // hand it to the enclosing scope
    else t.dispose();
  }
  // Graph nodes reachable from what was returned stay alive for a later backward().
  const reachable = new Set<GraphPiece>();
  const todo: GraphPiece[] = [];
  for (const t of kept) {
    const node = (t as unknown as { node?: GraphPiece | null }).node;
    if (node) todo.push(node);
  }
  while (todo.length) {
    const n = todo.pop()!;
    if (reachable.has(n)) continue;
    reachable.add(n);
    for (const p of n.parents()) todo.push(p);
  }
  const parent = stack[stack.length - 1];
  for (const n of scope.nodes) {
    if (!reachable.has(n)) n.release();
    else parent?.nodes.push(n);
  }
  return result;
}

/** Number of open scopes (0 outside tidy). */
export function scopeDepth(): number {
  return stack.length;
}
