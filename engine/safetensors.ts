// Node file I/O for safetensors: header reading, streaming load onto the GPU, and atomic save.
// Parsing, validation and element conversion live in io/safetensors-format.ts (no Node there).
//
// Memory bound: a tensor is read in chunks of at most `chunkBytes` source bytes (64 MiB by
// default) into one reusable host buffer, converted into a second reusable buffer, and uploaded
// to its slice of the GPU tensor, so a multi-GB checkpoint never sits in one JS buffer.

import { open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { Device } from './device.js';
import { DType, HostArray, bytesOf } from './dtype.js';
import { Tensor } from './tensor.js';
import { MAX_RANK, fmt } from './shape.js';
import {
  SAFETENSORS_DTYPES, SafeDType, SafetensorsEntry, SafetensorsHeader, convertElements, encodeSafetensorsHeader,
  loadDType, parseSafetensorsHeader, readHeaderLength, uploadArray,
} from './io/safetensors-format.js';

export * from './io/safetensors-format.js';

const DEFAULT_CHUNK_BYTES = 64 << 20;

/** Reads exactly `length` bytes at `position` or throws (the file shrank under us). */
async function readExact(fh: FileHandle, buf: Uint8Array, length: number, position: number, file: string, what: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) throw new Error(`safetensors ${file}: unexpected end of file reading ${what} (file changed while reading?)`);
    done += bytesRead;
  }
}

async function headerOf(fh: FileHandle, file: string): Promise<SafetensorsHeader> {
  const size = (await fh.stat()).size;
  const prefix = new Uint8Array(8);
  if (size >= 8) await readExact(fh, prefix, 8, 0, file, 'the header length');
  const n = readHeaderLength(prefix, size, file);
  const json = new Uint8Array(n);
  await readExact(fh, json, n, 8, file, 'the header');
  return parseSafetensorsHeader(json, size, file);
}

async function withFile<T>(path: string, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new Error(`safetensors ${path}: cannot open: ${(e as Error).message}`);
  }
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

/** Reads and validates the header only: names, dtypes, shapes and byte ranges. */
export function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  return withFile(path, (fh) => headerOf(fh, path));
}

export interface LoadOptions {
  device: Device;
  /** What float tensors (F64/F32/F16/BF16) become; default f32. Integers load as i32 (U32 as u32). */
  dtype?: 'f32' | 'f16';
  /** Load only the tensors whose names pass. */
  filter?: (name: string) => boolean;
  /** Largest host read, in source bytes (default 64 MiB; tests lower it to exercise chunking). */
  chunkBytes?: number;
}

/** Streams the chosen tensors of a file onto the GPU. On any error, tensors made so far are disposed. */
export async function loadSafetensors(path: string, opts: LoadOptions): Promise<Map<string, Tensor>> {
  const { device, filter } = opts;
  const float = opts.dtype ?? 'f32';
  if (float === 'f16' && !device.hasF16) throw new Error(`loadSafetensors ${path}: dtype f16 needs shader-f16, which ${device.adapterName} does not offer; use f32`);
  const chunkBytes = Math.max(16, Math.floor(opts.chunkBytes ?? DEFAULT_CHUNK_BYTES));
  const out = new Map<string, Tensor>();
  try {
    await withFile(path, async (fh) => {
      const header = await headerOf(fh, path);
      const chosen = [...header.tensors].filter(([name]) => !filter || filter(name));
      // One source buffer for every chunk of every tensor, sized for the largest need.
      const largest = chosen.reduce((m, [, e]) => Math.max(m, e.end - e.begin), 0);
      const src = new Uint8Array(Math.min(largest, chunkBytes));
      const targets = new Map<DType, ReturnType<typeof uploadArray>>();
      for (const [name, e] of chosen) {
        const where = `safetensors ${path}: tensor "${name}"`;
        if (e.shape.length > MAX_RANK) throw new Error(`${where}: rank ${e.shape.length} of shape ${fmt(e.shape)} exceeds the engine's maximum rank ${MAX_RANK}`);
        const dtype = loadDType(e.dtype, float);
        const t = new Tensor(device, e.shape, dtype);
        out.set(name, t);
        const srcItem = SAFETENSORS_DTYPES[e.dtype].bytes;
        // Elements per chunk: even, so f16 chunk offsets stay multiples of 4 bytes as
        // queue.writeBuffer requires (device.write pads an odd tail, and pooled buffers are
        // rounded up to 256 bytes, so the padding lands inside the allocation).
        const per = Math.max(2, Math.floor(src.length / srcItem) & ~1);
        let tgt = targets.get(dtype);
        const need = Math.min(per, t.size);
        if (!tgt || tgt.length < need) { tgt = uploadArray(dtype, need); targets.set(dtype, tgt); }
        for (let i = 0; i < t.size; i += per) {
          const n = Math.min(per, t.size - i);
          const bytes = n * srcItem;
          await readExact(fh, src, bytes, header.dataStart + e.begin + i * srcItem, path, `tensor "${name}"`);
          convertElements(src.subarray(0, bytes), e.dtype, tgt, n, where, i);
          device.write(t.buffer('loadSafetensors'), i * bytesOf(dtype), tgt.subarray(0, n));
        }
      }
    });
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
  return out;
}

/** One tensor's values on the host (floats as Float32Array, integers as Int32Array / Uint32Array). For tests and small data. */
export async function readSafetensorsHost(path: string, name: string): Promise<{ entry: SafetensorsEntry; data: HostArray }> {
  return withFile(path, async (fh) => {
    const header = await headerOf(fh, path);
    const entry = header.tensors.get(name);
    if (!entry) throw new Error(`safetensors ${path}: no tensor "${name}" (the file has ${header.tensors.size} tensors)`);
    const dtype = loadDType(entry.dtype, 'f32');
    const bytes = entry.end - entry.begin;
    const src = new Uint8Array(bytes);
    await readExact(fh, src, bytes, header.dataStart + entry.begin, path, `tensor "${name}"`);
    const n = bytes / SAFETENSORS_DTYPES[entry.dtype].bytes;
    const data = uploadArray(dtype, n) as HostArray;
    convertElements(src, entry.dtype, data, n, `safetensors ${path}: tensor "${name}"`);
    return { entry, data };
  });
}

const SAVE_DTYPE: Record<DType, SafeDType> = { f32: 'F32', f16: 'F16', i32: 'I32', u32: 'U32' };

/**
 * Writes tensors (keys sorted) with their own dtypes. Each tensor is read back from the GPU in
 * chunks and written as it arrives. The file is written to `${path}.tmp-<pid>` and renamed over
 * `path` only when complete, so a crash never leaves a half-written file under the real name.
 */
export async function saveSafetensors(path: string, tensors: Map<string, Tensor> | Record<string, Tensor>, metadata?: Record<string, string>, opts: { chunkBytes?: number } = {}): Promise<void> {
  const map = tensors instanceof Map ? tensors : new Map(Object.entries(tensors));
  for (const [name, t] of map) {
    if (!(t instanceof Tensor)) throw new Error(`saveSafetensors ${path}: value for "${name}" is not a Tensor`);
    t.buffer(`saveSafetensors ${path}: tensor "${name}"`);
  }
  const entries = [...map].map(([name, t]) => ({ name, dtype: SAVE_DTYPE[t.dtype], shape: t.shape }));
  const { bytes: header, order } = encodeSafetensorsHeader(entries, metadata);
  // Multiple of 4 bytes: GPU copies need 4-byte aligned offsets and sizes.
  const chunk = Math.max(4, Math.floor((opts.chunkBytes ?? DEFAULT_CHUNK_BYTES) / 4) * 4);
  const tmp = `${path}.tmp-${process.pid}`;
  let fh: FileHandle;
  try {
    fh = await open(tmp, 'w');
  } catch (e) {
    throw new Error(`saveSafetensors ${path}: cannot create ${tmp}: ${(e as Error).message}`);
  }
  let ok = false;
  try {
    await fh.write(header, 0, header.length, 0);
    for (const { entry, begin, end } of order) {
      const t = map.get(entry.name)!;
      const label = `saveSafetensors ${path}: tensor "${entry.name}"`;
      for (let off = 0; off < end - begin; off += chunk) {
        const n = Math.min(chunk, end - begin - off);
        // device.read rounds the copy up to 4 bytes; pooled buffers are padded, so that's in range.
        const raw = new Uint8Array(await t.device.read(t.buffer(label), off, n, label));
        let w = 0;
        while (w < n) w += (await fh.write(raw, w, n - w, header.length + begin + off + w)).bytesWritten;
      }
    }
    await fh.sync();
    ok = true;
  } finally {
    await fh.close();
    if (!ok) await unlink(tmp).catch(() => {});
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw new Error(`saveSafetensors ${path}: cannot replace the file: ${(e as Error).message}`);
  }
}
