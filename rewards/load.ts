// Loading a reward from a RewardSpec (module + export name), as worker threads do: a function
// cannot cross to a worker, but a module path and an export name can, and user rewards work the
// same way as built-in ones.

import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { combineRewards } from './combine.js';
import { Reward, RewardSpec } from './types.js';

/** The built-in rewards by the names the DDPO reference code uses. */
export const BUILTIN_REWARDS = {
  jpeg_compressibility: { module: new URL('./jpeg.js', import.meta.url).href, export: 'jpegCompressibility' },
  jpeg_incompressibility: { module: new URL('./jpeg.js', import.meta.url).href, export: 'jpegIncompressibility' },
  brightness: { module: new URL('./brightness.js', import.meta.url).href, export: 'brightness' },
  darkness: { module: new URL('./brightness.js', import.meta.url).href, export: 'darkness' },
} satisfies Record<string, RewardSpec>;

export type BuiltinRewardName = keyof typeof BUILTIN_REWARDS;

/** The spec of a built-in reward; throws naming the known ones. */
export function builtinReward(name: string): RewardSpec {
  const spec = (BUILTIN_REWARDS as Record<string, RewardSpec>)[name];
  if (!spec) throw new Error(`builtinReward: unknown reward "${name}"; known: ${Object.keys(BUILTIN_REWARDS).join(', ')}`);
  return spec;
}

/**
 * Makes module paths absolute file: URLs (relative to `cwd`), so that a worker, whose imports
 * resolve from its own file, loads what the caller meant. Package specifiers are left as they are.
 */
export function resolveSpec(spec: RewardSpec, cwd = process.cwd()): RewardSpec {
  if ('combine' in spec) return { combine: spec.combine.map((p) => ({ ...p, spec: resolveSpec(p.spec, cwd) })) };
  if (typeof spec.module !== 'string' || typeof spec.export !== 'string') throw new Error(`resolveSpec: a reward spec needs {module, export} strings, got ${JSON.stringify(spec)}`);
  const m = spec.module;
  const isPath = m.startsWith('.') || isAbsolute(m);
  return { ...spec, module: isPath ? pathToFileURL(resolve(cwd, m)).href : m };
}

/** Imports the spec's module and returns its reward (calling the factory when args are given). */
export async function loadReward(spec: RewardSpec): Promise<Reward> {
  if ('combine' in spec) {
    const parts = await Promise.all(spec.combine.map(async (p) => ({ reward: await loadReward(p.spec), weight: p.weight })));
    return combineRewards(parts);
  }
  if (spec.thread === 'main') throw new Error(`loadReward: ${spec.module}#${spec.export} runs in the trainer's thread (thread: 'main'); score it with RewardScorer, not in a worker`);
  const mod = (await import(spec.module)) as Record<string, unknown>;
  let f = mod[spec.export];
  if (f === undefined) throw new Error(`loadReward: ${spec.module} has no export "${spec.export}" (exports: ${Object.keys(mod).join(', ') || 'none'})`);
  if (spec.args) {
    if (typeof f !== 'function') throw new Error(`loadReward: ${spec.module}#${spec.export} is not a function, so it cannot be a factory`);
    f = await (f as (...a: unknown[]) => unknown)(...spec.args);
  }
  if (typeof f !== 'function') throw new Error(`loadReward: ${spec.module}#${spec.export}${spec.args ? '(...args)' : ''} is ${typeof f}, not a reward function`);
  return f as Reward;
}
