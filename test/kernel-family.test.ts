// The two kernel families (engine/kernel-family.ts) on the same device: the register-blocked
// software kernels (kernels/*-rb.ts) and the tiled GPU kernels. conv2d (forward, dx, dw) and
// matmul sum every output over k in the same order with fma in both families, so they must agree
// bit for bit (except 3×3 stride-1 convolutions, Winograd on the software family: close); the other op test files check the default family (software on lavapipe) against
// float64 references, and this file carries that check over to the GPU family on every CI run.
// Also: batch independence under each family, reductions under both, and the override itself.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { backward, noGrad } from '../engine/autograd.js';
import { DType } from '../engine/dtype.js';
import { KernelFamily, convBlockColumns, kernelFamily, kernelFamilyOverride, softwareSubgroupSize } from '../engine/kernel-family.js';
import { Tensor } from '../engine/tensor.js';
import { Conv2dOptions, conv2d, conv2dGeometry, matmul, slice, sum } from '../engine/ops/index.js';
import { winogradApplies } from '../engine/ops/conv2d-winograd.js';
import { assertClose, assertThrows, randTensor, testDevice } from './helpers.js';

const s = suite('kernel-family');
const dev = await testDevice();
const FAMILIES: KernelFamily[] = ['software', 'gpu'];

async function under<T>(family: KernelFamily, fn: () => Promise<T>): Promise<T> {
  const before = kernelFamilyOverride.family;
  kernelFamilyOverride.family = family;
  try { return await fn(); } finally { kernelFamilyOverride.family = before; }
}

async function bits(t: Tensor): Promise<number[]> {
  const d = await t.data();
  const f = t.dtype === 'f16' ? Float32Array.from(d) : new Float32Array(d);
  return Array.from(new Uint32Array(f.buffer));
}

const floats = (b: number[]) => Array.from(new Float32Array(Uint32Array.from(b).buffer));

interface ConvCase { x: [number, number, number, number]; w: [number, number, number, number]; bias: boolean; opts: Conv2dOptions }

const convCases: ConvCase[] = [
  { x: [3, 5, 7, 9], w: [6, 5, 3, 3], bias: true, opts: { padding: 1 } },
  { x: [2, 4, 9, 7], w: [6, 4, 3, 3], bias: true, opts: { stride: 2, padding: 1 } },
  { x: [2, 6, 6, 6], w: [4, 3, 3, 3], bias: false, opts: { padding: [1, 0, 2, 1], groups: 2 } },
  { x: [1, 3, 10, 11], w: [5, 3, 3, 2], bias: true, opts: { dilation: [2, 1], padding: [2, 1] } },
  { x: [4, 17, 4, 4], w: [33, 17, 1, 1], bias: true, opts: {} },
  { x: [2, 4, 5, 5], w: [4, 1, 3, 3], bias: true, opts: { groups: 4, padding: 1 } },
  // Channel counts that are multiples of 4: the software kernels read repacked weights as vec4.
  { x: [2, 8, 6, 5], w: [12, 8, 3, 3], bias: true, opts: { padding: 1 } },
  { x: [3, 8, 5, 5], w: [8, 4, 3, 3], bias: false, opts: { groups: 2, padding: [0, 1, 1, 2], stride: [2, 1] } },
];

/** Forward, dx, dw (and db) of one case under a family, as bit patterns. */
async function convRun(c: ConvCase, dtype: DType, family: KernelFamily): Promise<number[][]> {
  return under(family, async () => {
    const x = randTensor(c.x, 1, -1, 1, dtype).t, w = randTensor(c.w, 2, -1, 1, dtype).t;
    const b = c.bias ? randTensor([c.w[0]], 3, -1, 1, dtype).t : null;
    for (const t of [x, w, b]) if (t) t.requiresGrad = true;
    const y = conv2d(x, w, b, c.opts);
    const g = randTensor([...y.shape], 4, -1, 1, dtype).t;
    backward(y, { grad: g });
    const out = [await bits(y), await bits(x.grad!), await bits(w.grad!)];
    if (b) out.push(await bits(b.grad!));
    for (const t of [x, w, b, y, g]) t?.dispose();
    return out;
  });
}

s('the family follows the override and DDPO_KERNELS; the adapter decides otherwise', async () => {
  assert.is(kernelFamily({ adapterName: 'llvmpipe (LLVM 15.0.6, 256 bits)' }), 'software');
  assert.is(kernelFamily({ adapterName: 'NVIDIA H200' }), 'gpu');
  await under('gpu', async () => assert.is(kernelFamily({ adapterName: 'llvmpipe' }), 'gpu'));
  const env = process.env.DDPO_KERNELS;
  try {
    process.env.DDPO_KERNELS = 'software';
    assert.is(kernelFamily({ adapterName: 'NVIDIA H200' }), 'software');
    process.env.DDPO_KERNELS = 'tensorcore';
    await assertThrows(() => kernelFamily({ adapterName: 'x' }), /DDPO_KERNELS=tensorcore/, /"software" or "gpu"/);
  } finally {
    if (env === undefined) delete process.env.DDPO_KERNELS; else process.env.DDPO_KERNELS = env;
  }
});

s('subgroup kernels: only a fixed size of 8, off by override or DDPO_SUBGROUPS=0, a bad value is an error', async () => {
  assert.is(softwareSubgroupSize({ subgroupSize: 8 }), 8);
  assert.is(softwareSubgroupSize({ subgroupSize: 4 }), null);
  assert.is(softwareSubgroupSize({ subgroupSize: null }), null);
  kernelFamilyOverride.subgroups = false;
  try { assert.is(softwareSubgroupSize({ subgroupSize: 8 }), null); } finally { delete kernelFamilyOverride.subgroups; }
  const env = process.env.DDPO_SUBGROUPS;
  try {
    process.env.DDPO_SUBGROUPS = '0';
    assert.is(softwareSubgroupSize({ subgroupSize: 8 }), null);
    process.env.DDPO_SUBGROUPS = 'yes';
    await assertThrows(() => softwareSubgroupSize({ subgroupSize: 8 }), /DDPO_SUBGROUPS=yes/, /expected 0/);
  } finally {
    if (env === undefined) delete process.env.DDPO_SUBGROUPS; else process.env.DDPO_SUBGROUPS = env;
  }
});

s('conv2d: both families give the same bits (forward, dx, dw, db; f32 and f16; stride, dilation, groups, 1×1)', async () => {
  for (const dtype of (dev.hasF16 ? ['f32', 'f16'] : ['f32']) as DType[]) {
    for (const [i, c] of convCases.entries()) {
      if (dtype === 'f16' && i > 2 && i < 6) continue;
      const [a, b] = [await convRun(c, dtype, 'software'), await convRun(c, dtype, 'gpu')];
      // 3×3 stride-1 convolutions run forward, dx and dw as Winograd on the software family
      // (other products, other roundings): close, not equal.
      const wino = await under('software', async () => winogradApplies('fwd', conv2dGeometry(c.x, c.w, c.opts, 'test'), dev));
      const tol = dtype === 'f16' ? 2e-3 : 2e-5;
      ['forward', 'dx', 'dw'].forEach((what, k) => {
        if (wino) assertClose(floats(a[k]), floats(b[k]), tol, tol, `case ${i} ${dtype} ${what} (Winograd)`);
        else assert.equal(a[k], b[k], `case ${i} ${dtype} ${what}`);
      });
      // db is a sum over (N, H, W): the software family reduces in index order, the GPU one in
      // a tree, so they agree closely but not bit for bit.
      if (a.length > 3) assertClose(floats(a[3]), floats(b[3]), dtype === 'f16' ? 2e-3 : 1e-5, 1e-5, `case ${i} ${dtype} db`);
    }
  }
});

s('conv2d software kernels with 4-column blocks (the SwiftShader variant) give the 8-column bits', async () => {
  assert.is(convBlockColumns({ adapterName: 'google swiftshader' }), 4);
  assert.is(convBlockColumns({ adapterName: 'llvmpipe (LLVM 15.0.6, 256 bits)' }), 8);
  const before = kernelFamilyOverride.convColumns;
  try {
    for (const dtype of (dev.hasF16 ? ['f32', 'f16'] : ['f32']) as DType[]) {
      for (const [i, c] of convCases.entries()) {
        if (dtype === 'f16' && i > 2 && i < 6) continue;
        kernelFamilyOverride.convColumns = 8;
        const wide = await convRun(c, dtype, 'software');
        kernelFamilyOverride.convColumns = 4;
        const compiled = dev.pipelineCount;
        const narrow = await convRun(c, dtype, 'software');
        if (i === 1) assert.ok(dev.pipelineCount > compiled, 'the 4-column kernels are pipelines of their own');
        ['forward', 'dx', 'dw', 'db'].slice(0, wide.length).forEach((what, k) => assert.equal(narrow[k], wide[k], `case ${i} ${dtype} ${what}`));
      }
    }
    // The width is the device's: a batch and its one sample agree under the narrow blocks too.
    await under('software', async () => {
      const x = randTensor([5, 6, 7, 7], 41).t, w = randTensor([9, 6, 3, 3], 42).t;
      const whole = conv2d(x, w, null, { padding: 1, stride: 2 });
      const alone = conv2d(slice(x, [3, 0, 0, 0], [4, 6, 7, 7]), w, null, { padding: 1, stride: 2 });
      assert.equal(await bits(alone), await bits(slice(whole, [3, 0, 0, 0], [4, 9, 4, 4])), 'conv2d stride 2, 4-column blocks');
    });
  } finally {
    kernelFamilyOverride.convColumns = before;
  }
  const env = process.env.DDPO_CONV_COLUMNS;
  try {
    process.env.DDPO_CONV_COLUMNS = '4';
    assert.is(convBlockColumns({ adapterName: 'llvmpipe' }), 4);
    process.env.DDPO_CONV_COLUMNS = '6';
    await assertThrows(() => convBlockColumns({ adapterName: 'x' }), /DDPO_CONV_COLUMNS=6/);
  } finally {
    if (env === undefined) delete process.env.DDPO_CONV_COLUMNS; else process.env.DDPO_CONV_COLUMNS = env;
  }
});

s('matmul: both families give the same bits (transposes, broadcast batch, size-1 dims, edges off every tile)', async () => {
  const cases: [number[], number[], { transA?: boolean; transB?: boolean }][] = [
    [[37, 53], [53, 29], {}],
    [[3, 1, 17, 70], [5, 70, 9], {}],
    [[2, 33, 19], [2, 65, 33], { transA: true, transB: true }],
    [[1, 1], [1, 130], {}],
    [[129, 8], [40, 8], { transB: true }],
  ];
  for (const dtype of (dev.hasF16 ? ['f32', 'f16'] : ['f32']) as DType[]) {
    for (const [i, [sa, sb, o]] of cases.entries()) {
      const run = (family: KernelFamily) => under(family, async () => {
        const a = randTensor(sa, 10 + i, -1, 1, dtype).t, b = randTensor(sb, 20 + i, -1, 1, dtype).t;
        a.requiresGrad = true; b.requiresGrad = true;
        const y = matmul(a, b, o);
        backward(y, { grad: randTensor([...y.shape], 30 + i, -1, 1, dtype).t });
        const r = [await bits(y), await bits(a.grad!), await bits(b.grad!)];
        for (const t of [a, b, y]) t.dispose();
        return r;
      });
      const [x, y] = [await run('software'), await run('gpu')];
      ['product', 'dA', 'dB'].forEach((what, k) => assert.equal(x[k], y[k], `case ${i} ${dtype} ${what}`));
    }
  }
});

s('batch independence under each family: a sample alone equals the same sample in a batch (conv2d by every route, forward and dx; matmul)', async () => {
  for (const family of FAMILIES) {
    await under(family, async () => {
      // Every software route: Winograd (3×3 s1), im2col (stride 2), 1×1 as products (8×8 map)
      // and 1×1 on a small map (im2col), forward and input gradient.
      const convs: [number, number, number, Conv2dOptions][] = [[3, 7, 7, { padding: 1 }], [3, 7, 7, { stride: 2, padding: 1 }], [1, 8, 8, {}], [1, 3, 3, {}]];
      for (const [kk, H, W, opts] of convs) {
        const x = randTensor([5, 6, H, W], 41).t, w = randTensor([9, 6, kk, kk], 42).t, bias = randTensor([9], 43).t;
        x.requiresGrad = true;
        const whole = conv2d(x, w, bias, opts);
        const g = randTensor([...whole.shape], 46).t;
        backward(whole, { grad: g });
        const one = noGrad(() => slice(x, [3, 0, 0, 0], [4, 6, H, W])).requireGrad();
        const alone = conv2d(one, w, bias, opts);
        const OH = whole.shape[2], OW = whole.shape[3];
        backward(alone, { grad: slice(g, [3, 0, 0, 0], [4, 9, OH, OW]) });
        const what = `${family}: conv2d ${kk}×${kk} ${H}×${W} ${JSON.stringify(opts)}`;
        assert.equal(await bits(alone), await bits(slice(whole, [3, 0, 0, 0], [4, 9, OH, OW])), `${what} forward`);
        assert.equal(await bits(one.grad!), await bits(slice(x.grad!, [3, 0, 0, 0], [4, 6, H, W])), `${what} dx`);
        for (const t of [x, w, bias, whole, g, one, alone]) t.dispose();
      }
      const a = randTensor([6, 11, 23], 44).t, b = randTensor([23, 19], 45).t;
      const prod = matmul(a, b);
      const a1 = slice(a, [4, 0, 0], [5, 11, 23]);
      const p1 = matmul(a1, b);
      assert.equal(await bits(p1), await bits(slice(prod, [4, 0, 0], [5, 11, 19])), `${family}: matmul`);
      for (const t of [a, b, prod, a1, p1]) t.dispose();
    });
  }
});

s('reductions: both families agree with float64 (long, short and strided reduced extents)', async () => {
  const shape = [4, 3, 50, 7];
  const { x, t } = randTensor(shape, 51);
  const ref = (axes: number[]) => {
    const keep = shape.map((_, i) => i).filter((i) => !axes.includes(i));
    const outShape = keep.map((i) => shape[i]);
    const out = new Float64Array(outShape.reduce((p, n) => p * n, 1));
    const idx = [0, 0, 0, 0];
    for (let f = 0; f < x.length; f++) {
      let r = f;
      for (let d = 3; d >= 0; d--) { idx[d] = r % shape[d]; r = Math.floor(r / shape[d]); }
      let o = 0;
      for (const i of keep) o = o * shape[i] + idx[i];
      out[o] += x[f];
    }
    return out;
  };
  for (const family of FAMILIES) {
    await under(family, async () => {
      for (const axes of [[0, 2, 3], [2], [1, 3], [0, 1, 2, 3]]) {
        const r = sum(t, axes);
        assertClose(await r.data(), ref(axes), 1e-5, 1e-5, `${family} sum over ${JSON.stringify(axes)}`);
        r.dispose();
      }
    });
  }
  t.dispose();
});

s.run();
