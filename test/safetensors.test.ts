// safetensors: save/load round trips of awkward shapes and dtypes (through the chunked paths too),
// hand-built files with BF16/I64/F16/F64/U8/BOOL entries, one error per validation rule, the real
// tiny UNet checkpoint, atomic save, and a seeded fuzz of truncations and byte corruptions.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import * as E from '../engine/index.js';
import {
  encodeSafetensorsHeader, loadSafetensors, readSafetensorsHeader, readSafetensorsHost, saveSafetensors, SafeDType,
} from '../engine/safetensors.js';
import { assertClose, assertThrows, randArray, rng, testDevice, repoRoot } from './helpers.js';

const dev = await testDevice();
const s = suite('safetensors');
const dir = mkdtempSync(join(tmpdir(), 'st-test-'));

/** The repo root: the nearest folder above this (compiled) test file holding package.json. */

/** A file from raw parts: header object (serialised as given) and data bytes. */
function rawFile(header: unknown, data: Uint8Array, lengthOverride?: bigint): Uint8Array {
  const json = new TextEncoder().encode(typeof header === 'string' ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, lengthOverride ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

function le(n: number, fill: (v: DataView, i: number) => void, bytes: number): Uint8Array {
  const b = new Uint8Array(n * bytes);
  const v = new DataView(b.buffer);
  for (let i = 0; i < n; i++) fill(v, i);
  return b;
}

s('round trip of f32/f16/i32/u32 tensors of awkward shapes, with metadata and chunking', async () => {
  const shapes: number[][] = [[], [0], [1, 3, 1], [3], [5, 7], [2, 0, 3]];
  const dtypes: E.DType[] = dev.hasF16 ? ['f32', 'f16', 'i32', 'u32'] : ['f32', 'i32', 'u32'];
  const expect = new Map<string, { shape: number[]; dtype: E.DType; values: number[] }>();
  const tensors = new Map<string, E.Tensor>();
  let seed = 1;
  for (const dtype of dtypes) for (const shape of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    const x = [...randArray(n, seed++, -100, 100)].map((v) => (dtype === 'i32' ? Math.round(v) : dtype === 'u32' ? Math.round(v + 100) * 1000 : dtype === 'f16' ? E.roundToF16(v) : v));
    const name = `${dtype}/${shape.join('x') || 'scalar'}`;
    expect.set(name, { shape, dtype, values: x });
    tensors.set(name, E.tensor(x, shape, dtype));
  }
  for (const chunkBytes of [undefined, 8]) {
    const path = join(dir, `rt-${chunkBytes}.safetensors`);
    await saveSafetensors(path, tensors, { note: 'hi', 'ü': 'ñ' }, { chunkBytes });
    const h = await readSafetensorsHeader(path);
    assert.equal({ ...h.metadata }, { note: 'hi', 'ü': 'ñ' });
    assert.is(h.dataStart % 8, 0, 'data buffer starts at a multiple of 8');
    assert.equal([...h.tensors.keys()], [...expect.keys()].sort(), 'keys in sorted order');
    const back = await loadSafetensors(path, { device: dev, chunkBytes });
    assert.is(back.size, expect.size);
    for (const [name, e] of expect) {
      const t = back.get(name)!;
      assert.equal([...t.shape], e.shape, `${name} shape`);
      assert.is(t.dtype, e.dtype === 'f16' ? 'f32' : e.dtype, `${name} dtype`);
      assert.equal([...(await t.data())], e.values, `${name} values`);
      assert.is(h.tensors.get(name)!.dtype, ({ f32: 'F32', f16: 'F16', i32: 'I32', u32: 'U32' } as const)[e.dtype]);
      t.dispose();
    }
    if (dev.hasF16) {
      // Floats converted to f16 on the host, uploaded in chunks of 2 elements (4-byte offsets).
      const half = await loadSafetensors(path, { device: dev, dtype: 'f16', chunkBytes, filter: (n) => n.startsWith('f') });
      assert.is(half.size, 2 * shapes.length);
      for (const [name, t] of half) {
        assert.is(t.dtype, 'f16');
        assert.equal([...(await t.data())], expect.get(name)!.values.map(E.roundToF16), `${name} as f16`);
        t.dispose();
      }
    }
    const host = await readSafetensorsHost(path, 'i32/5x7');
    assert.ok(host.data instanceof Int32Array);
    assert.equal([...host.data], expect.get('i32/5x7')!.values);
  }
  for (const t of tensors.values()) t.dispose();
});

s('hand-built BF16, I64, F16, F64, U8 and BOOL entries load with the right values', async () => {
  const bf = [1.5, -2, 3.140625, 0, -0.0078125];
  const i64 = [0n, 1n, -7n, 2147483647n, -2147483648n];
  const f16 = [0.5, -1024, 65504, 6.103515625e-5];
  const f64 = [Math.PI, -1e-3, 1e30];
  const u8 = [0, 255, 17];
  const bools = [1, 0, 1, 1];
  const parts: [string, SafeDType, number[], Uint8Array][] = [
    ['bf', 'BF16', [5], le(5, (v, i) => { const f = new DataView(new ArrayBuffer(4)); f.setFloat32(0, bf[i], true); v.setUint16(i * 2, f.getUint32(0, true) >>> 16, true); }, 2)],
    ['pos', 'I64', [1, 5], le(5, (v, i) => v.setBigInt64(i * 8, i64[i], true), 8)],
    ['h', 'F16', [2, 2], le(4, (v, i) => v.setUint16(i * 2, E.f32ToF16Bits(f16[i]), true), 2)],
    ['d', 'F64', [3], le(3, (v, i) => v.setFloat64(i * 8, f64[i], true), 8)],
    ['u', 'U8', [3], new Uint8Array(u8)],
    ['b', 'BOOL', [4], new Uint8Array(bools)],
  ];
  // Deliberately not in sorted order in the data buffer, and not padded: both are legal.
  const header: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let pos = 0;
  for (const [name, dtype, shape, bytes] of parts) { header[name] = { dtype, shape, data_offsets: [pos, pos + bytes.length] }; pos += bytes.length; }
  const data = new Uint8Array(pos);
  pos = 0;
  for (const [, , , bytes] of parts) { data.set(bytes, pos); pos += bytes.length; }
  const path = join(dir, 'hand.safetensors');
  writeFileSync(path, rawFile(header, data));
  const m = await loadSafetensors(path, { device: dev, chunkBytes: 16 });
  assert.is(m.get('bf')!.dtype, 'f32');
  assert.equal([...(await m.get('bf')!.data())], bf);
  assert.is(m.get('pos')!.dtype, 'i32');
  assert.equal([...m.get('pos')!.shape], [1, 5]);
  assert.equal([...(await m.get('pos')!.data())], i64.map(Number));
  assert.equal([...(await m.get('h')!.data())], f16);
  assertClose(await m.get('d')!.data(), f64.map(Math.fround), 0, 0, 'F64 → f32');
  assert.equal([...(await m.get('u')!.data())], u8);
  assert.equal([...(await m.get('b')!.data())], bools);
  for (const t of m.values()) t.dispose();
  if (dev.hasF16) {
    const h = await loadSafetensors(path, { device: dev, dtype: 'f16', filter: (n) => n === 'bf' });
    assert.equal([...(await h.get('bf')!.data())], bf.map(E.roundToF16));
    h.get('bf')!.dispose();
  }

  // An I64 that does not fit in i32 names the file, the tensor and the element.
  const big = rawFile({ p: { dtype: 'I64', shape: [2], data_offsets: [0, 16] } }, le(2, (v, i) => v.setBigInt64(i * 8, i ? 1n << 40n : 3n, true), 8));
  const bigPath = join(dir, 'big.safetensors');
  writeFileSync(bigPath, big);
  await assertThrows(() => loadSafetensors(bigPath, { device: dev }), /big\.safetensors/, /"p"/, /element 1 .* does not fit in i32/);
  const bad = rawFile({ b: { dtype: 'BOOL', shape: [1], data_offsets: [0, 1] } }, new Uint8Array([2]));
  writeFileSync(bigPath, bad);
  await assertThrows(() => loadSafetensors(bigPath, { device: dev }), /"b"/, /BOOL element 0/);
});

s('every validation rule throws an Error naming the file, the key and the problem', async () => {
  const f32 = (n: number) => new Uint8Array(4 * n);
  const ok = { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } };
  const cases: [string, Uint8Array, RegExp][] = [
    ['too short', new Uint8Array(5), /too short/],
    ['length past end', rawFile(ok, f32(2), 10_000n), /runs past the end of the file/],
    ['absurd length', rawFile(ok, f32(2), 1n << 40n), /exceeds the limit/],
    ['bad utf-8', rawFile('{"\xff":1}', new Uint8Array()).map((b, i, a) => (i === 10 && a[i] === 0xc3 ? 0xff : b)), /not valid UTF-8|not valid JSON/],
    ['bad json', rawFile('{"a": ', new Uint8Array()), /not valid JSON/],
    ['not an object', rawFile('[1,2]', new Uint8Array()), /not a JSON object/],
    ['entry not object', rawFile({ a: 3 }, new Uint8Array()), /tensor "a": entry is not an object/],
    ['unknown dtype', rawFile({ a: { dtype: 'C64', shape: [1], data_offsets: [0, 8] } }, f32(2)), /tensor "a": unsupported dtype "C64"/],
    ['negative dim', rawFile({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, f32(1)), /tensor "a": shape \[-1\]/],
    ['fractional dim', rawFile({ a: { dtype: 'F32', shape: [1.5], data_offsets: [0, 4] } }, f32(1)), /tensor "a": shape/],
    ['offsets not pair', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0] } }, f32(1)), /tensor "a": data_offsets \[0\]/],
    ['offsets not ints', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0, '4'] } }, f32(1)), /tensor "a": data_offsets/],
    ['size mismatch', rawFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 8] } }, f32(2)), /tensor "a".*span 8 bytes but F32 \[3\] needs 12/],
    ['reversed', rawFile({ a: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, f32(2)), /tensor "a".*end before/],
    ['out of range', rawFile({ a: { dtype: 'F32', shape: [3], data_offsets: [0, 12] } }, f32(2)), /tensor "a".*run past the data buffer/],
    ['overlap', rawFile({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, f32(3)), /tensor "b".*overlap tensor "a"/],
    ['hole', rawFile({ a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] }, b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] } }, f32(3)), /tensor "b".*hole of 4 bytes/],
    ['trailing bytes', rawFile(ok, f32(3)), /4 bytes after the last tensor "a"/],
    ['metadata not strings', rawFile({ __metadata__: { v: 1 }, ...ok }, f32(2)), /"__metadata__" key "v" is not a string/],
  ];
  for (const [what, bytes, pattern] of cases) {
    const path = join(dir, `bad-${what.replace(/\W/g, '_')}.safetensors`);
    writeFileSync(path, bytes);
    let err: unknown = null;
    try { await readSafetensorsHeader(path); } catch (e) { err = e; }
    assert.ok(err instanceof Error, `${what}: expected an Error`);
    assert.match((err as Error).message, path, `${what}: message names the file`);
    assert.match((err as Error).message, pattern, `${what}: ${(err as Error).message}`);
  }
  await assertThrows(() => readSafetensorsHeader(join(dir, 'missing.safetensors')), /missing\.safetensors/, /cannot open/);
  // Empty tensors may sit anywhere in range; an empty file with no tensors is valid.
  const emptyPath = join(dir, 'empty.safetensors');
  writeFileSync(emptyPath, rawFile({ z: { dtype: 'F32', shape: [0, 4], data_offsets: [4, 4] }, ...ok }, f32(2)));
  assert.is((await readSafetensorsHeader(emptyPath)).tensors.size, 2);
  writeFileSync(emptyPath, rawFile({}, new Uint8Array()));
  assert.is((await readSafetensorsHeader(emptyPath)).tensors.size, 0);
  // Writer-side checks.
  await assertThrows(() => saveSafetensors(join(dir, 'x.safetensors'), { __metadata__: E.tensor([1]) }), /reserved/);
});

s('save is atomic: a failed save leaves the old file intact and no temp file', async () => {
  const path = join(dir, 'atomic.safetensors');
  const a = E.tensor([1, 2, 3]);
  await saveSafetensors(path, { a });
  const before = readFileSync(path);
  const gone = E.tensor([4]);
  gone.dispose();
  await assertThrows(() => saveSafetensors(path, { a, gone }), /atomic\.safetensors/, /"gone"/, /after dispose/);
  assert.ok(Buffer.compare(before, readFileSync(path)) === 0, 'old file untouched');
  assert.equal(readdirSync(dir).filter((f) => f.includes('.tmp-')), [], 'no temp files left');
  // Rename failing (the target is a non-empty folder) also cleans up.
  const folder = join(dir, 'folder.safetensors');
  mkdirSync(join(folder, 'x'), { recursive: true });
  await assertThrows(() => saveSafetensors(folder, { a }), /folder\.safetensors/, /cannot replace/);
  assert.equal(readdirSync(dir).filter((f) => f.includes('.tmp-')), [], 'no temp files left after a failed rename');
  a.dispose();
});

s('the tiny-sd UNet checkpoint: header, shapes and streamed values', async () => {
  const path = resolve(repoRoot(), '../shared/reference/tiny-sd-pipe/unet/diffusion_pytorch_model.safetensors');
  if (!existsSync(path)) { console.log(`  (skipped: ${path} not found)`); return; }
  const h = await readSafetensorsHeader(path);
  assert.is(h.tensors.size, 208);
  assert.is(h.metadata.format, 'pt');
  assert.equal(h.tensors.get('conv_in.weight'), { dtype: 'F32', shape: [32, 4, 3, 3], begin: 128, end: 4736 });
  assert.equal(h.tensors.get('conv_in.bias')!.shape, [32]);
  const m = await loadSafetensors(path, { device: dev, filter: (n) => n.startsWith('conv_in.'), chunkBytes: 1000 });
  assert.equal([...m.keys()].sort(), ['conv_in.bias', 'conv_in.weight']);
  const host = await readSafetensorsHost(path, 'conv_in.weight');
  assert.equal([...(await m.get('conv_in.weight')!.data())], [...host.data]);
  // Independent check of the first weight straight from the bytes.
  const raw = readFileSync(path);
  assert.is(host.data[0], raw.readFloatLE(h.dataStart + 128));
  for (const t of m.values()) t.dispose();
});

s('fuzz: 300 truncations and corruptions either load or throw an Error naming the file', async () => {
  const src = join(dir, 'fuzz-src.safetensors');
  const parts = { w: E.tensor(randArray(128, 3), [8, 16]), b: E.tensor([1, 2, 3], [3], 'i32'), s: E.tensor([7]) };
  await saveSafetensors(src, parts, { k: 'v' });
  for (const t of Object.values(parts)) t.dispose();
  const good = readFileSync(src);
  // Mutations land in the header (the interesting part) about half the time, in the data otherwise.
  const r = rng(1234);
  const path = join(dir, 'fuzz.safetensors');
  let loaded = 0, threw = 0;
  const started = Date.now();
  for (let k = 0; k < 300; k++) {
    let bytes: Uint8Array = Uint8Array.from(good);
    const kind = r();
    if (kind < 0.3) {
      bytes = bytes.subarray(0, Math.floor(r() * bytes.length));
    } else {
      const flips = 1 + Math.floor(r() * 4);
      for (let f = 0; f < flips; f++) {
        const i = r() < 0.2 ? Math.floor(r() * 8) : Math.floor(r() * bytes.length);
        bytes[i] = r() < 0.5 ? Math.floor(r() * 256) : bytes[i] ^ (1 << Math.floor(r() * 8));
      }
    }
    writeFileSync(path, bytes);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, rej) => { timer = setTimeout(() => rej(new Error('TIMEOUT')), 5000); });
    try {
      const m = await Promise.race([loadSafetensors(path, { device: dev, chunkBytes: 8 }), timeout]);
      for (const t of m.values()) t.dispose();
      loaded++;
    } catch (e) {
      assert.ok(e instanceof Error, `case ${k}: threw a non-Error ${String(e)}`);
      assert.is.not((e as Error).message, 'TIMEOUT', `case ${k}: load hung`);
      assert.ok((e as Error).message.includes(path), `case ${k}: message does not name the file: ${(e as Error).message}`);
      threw++;
    } finally {
      clearTimeout(timer);
    }
  }
  assert.ok(loaded >= 30 && threw >= 100, `expected a mix of outcomes: ${loaded} loaded, ${threw} threw`);
  assert.ok(Date.now() - started < 20_000, 'fuzz took too long');
});

s.after(() => rmSync(dir, { recursive: true, force: true }));

s.run();
