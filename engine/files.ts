// The Node file system as a ModelFolder (engine/io/source.ts): a folder path on disk, with
// random access so big safetensors files stream in chunks. Node only; browsers use fetchFolder.

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileSource } from './safetensors.js';
import type { ModelFolder } from './io/source.js';

/** A folder on disk. Paths are '/'-separated and relative to `root`; describe() gives the full path. */
export function nodeFolder(root: string): ModelFolder {
  const at = (p: string) => join(root, ...p.split('/'));
  return {
    readBytes: async (p) => new Uint8Array(await readFile(at(p))),
    readText: (p) => readFile(at(p), 'utf8'),
    exists: async (p) => existsSync(at(p)),
    describe: at,
    open: (p) => fileSource(at(p)),
  };
}

/** A path on disk or an existing ModelFolder. */
export function asFolder(folder: string | ModelFolder): ModelFolder {
  return typeof folder === 'string' ? nodeFolder(folder) : folder;
}
