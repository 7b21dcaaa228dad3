// The built-in rewards' specs by the names the DDPO reference code uses (no Node here: the run
// config and the browser page name rewards with them; rewards/load.ts imports them in workers).

import type { RewardSpec } from './types.js';

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

