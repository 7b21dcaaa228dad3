// Node-only loaders for ClipTokenizer (kept apart so diffusion/tokenizer.ts stays browser-safe).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { ClipTokenizer } from '../tokenizer.js';

/**
 * From a diffusers `tokenizer/` folder: vocab.json and merges.txt (required),
 * special_tokens_map.json and tokenizer_config.json (optional; SD v1 defaults when absent).
 */
export function loadClipTokenizer(dir: string): ClipTokenizer {
  const read = (name: string, required: boolean): string | undefined => {
    const p = join(dir, name);
    if (!existsSync(p)) {
      if (required) throw new Error(`loadClipTokenizer: ${p} not found`);
      return undefined;
    }
    return readFileSync(p, 'utf8');
  };
  return new ClipTokenizer({
    vocab: read('vocab.json', true)!,
    merges: read('merges.txt', true)!,
    specialTokensMap: read('special_tokens_map.json', false),
    tokenizerConfig: read('tokenizer_config.json', false),
  });
}

/** From OpenAI's bpe_simple_vocab_16e6.txt.gz (or the plain .txt). */
export function loadOpenAIClipTokenizer(path: string): ClipTokenizer {
  const raw = readFileSync(path);
  const text = (path.endsWith('.gz') ? gunzipSync(raw) : raw).toString('utf8');
  return ClipTokenizer.fromOpenAIBpe(text);
}
