// Training checkpoints: one folder holding everything a run needs to continue exactly.
//
//   trainer.json            epoch, sample counter, every RNG state, stat tracker, config, and
//                           the optimizer's scalars (lr, betas, per-parameter step counts)
//   weights.safetensors     the trained tensors: LoRA adapters (…to_q.lora_A.weight, …) or the
//                           whole UNet, by their state-dict names
//   optimizer.safetensors   AdamW's moments: "<param name>.exp_avg", "<param name>.exp_avg_sq"
//
// The folder is written whole to a temporary sibling and renamed into place (the previous
// checkpoint is renamed aside first and deleted after), so a crash leaves either the old or the
// new checkpoint under the name, never a mixture. If a crash hits between the two renames, the
// previous one survives as `<folder>.old-<pid>`; recoverCheckpoint puts it back (and clears the
// temporary folders a crash leaves) before a resume reads the folder.

import { existsSync, readdirSync, statSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { AdamW } from '../engine/optim.js';
import { copyInto } from '../engine/nn/module.js';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors } from '../engine/safetensors.js';
import { Tensor } from '../engine/tensor.js';
import { fmt } from '../engine/shape.js';

export const CHECKPOINT_FORMAT = 'ddpo-webgpu-checkpoint';
/** 2: the trainer state's config is the run config (rl/config.ts ResolvedConfig), no longer a flat trainer config. */
export const CHECKPOINT_VERSION = 2;
const STATE_FILE = 'trainer.json';
const WEIGHTS_FILE = 'weights.safetensors';
const OPTIM_FILE = 'optimizer.safetensors';
/** Our AdamW buffer names → the names torch's AdamW state uses. */
const MOMENTS: Record<string, string> = { expAvg: 'exp_avg', expAvgSq: 'exp_avg_sq' };

export interface OptimizerMeta {
  kind: 'AdamW';
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  /** Step count of every parameter that has stepped, by name. */
  steps: Record<string, number>;
}

/** What trainer.json holds (the trainer fills `state`; this module adds the rest). */
export interface CheckpointFile<S> {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  savedAt: string;
  weights: { kind: 'lora' | 'full'; file: string; names: string[] };
  optimizer: OptimizerMeta & { file: string };
  state: S;
}

export interface SaveCheckpointArgs<S> {
  state: S;
  weightKind: 'lora' | 'full';
  /** name → trained tensor */
  weights: Map<string, Tensor>;
  optimizer: AdamW;
}

/** Writes a checkpoint folder atomically (see the header). */
export async function saveCheckpoint<S>(folder: string, args: SaveCheckpointArgs<S>): Promise<void> {
  const names = new Map<Tensor, string>();
  for (const [n, t] of args.weights) names.set(t, n);
  const opt = args.optimizer;
  const moments = new Map<string, Tensor>();
  const steps: Record<string, number> = {};
  for (const e of opt.stateDict()) {
    const name = names.get(e.param);
    if (!name) throw new Error(`saveCheckpoint: the optimizer holds a parameter ${e.param.describe()} that is not among the saved weights`);
    steps[name] = e.step;
    for (const [ours, theirs] of Object.entries(MOMENTS)) {
      const b = e.buffers[ours];
      if (!b) throw new Error(`saveCheckpoint: the optimizer state of "${name}" has no ${ours} buffer`);
      moments.set(`${name}.${theirs}`, b);
    }
  }
  const file: CheckpointFile<S> = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    savedAt: new Date().toISOString(),
    weights: { kind: args.weightKind, file: WEIGHTS_FILE, names: [...args.weights.keys()] },
    optimizer: { kind: 'AdamW', lr: opt.lr, betas: [...opt.betas] as [number, number], eps: opt.eps, weightDecay: opt.weightDecay, steps, file: OPTIM_FILE },
    state: args.state,
  };
  const parent = dirname(folder);
  await mkdir(parent, { recursive: true });
  const tmp = join(parent, `.${basename(folder)}.tmp-${process.pid}-${Date.now()}`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp);
  try {
    await saveSafetensors(join(tmp, WEIGHTS_FILE), args.weights, { format: 'pt' });
    await saveSafetensors(join(tmp, OPTIM_FILE), moments, { format: 'pt' });
    await writeFile(join(tmp, STATE_FILE), JSON.stringify(file, null, 1) + '\n');
    const old = `${folder}.old-${process.pid}`;
    const had = existsSync(folder);
    if (had) await rename(folder, old);
    await rename(tmp, folder);
    if (had) await rm(old, { recursive: true, force: true });
  } catch (e) {
    await rm(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Reads and checks trainer.json of a checkpoint folder. */
export async function readCheckpoint<S>(folder: string): Promise<CheckpointFile<S>> {
  const path = join(folder, STATE_FILE);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new Error(`checkpoint ${folder}: cannot read ${STATE_FILE}: ${(e as Error).message}`);
  }
  let file: CheckpointFile<S>;
  try {
    file = JSON.parse(text) as CheckpointFile<S>;
  } catch (e) {
    throw new Error(`checkpoint ${path}: not valid JSON (${(e as Error).message})`);
  }
  if (file?.format !== CHECKPOINT_FORMAT) throw new Error(`checkpoint ${path}: not a ${CHECKPOINT_FORMAT} file`);
  if (file.version !== CHECKPOINT_VERSION) throw new Error(`checkpoint ${path}: version ${file.version}, this build reads version ${CHECKPOINT_VERSION}${file.version < CHECKPOINT_VERSION ? ' (it was written by an earlier build: resume it with that build, or start a new run)' : ' (written by a newer build)'}`);
  for (const f of [file.weights?.file, file.optimizer?.file]) {
    if (typeof f !== 'string' || !existsSync(join(folder, f))) throw new Error(`checkpoint ${folder}: missing ${f ?? 'a weights file'}`);
  }
  return file;
}

/**
 * Copies the checkpoint's weights into `targets` (name → the model's tensor). The names must be
 * exactly the checkpoint's: every missing, unexpected or mis-shaped name is listed in one Error
 * before anything is written.
 */
export async function loadCheckpointWeights<S>(folder: string, file: CheckpointFile<S>, targets: Map<string, Tensor>): Promise<void> {
  const path = join(folder, file.weights.file);
  const header = await readSafetensorsHeader(path);
  const problems: string[] = [];
  for (const n of targets.keys()) if (!header.tensors.has(n)) problems.push(`missing "${n}"`);
  for (const [n, e] of header.tensors) {
    const t = targets.get(n);
    if (!t) problems.push(`unexpected "${n}"`);
    else if (e.shape.join() !== t.shape.join()) problems.push(`"${n}": shape ${fmt(e.shape)} in the checkpoint, ${fmt(t.shape)} in the model`);
  }
  if (problems.length) {
    throw new Error(`checkpoint ${path} does not fit the model (${file.weights.kind} weights; is the base model or lora_rank different?):\n  ${problems.slice(0, 20).join('\n  ')}${problems.length > 20 ? `\n  … ${problems.length - 20} more` : ''}`);
  }
  const loaded = await loadSafetensors(path, { device: [...targets.values()][0].device, dtype: 'f32' });
  try {
    for (const [n, t] of loaded) copyInto(targets.get(n)!, t, `checkpoint "${n}"`);
  } finally {
    for (const t of loaded.values()) t.dispose();
  }
}

/**
 * Restores AdamW's hyper-parameters, per-parameter step counts and moments from a checkpoint.
 * `params` maps names to the optimizer's parameters (the same map the weights were saved from).
 */
export async function loadOptimizerState<S>(folder: string, file: CheckpointFile<S>, opt: AdamW, params: Map<string, Tensor>): Promise<void> {
  const meta = file.optimizer;
  if (meta.kind !== 'AdamW') throw new Error(`checkpoint ${folder}: optimizer ${meta.kind} is not AdamW`);
  opt.lr = meta.lr;
  opt.betas = [...meta.betas] as [number, number];
  opt.eps = meta.eps;
  opt.weightDecay = meta.weightDecay;
  const path = join(folder, meta.file);
  const loaded = await loadSafetensors(path, { device: opt.params[0].device, dtype: 'f32' });
  const claimed = new Set<string>();
  try {
    const entries: { param: Tensor; step: number; buffers: Record<string, Tensor> }[] = [];
    for (const [name, step] of Object.entries(meta.steps)) {
      const p = params.get(name);
      if (!p) throw new Error(`checkpoint ${path}: optimizer state for "${name}", which the model does not train`);
      if (!opt.params.includes(p)) throw new Error(`checkpoint ${path}: "${name}" is not a parameter of the optimizer`);
      const buffers: Record<string, Tensor> = {};
      for (const [ours, theirs] of Object.entries(MOMENTS)) {
        const key = `${name}.${theirs}`;
        const t = loaded.get(key);
        if (!t) throw new Error(`checkpoint ${path}: missing "${key}"`);
        if (t.shape.join() !== p.shape.join()) throw new Error(`checkpoint ${path}: "${key}" ${t.describe()} does not match the parameter ${p.describe()}`);
        buffers[ours] = t;
        claimed.add(key);
      }
      entries.push({ param: p, step, buffers });
    }
    const extra = [...loaded.keys()].filter((k) => !claimed.has(k));
    if (extra.length) throw new Error(`checkpoint ${path}: unexpected tensors ${extra.slice(0, 5).join(', ')}`);
    opt.loadStateDict(entries); // checks everything before it installs anything; then owns the buffers
  } catch (e) {
    for (const t of loaded.values()) t.dispose();
    throw e;
  }
}

/** A crash's leftovers beside a checkpoint folder: its temporary folders and renamed-aside copies. */
export function checkpointLeftovers(folder: string): { temporary: string[]; old: string[] } {
  const parent = dirname(folder), name = basename(folder);
  if (!existsSync(parent)) return { temporary: [], old: [] };
  const entries = readdirSync(parent);
  return {
    temporary: entries.filter((e) => e.startsWith(`.${name}.tmp-`)).map((e) => join(parent, e)),
    old: entries.filter((e) => e.startsWith(`${name}.old-`)).map((e) => join(parent, e)),
  };
}

/**
 * Puts a checkpoint folder in order after a crash, before it is read. A crash between a save's
 * two renames leaves no `folder` but the previous checkpoint as `<folder>.old-<pid>`: that is
 * renamed back (the newest by its epoch when there are several). Renamed-aside copies left
 * beside an intact folder, and temporary folders of saves that never finished, are deleted.
 * Returns what it did, one line each (empty when there was nothing to do).
 */
export async function recoverCheckpoint(folder: string): Promise<string[]> {
  const done: string[] = [];
  const { temporary, old } = checkpointLeftovers(folder);
  for (const t of temporary) {
    await rm(t, { recursive: true, force: true });
    done.push(`removed ${t} (an unfinished save)`);
  }
  let rest = old;
  if (!existsSync(folder) && old.length) {
    const epochOf = async (d: string) => {
      try {
        return (await readCheckpoint<{ epoch?: number }>(d)).state?.epoch ?? -1;
      } catch {
        return -2; // not a readable checkpoint
      }
    };
    const ranked = await Promise.all(old.map(async (d) => ({ d, epoch: await epochOf(d), mtime: statSync(d).mtimeMs })));
    ranked.sort((a, b) => b.epoch - a.epoch || b.mtime - a.mtime);
    if (ranked[0].epoch >= -1) {
      await rename(ranked[0].d, folder);
      done.push(`restored ${folder} from ${ranked[0].d} (a save was interrupted between its renames)`);
      rest = old.filter((d) => d !== ranked[0].d);
    }
  }
  if (existsSync(folder)) {
    for (const d of rest) {
      await rm(d, { recursive: true, force: true });
      done.push(`removed ${d} (a previous checkpoint left beside ${folder})`);
    }
  }
  return done;
}
