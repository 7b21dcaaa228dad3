// The trainer's host-side random streams. Each concern (prompt choice, sample shuffles, timestep
// permutations, RWR's timesteps) has its own small generator, so that a resumed run draws
// exactly what an uninterrupted one would, and changing one concern (say, timestep_fraction)
// does not shift the draws of another. The generator is PromptRng (mulberry32, 32 bits of state
// that JSON stores exactly); GPU noise comes from Philox streams addressed by counters instead.

import { PromptRng } from './prompts.js';

/**
 * A 32-bit seed for stream `stream` of a run seeded `seed` (a murmur3-style finaliser over both,
 * so neighbouring seeds and streams give unrelated generators).
 */
export function deriveSeed(seed: number, stream: number): number {
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`deriveSeed: seed ${seed} must be a non-negative integer`);
  let h = (Math.floor(seed / 2 ** 32) ^ Math.imul(stream + 1, 0x9e3779b1)) >>> 0;
  h = (h ^ (seed >>> 0)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** A uniformly random permutation of 0 … n−1 (Fisher–Yates, n − 1 draws). */
export function permutation(rng: PromptRng, n: number): number[] {
  if (!Number.isInteger(n) || n < 0) throw new Error(`permutation: n = ${n} must be a non-negative integer`);
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i]; p[i] = p[j]; p[j] = t;
  }
  return p;
}

export { PromptRng };
