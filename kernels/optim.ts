// Kernels for the optimizers and for gradient-norm clipping.
//
// Each optimizer update is one fused, in-place kernel per parameter (or per chunk of a large
// parameter): it reads the gradient and reads/writes the parameter and its moment buffers, so a
// step costs one pass over memory and allocates nothing. Every hyper-parameter, the step's bias
// corrections and the "first step" flag travel as uniforms: one pipeline per optimizer family
// serves every shape, learning rate and step.
//
// Moment buffers come from the pool uninitialised; on a parameter's first step the kernel
// ignores their contents with select() (not a multiply by zero, which would keep a stale NaN).

import { MAIN_1D, ParamLayout, at, declareBindings } from './common.js';

/** sgd: no state. sgd_momentum: one momentum buffer. adam: first and second moments. */
export type OptimKind = 'sgd' | 'sgd_momentum' | 'adam';

/** Moment buffers per kind (bound after the parameter, in this order). */
export const OPTIM_STATE: Record<OptimKind, readonly string[]> = {
  sgd: [],
  sgd_momentum: ['momentum'],
  adam: ['expAvg', 'expAvgSq'],
};

export const optimLayout = new ParamLayout([
  // Element offsets inside the bound windows: grad, param, state 0, state 1 (binding order).
  { name: 'offs', type: 'u32', len: 4 },
  { name: 'n', type: 'u32' },
  { name: 'first', type: 'u32' },
  { name: 'nesterov', type: 'u32' },
  { name: 'lr', type: 'f32' },
  /** L2 penalty added to the gradient (SGD, Adam). */
  { name: 'l2', type: 'f32' },
  /** Factor the parameter is multiplied by before the update: 1 - lr·wd for AdamW, else 1. */
  { name: 'decay', type: 'f32' },
  { name: 'momentum', type: 'f32' },
  { name: 'beta1', type: 'f32' },
  { name: 'beta2', type: 'f32' },
  { name: 'eps', type: 'f32' },
  /** lr / (1 - beta1^step), computed on the host. */
  { name: 'stepSize', type: 'f32' },
  /** sqrt(1 - beta2^step), computed on the host. */
  { name: 'bc2sqrt', type: 'f32' },
]);

export function optimKey(kind: OptimKind): string {
  return `optim:${kind}`;
}

const BODY: Record<OptimKind, string> = {
  // torch.optim.SGD without momentum: p -= lr·(g + wd·p).
  sgd: `
  let d = g + P.l2 * p;
  param[op] = p - P.lr * d;`,
  // torch.optim.SGD with momentum (dampening 0): buf = g' on the first step, else μ·buf + g';
  // the update uses buf, or g' + μ·buf with Nesterov.
  sgd_momentum: `
  let d = g + P.l2 * p;
  let b0 = s0[o0];
  let b = select(P.momentum * b0 + d, d, P.first != 0u);
  s0[o0] = b;
  let upd = select(b, d + P.momentum * b, P.nesterov != 0u);
  param[op] = p - P.lr * upd;`,
  // torch.optim.Adam / AdamW: g' = g + l2·p (Adam's L2), p ← p·decay (AdamW's decoupled decay),
  // m = lerp(m, g', 1-β1), v = β2·v + (1-β2)·g'², p -= stepSize · m / (sqrt(v)/sqrt(bc2) + eps).
  adam: `
  let d = g + P.l2 * p;
  let first = P.first != 0u;
  let m0 = select(s0[o0], 0.0, first);
  let v0 = select(s1[o1], 0.0, first);
  let m = m0 + (1.0 - P.beta1) * (d - m0);
  let v = P.beta2 * v0 + (1.0 - P.beta2) * (d * d);
  s0[o0] = m;
  s1[o1] = v;
  let denom = sqrt(v) / P.bc2sqrt + P.eps;
  param[op] = p * P.decay - P.stepSize * (m / denom);`,
};

export function optimWGSL(kind: OptimKind): string {
  const states = OPTIM_STATE[kind];
  const writes = [{ name: 'param', type: 'f32' as const }, ...states.map((_, k) => ({ name: `s${k}`, type: 'f32' as const }))];
  const offsets = [
    `  let og = ${at('P.offs', '0u')} + i;`,
    `  let op = ${at('P.offs', '1u')} + i;`,
    ...states.map((_, k) => `  let o${k} = ${at('P.offs', `${k + 2}u`)} + i;`),
  ].join('\n');
  return `${declareBindings([{ name: 'grad', type: 'f32' }], writes, optimLayout)}
${MAIN_1D()}
  let i = gid * 256u + lid;
  if (i >= P.n) { return; }
${offsets}
  let g = grad[og];
  let p = param[op];
${BODY[kind]}
}
`;
}

// ------------------------------------------------------------------ gradient-norm clipping

/** Elements each workgroup of the sum-of-squares kernel folds into one partial sum. */
export const SUMSQ_PER_GROUP = 1024;

export const sumsqLayout = new ParamLayout([
  { name: 'n', type: 'u32' },
  { name: 'inoff', type: 'u32' },
  { name: 'outoff', type: 'u32' },
  { name: 'groups', type: 'u32' },
  /** 1: sum x², 0: sum x (later passes fold partial sums). */
  { name: 'square', type: 'u32' },
]);

export const SUMSQ_KEY = 'optim:sumsq';

/**
 * Workgroup w sums (the squares of) elements [w·1024, (w+1)·1024) of its window into dst[w]:
 * thread t takes t, t+256, t+512, t+768, then a fixed tree. The order depends only on the
 * element's position, never on how many tensors are clipped together.
 */
export function sumsqWGSL(): string {
  return `${declareBindings([{ name: 'src', type: 'f32' }], [{ name: 'dst', type: 'f32' }], sumsqLayout)}
var<workgroup> acc: array<f32, 256>;
${MAIN_1D()}
  let base = gid * ${SUMSQ_PER_GROUP}u;
  var s = 0.0;
  for (var k = 0u; k < ${SUMSQ_PER_GROUP / 256}u; k++) {
    let i = base + k * 256u + lid;
    if (i < P.n) {
      let x = src[P.inoff + i];
      s += select(x, x * x, P.square != 0u);
    }
  }
  acc[lid] = s;
  workgroupBarrier();
  for (var w = 128u; w > 0u; w = w >> 1u) {
    if (lid < w) { acc[lid] = acc[lid] + acc[lid + w]; }
    workgroupBarrier();
  }
  if (lid == 0u && gid < P.groups) { dst[P.outoff + gid] = acc[0]; }
}
`;
}

export const clipLayout = new ParamLayout([
  { name: 'n', type: 'u32' },
  { name: 'off', type: 'u32' },
  { name: 'maxNorm', type: 'f32' },
]);

export const CLIP_KEY = 'optim:clip_scale';

/** grad *= min(1, maxNorm / (norm + 1e-6)) in place, reading the norm from the GPU (torch's clip_grad_norm_). */
export function clipWGSL(): string {
  return `${declareBindings([{ name: 'norm', type: 'f32' }], [{ name: 'grad', type: 'f32' }], clipLayout)}
${MAIN_1D()}
  let i = gid * 256u + lid;
  if (i >= P.n) { return; }
  let coef = min(P.maxNorm / (norm[0] + 1e-6), 1.0);
  grad[P.off + i] = grad[P.off + i] * coef;
}
`;
}
