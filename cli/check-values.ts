// `ddpo inspect --check-values`: every float tensor of safetensors files scanned for NaN and ±Inf
// on the CPU (no device), reading the data in chunks so a multi-gigabyte file needs little
// memory. A value is non-finite when all its exponent bits are set, so the test is on the bits
// (F64, F32, F16, BF16; integer tensors cannot hold NaN).

import { open } from 'node:fs/promises';
import { readSafetensorsHeader } from '../engine/safetensors.js';

export interface NonFiniteTensor {
  file: string;
  name: string;
  dtype: string;
  /** Elements that are NaN or ±Inf, and of those the NaNs. */
  nonFinite: number;
  nan: number;
  size: number;
}

const CHUNK = 1 << 24; // bytes per read

/** Counts non-finite and NaN elements of little-endian `dtype` values in `bytes`. */
function scan(bytes: Uint8Array, dtype: string): { nonFinite: number; nan: number } {
  let nonFinite = 0, nan = 0;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (dtype === 'F32') {
    for (let i = 0; i + 4 <= bytes.length; i += 4) {
      const u = dv.getUint32(i, true);
      if ((u & 0x7f800000) === 0x7f800000) { nonFinite++; if (u & 0x007fffff) nan++; }
    }
  } else if (dtype === 'F16') {
    for (let i = 0; i + 2 <= bytes.length; i += 2) {
      const u = dv.getUint16(i, true);
      if ((u & 0x7c00) === 0x7c00) { nonFinite++; if (u & 0x03ff) nan++; }
    }
  } else if (dtype === 'BF16') {
    for (let i = 0; i + 2 <= bytes.length; i += 2) {
      const u = dv.getUint16(i, true);
      if ((u & 0x7f80) === 0x7f80) { nonFinite++; if (u & 0x007f) nan++; }
    }
  } else if (dtype === 'F64') {
    for (let i = 0; i + 8 <= bytes.length; i += 8) {
      const hi = dv.getUint32(i + 4, true), lo = dv.getUint32(i, true);
      if ((hi & 0x7ff00000) === 0x7ff00000) { nonFinite++; if ((hi & 0x000fffff) || lo) nan++; }
    }
  }
  return { nonFinite, nan };
}

const WIDTH: Record<string, number> = { F64: 8, F32: 4, F16: 2, BF16: 2 };

/** The float tensors of `file` that hold NaN/Inf (empty: all finite), and how many tensors were scanned. */
export async function checkFileValues(file: string): Promise<{ bad: NonFiniteTensor[]; scanned: number }> {
  const header = await readSafetensorsHeader(file);
  const fh = await open(file, 'r');
  const bad: NonFiniteTensor[] = [];
  let scanned = 0;
  try {
    for (const [name, e] of header.tensors) {
      const w = WIDTH[e.dtype];
      if (!w) continue;
      scanned++;
      let nonFinite = 0, nan = 0;
      const chunk = Math.floor(CHUNK / w) * w;
      for (let at = e.begin; at < e.end; at += chunk) {
        const len = Math.min(chunk, e.end - at);
        const buf = new Uint8Array(len);
        const { bytesRead } = await fh.read(buf, 0, len, header.dataStart + at);
        if (bytesRead !== len) throw new Error(`${file}: "${name}" ends past the end of the file (truncated?)`);
        const r = scan(buf, e.dtype);
        nonFinite += r.nonFinite;
        nan += r.nan;
      }
      if (nonFinite) bad.push({ file, name, dtype: e.dtype, nonFinite, nan, size: (e.end - e.begin) / w });
    }
  } finally {
    await fh.close();
  }
  return { bad, scanned };
}
