// Per-part reward values of a combine reward across batches (no Node: the trainer core uses it).

import type { PartScores, Scored } from './scorer.js';

/** The parts of several batches' results, concatenated in batch order (undefined for a single reward). */
export function concatParts(batches: readonly Scored[]): PartScores[] | undefined {
  const first = batches.find((b) => b.parts)?.parts;
  if (!first) return undefined;
  return first.map((p, k) => ({ name: p.name, weight: p.weight, rewards: batches.flatMap((b) => b.parts?.[k]?.rewards ?? new Array<number>(b.rewards.length).fill(NaN)) }));
}
