// Prompts for DDPO training: the paper's built-in lists (the 45 common animals of its aesthetic
// and compressibility tasks, the 3 activities of its prompt-alignment task), prompts read from a
// file (the paper's compressibility runs use the first 398 lines of ImageNet's class list), and a
// seeded generator whose state can be saved with a checkpoint so a resumed run draws the same
// prompts it would have drawn.


/** The 45 common animals of the DDPO paper (its simple_animals.txt). */
export const SIMPLE_ANIMALS: readonly string[] = Object.freeze([
  'cat', 'dog', 'horse', 'monkey', 'rabbit', 'zebra', 'spider', 'bird', 'sheep',
  'deer', 'cow', 'goat', 'lion', 'tiger', 'bear', 'raccoon', 'fox', 'wolf',
  'lizard', 'beetle', 'ant', 'butterfly', 'fish', 'shark', 'whale', 'dolphin', 'squirrel',
  'mouse', 'rat', 'snake', 'turtle', 'frog', 'chicken', 'duck', 'goose', 'bee',
  'pig', 'turkey', 'fly', 'llama', 'camel', 'bat', 'gorilla', 'hedgehog', 'kangaroo',
]);

/** The 3 activities of the paper's prompt-alignment task (its activities.txt). */
export const ACTIVITIES: readonly string[] = Object.freeze([
  'washing the dishes', 'riding a bike', 'playing chess',
]);

/** Serialisable state of a PromptRng. */
export interface PromptRngState {
  algorithm: 'mulberry32';
  state: number;
}

/**
 * A small deterministic generator (mulberry32: 32 bits of state, which fit in JSON exactly) for
 * choosing prompts. Not for anything needing statistical strength beyond picking list items.
 */
export class PromptRng {
  private s: number;
  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new Error(`PromptRng: seed ${seed} is not a finite number`);
    this.s = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    if (!Number.isInteger(n) || n < 1) throw new Error(`PromptRng.int: n = ${n} must be an integer >= 1`);
    return Math.floor(this.next() * n);
  }

  /** A uniformly chosen item. */
  choice<T>(items: readonly T[]): T {
    if (!items.length) throw new Error('PromptRng.choice: empty list');
    return items[this.int(items.length)];
  }

  getState(): PromptRngState {
    return { algorithm: 'mulberry32', state: this.s };
  }

  toJSON(): PromptRngState {
    return this.getState();
  }

  static fromState(st: PromptRngState): PromptRng {
    if (!st || st.algorithm !== 'mulberry32' || !Number.isInteger(st.state) || st.state < 0 || st.state > 0xffffffff) {
      throw new Error(`PromptRng.fromState: not a mulberry32 state: ${JSON.stringify(st)}`);
    }
    const r = new PromptRng(0);
    r.s = st.state;
    return r;
  }
}

export interface PromptSample {
  prompt: string;
  /** Per-sample metadata handed to rewards with the prompt. */
  metadata: Record<string, unknown>;
}

/** Draws one prompt. */
export type PromptFn = (rng: PromptRng) => PromptSample;

/**
 * "a" or "an" for a word by its first sound: vowel letters take "an", except words starting with
 * a "you"/"w" sound (unicorn, user, ukulele, euro, ewe, one); a few silent-h words take "an" (hour,
 * honest, honour/honor, heir). A heuristic covering common nouns, not a pronunciation dictionary.
 */
export function indefiniteArticle(word: string): 'a' | 'an' {
  const w = word.trim().toLowerCase();
  if (/^(hour|honest|honou?r|heir)/.test(w)) return 'an';
  if (/^(uni|use|usu|uten|uti|uk|eu|ewe|one\b|once)/.test(w)) return 'a';
  return /^[aeiou]/.test(w) ? 'an' : 'a';
}

/** "a dog", "an ant". */
export function withArticle(noun: string): string {
  return `${indefiniteArticle(noun)} ${noun}`;
}

/** One of the paper's 45 animals, as the prompt itself (e.g. "zebra"). */
export const simpleAnimals: PromptFn = (rng) => ({ prompt: rng.choice(SIMPLE_ANIMALS), metadata: {} });

/** "a(n) ANIMAL ACTIVITY" over the 45 animals and 3 activities (e.g. "an ant riding a bike"). */
export const animalActivities: PromptFn = (rng) => {
  const animal = rng.choice(SIMPLE_ANIMALS);
  const activity = rng.choice(ACTIVITIES);
  return { prompt: `${withArticle(animal)} ${activity}`, metadata: { animal, activity } };
};

export interface LineRange {
  /** First line (0-based, default 0). */
  from?: number;
  /** One past the last line (default: all). */
  to?: number;
}

/** Draws uniformly among lines [from, to) of a list, each whole line (trimmed) a prompt. */
export function promptsFromLines(lines: readonly string[], range: LineRange = {}, source = 'prompt list'): PromptFn {
  const from = range.from ?? 0;
  const to = range.to ?? lines.length;
  if (!Number.isInteger(from) || !Number.isInteger(to) || from < 0 || to > lines.length || from >= to) {
    throw new Error(`promptsFromLines: lines [${from}, ${to}) of ${source} (${lines.length} lines) is not a non-empty range`);
  }
  const chosen = lines.slice(from, to).map((l) => l.trim());
  const blank = chosen.findIndex((l) => !l);
  if (blank >= 0) throw new Error(`promptsFromLines: line ${from + blank + 1} of ${source} is blank`);
  return (rng) => ({ prompt: rng.choice(chosen), metadata: {} });
}

/** The built-in prompt functions by the names the DDPO reference code uses. */
export const BUILTIN_PROMPTS: Readonly<Record<string, PromptFn>> = Object.freeze({
  simple_animals: simpleAnimals,
  animal_activities: animalActivities,
});

/** n prompts (and their metadata) drawn in order from rng. */
export function samplePrompts(fn: PromptFn, rng: PromptRng, n: number): { prompts: string[]; metadata: Record<string, unknown>[] } {
  const prompts: string[] = [];
  const metadata: Record<string, unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const s = fn(rng);
    prompts.push(s.prompt);
    metadata.push(s.metadata);
  }
  return { prompts, metadata };
}
