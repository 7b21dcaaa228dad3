// The public op set. Importing this module also hands autograd the arithmetic it needs.

import { setGradMath } from '../autograd.js';
import { add, cast } from './elementwise.js';
import { full } from './movement.js';
import { sumTo } from './reduce.js';

export * from './elementwise.js';
export * from './movement.js';
export * from './reduce.js';
export * from './softmax.js';
export * from './gather.js';
export * from './random.js';
export * from './matmul.js';
export * from './attention.js';
export * from './conv2d.js';
export * from './norm.js';
export * from './layers.js';

setGradMath({
  add: (a, b) => add(a, b),
  cast: (a, d) => cast(a, d),
  ones: (shape, dtype, device) => full(shape, 1, dtype, device),
  sumTo: (x, shape) => sumTo(x, shape),
});
