// The device layer: batching, pipeline caching, pool reuse and statistics, errors from the GPU
// (validation, device loss) surfacing as Errors that name the op, and hosting a foreign GPUDevice.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as E from '../engine/index.js';
import { requestNodeAdapter } from '../engine/node.js';
import { gentleWait } from '../engine/node-wait.js';
import { sizeClass } from '../engine/pool.js';
import { assertClose, assertThrows, testDevice } from './helpers.js';

const dev = await testDevice();
const s = suite('device');

s('size classes waste at most 25% and are monotone', () => {
  let prev = 0;
  for (let n = 1; n < 5e6; n = Math.ceil(n * 1.37)) {
    const c = sizeClass(n);
    assert.ok(c >= n && c <= Math.max(256, n * 1.25 + 256), `class of ${n} is ${c}`);
    assert.ok(c >= prev);
    prev = c;
  }
});

s('dispatches are batched: many ops, few submits, no waiting until a read', async () => {
  const x = E.ones([100]);
  await x.data();
  const d0 = dev.dispatchCount, s0 = dev.submitCount;
  let y = x;
  for (let i = 0; i < 50; i++) y = E.add(y, 1);
  assert.is(dev.submitCount, s0, 'nothing submitted before a read');
  assertClose(await y.data(), new Array(100).fill(51));
  assert.is(dev.dispatchCount - d0, 50);
  assert.ok(dev.submitCount - s0 <= 2);
});

s('the profiler times every dispatch by op and leaves results unchanged', async () => {
  if (!dev.hasTimestamps) return; // nothing to time with on this adapter
  await assertThrows(() => dev.stopProfile(), /no profile is running/);
  const x = E.tensor(new Float32Array(3000).map((_, i) => Math.sin(i)), [3000]);
  const plain = await E.mul(E.add(x, 1), x).data();
  dev.startProfile();
  await assertThrows(() => dev.startProfile(), /already running/);
  let y = x;
  for (let i = 0; i < 1100; i++) y = E.add(y, 0); // more dispatches than one query set holds
  const z = E.mul(E.add(y, 1), y);
  const report = await dev.stopProfile();
  const add = report.find((e) => e.op === 'add_scalar');
  const mul = report.find((e) => e.op === 'mul');
  assert.ok(add && mul, `ops in the report: ${report.map((e) => e.op).join(', ')}`);
  assert.is(add!.calls, 1101);
  assert.is(mul!.calls, 1);
  assert.ok(add!.ms > 0 && Number.isFinite(add!.ms), `add took ${add!.ms} ms`);
  assert.equal(await z.data(), plain);
});

s('the pool reuses freed buffers and the statistics track them', async () => {
  const m0 = dev.memory();
  const a = E.zeros([1000]);
  const m1 = dev.memory();
  assert.is(m1.liveBytes - m0.liveBytes, sizeClass(4000));
  a.dispose();
  const m2 = dev.memory();
  assert.is(m2.liveBytes, m0.liveBytes);
  assert.ok(m2.pooledBytes >= sizeClass(4000));
  const b = E.zeros([990]); // same size class: reused
  assert.is(dev.memory().created, m2.created);
  assert.ok(dev.memory().peakLiveBytes >= m1.liveBytes);
  b.dispose();
});

s('gentleWait: ticks nap, then move to 1-ms timers; nesting and errors restore setImmediate', async () => {
  const real = globalThis.setImmediate;
  let inside: typeof setImmediate | null = null;
  // A wait that polls like Dawn's binding: one setImmediate tick after another until done.
  const poll = (ticks: number) => new Promise<number>((resolve) => {
    const t0 = performance.now();
    let n = 0;
    const tick = () => { inside = globalThis.setImmediate; if (++n >= ticks) resolve(performance.now() - t0); else globalThis.setImmediate(tick); };
    globalThis.setImmediate(tick);
  });
  const quick = await gentleWait(() => poll(5));
  assert.ok(inside !== real, 'setImmediate is replaced during the wait');
  assert.ok(quick >= 0.8 && quick < 20, `5 ticks nap 0.2 ms each (${quick.toFixed(2)} ms)`);
  const slow = await gentleWait(() => poll(80));
  assert.ok(slow >= 30, `ticks after the first 5 ms wait on 1-ms timers (${slow.toFixed(1)} ms for 80)`);
  assert.is(globalThis.setImmediate, real, 'restored after the wait');
  await gentleWait(async () => { await gentleWait(() => poll(3)); assert.ok(globalThis.setImmediate !== real, 'still replaced in the outer wait'); });
  assert.is(globalThis.setImmediate, real, 'restored after nested waits');
  await assertThrows(() => gentleWait(async () => { throw new Error('boom'); }), /boom/);
  assert.is(globalThis.setImmediate, real, 'restored after a failed wait');
});

s('a GPU validation error becomes an Error naming the op', async () => {
  const t = E.zeros([4]);
  dev.dispatch({
    label: 'broken_op([4] f32)', key: 'test:broken', code: () => 'this is not wgsl',
    reads: [], writes: [{ buffer: t.buffer(), offset: 0, size: 16 }], params: new Uint32Array(4), groups: [1, 1, 1],
  });
  await assertThrows(() => t.data(), /broken_op\(\[4\] f32\)/);
  // the device keeps working afterwards
  assertClose(await E.add(E.ones([2]), 1).data(), [2, 2]);
});

s('device loss becomes an Error on the next op', async () => {
  const adapter = await requestNodeAdapter('auto');
  const other = await E.Device.fromAdapter(adapter);
  const x = new E.Tensor(other, [2], 'f32');
  other.gpu.destroy();
  await other.gpu.lost;
  await assertThrows(() => E.add(x, x), /lost/);
});

s('a GPUDevice from a host application can be wrapped', async () => {
  const adapter = await requestNodeAdapter('auto');
  const gpu = await adapter.requestDevice();
  const hosted = E.Device.fromGPUDevice(gpu, { adapterName: 'host' });
  const t = E.tensor([1, 2, 3], [3], 'f32', hosted);
  assertClose(await E.mul(t, t).data(), [1, 4, 9]);
  await assertThrows(() => E.tensor([1], [1], 'f16', hosted), /f16/, /shader-f16/);
  hosted.destroy();
  // The host still owns its device: destroying the engine's wrapper must leave it working.
  await assertThrows(() => E.tensor([1], [1], 'f32', hosted).data(), /destroyed/);
  const buf = gpu.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  gpu.queue.writeBuffer(buf, 0, new Float32Array([1, 2, 3, 4]));
  await buf.mapAsync(GPUMapMode.READ);
  assertClose(Array.from(new Float32Array(buf.getMappedRange())), [1, 2, 3, 4]);
  buf.unmap();
  let lost = false;
  gpu.lost.then(() => { lost = true; });
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(!lost, 'Device.destroy() destroyed the host\'s GPUDevice');
  gpu.destroy();
});

s('tensors on different devices are refused', async () => {
  const adapter = await requestNodeAdapter('auto');
  const other = await E.Device.fromAdapter(adapter);
  const a = E.tensor([1, 2], [2], 'f32', other);
  await assertThrows(() => E.add(a, E.ones([2])), /add/, /different devices/);
  other.destroy();
});

s('use after dispose and a too-large allocation are Errors', async () => {
  const t = E.ones([3]);
  t.dispose();
  await assertThrows(() => t.data(), /data/, /dispose/);
  await assertThrows(() => E.zeros([2 ** 20, 2 ** 12]), /maxBufferSize/);
});

s.run();
