// One run per folder. A run folder (ddpo train --out) holds one run's files: identity.json (run
// id, config hash, when it started), config.json, metrics.jsonl, grids/, reward.svg,
// report.html, eval.json and checkpoint/ (with a crash's leftovers beside it). A new run refuses
// a folder that holds any of them, so two runs never mix their epochs, grids and reports; with
// --overwrite it deletes them first (other files in the folder are left alone).

import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { RESUMABLE_KEYS, ResolvedConfig } from '../rl/config.js';
import { checkpointLeftovers } from '../rl/checkpoint.js';
import { writeFileAtomic } from './files.js';

export const IDENTITY_FILE = 'identity.json';
const RUN_FILES = [IDENTITY_FILE, 'config.json', 'metrics.jsonl', 'grids', 'reward.svg', 'report.html', 'eval.json', 'checkpoint'];

export interface RunIdentity {
  run_id: string;
  /** sha256 of the config without the keys a resume may change (RESUMABLE_KEYS): what the run computes. */
  config_hash: string;
  started: string;
}

/** The run folder's checkpoint (replaced atomically at each save). */
export function checkpointDir(out: string): string {
  return join(out, 'checkpoint');
}

/** The files of a run in `out` (names relative to it; temporary files of atomic writes included). */
export function runFiles(out: string): string[] {
  if (!existsSync(out)) return [];
  const entries = readdirSync(out);
  const leftovers = checkpointLeftovers(checkpointDir(out));
  const temp = entries.filter((e) => RUN_FILES.some((f) => e.startsWith(`${f}.tmp-`)));
  return [...RUN_FILES.filter((f) => entries.includes(f)), ...[...leftovers.temporary, ...leftovers.old].map((p) => p.slice(out.length + 1)), ...temp];
}

/**
 * Refuses to start a new run in a folder holding an earlier run's files (naming them, and how to
 * continue that run when it has a checkpoint), or with `overwrite` deletes those files.
 * Returns the files it deleted.
 */
export function claimRunFolder(out: string, overwrite: boolean): string[] {
  const files = runFiles(out);
  if (!files.length) return [];
  if (!overwrite) {
    const ckpt = existsSync(join(checkpointDir(out), 'trainer.json')) || checkpointLeftovers(checkpointDir(out)).old.length > 0;
    const list = files.length > 6 ? `${files.slice(0, 6).join(', ')}, …` : files.join(', ');
    throw new Error(`${out} already holds a run (${list}). ${ckpt ? `Continue it with \`ddpo train --resume ${out}\`, ` : 'It has no checkpoint to continue from. '}choose another --out, or pass --overwrite to delete that run's files and start a new one there`);
  }
  for (const f of files) rmSync(join(out, f), { recursive: true, force: true });
  return files;
}

function hashConfig(c: ResolvedConfig): string {
  const copy = structuredClone(c) as unknown as Record<string, unknown>;
  for (const k of RESUMABLE_KEYS) {
    const parts = k.split('.');
    let o = copy;
    for (const p of parts.slice(0, -1)) o = o[p] as Record<string, unknown>;
    delete o[parts[parts.length - 1]];
  }
  return createHash('sha256').update(JSON.stringify(copy)).digest('hex').slice(0, 16);
}

/** Writes identity.json of a new run and returns it. */
export function writeIdentity(out: string, c: ResolvedConfig): RunIdentity {
  const started = new Date();
  const id: RunIdentity = {
    run_id: `${started.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}-${randomBytes(4).toString('hex')}`,
    config_hash: hashConfig(c),
    started: started.toISOString(),
  };
  writeFileAtomic(join(out, IDENTITY_FILE), JSON.stringify(id, null, 2) + '\n');
  return id;
}

/** The run's identity.json, or null (a folder from before run identities). */
export function readIdentity(out: string): RunIdentity | null {
  const p = join(out, IDENTITY_FILE);
  if (!existsSync(p)) return null;
  try {
    return JSON.parse(readFileSync(p, 'utf8')) as RunIdentity;
  } catch (e) {
    throw new Error(`${p} is not valid JSON (${(e as Error).message}); it names the run in ${out}`);
  }
}

/** Checks that a resumed config computes what the run started with (the config hash matches). */
export function checkIdentity(out: string, c: ResolvedConfig): RunIdentity | null {
  const id = readIdentity(out);
  if (id && id.config_hash !== hashConfig(c)) {
    throw new Error(`${out}: config.json no longer matches the run that started there (config hash ${hashConfig(c)}, the run's ${id.config_hash}); was it edited? Restore it, or start a new run with another --out`);
  }
  return id;
}
