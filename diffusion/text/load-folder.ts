// ClipTokenizer from a diffusers `tokenizer/` folder in any ModelFolder (disk, fetch, memory);
// browser-safe. load-node.ts has the synchronous Node version for a path.

import type { ModelFolder } from '../../engine/io/source.js';
import { ClipTokenizer } from '../tokenizer.js';

/** The files of a tokenizer folder, and whether each is required (SD v1 defaults otherwise). */
export const TOKENIZER_FILES = [
  { name: 'vocab.json', key: 'vocab', required: true },
  { name: 'merges.txt', key: 'merges', required: true },
  { name: 'special_tokens_map.json', key: 'specialTokensMap', required: false },
  { name: 'tokenizer_config.json', key: 'tokenizerConfig', required: false },
] as const;

export type TokenizerTexts = { vocab: string; merges: string; specialTokensMap?: string; tokenizerConfig?: string };

/** Reads a tokenizer folder's files; a missing required one is an Error naming it. */
export async function loadClipTokenizerFrom(folder: ModelFolder): Promise<ClipTokenizer> {
  const texts: Partial<TokenizerTexts> = {};
  for (const f of TOKENIZER_FILES) {
    if (!(await folder.exists(f.name))) {
      if (f.required) throw new Error(`loadClipTokenizer: ${folder.describe(f.name)} not found`);
      continue;
    }
    texts[f.key] = await folder.readText(f.name);
  }
  return new ClipTokenizer(texts as TokenizerTexts);
}
