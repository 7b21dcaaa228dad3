// Philox-4x32-10 on the GPU against its CPU reference (engine/random-ref.ts) and the published
// known-answer vectors; uniforms exact, normals within the stated tolerance; dropout.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { boxMuller, dropoutMaskRef, philox4x32, randomBitsRef, randomNormalRef, randomUniformRef } from '../engine/random-ref.js';
import { assertClose, assertThrows, randTensor, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('random');

const hex = (w: ArrayLike<number>) => Array.from(w, (v) => (v >>> 0).toString(16).padStart(8, '0')).join(' ');

s('Philox4x32-10 reference matches Random123 known-answer vectors', () => {
  assert.is(hex(philox4x32([0, 0, 0, 0], [0, 0])), '6627e8d5 e169c58d bc57ac4c 9b00dbd8');
  assert.is(hex(philox4x32([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])), '408f276d 41c83b0e a20bc7c6 6d5451fd');
  assert.is(hex(philox4x32([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])), 'd16cfe09 94fdcceb 5001e420 24126ea1');
});

s('GPU bits: known answer at counter 0 / key 0, and equal to the reference everywhere', async () => {
  // Seed 0, offset 0: block 0 is philox(counter 0, key 0).
  assert.is(hex(await E.randomBits([4], 0).data()), '6627e8d5 e169c58d bc57ac4c 9b00dbd8');
  const cases: [number[], number, number][] = [
    [[1037], 7, 0],
    [[3, 1, 5], 2 ** 40 + 123, 3],
    // The block index crosses 2^32: exercises the 64-bit counter carry.
    [[37], 2 ** 53 - 1, 4 * (2 ** 32 - 2) + 1],
    [[1], 99, 2 ** 52],
  ];
  for (const [shape, seed, offset] of cases) {
    const n = shape.reduce((a, b) => a * b, 1);
    const got = await E.randomBits(shape, seed, offset).data();
    assert.is(got.constructor, Uint32Array);
    assert.equal(Array.from(got), Array.from(randomBitsRef(n, seed, offset)), `bits ${shape} seed ${seed} offset ${offset}`);
  }
});

s('uniforms are exact: [0,1), [low,high), f16 within one f16 step and below high', async () => {
  const n = 999;
  assertClose(await E.randomUniform([n], 5, { offset: 6 }).data(), randomUniformRef(n, 5, { offset: 6 }), 0, 0, 'uniform [0,1)');
  const u = await E.randomUniform([9, 111], 11, { low: -2, high: 3.3 }).data();
  assertClose(u, randomUniformRef(n, 11, { low: -2, high: 3.3 }), 0, 0, 'uniform [-2,3.3)');
  assert.ok(u.every((v) => v >= -2 && v < 3.3));
  // A range where rounding low + (high-low)·u would reach high without the clamp.
  const tight = await E.randomUniform([4000], 3, { low: 1, high: 2 }).data();
  assert.ok(tight.every((v) => v >= 1 && v < 2));
  assertClose(tight, randomUniformRef(4000, 3, { low: 1, high: 2 }), 0, 0, 'uniform [1,2)');
  if (dev.hasF16) {
    const h = await E.randomUniform([n], 5, { dtype: 'f16', low: 0, high: 1 }).data();
    const ref = randomUniformRef(n, 5, { dtype: 'f16' });
    assert.ok(h.every((v) => v >= 0 && v < 1), 'f16 uniforms stay in [0, 1)');
    // Within one f16 step (2^-11 below 1) of the f32 value: rounding direction is the device's.
    assertClose(h, ref, 0, 2 ** -11, 'f16 uniform');
  }
});

s('normals agree with the float64 reference within 1e-5·std; mean and std options', async () => {
  // Where u1 is next to 1, r = sqrt(-2 ln u1) is small and a plain f32 log would put r off by
  // up to ~1e-4 (see kernels/random.ts): the two offsets below land there.
  const n = 1 << 16;
  const z = await E.randomNormal([n], 17, { offset: 2 }).data();
  assertClose(z, randomNormalRef(n, 17, { offset: 2 }), 0, 1e-5, 'normal');
  // Blocks found by a CPU search whose first word of a pair has u1 = 1 - 2^-23 (r ≈ 4.9e-4).
  for (const offset of [11109476 * 4 + 2, 12441814 * 4]) {
    const w = randomBitsRef(1, 17, offset)[0];
    assert.is(w >>> 8, 16777213, 'precondition: u1 next to 1');
    assertClose(await E.randomNormal([2], 17, { offset }).data(), randomNormalRef(2, 17, { offset }), 0, 1e-5, `normal with u1 near 1 at ${offset}`);
  }
  const y = await E.randomNormal([7, 13], 17, { offset: 2, mean: 3, std: 0.5 }).data();
  assertClose(y, randomNormalRef(91, 17, { offset: 2, mean: 3, std: 0.5 }), 0, 0.5e-5, 'normal mean 3 std 0.5');
  // The reference's Box–Muller: lanes 0/1 are the cos/sin branch of words 0 and 1.
  const w = philox4x32([0, 0, 0, 0], [17, 0]);
  const ref = randomNormalRef(4, 17);
  assert.equal([ref[0], ref[1]], boxMuller(w[0], w[1]));
  if (dev.hasF16) {
    const h = await E.randomNormal([1001], 17, { offset: 2, dtype: 'f16' }).data();
    // f16 step near |z| ≤ 5.8 is ≤ 2^-8.
    assertClose(h, randomNormalRef(1001, 17, { offset: 2 }), 2 ** -11, 1e-5, 'f16 normal');
  }
});

s('statistics of 1e4 samples; seeds and offsets', async () => {
  const n = 10000;
  const stats = (v: ArrayLike<number>) => {
    let m = 0; for (let i = 0; i < v.length; i++) m += v[i];
    m /= v.length;
    let q = 0; for (let i = 0; i < v.length; i++) q += (v[i] - m) ** 2;
    return [m, q / v.length];
  };
  const [um, uv] = stats(await E.randomUniform([n], 1234).data());
  assert.ok(Math.abs(um - 0.5) < 0.015 && Math.abs(uv - 1 / 12) < 0.005, `uniform mean ${um} var ${uv}`);
  const [nm, nv] = stats(await E.randomNormal([n], 1234).data());
  assert.ok(Math.abs(nm) < 0.05 && Math.abs(nv - 1) < 0.06, `normal mean ${nm} var ${nv}`);
  // Bits: each bit set about half the time.
  const bits = await E.randomBits([n], 1234).data();
  for (const b of [0, 7, 31]) {
    let c = 0; for (const w of bits) c += (w >>> b) & 1;
    assert.ok(Math.abs(c / n - 0.5) < 0.02, `bit ${b} set ${c / n}`);
  }
  // Same seed twice: identical; another seed (or the high word of the seed): different.
  const a = Array.from(await E.randomBits([64], 42).data());
  assert.equal(Array.from(await E.randomBits([64], 42).data()), a);
  const b2 = Array.from(await E.randomBits([64], 43).data());
  const b3 = Array.from(await E.randomBits([64], 42 + 2 ** 32).data());
  assert.ok(a.filter((v, i) => v === b2[i]).length < 2 && a.filter((v, i) => v === b3[i]).length < 2);
  // Offset shifts the stream: element i with offset k is element i + k with offset 0.
  const long = await E.randomNormal([50], 9).data();
  const shifted = await E.randomNormal([43], 9, { offset: 7 }).data();
  assert.equal(Array.from(shifted), Array.from(long.slice(7)));
  const ul = await E.randomUniform([50], 9).data();
  assert.equal(Array.from(await E.randomUniform([45], 9, { offset: 5 }).data()), Array.from(ul.slice(5)));
  // RandomStream: successive draws continue the stream.
  const st = new E.RandomStream(9);
  const p1 = await st.uniform([20]).data();
  const p2 = await st.uniform([30]).data();
  assert.equal([...p1, ...p2], Array.from(ul));
  assert.is(st.offset, 50);
});

s('results do not depend on the dispatch layout (chunked output, one pipeline for all shapes)', async () => {
  const ref = randomBitsRef(5000, 77, 3);
  const whole = await E.randomBits([5000], 77, 3).data();
  const pipes = dev.pipelineCount;
  const saved = dev.maxBindingBytes;
  dev.maxBindingBytes = 4096;
  try {
    const before = dev.dispatchCount;
    const chunked = E.randomBits([5000], 77, 3);
    assert.ok(dev.dispatchCount - before > 1, 'the chunked path ran');
    assert.equal(Array.from(await chunked.data()), Array.from(ref));
    const cu = await E.randomUniform([50, 61], 77, { offset: 3 }).data();
    assertClose(cu, randomUniformRef(3050, 77, { offset: 3 }), 0, 0, 'chunked uniform');
  } finally {
    dev.maxBindingBytes = saved;
  }
  assert.equal(Array.from(whole), Array.from(ref));
  const n0 = dev.pipelineCount;
  await E.randomBits([3, 3], 1, 1).data();
  assert.is(dev.pipelineCount, n0, 'no new pipeline for a new shape');
  void pipes;
});

s('dropout: mask from the uniform stream, scaled by 1/(1-p); backward uses the same mask', async () => {
  const shape = [6, 37];
  const X = randTensor(shape, 1);
  X.t.requireGrad();
  const p = 0.3;
  const y = E.dropout(X.t, p, 5, 11);
  const mask = dropoutMaskRef(X.x.length, p, 5, 11);
  const scale = 1 / (1 - p);
  assertClose(await y.data(), X.x.map((v, i) => (mask[i] ? v * scale : 0)), 1e-6, 1e-7, 'dropout forward');
  const kept = mask.reduce((a, b) => a + b, 0) / mask.length;
  assert.ok(Math.abs(kept - 0.7) < 0.08, `kept fraction ${kept}`);
  const G = randTensor(shape, 2);
  E.backward(y, { grad: G.t });
  assertClose(await X.t.grad!.data(), G.x.map((v, i) => (mask[i] ? v * scale : 0)), 1e-6, 1e-7, 'dropout backward');
  assertClose(await E.dropout(X.t, 0, 5).data(), X.x, 0, 0, 'p = 0');
  assertClose(await E.dropout(X.t, 1, 5).data(), new Float64Array(X.x.length), 0, 0, 'p = 1');
  if (dev.hasF16) {
    const H = randTensor(shape, 3, -1, 1, 'f16');
    const yh = await E.dropout(H.t, p, 5, 11).data();
    assertClose(yh, H.x.map((v, i) => (mask[i] ? E.roundToF16(v) * scale : 0)), 1e-3, 1e-4, 'f16 dropout');
  }
});

s('errors name the op and the problem', async () => {
  await assertThrows(() => E.randomBits([2, 3], -1), /randomBits\(\[2,3\] u32\)/, /seed -1/);
  await assertThrows(() => E.randomBits([2], 1.5), /randomBits/, /seed/);
  await assertThrows(() => E.randomBits([2], 2 ** 53), /randomBits/, /seed/);
  await assertThrows(() => E.randomUniform([2], 1, { offset: -3 }), /randomUniform/, /offset -3/);
  await assertThrows(() => E.randomUniform([2], 1, { low: 1, high: 1 }), /randomUniform\(\[2\] f32\)/, /low < high/);
  await assertThrows(() => E.randomNormal([2], 1, { dtype: 'i32' as 'f32' }), /randomNormal/, /i32/);
  await assertThrows(() => E.randomNormal([2], 1, { std: -1 }), /randomNormal/, /std/);
  await assertThrows(() => E.dropout(E.tensor([1, 2], [2]), 1.5, 0), /dropout/, /\[2\] f32/, /1\.5/);
  await assertThrows(() => E.dropout(E.tensor([1, 2], [2], 'i32'), 0.5, 0), /dropout/, /\[2\] i32/);
});

s.run();
