// WGSL helper functions used by elementwise expressions (WGSL has no erf, and its pow and tanh
// are undefined or unstable where PyTorch's are not).

export const ERF = `
fn erf_f(x: f32) -> f32 {
  // Abramowitz & Stegun 7.1.26 refined (max error 1.2e-7 with this rational form).
  let ax = abs(x);
  let t = 1.0 / (1.0 + 0.5 * ax);
  let y = 1.0 - t * exp(-ax * ax - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
    t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
  return select(-y, y, x >= 0.0);
}`;

export const TANH = `
fn tanh_f(x: f32) -> f32 {
  // tanh saturates to ±1 in f32 beyond |x| = 9; clamping keeps exp() from overflowing to inf/inf.
  return tanh(clamp(x, -15.0, 15.0));
}`;

export const POW = `
fn pow_f(a: f32, p: f32) -> f32 {
  // PyTorch semantics: integral exponents accept negative bases; 0^0 = 1.
  if (p == 0.0) { return 1.0; }
  if (a >= 0.0) { return select(pow(a, p), 0.0, a == 0.0 && p > 0.0); }
  if (p != floor(p)) { var nan_bits = 0x7fc00000u; return bitcast<f32>(nan_bits); }
  let r = pow(-a, p);
  return select(r, -r, (abs(p) % 2.0) == 1.0);
}`;

export const SIGMOID = `
fn sigmoid_f(x: f32) -> f32 {
  return select(exp(x) / (1.0 + exp(x)), 1.0 / (1.0 + exp(-x)), x >= 0.0);
}`;

const ALL: Record<string, string> = { erf_f: ERF, tanh_f: TANH, pow_f: POW, sigmoid_f: SIGMOID };

/** The helpers an expression calls (only those, to keep shader compiles small). */
export function helpersFor(expr: string): string {
  return Object.entries(ALL).filter(([name]) => expr.includes(name)).map(([, code]) => code).join('\n');
}
