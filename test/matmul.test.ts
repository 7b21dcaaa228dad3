// matmul against a float64 reference: awkward shapes, batch broadcasting, transposes, 1-D
// operands, backward (checked against the reference's analytic backward, which is itself checked
// once by finite differences), f16, batch independence, the chunked path and bad input.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { backward } from '../engine/autograd.js';
import { kernelFamilyOverride } from '../engine/kernel-family.js';
import { roundToF16 } from '../engine/dtype.js';
import { sizeOf } from '../engine/shape.js';
import { tensor } from '../engine/tensor.js';
import { matmul, matmulVec4BOverride, slice, reshape } from '../engine/ops/index.js';
import { assertClose, assertThrows, broadcastIndex, dot, finiteDiff, randArray, testDevice } from './helpers.js';

const s = suite('matmul');
const dev = await testDevice();

interface Case {
  a: number[];
  b: number[];
  transA?: boolean;
  transB?: boolean;
}

interface RefResult {
  out: Float64Array;
  shape: number[];
}

/** The problem dims of a case, with 1-D operands promoted as NumPy does. */
function geometry(c: Case) {
  const a = c.a.length === 1 ? [1, c.a[0]] : c.a;
  const b = c.b.length === 1 ? [c.b[0], 1] : c.b;
  const tA = c.a.length > 1 && !!c.transA, tB = c.b.length > 1 && !!c.transB;
  const M = tA ? a[a.length - 1] : a[a.length - 2];
  const K = tA ? a[a.length - 2] : a[a.length - 1];
  const N = tB ? b[b.length - 2] : b[b.length - 1];
  const ba = a.slice(0, -2), bb = b.slice(0, -2);
  const rank = Math.max(ba.length, bb.length);
  const batch: number[] = [];
  for (let i = 0; i < rank; i++) {
    const x = ba[i - (rank - ba.length)] ?? 1, y = bb[i - (rank - bb.length)] ?? 1;
    batch.push(Math.max(x, y));
  }
  let shape = [...batch, M, N];
  if (c.a.length === 1) shape = shape.filter((_, i) => i !== shape.length - 2);
  if (c.b.length === 1) shape = shape.filter((_, i) => i !== shape.length - 1);
  return { M, K, N, tA, tB, batch, ba, bb, shape };
}

/**
 * Visits every product term out[o] += A[ai]·B[bi] of the case. Forward and the analytic backward
 * are both written with it, so they agree on indexing by construction.
 */
function forEachTerm(c: Case, visit: (o: number, ai: number, bi: number) => void): void {
  const { M, K, N, tA, tB, batch, ba, bb } = geometry(c);
  const nb = sizeOf(batch);
  const ia = broadcastIndex(ba, batch), ib = broadcastIndex(bb, batch);
  for (let z = 0; z < nb; z++) {
    const a0 = ia(z) * M * K, b0 = ib(z) * K * N;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        const o = (z * M + m) * N + n;
        for (let k = 0; k < K; k++) {
          visit(o, a0 + (tA ? k * M + m : m * K + k), b0 + (tB ? n * K + k : k * N + n));
        }
      }
    }
  }
}

function refMatmul(c: Case, a: Float64Array, b: Float64Array): RefResult {
  const shape = geometry(c).shape;
  const out = new Float64Array(sizeOf(shape));
  forEachTerm(c, (o, ai, bi) => { out[o] += a[ai] * b[bi]; });
  return { out, shape };
}

/** Analytic vector-Jacobian product of the reference for output gradient g. */
function refBackward(c: Case, a: Float64Array, b: Float64Array, g: Float64Array): [Float64Array, Float64Array] {
  const da = new Float64Array(a.length), db = new Float64Array(b.length);
  forEachTerm(c, (o, ai, bi) => { da[ai] += g[o] * b[bi]; db[bi] += g[o] * a[ai]; });
  return [da, db];
}

function label(c: Case): string {
  return `[${c.a}]${c.transA ? 'ᵀ' : ''} × [${c.b}]${c.transB ? 'ᵀ' : ''}`;
}

const f32Cases: Case[] = [
  { a: [1, 1], b: [1, 1] },
  { a: [7, 13], b: [13, 5] },
  { a: [65, 3], b: [3, 70] },
  { a: [3, 33, 40], b: [40, 19] }, // several K slabs; batch folded into M
  { a: [2, 1, 5, 6], b: [3, 6, 7] }, // batch broadcast both ways
  { a: [1, 9], b: [4, 9, 2] }, // A broadcast over B's batch
  { a: [2, 17, 9], b: [2, 6, 17], transA: true, transB: true },
  { a: [2, 9, 17], b: [1, 6, 17], transB: true },
  { a: [2, 17, 9], b: [17, 6], transA: true },
  { a: [2, 9, 17], b: [2, 17, 6], transA: false, transB: false },
  { a: [70, 20], b: [66, 20], transB: true },
  { a: [20, 70], b: [20, 66], transA: true },
  { a: [13], b: [13, 4] }, // 1-D row vector
  { a: [3, 4, 13], b: [13] }, // 1-D column vector
  { a: [13], b: [13] }, // dot product: shape []
  { a: [4, 0], b: [0, 3] }, // K = 0: zeros
];

s('forward f32 matches float64 reference', async () => {
  let seed = 1;
  for (const c of f32Cases) {
    const a = randArray(sizeOf(c.a), seed++), b = randArray(sizeOf(c.b), seed++);
    const out = matmul(tensor(a, c.a), tensor(b, c.b), { transA: c.transA, transB: c.transB });
    const ref = refMatmul(c, a, b);
    assert.equal([...out.shape], ref.shape, `shape of ${label(c)}`);
    assertClose(await out.data(), ref.out, 1e-5, 1e-5, label(c));
  }
});

s('one pipeline per dtype and B layout serves every shape', async () => {
  // Two warm-ups: B readable as vec4s along n (N = 4) and not (N = 3); software adapters have a
  // kernel for each, GPUs one for both.
  matmul(tensor(randArray(6, 1), [2, 3]), tensor(randArray(12, 2), [3, 4]));
  matmul(tensor(randArray(6, 1), [2, 3]), tensor(randArray(9, 2), [3, 3]));
  const before = dev.pipelineCount;
  matmul(tensor(randArray(35, 3), [5, 7]), tensor(randArray(77, 4), [7, 11]), { transB: false });
  matmul(tensor(randArray(70, 3), [2, 7, 5]), tensor(randArray(77, 4), [11, 7]), { transA: true, transB: true });
  matmul(tensor(randArray(70, 3), [2, 5, 7]), tensor(randArray(168, 4), [3, 1, 7, 8]));
  await dev.sync();
  assert.is(dev.pipelineCount, before);
});

s('B read as vec4s, and A shared by subgroup broadcasts, give the bits of the plain kernel (N = 4·odd, transB, offsets, batch strides, chunks)', async () => {
  const cases: Case[] = [
    { a: [5, 9], b: [9, 12] }, // the last vec4 pair has one column block past N
    { a: [3, 1, 10, 7], b: [2, 7, 8] }, // broadcast batch
    { a: [2, 33, 4], b: [2, 4, 20] },
    { a: [70, 3], b: [3, 68] },
    { a: [2, 6, 9], b: [2, 12, 9], transB: true }, // B re-laid as [K, N] first
    { a: [9, 6], b: [1, 20, 9], transA: true, transB: true },
  ];
  let seed = 700;
  for (const c of cases) {
    for (const dtype of dev.hasF16 ? ['f32', 'f16'] as const : ['f32'] as const) {
      const av = randArray(sizeOf(c.a), seed++), bv = randArray(sizeOf(c.b), seed++);
      const a = tensor(dtype === 'f16' ? av.map(roundToF16) : av, c.a, dtype), b = tensor(dtype === 'f16' ? bv.map(roundToF16) : bv, c.b, dtype);
      const opts = { transA: c.transA, transB: c.transB };
      const vec = await matmul(a, b, opts).data();
      // The scalar-B kernel, and (where the adapter has subgroups of 8) both without subgroups.
      for (const [vec4, subgroups] of [[false, true], [true, false], [false, false]]) {
        let plain: ArrayLike<number>;
        try {
          if (!vec4) matmulVec4BOverride.enabled = false;
          if (!subgroups) kernelFamilyOverride.subgroups = false;
          plain = await matmul(a, b, opts).data();
        } finally {
          delete matmulVec4BOverride.enabled;
          delete kernelFamilyOverride.subgroups;
        }
        assert.equal(bits(vec), bits(plain), `${dtype} ${label(c)} vec4 ${vec4} subgroups ${subgroups}`);
      }
      const ref = refMatmul(c, Float64Array.from(await a.data()), Float64Array.from(await b.data())).out;
      assertClose(vec, ref, dtype === 'f16' ? 2 ** -11 + 1e-6 : 1e-5, 1e-5, `${dtype} ${label(c)}`);
    }
  }
  // A B whose window starts off a multiple of 4 elements, and the chunked path.
  const big = tensor(randArray(4 * 9 * 12 + 1, 750), [4 * 9 * 12 + 1]);
  const b = reshape(slice(big, [1], [4 * 9 * 12 + 1]), [4, 9, 12]);
  const a = tensor(randArray(4 * 6 * 9, 751), [4, 6, 9]);
  const whole = await matmul(a, b).data();
  const saved = dev.maxBindingBytes;
  try {
    dev.maxBindingBytes = 2048;
    assert.equal(bits(await matmul(a, b).data()), bits(whole), 'chunked with an unaligned B');
  } finally {
    dev.maxBindingBytes = saved;
  }
  const ref = refMatmul({ a: [4, 6, 9], b: [4, 9, 12] }, Float64Array.from(await a.data()), Float64Array.from(await b.data())).out;
  assertClose(whole, ref, 1e-5, 1e-5, 'unaligned B');
});

const gradCases: Case[] = [
  { a: [3, 4], b: [4, 5] },
  { a: [2, 1, 3, 4], b: [3, 4, 5] }, // both operands broadcast over batch
  { a: [2, 3, 4], b: [4, 5] }, // weight gradient folded over the batch
  { a: [2, 3, 4], b: [5, 4], transB: true }, // the same with a [N, K] weight
  { a: [2, 4, 3], b: [2, 5, 4], transA: true, transB: true },
  { a: [4, 3], b: [2, 4, 5], transA: true },
  { a: [4], b: [3, 4, 5] },
];

s('reference backward agrees with finite differences', () => {
  for (const c of [gradCases[1], gradCases[4]]) {
    const a = randArray(sizeOf(c.a), 11), b = randArray(sizeOf(c.b), 12);
    const g = randArray(sizeOf(geometry(c).shape), 13);
    const [da, db] = refBackward(c, a, b, g);
    const [fa, fb] = finiteDiff((xs) => dot(refMatmul(c, xs[0], xs[1]).out, g), [a, b]);
    assertClose(da, fa, 1e-6, 1e-7, `dA of ${label(c)}`);
    assertClose(db, fb, 1e-6, 1e-7, `dB of ${label(c)}`);
  }
});

s('backward matches the reference analytic backward', async () => {
  let seed = 100;
  for (const c of gradCases) {
    const a = randArray(sizeOf(c.a), seed++), b = randArray(sizeOf(c.b), seed++);
    const shape = geometry(c).shape;
    const g = randArray(sizeOf(shape), seed++);
    const ta = tensor(a, c.a).requireGrad(), tb = tensor(b, c.b).requireGrad();
    const out = matmul(ta, tb, { transA: c.transA, transB: c.transB });
    backward(out, { grad: tensor(g, shape) });
    const [da, db] = refBackward(c, a, b, g);
    assertClose(await ta.grad!.data(), da, 1e-5, 1e-5, `dA of ${label(c)}`);
    assertClose(await tb.grad!.data(), db, 1e-5, 1e-5, `dB of ${label(c)}`);
  }
});

s('f16 within tolerance (inputs rounded to f16, f32 accumulation, output rounded to f16)', async () => {
  if (!dev.hasF16) return;
  const cases: Case[] = [
    { a: [2, 1, 9, 20], b: [3, 20, 11] },
    { a: [20, 9], b: [11, 20], transA: true, transB: true },
    { a: [65, 3], b: [3, 70] },
  ];
  let seed = 200;
  for (const c of cases) {
    const a = randArray(sizeOf(c.a), seed++).map(roundToF16), b = randArray(sizeOf(c.b), seed++).map(roundToF16);
    const out = matmul(tensor(a, c.a, 'f16'), tensor(b, c.b, 'f16'), { transA: c.transA, transB: c.transB });
    assert.is(out.dtype, 'f16');
    const ref = refMatmul(c, a, b);
    // Exact inputs and f32 sums: the error is the final rounding to f16, ≤ 2^-11 relative.
    assertClose(await out.data(), ref.out, 2 ** -11 + 1e-6, 1e-5, `f16 ${label(c)}`);
  }
  // f16 backward: gradients of f16 operands, rounded to f16 on the way.
  const c: Case = { a: [2, 3, 8], b: [8, 5] };
  const a = randArray(48, 300).map(roundToF16), b = randArray(40, 301).map(roundToF16), g = randArray(30, 302).map(roundToF16);
  const ta = tensor(a, c.a, 'f16').requireGrad(), tb = tensor(b, c.b, 'f16').requireGrad();
  backward(matmul(ta, tb), { grad: tensor(g, [2, 3, 5], 'f16') });
  const [da, db] = refBackward(c, a, b, g);
  assertClose(await ta.grad!.data(), da, 2e-3, 2e-3, 'f16 dA');
  assertClose(await tb.grad!.data(), db, 2e-3, 2e-3, 'f16 dB');
});

function bits(x: ArrayLike<number>): number[] {
  return Array.from(new Uint32Array(Float32Array.from(x).buffer));
}

s('batch independence: a sample alone equals the same sample in a batch, bit for bit', async () => {
  const K = 37, N = 23, M = 6;
  const A = tensor(randArray(5 * M * K, 400, -3, 3), [5, M, K]);
  const B = tensor(randArray(5 * K * N, 401, -3, 3), [5, K, N]);
  const W = tensor(randArray(K * N, 402, -3, 3), [K, N]);
  const a2 = slice(A, [2, 0, 0], [3, M, K]), b2 = slice(B, [2, 0, 0], [3, K, N]);
  const full = await matmul(A, B).data(), alone = await matmul(a2, b2).data();
  assert.equal(bits(alone), bits(full.subarray(2 * M * N, 3 * M * N)), 'batched product, sample 2');
  // [B, T, K] × [K, N] runs as one [B·T, K] product: sample 2 alone must still agree.
  const wFull = await matmul(A, W).data(), wAlone = await matmul(a2, W).data();
  assert.equal(bits(wAlone), bits(wFull.subarray(2 * M * N, 3 * M * N)), 'shared-weight product, sample 2');
  // One row (M = 1) alone, transposed and not.
  const row = reshape(slice(A, [2, 4, 0], [3, 5, K]), [1, K]);
  const one = await matmul(row, W).data();
  assert.equal(bits(one), bits(wFull.subarray((2 * M + 4) * N, (2 * M + 5) * N)), 'row 4 of sample 2');
  const Wt = tensor(randArray(K * N, 403, -3, 3), [N, K]);
  const tFull = await matmul(A, Wt, { transB: true }).data(), tOne = await matmul(row, Wt, { transB: true }).data();
  assert.equal(bits(tOne), bits(tFull.subarray((2 * M + 4) * N, (2 * M + 5) * N)), 'row with transB');
});

s('chunked path (lowered binding limit) equals the unchunked result', async () => {
  const cases: Case[] = [
    { a: [6, 12, 10], b: [6, 12, 9], transA: true }, // split along the batch
    { a: [100, 12], b: [12, 9] }, // split along rows of M
    { a: [4, 30, 12], b: [12, 9] }, // batch folded into M, then split
    { a: [3, 1, 40, 12], b: [2, 9, 12], transB: true }, // broadcast batch and transB
  ];
  let seed = 500;
  for (const c of cases) {
    const a = tensor(randArray(sizeOf(c.a), seed++), c.a), b = tensor(randArray(sizeOf(c.b), seed++), c.b);
    const opts = { transA: c.transA, transB: c.transB };
    const whole = await matmul(a, b, opts).data();
    const saved = dev.maxBindingBytes;
    let chunked: Float32Array;
    const before = dev.dispatchCount;
    try {
      dev.maxBindingBytes = 2048;
      const out = matmul(a, b, opts);
      dev.flush();
      assert.ok(dev.dispatchCount - before > 1, `${label(c)} should run in several dispatches`);
      chunked = (await out.data()) as Float32Array;
    } finally {
      dev.maxBindingBytes = saved;
    }
    assert.equal(bits(chunked), bits(whole), `chunked ${label(c)}`);
    assertClose(whole, refMatmul(c, Float64Array.from(await a.data()), Float64Array.from(await b.data())).out, 1e-5, 1e-5, label(c));
  }
});

s('B that cannot fit one binding is an error naming the op', async () => {
  const saved = dev.maxBindingBytes;
  try {
    dev.maxBindingBytes = 2048;
    await assertThrows(() => matmul(tensor(randArray(60, 1), [2, 30]), tensor(randArray(600, 2), [30, 20])), /matmul\(\[2,30\] f32, \[30,20\] f32\)/, /binding limit/, /split/);
  } finally {
    dev.maxBindingBytes = saved;
  }
});

s('bad input throws naming matmul and the shapes', async () => {
  const a = tensor(randArray(12, 1), [3, 4]);
  await assertThrows(() => matmul(a, tensor(randArray(10, 2), [5, 2])), /matmul\(\[3,4\] f32, \[5,2\] f32\)/, /inner dimensions/);
  await assertThrows(() => matmul(a, tensor(randArray(8, 2), [4, 2]), { transA: true }), /transA/, /inner dimensions/);
  await assertThrows(() => matmul(tensor(randArray(24, 3), [2, 3, 4]), tensor(randArray(24, 4), [3, 4, 2])), /\[2,3,4\] f32/, /\[3,4,2\] f32/, /broadcast/);
  await assertThrows(() => matmul(a, tensor([1, 2, 3, 4, 5, 6, 7, 8], [4, 2], 'i32')), /matmul/, /dtypes differ/);
  await assertThrows(() => matmul(tensor([1, 2], [1, 2], 'i32'), tensor([1, 2], [2, 1], 'i32')), /matmul/, /f32 or f16/);
  await assertThrows(() => matmul(tensor([2], [], 'f32'), a), /matmul/, /at least one dimension/);
  if (dev.hasF16) await assertThrows(() => matmul(a, tensor(randArray(8, 2), [4, 2], 'f16')), /\[4,2\] f16/, /dtypes differ/);
});

s.run();
