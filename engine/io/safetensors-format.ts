// The safetensors format as pure functions over bytes: header parsing with full validation,
// header encoding, and element conversion. Nothing here touches the file system, so a browser
// (fetch + Range requests, or a File) can reuse it; engine/safetensors.ts does Node file I/O.
//
// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}},
// then the data buffer. Offsets are relative to the start of the data buffer.
//
// Validation is strict like the reference (Rust) reader: tensors must tile the data buffer
// exactly — no overlaps, no holes, no trailing bytes — because a file that breaks this is either
// corrupt or written by a buggy writer, and we would rather say so than load garbage.

import { DType, f16BitsToF32, f32ToF16Bits } from '../dtype.js';

/** Element types we read. Floats load as f32 or f16, integers as i32 (U32 as u32). */
export const SAFETENSORS_DTYPES = {
  F64: { bytes: 8, float: true },
  F32: { bytes: 4, float: true },
  F16: { bytes: 2, float: true },
  BF16: { bytes: 2, float: true },
  I64: { bytes: 8, float: false },
  I32: { bytes: 4, float: false },
  U32: { bytes: 4, float: false },
  U8: { bytes: 1, float: false },
  BOOL: { bytes: 1, float: false },
} as const;

export type SafeDType = keyof typeof SAFETENSORS_DTYPES;

/** Headers larger than this are refused: real ones are kilobytes to a few megabytes. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface SafetensorsEntry {
  dtype: SafeDType;
  shape: number[];
  /** Byte range [begin, end) relative to the start of the data buffer. */
  begin: number;
  end: number;
}

export interface SafetensorsHeader {
  /** In file order (sorted by offset). */
  tensors: Map<string, SafetensorsEntry>;
  metadata: Record<string, string>;
  /** Absolute file offset of the data buffer: 8 + N. */
  dataStart: number;
  fileSize: number;
}

function fail(file: string, what: string): never {
  throw new Error(`safetensors ${file}: ${what}`);
}

/** Reads N from the first 8 bytes and checks it fits the file. */
export function readHeaderLength(prefix: Uint8Array, fileSize: number, file: string): number {
  if (fileSize < 8 || prefix.length < 8) fail(file, `file is ${fileSize} bytes, too short for the 8-byte header length`);
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_BYTES)) fail(file, `header length ${n} exceeds the limit of ${MAX_HEADER_BYTES} bytes (corrupt or not a safetensors file)`);
  const len = Number(n);
  if (8 + len > fileSize) fail(file, `header length ${len} runs past the end of the file (${fileSize} bytes): truncated or not a safetensors file`);
  if (len < 2) fail(file, `header length ${len} is too small for a JSON object`);
  return len;
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;

/** Parses and validates the JSON header (the N bytes after the length prefix). */
export function parseSafetensorsHeader(json: Uint8Array, fileSize: number, file: string): SafetensorsHeader {
  const dataStart = 8 + json.length;
  const dataBytes = fileSize - dataStart;
  if (dataBytes < 0) fail(file, `header of ${json.length} bytes runs past the end of the file (${fileSize} bytes)`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(json);
  } catch {
    fail(file, 'header is not valid UTF-8');
  }
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (e) {
    fail(file, `header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof root !== 'object' || root === null || Array.isArray(root)) fail(file, 'header is not a JSON object');

  // Null prototype: a key named "__proto__" must stay an ordinary key.
  const metadata: Record<string, string> = Object.create(null);
  const entries: [string, SafetensorsEntry][] = [];
  for (const [name, raw] of Object.entries(root as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, '"__metadata__" is not an object of strings');
      for (const [k, v] of Object.entries(raw as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(file, `"__metadata__" key "${k}" is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const where = `tensor "${name}"`;
    if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) fail(file, `${where}: entry is not an object`);
    const { dtype, shape, data_offsets: offs } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string' || !Object.hasOwn(SAFETENSORS_DTYPES, dtype)) {
      fail(file, `${where}: unsupported dtype ${JSON.stringify(dtype)} (supported: ${Object.keys(SAFETENSORS_DTYPES).join(', ')})`);
    }
    if (!Array.isArray(shape) || !shape.every(isInt)) fail(file, `${where}: shape ${JSON.stringify(shape)} is not a list of non-negative integers`);
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every(isInt)) {
      fail(file, `${where}: data_offsets ${JSON.stringify(offs)} is not [begin, end] with non-negative integers`);
    }
    const [begin, end] = offs as number[];
    let numel = 1;
    for (const d of shape as number[]) numel *= d;
    const itemBytes = SAFETENSORS_DTYPES[dtype as SafeDType].bytes;
    const want = numel * itemBytes;
    if (!Number.isSafeInteger(want)) fail(file, `${where}: shape ${JSON.stringify(shape)} is too large`);
    if (end < begin) fail(file, `${where}: data_offsets [${begin}, ${end}] end before they begin`);
    if (end - begin !== want) {
      fail(file, `${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but ${dtype} ${JSON.stringify(shape)} needs ${want}`);
    }
    if (end > dataBytes) fail(file, `${where}: data_offsets [${begin}, ${end}] run past the data buffer (${dataBytes} bytes; file truncated?)`);
    entries.push([name, { dtype: dtype as SafeDType, shape: [...(shape as number[])], begin, end }]);
  }

  // Tensors must tile [0, dataBytes) exactly. Empty tensors occupy no bytes and may sit anywhere
  // in range; ties sort empty first so they never look like an overlap.
  entries.sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let pos = 0, prev = '';
  for (const [name, e] of entries) {
    if (e.begin === e.end) continue;
    if (e.begin < pos) fail(file, `tensor "${name}": data_offsets [${e.begin}, ${e.end}] overlap tensor "${prev}" (which ends at ${pos})`);
    if (e.begin > pos) fail(file, `tensor "${name}": data_offsets [${e.begin}, ${e.end}] leave a hole of ${e.begin - pos} bytes after ${prev ? `tensor "${prev}"` : 'the start of the data buffer'}`);
    pos = e.end;
    prev = name;
  }
  if (pos !== dataBytes) fail(file, `data buffer has ${dataBytes - pos} bytes after the last tensor${prev ? ` "${prev}"` : ''} that no tensor covers`);
  return { tensors: new Map(entries), metadata, dataStart, fileSize };
}

/** Parses the header of a whole file held in memory (small files, browsers). */
export function parseSafetensorsBytes(bytes: Uint8Array, file = '<bytes>'): SafetensorsHeader {
  const n = readHeaderLength(bytes.subarray(0, 8), bytes.length, file);
  return parseSafetensorsHeader(bytes.subarray(8, 8 + n), bytes.length, file);
}

// ---------------------------------------------------------------- writing

export interface EncodeEntry {
  name: string;
  dtype: SafeDType;
  shape: readonly number[];
}

/**
 * Builds the length prefix and JSON header for tensors laid out back to back in sorted-name
 * order. The JSON is padded with spaces so the data buffer starts at a multiple of 8 bytes, as
 * the reference writer does. Returns the bytes and each tensor's [begin, end).
 */
export function encodeSafetensorsHeader(entries: EncodeEntry[], metadata?: Record<string, string>): { bytes: Uint8Array; order: { entry: EncodeEntry; begin: number; end: number }[] } {
  const sorted = [...entries].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const obj: Record<string, unknown> = Object.create(null);
  if (metadata && Object.keys(metadata).length) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== 'string') throw new Error(`saveSafetensors: metadata key "${k}" is not a string`);
    }
    obj.__metadata__ = metadata;
  }
  const order: { entry: EncodeEntry; begin: number; end: number }[] = [];
  let pos = 0;
  for (const e of sorted) {
    if (e.name === '__metadata__') throw new Error('saveSafetensors: "__metadata__" is reserved and cannot name a tensor');
    if (Object.hasOwn(obj, e.name)) throw new Error(`saveSafetensors: duplicate tensor name "${e.name}"`);
    let n = 1;
    for (const d of e.shape) n *= d;
    const end = pos + n * SAFETENSORS_DTYPES[e.dtype].bytes;
    obj[e.name] = { dtype: e.dtype, shape: [...e.shape], data_offsets: [pos, end] };
    order.push({ entry: e, begin: pos, end });
    pos = end;
  }
  const json = new TextEncoder().encode(JSON.stringify(obj));
  const n = Math.ceil(json.length / 8) * 8;
  const bytes = new Uint8Array(8 + n).fill(0x20, 8);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(n), true);
  bytes.set(json, 8);
  return { bytes, order };
}

// ---------------------------------------------------------------- element conversion

/** The engine dtype a safetensors dtype loads as, given the wanted float dtype. */
export function loadDType(dtype: SafeDType, float: 'f32' | 'f16'): DType {
  if (SAFETENSORS_DTYPES[dtype].float) return float;
  return dtype === 'U32' ? 'u32' : 'i32';
}

const bf16Scratch = new Uint32Array(1);
const bf16View = new Float32Array(bf16Scratch.buffer);

/** Reads element i of a little-endian source as a JS number (floats) — i64 handled separately. */
function floatAt(view: DataView, dtype: SafeDType, i: number): number {
  switch (dtype) {
    case 'F64': return view.getFloat64(i * 8, true);
    case 'F32': return view.getFloat32(i * 4, true);
    case 'F16': return f16BitsToF32(view.getUint16(i * 2, true));
    case 'BF16': bf16Scratch[0] = view.getUint16(i * 2, true) << 16; return bf16View[0];
    default: throw new Error(`floatAt: ${dtype} is not a float dtype`);
  }
}

/**
 * Converts `count` elements of `src` (raw little-endian `dtype` bytes) into `out`, which is the
 * upload view for the target: Float32Array (f32), Uint16Array (f16 bits), Int32Array (i32) or
 * Uint32Array (u32). `where` names the file and tensor for range errors; `first` is the index
 * of src's first element within the tensor, for messages.
 */
export function convertElements(src: Uint8Array, dtype: SafeDType, out: Float32Array | Uint16Array | Int32Array | Uint32Array, count: number, where: string, first = 0): void {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  // Fast paths: same bit layout on both sides is a plain copy. Every platform with WebGPU is
  // little-endian like the file, so typed-array views read the bytes correctly.
  const aligned = src.byteOffset % 4 === 0;
  if (aligned && dtype === 'F32' && out instanceof Float32Array) { out.set(new Float32Array(src.buffer, src.byteOffset, count)); return; }
  if (aligned && dtype === 'F16' && out instanceof Uint16Array) { out.set(new Uint16Array(src.buffer, src.byteOffset, count)); return; }
  if (aligned && dtype === 'I32' && out instanceof Int32Array) { out.set(new Int32Array(src.buffer, src.byteOffset, count)); return; }
  if (SAFETENSORS_DTYPES[dtype].float) {
    if (out instanceof Float32Array) {
      for (let i = 0; i < count; i++) out[i] = floatAt(view, dtype, i);
    } else if (out instanceof Uint16Array) {
      if (dtype === 'F16') for (let i = 0; i < count; i++) out[i] = view.getUint16(i * 2, true);
      else for (let i = 0; i < count; i++) out[i] = f32ToF16Bits(floatAt(view, dtype, i));
    } else {
      throw new Error(`${where}: cannot load float dtype ${dtype} into an integer tensor`);
    }
    return;
  }
  if (!(out instanceof Int32Array || out instanceof Uint32Array)) throw new Error(`${where}: cannot load integer dtype ${dtype} into a float tensor`);
  switch (dtype) {
    case 'I64':
      for (let i = 0; i < count; i++) {
        const v = view.getBigInt64(i * 8, true);
        if (v < -2147483648n || v > 2147483647n) throw new Error(`${where}: I64 element ${first + i} = ${v} does not fit in i32`);
        out[i] = Number(v);
      }
      return;
    case 'I32': for (let i = 0; i < count; i++) out[i] = view.getInt32(i * 4, true); return;
    case 'U32': for (let i = 0; i < count; i++) out[i] = view.getUint32(i * 4, true); return;
    case 'U8': for (let i = 0; i < count; i++) out[i] = src[i]; return;
    case 'BOOL':
      for (let i = 0; i < count; i++) {
        if (src[i] > 1) throw new Error(`${where}: BOOL element ${first + i} has byte value ${src[i]}, not 0 or 1`);
        out[i] = src[i];
      }
      return;
    default: throw new Error(`${where}: unhandled dtype ${dtype}`);
  }
}

/** The typed array an upload of `n` elements of engine dtype `d` is built in. */
export function uploadArray(d: DType, n: number): Float32Array | Uint16Array | Int32Array | Uint32Array {
  switch (d) {
    case 'f32': return new Float32Array(n);
    case 'f16': return new Uint16Array(n);
    case 'i32': return new Int32Array(n);
    case 'u32': return new Uint32Array(n);
  }
}
