// Reading the files out of a (gzipped) tar archive in memory, as npm's package tarballs are:
// POSIX ustar headers, with GNU long names ('L') and pax extended headers ('x': path) as npm
// writes them for long paths. Only regular files are returned; `want` picks which, so a 75 MB
// package costs memory only for the files kept.

import { gunzipSync } from 'node:zlib';

const BLOCK = 512;

function text(buf: Uint8Array, start: number, len: number): string {
  let end = start;
  while (end < start + len && buf[end] !== 0) end++;
  return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('utf8');
}

/** A header's size field: octal text, or base-256 when its first byte has the high bit set. */
function sizeField(buf: Uint8Array, at: number, where: string): number {
  if (buf[at] & 0x80) {
    let v = 0;
    for (let i = 1; i < 12; i++) v = v * 256 + buf[at + i];
    return v;
  }
  const s = text(buf, at, 12).trim();
  const v = s ? parseInt(s, 8) : 0;
  if (!Number.isFinite(v)) throw new Error(`${where}: a tar header has a bad size field ${JSON.stringify(s)}`);
  return v;
}

/** Files of a tar (or .tgz / .tar.gz: gzip is detected by its magic bytes), path → bytes. */
export function readTar(archive: Uint8Array, want: (path: string) => boolean = () => true, where = 'tar archive'): Map<string, Uint8Array> {
  const buf = archive[0] === 0x1f && archive[1] === 0x8b ? new Uint8Array(gunzipSync(archive)) : archive;
  const out = new Map<string, Uint8Array>();
  let at = 0;
  let longName: string | null = null;
  while (at + BLOCK <= buf.length) {
    const header = buf.subarray(at, at + BLOCK);
    if (header.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i];
    const stored = parseInt(text(header, 148, 8).trim(), 8);
    if (stored !== sum) throw new Error(`${where}: corrupt tar header at byte ${at} (checksum ${stored}, computed ${sum})`);
    const size = sizeField(header, 124, where);
    const type = String.fromCharCode(header[156] || 0x30);
    const prefix = text(header, 257, 6).startsWith('ustar') ? text(header, 345, 155) : '';
    let name = longName ?? (prefix ? `${prefix}/${text(header, 0, 100)}` : text(header, 0, 100));
    const dataStart = at + BLOCK;
    if (dataStart + size > buf.length) throw new Error(`${where}: truncated (the entry ${name} needs ${size} bytes past the end)`);
    const data = buf.subarray(dataStart, dataStart + size);
    longName = null;
    if (type === 'L') {
      longName = text(data, 0, size);
    } else if (type === 'x') {
      // pax records: "<len> key=value\n"
      const s = Buffer.from(data).toString('utf8');
      for (const m of s.matchAll(/(\d+) ([^=]+)=([^\n]*)\n/g)) if (m[2] === 'path') longName = m[3];
    } else if (type === '0' || type === '7') {
      name = name.replace(/^\.\//, '');
      if (want(name)) out.set(name, new Uint8Array(data));
    }
    at = dataStart + Math.ceil(size / BLOCK) * BLOCK;
  }
  return out;
}

/** An uncompressed tar of the given files (for tests and fixtures): ustar, names ≤ 100 bytes. */
export function writeTar(files: Map<string, Uint8Array> | Record<string, Uint8Array>): Uint8Array {
  const entries = files instanceof Map ? [...files] : Object.entries(files);
  const parts: Uint8Array[] = [];
  for (const [name, data] of entries) {
    const h = new Uint8Array(BLOCK);
    const enc = new TextEncoder();
    const nb = enc.encode(name);
    if (nb.length > 100) throw new Error(`writeTar: name ${name} is longer than 100 bytes`);
    h.set(nb, 0);
    const octal = (v: number, len: number) => enc.encode(v.toString(8).padStart(len - 1, '0') + '\0');
    h.set(octal(0o644, 8), 100); h.set(octal(0, 8), 108); h.set(octal(0, 8), 116);
    h.set(octal(data.length, 12), 124); h.set(octal(0, 12), 136);
    h[156] = 0x30;
    h.set(enc.encode('ustar\x0000'), 257);
    h.fill(32, 148, 156);
    const sum = h.reduce((s, b) => s + b, 0);
    h.set(enc.encode(sum.toString(8).padStart(6, '0') + '\0 '), 148);
    parts.push(h, data, new Uint8Array((BLOCK - (data.length % BLOCK)) % BLOCK));
  }
  parts.push(new Uint8Array(2 * BLOCK));
  const total = parts.reduce((s, p) => s + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}
