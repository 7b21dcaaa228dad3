// Node file I/O for safetensors: a file handle as a ByteSource (so the shared loader in
// io/safetensors-load.ts streams it in chunks) and atomic save. Parsing, validation, element
// conversion and the upload loop live in io/ (no Node there), shared with in-memory bytes.

import { open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { HostArray } from './dtype.js';
import { Tensor } from './tensor.js';
import { SafeDType, SafetensorsEntry, SafetensorsHeader, encodeSafetensorsHeader } from './io/safetensors-format.js';
import { LoadOptions, SafetensorsFile, loadSafetensorsFrom, openSafetensorsSource, readSafetensorsHostFrom } from './io/safetensors-load.js';
import type { ByteSource } from './io/source.js';
import type { DType } from './dtype.js';

export * from './io/safetensors-format.js';
export * from './io/safetensors-load.js';

const DEFAULT_CHUNK_BYTES = 64 << 20;

/** Opens a file for random access; a missing or unreadable file is an Error naming it. */
export async function fileSource(path: string): Promise<ByteSource> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    throw new Error(`safetensors ${path}: cannot open: ${(e as Error).message}`);
  }
  let size: number;
  try {
    size = (await fh.stat()).size;
  } catch (e) {
    await fh.close();
    throw new Error(`safetensors ${path}: cannot stat: ${(e as Error).message}`);
  }
  return {
    name: path,
    size,
    async read(position, into, length, what) {
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(into, done, length - done, position + done);
        if (bytesRead === 0) throw new Error(`safetensors ${path}: unexpected end of file reading ${what} (file changed while reading?)`);
        done += bytesRead;
      }
    },
    close: () => fh.close(),
  };
}

/** Opens `path` and reads its header; close `source` when done. */
export async function openSafetensorsFile(path: string): Promise<SafetensorsFile> {
  return openSafetensorsSource(await fileSource(path));
}

async function withFile<T>(path: string, fn: (f: SafetensorsFile) => Promise<T>): Promise<T> {
  const f = await openSafetensorsFile(path);
  try {
    return await fn(f);
  } finally {
    await f.source.close();
  }
}

/** Reads and validates the header only: names, dtypes, shapes and byte ranges. */
export function readSafetensorsHeader(path: string): Promise<SafetensorsHeader> {
  return withFile(path, async (f) => f.header);
}

/** Streams the chosen tensors of a file onto the GPU. On any error, tensors made so far are disposed. */
export async function loadSafetensors(path: string, opts: LoadOptions): Promise<Map<string, Tensor>> {
  return withFile(path, (f) => loadSafetensorsFrom(f, opts));
}

/** One tensor's values on the host (floats as Float32Array, integers as Int32Array / Uint32Array). For tests and small data. */
export async function readSafetensorsHost(path: string, name: string): Promise<{ entry: SafetensorsEntry; data: HostArray }> {
  return withFile(path, (f) => readSafetensorsHostFrom(f, name));
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
