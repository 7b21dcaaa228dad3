// Loading safetensors onto the GPU from any ByteSource (a Node file handle, bytes from fetch, a
// File): header reading and validation (safetensors-format.ts) and the chunked upload. The Node
// file reader (engine/safetensors.ts) and parseSafetensors (bytes in memory) are both this code.
//
// Memory bound: a tensor is read in chunks of at most `chunkBytes` source bytes (64 MiB by
// default) into one reusable host buffer, converted into a second reusable buffer, and uploaded
// to its slice of the GPU tensor, so a multi-GB checkpoint never sits in one JS buffer when the
// source reads ranges (a file handle).

import { Device } from '../device.js';
import { DType, HostArray, bytesOf } from '../dtype.js';
import { Tensor } from '../tensor.js';
import { MAX_RANK, fmt } from '../shape.js';
import {
  SAFETENSORS_DTYPES, SafetensorsEntry, SafetensorsHeader, convertElements, loadDType, parseSafetensorsHeader, readHeaderLength, uploadArray,
} from './safetensors-format.js';
import { ByteSource, bytesSource } from './source.js';

const DEFAULT_CHUNK_BYTES = 64 << 20;

/** Reads and validates the header of a source. */
export async function readSafetensorsHeaderFrom(src: ByteSource): Promise<SafetensorsHeader> {
  const prefix = new Uint8Array(8);
  if (src.size >= 8) await src.read(0, prefix, 8, 'the header length');
  const n = readHeaderLength(prefix, src.size, src.name);
  const json = new Uint8Array(n);
  await src.read(8, json, n, 'the header');
  return parseSafetensorsHeader(json, src.size, src.name);
}

/** An open weights file and its validated header (loaders read several groups from one). */
export interface SafetensorsFile {
  source: ByteSource;
  header: SafetensorsHeader;
}

export async function openSafetensorsSource(src: ByteSource): Promise<SafetensorsFile> {
  try {
    return { source: src, header: await readSafetensorsHeaderFrom(src) };
  } catch (e) {
    await src.close();
    throw e;
  }
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

/**
 * Uploads the chosen tensors of an open file to the GPU. Float tensors become `opts.dtype`
 * (an f16 file on a device without shader-f16 loads as f32). On any error, tensors made so far
 * are disposed.
 */
export async function loadSafetensorsFrom(file: SafetensorsFile, opts: LoadOptions): Promise<Map<string, Tensor>> {
  const { device, filter } = opts;
  const { source, header } = file;
  const path = source.name;
  const float = opts.dtype ?? 'f32';
  if (float === 'f16' && !device.hasF16) throw new Error(`loadSafetensors ${path}: dtype f16 needs shader-f16, which ${device.adapterName} does not offer; use f32`);
  const chunkBytes = Math.max(16, Math.floor(opts.chunkBytes ?? DEFAULT_CHUNK_BYTES));
  const out = new Map<string, Tensor>();
  try {
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
        await source.read(header.dataStart + e.begin + i * srcItem, src, bytes, `tensor "${name}"`);
        convertElements(src.subarray(0, bytes), e.dtype, tgt, n, where, i);
        device.write(t.buffer('loadSafetensors'), i * bytesOf(dtype), tgt.subarray(0, n));
      }
    }
  } catch (e) {
    for (const t of out.values()) t.dispose();
    throw e;
  }
  return out;
}

/** One tensor's values on the host (floats as Float32Array, integers as Int32Array / Uint32Array). */
export async function readSafetensorsHostFrom(file: SafetensorsFile, name: string): Promise<{ entry: SafetensorsEntry; data: HostArray }> {
  const { source, header } = file;
  const entry = header.tensors.get(name);
  if (!entry) throw new Error(`safetensors ${source.name}: no tensor "${name}" (the file has ${header.tensors.size} tensors)`);
  const dtype = loadDType(entry.dtype, 'f32');
  const bytes = entry.end - entry.begin;
  const src = new Uint8Array(bytes);
  await source.read(header.dataStart + entry.begin, src, bytes, `tensor "${name}"`);
  const n = bytes / SAFETENSORS_DTYPES[entry.dtype].bytes;
  const data = uploadArray(dtype, n) as HostArray;
  convertElements(src, entry.dtype, data, n, `safetensors ${source.name}: tensor "${name}"`);
  return { entry, data };
}

/**
 * A whole safetensors file held in memory (fetch's ArrayBuffer, a File's bytes) onto the GPU,
 * validated exactly like a file on disk. `name` labels errors.
 */
export async function parseSafetensors(bytes: Uint8Array | ArrayBuffer, opts: LoadOptions & { name?: string }): Promise<Map<string, Tensor>> {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  return loadSafetensorsFrom(await openSafetensorsSource(bytesSource(b, opts.name ?? '<bytes>')), opts);
}
