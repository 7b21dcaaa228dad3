// Node-only loaders for ClipTokenizer (kept apart so diffusion/tokenizer.ts stays browser-safe).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { ClipTokenizer } from '../tokenizer.js';
import { TOKENIZER_FILES, TokenizerTexts } from './load-folder.js';

/**
 * From a diffusers `tokenizer/` folder: vocab.json and merges.txt (required),
 * special_tokens_map.json and tokenizer_config.json (optional; SD v1 defaults when absent).
 */
export function loadClipTokenizer(dir: string): ClipTokenizer {
  const texts: Partial<TokenizerTexts> = {};
  for (const f of TOKENIZER_FILES) {
    const p = join(dir, f.name);
    if (!existsSync(p)) {
      if (f.required) throw new Error(`loadClipTokenizer: ${p} not found`);
      continue;
    }
    texts[f.key] = readFileSync(p, 'utf8');
  }
  return new ClipTokenizer(texts as TokenizerTexts);
}

/** From OpenAI's bpe_simple_vocab_16e6.txt.gz (or the plain .txt). */
export function loadOpenAIClipTokenizer(path: string): ClipTokenizer {
  const raw = readFileSync(path);
  const text = (path.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8');
  return ClipTokenizer.fromOpenAIBpe(text);
}
