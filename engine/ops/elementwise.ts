// Elementwise unary, binary and ternary ops with NumPy broadcasting, each with its backward rule.
// Backward rules recompute from the saved inputs in one fused kernel (x, g) -> dx instead of
// saving outputs: it costs one more exp at most and keeps memory at one tensor per op. They
// return gradients in the output's (broadcast) shape; backward() sums them to each input's shape.
//
// The op tables are keyed by a union of op names (UnaryOp, BinaryOp), so a misspelt op, or an op
// without its definition, is a compile error rather than a TypeError at run time.

import { record } from '../autograd.js';
import { DType, isFloat } from '../dtype.js';
import { broadcastShapes, broadcastStrides, contiguousStrides, fmt, sameShape } from '../shape.js';
import { Tensor } from '../tensor.js';
import { helpersFor } from '../../kernels/math.js';
import { ComputeType } from '../../kernels/map.js';
import { MapOperand, runMap } from './run-map.js';

function ctypeOf(dtype: DType): ComputeType {
  return isFloat(dtype) ? 'f32' : (dtype as ComputeType);
}

function requireFloat(op: string, ...ts: Tensor[]): void {
  for (const t of ts) if (!isFloat(t.dtype)) throw new Error(`${op}: expected a float tensor, got ${t.describe()}`);
}

function sameDevice(op: string, ts: Tensor[]): void {
  for (const t of ts) if (t.device !== ts[0].device) throw new Error(`${op}: tensors ${ts.map((x) => x.describe()).join(', ')} live on different devices`);
}

/** Result dtype of mixing tensors: all must agree (no silent promotion). */
function commonDtype(op: string, ts: Tensor[]): DType {
  const d = ts[0].dtype;
  for (const t of ts) if (t.dtype !== d) throw new Error(`${op}: dtype mismatch: ${ts.map((x) => x.describe()).join(' vs ')}; cast one with cast()`);
  return d;
}

/** Runs an expression over broadcast inputs into a new tensor. */
export function mapNew(name: string, expr: string, inputs: Tensor[], outType: DType, scalars: [number, number] = [0, 0], ctype?: ComputeType): Tensor {
  const shape = inputs.length ? broadcastShapes(name, ...inputs.map((t) => t.shape)) : [];
  sameDevice(name, inputs);
  const out = new Tensor(inputs[0].device, shape, outType);
  const ops: MapOperand[] = inputs.map((t) => ({ t, strides: sameShape(t.shape, shape) ? contiguousStrides(shape) : broadcastStrides(t.shape, shape) }));
  runMap({ name, inTypes: inputs.map((t) => t.dtype), outType, ctype: ctype ?? ctypeOf(inputs[0].dtype), expr, helpers: helpersFor(expr) },
    shape, ops, { t: out, strides: contiguousStrides(shape) }, scalars,
    `${name}(${inputs.map((t) => t.describe()).join(', ')})`);
  return out;
}

// ------------------------------------------------------------------ unary

interface UnaryDef {
  /** Forward expression of a (the input) and P.s0/P.s1 (scalar arguments). */
  f: string;
  /** Gradient: expression of a (input) and b (incoming gradient); absent = not differentiable. */
  df?: string;
  floatOnly?: boolean;
}

export type UnaryOp =
  | 'neg' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'abs' | 'sin' | 'cos' | 'relu' | 'silu' | 'gelu' | 'gelu_tanh' | 'quick_gelu'
  | 'sigmoid' | 'tanh' | 'square' | 'clamp' | 'pow_scalar' | 'add_scalar' | 'mul_scalar' | 'rsub_scalar' | 'rdiv_scalar' | 'sign' | 'floor';

const UNARY: { readonly [K in UnaryOp]: UnaryDef } = {
  neg: { f: '-a', df: '-b' },
  exp: { f: 'exp(a)', df: 'b * exp(a)', floatOnly: true },
  log: { f: 'log(a)', df: 'b / a', floatOnly: true },
  sqrt: { f: 'sqrt(a)', df: 'b * 0.5 / sqrt(a)', floatOnly: true },
  rsqrt: { f: 'inverseSqrt(a)', df: '-0.5 * b * inverseSqrt(a) / a', floatOnly: true },
  abs: { f: 'abs(a)', df: 'b * sign(a)' },
  sin: { f: 'sin(a)', df: 'b * cos(a)', floatOnly: true },
  cos: { f: 'cos(a)', df: '-b * sin(a)', floatOnly: true },
  relu: { f: 'max(a, 0.0)', df: 'select(0.0, b, a > 0.0)', floatOnly: true },
  silu: { f: 'a * sigmoid_f(a)', df: 'b * sigmoid_f(a) * (1.0 + a * (1.0 - sigmoid_f(a)))', floatOnly: true },
  gelu: { f: '0.5 * a * (1.0 + erf_f(a * 0.70710678118654752))', df: 'b * (0.5 * (1.0 + erf_f(a * 0.70710678118654752)) + a * exp(-0.5 * a * a) * 0.39894228040143268)', floatOnly: true },
  // 0.5·(1 + tanh(u)) = σ(2u): the sigmoid form keeps the tails exact where 1 + tanh(u) cancels.
  gelu_tanh: {
    f: 'a * sigmoid_f(1.5957691216057308 * (a + 0.044715 * a * a * a))',
    df: 'b * (sigmoid_f(1.5957691216057308 * (a + 0.044715 * a * a * a)) + a * sigmoid_f(1.5957691216057308 * (a + 0.044715 * a * a * a)) * (1.0 - sigmoid_f(1.5957691216057308 * (a + 0.044715 * a * a * a))) * 1.5957691216057308 * (1.0 + 0.134145 * a * a))',
    floatOnly: true,
  },
  quick_gelu: { f: 'a * sigmoid_f(1.702 * a)', df: 'b * (sigmoid_f(1.702 * a) + 1.702 * a * sigmoid_f(1.702 * a) * (1.0 - sigmoid_f(1.702 * a)))', floatOnly: true },
  sigmoid: { f: 'sigmoid_f(a)', df: 'b * sigmoid_f(a) * (1.0 - sigmoid_f(a))', floatOnly: true },
  tanh: { f: 'tanh_f(a)', df: 'b * (1.0 - tanh_f(a) * tanh_f(a))', floatOnly: true },
  square: { f: 'a * a', df: '2.0 * a * b' },
  clamp: { f: 'clamp(a, P.s0, P.s1)', df: 'select(0.0, b, a >= P.s0 && a <= P.s1)', floatOnly: true },
  pow_scalar: { f: 'pow_f(a, P.s0)', df: 'b * P.s0 * pow_f(a, P.s0 - 1.0)', floatOnly: true },
  add_scalar: { f: 'a + P.s0', df: 'b', floatOnly: true },
  mul_scalar: { f: 'a * P.s0', df: 'b * P.s0', floatOnly: true },
  rsub_scalar: { f: 'P.s0 - a', df: '-b', floatOnly: true },
  rdiv_scalar: { f: 'P.s0 / a', df: '-b * P.s0 / (a * a)', floatOnly: true },
  sign: { f: 'sign(a)', floatOnly: true },
  floor: { f: 'floor(a)', floatOnly: true },
};

export function unary(op: UnaryOp, x: Tensor, s0 = 0, s1 = 0): Tensor {
  const def = UNARY[op];
  if (!def) throw new Error(`unary: unknown op ${String(op)} (one of ${Object.keys(UNARY).join(', ')})`);
  if (def.floatOnly) requireFloat(op, x);
  const out = mapNew(op, def.f, [x], x.dtype, [s0, s1]);
  if (!def.df) return out;
  return record(op, [x], out, [x], (g, [xs]) => [mapNew(`${op}_grad`, def.df!, [xs, g], g.dtype, [s0, s1], 'f32')]);
}

export const neg = (x: Tensor) => unary('neg', x);
export const exp = (x: Tensor) => unary('exp', x);
export const log = (x: Tensor) => unary('log', x);
export const sqrt = (x: Tensor) => unary('sqrt', x);
export const rsqrt = (x: Tensor) => unary('rsqrt', x);
export const abs = (x: Tensor) => unary('abs', x);
export const sin = (x: Tensor) => unary('sin', x);
export const cos = (x: Tensor) => unary('cos', x);
export const relu = (x: Tensor) => unary('relu', x);
export const silu = (x: Tensor) => unary('silu', x);
/** GELU; approximate 'tanh' as in PyTorch's gelu(x, approximate='tanh'). */
export const gelu = (x: Tensor, approximate: 'none' | 'tanh' = 'none') => unary(approximate === 'tanh' ? 'gelu_tanh' : 'gelu', x);
/** x·σ(1.702x), CLIP's activation. */
export const quickGelu = (x: Tensor) => unary('quick_gelu', x);
export const sigmoid = (x: Tensor) => unary('sigmoid', x);
export const tanh = (x: Tensor) => unary('tanh', x);
export const square = (x: Tensor) => unary('square', x);
export const sign = (x: Tensor) => unary('sign', x);
export const floor = (x: Tensor) => unary('floor', x);
export function clamp(x: Tensor, min = -Infinity, max = Infinity): Tensor {
  if (min > max) throw new Error(`clamp: min ${min} > max ${max}`);
  return unary('clamp', x, Math.max(min, -3.4e38), Math.min(max, 3.4e38));
}

// ------------------------------------------------------------------ binary

interface BinaryDef {
  f: (a: string, b: string) => string;
  /** d/da and d/db times the gradient g (expressions of a, b, g). */
  da?: string;
  db?: string;
  /** Output is boolean-valued (0/1 in the input dtype), never differentiable. */
  compare?: boolean;
}

export type BinaryOp = 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum' | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge';

const BINARY: { readonly [K in BinaryOp]: BinaryDef } = {
  add: { f: (a, b) => `${a} + ${b}` },
  sub: { f: (a, b) => `${a} - ${b}` },
  mul: { f: (a, b) => `${a} * ${b}` },
  div: { f: (a, b) => `${a} / ${b}` },
  pow: { f: (a, b) => `pow_f(${a}, ${b})`, da: 'c * b * pow_f(a, b - 1.0)', db: 'c * pow_f(a, b) * log(a)' },
  maximum: { f: (a, b) => `max(${a}, ${b})`, da: 'select(0.0, c, a >= b)', db: 'select(c, 0.0, a >= b)' },
  minimum: { f: (a, b) => `min(${a}, ${b})`, da: 'select(0.0, c, a <= b)', db: 'select(c, 0.0, a <= b)' },
  eq: { f: (a, b) => `select(0, 1, ${a} == ${b})`, compare: true },
  ne: { f: (a, b) => `select(0, 1, ${a} != ${b})`, compare: true },
  lt: { f: (a, b) => `select(0, 1, ${a} < ${b})`, compare: true },
  le: { f: (a, b) => `select(0, 1, ${a} <= ${b})`, compare: true },
  gt: { f: (a, b) => `select(0, 1, ${a} > ${b})`, compare: true },
  ge: { f: (a, b) => `select(0, 1, ${a} >= ${b})`, compare: true },
};

export function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  const def = BINARY[op];
  if (!def) throw new Error(`binary: unknown op ${String(op)} (one of ${Object.keys(BINARY).join(', ')})`);
  const dtype = commonDtype(op, [a, b]);
  const ct = ctypeOf(dtype);
  const typed = (e: string) => (def.compare ? e.replace(/select\(0, 1,/, `select(${ct}(0), ${ct}(1),`) : e);
  const out = mapNew(op, typed(def.f('a', 'b')), [a, b], dtype);
  if (def.compare || !isFloat(dtype)) return out;
  switch (op) {
    case 'add':
      return record(op, [a, b], out, [], (g) => [a.requiresGrad ? g : null, b.requiresGrad ? g : null]);
    case 'sub':
      return record(op, [a, b], out, [], (g) => [a.requiresGrad ? g : null, b.requiresGrad ? neg(g) : null]);
    case 'mul':
      return record(op, [a, b], out, [a, b], (g, [as, bs]) => [a.requiresGrad ? mul(g, bs) : null, b.requiresGrad ? mul(g, as) : null]);
    case 'div':
      return record(op, [a, b], out, [a, b], (g, [as, bs]) => [
        a.requiresGrad ? div(g, bs) : null,
        b.requiresGrad ? mapNew('div_grad_b', '-c * a / (b * b)', [as, bs, g], g.dtype) : null,
      ]);
    default:
      return record(op, [a, b], out, [a, b], (g, [as, bs]) => [
        a.requiresGrad ? mapNew(`${op}_grad_a`, def.da!, [as, bs, g], g.dtype) : null,
        b.requiresGrad ? mapNew(`${op}_grad_b`, def.db!, [as, bs, g], g.dtype) : null,
      ]);
  }
}

type Operand = Tensor | number;

export function add(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number') return unary('add_scalar', a as Tensor, b);
  if (typeof a === 'number') return unary('add_scalar', b, a);
  return binary('add', a, b);
}
export function sub(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number') return unary('add_scalar', a as Tensor, -b);
  if (typeof a === 'number') return unary('rsub_scalar', b, a);
  return binary('sub', a, b);
}
export function mul(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number') return unary('mul_scalar', a as Tensor, b);
  if (typeof a === 'number') return unary('mul_scalar', b, a);
  return binary('mul', a, b);
}
export function div(a: Operand, b: Operand): Tensor {
  if (typeof b === 'number') return unary('mul_scalar', a as Tensor, 1 / b);
  if (typeof a === 'number') return unary('rdiv_scalar', b, a);
  return binary('div', a, b);
}
export function pow(a: Tensor, b: Operand): Tensor {
  return typeof b === 'number' ? unary('pow_scalar', a, b) : binary('pow', a, b);
}
export const mulScalar = (a: Tensor, s: number) => unary('mul_scalar', a, s);
export const maximum = (a: Tensor, b: Tensor) => binary('maximum', a, b);
export const minimum = (a: Tensor, b: Tensor) => binary('minimum', a, b);
export const eq = (a: Tensor, b: Tensor) => binary('eq', a, b);
export const ne = (a: Tensor, b: Tensor) => binary('ne', a, b);
export const lt = (a: Tensor, b: Tensor) => binary('lt', a, b);
export const le = (a: Tensor, b: Tensor) => binary('le', a, b);
export const gt = (a: Tensor, b: Tensor) => binary('gt', a, b);
export const ge = (a: Tensor, b: Tensor) => binary('ge', a, b);

// ------------------------------------------------------------------ where, cast

/** cond ? a : b elementwise, cond any dtype (non-zero = true), broadcast over all three. */
export function where(cond: Tensor, a: Tensor, b: Tensor): Tensor {
  const dtype = commonDtype('where', [a, b]);
  const ct = ctypeOf(dtype);
  const out = mapNew('where', `select(c, b, a != ${ct}(0))`, [cond, a, b], dtype, [0, 0], ct);
  if (!isFloat(dtype)) return out;
  return record('where', [cond, a, b], out, [cond], (g, [cs]) => [
    null,
    a.requiresGrad ? mapNew('where_grad_a', 'select(0.0, b, a != 0.0)', [cs, g], g.dtype, [0, 0], 'f32') : null,
    b.requiresGrad ? mapNew('where_grad_b', 'select(b, 0.0, a != 0.0)', [cs, g], g.dtype, [0, 0], 'f32') : null,
  ]);
}

/** A new tensor with the values converted to dtype (always a copy, even for the same dtype). */
export function cast(x: Tensor, dtype: DType): Tensor {
  if (dtype === 'f16' && !x.device.hasF16) throw new Error(`cast ${x.describe()} -> f16: the device has no shader-f16`);
  const srcCt = ctypeOf(x.dtype);
  const out = mapNew('cast', 'a', [x], dtype, [0, 0], srcCt);
  if (!isFloat(x.dtype) || !isFloat(dtype)) return out;
  return record('cast', [x], out, [], (g) => [cast(g, x.dtype)]);
}

export { fmt };
