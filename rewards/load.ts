// Loading a reward from a RewardSpec (module + export name), as worker threads do: a function
// cannot cross to a worker, but a module path and an export name can, and user rewards work the
// same way as built-in ones.

import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { combineRewards } from './combine.js';
import { Reward, RewardSpec } from './types.js';

export { BUILTIN_REWARDS, builtinReward } from './builtin.js';
export type { BuiltinRewardName } from './builtin.js';

/**
 * Makes module paths absolute file: URLs (relative to `cwd`), so that a worker, whose imports
 * resolve from its own file, loads what the caller meant. A path is what starts with '.' or '/',
 * or names a file that exists relative to `cwd` (so `rw/ok.mjs` is the file, as the docs say);
 * anything else (and file: URLs) is left for import() to resolve as a package specifier.
 */
export function resolveSpec(spec: RewardSpec, cwd = process.cwd()): RewardSpec {
  if ('combine' in spec) return { combine: spec.combine.map((p) => ({ ...p, spec: resolveSpec(p.spec, cwd) })) };
  if (typeof spec.module !== 'string' || typeof spec.export !== 'string') throw new Error(`resolveSpec: a reward spec needs {module, export} strings, got ${JSON.stringify(spec)}`);
  const m = spec.module;
  const isPath = !/^[a-z][a-z0-9+.-]*:/i.test(m) && (m.startsWith('.') || isAbsolute(m) || existsSync(resolve(cwd, m)));
  return { ...spec, module: isPath ? pathToFileURL(resolve(cwd, m)).href : m };
}

/**
 * Where a module's syntax error is: node's import() says only "Unexpected end of input", so the
 * file is checked with `node --check`, whose report starts "FILE:LINE" and shows the line.
 */
function syntaxErrorAt(moduleUrl: string, e: Error): string {
  let file: string;
  try {
    file = moduleUrl.startsWith('file:') ? fileURLToPath(moduleUrl) : moduleUrl;
  } catch {
    return e.message;
  }
  if (!existsSync(file)) return e.message;
  const r = spawnSync(process.execPath, ['--check', file], { encoding: 'utf8', timeout: 10_000 });
  const lines = (r.stderr ?? '').split('\n');
  const at = lines.findIndex((l) => l.startsWith(file + ':'));
  if (r.status === 0 || at < 0) return `${e.message} (in a module ${file} imports: ${file} itself parses)`;
  const where = lines[at];
  const code = lines.slice(at + 1, at + 3).filter((l) => l.trim()).join('\n    ');
  return `syntax error at ${where}: ${e.message}${code ? `\n    ${code}` : ''}`;
}

/** import() of a reward module, its failure told with the file (and line, for syntax errors). */
export async function importModule(module: string): Promise<Record<string, unknown>> {
  try {
    return (await import(module)) as Record<string, unknown>;
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    if (err instanceof SyntaxError) throw new Error(`loadReward: ${module}: ${syntaxErrorAt(module, err)}`);
    const code = (err as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' && !module.startsWith('file:')) {
      throw new Error(`loadReward: "${module}" is neither a file (relative to the current directory, ${process.cwd()}) nor an installed package (${err.message})`);
    }
    throw new Error(`loadReward: cannot import ${module}: ${err.message}`);
  }
}

/** Imports the spec's module and returns its reward (calling the factory when args are given). */
export async function loadReward(spec: RewardSpec): Promise<Reward> {
  if ('combine' in spec) {
    const parts = await Promise.all(spec.combine.map(async (p) => ({ reward: await loadReward(p.spec), weight: p.weight })));
    return combineRewards(parts);
  }
  if (spec.thread === 'main') throw new Error(`loadReward: ${spec.module}#${spec.export} runs in the trainer's thread (thread: 'main'); score it with RewardScorer, not in a worker`);
  const mod = await importModule(spec.module);
  let f = mod[spec.export];
  if (f === undefined) throw new Error(`loadReward: ${spec.module} has no export "${spec.export}" (exports: ${Object.keys(mod).join(', ') || 'none'})`);
  if (spec.args) {
    if (typeof f !== 'function') throw new Error(`loadReward: ${spec.module}#${spec.export} is not a function, so it cannot be a factory`);
    f = await (f as (...a: unknown[]) => unknown)(...spec.args);
  }
  if (typeof f !== 'function') throw new Error(`loadReward: ${spec.module}#${spec.export}${spec.args ? '(...args)' : ''} is ${typeof f}, not a reward function`);
  return f as Reward;
}
