// Learning a CLIP-format byte-level BPE from a set of texts (the captions of a training set), and
// the four tokenizer files transformers' CLIPTokenizer reads (vocab.json, merges.txt,
// special_tokens_map.json, tokenizer_config.json), written by our code rather than copied from
// CLIP.
//
// The learner is classic BPE (Sennrich et al.) on CLIP's own pre-tokens: each word is its UTF-8
// bytes as CLIP's byte symbols with "</w>" on the last one; the most frequent adjacent pair
// (over all words, weighted by word count) is merged, repeatedly. Ties go to the pair that sorts
// first, so the result depends only on the texts. With zero merges the files are the 514-token
// byte-level vocabulary, which tokenises any text.

import { BYTE_TO_SYMBOL } from './bytes.js';
import { clipPreTokens, clipVocabFromMerges } from '../tokenizer.js';

const END_OF_WORD = '</w>';
const utf8 = new TextEncoder();

export interface LearnBpeOptions {
  /** At most this many merges (default 1000). */
  maxMerges?: number;
  /** Stop when the most frequent pair occurs fewer times than this (default 2). */
  minFrequency?: number;
}

/** A word as BPE symbols: its bytes' symbols, "</w>" appended to the last. */
function wordSymbols(word: string): string[] {
  const s = [...utf8.encode(word)].map((b) => BYTE_TO_SYMBOL[b]!);
  s[s.length - 1] += END_OF_WORD;
  return s;
}

/** The merges ("a b", rank order) BPE learns from `texts`. */
export function learnBpeMerges(texts: readonly string[], opts: LearnBpeOptions = {}): string[] {
  const maxMerges = opts.maxMerges ?? 1000;
  const minFrequency = opts.minFrequency ?? 2;
  if (!Number.isInteger(maxMerges) || maxMerges < 0) throw new Error(`learnBpeMerges: maxMerges ${maxMerges} must be an integer ≥ 0`);
  if (!Number.isInteger(minFrequency) || minFrequency < 1) throw new Error(`learnBpeMerges: minFrequency ${minFrequency} must be an integer ≥ 1`);
  const counts = new Map<string, number>();
  for (const t of texts) for (const w of clipPreTokens(t)) if (w !== '<|startoftext|>' && w !== '<|endoftext|>') counts.set(w, (counts.get(w) ?? 0) + 1);
  const words = [...counts].map(([w, n]) => ({ parts: wordSymbols(w), n }));
  const merges: string[] = [];
  while (merges.length < maxMerges) {
    const pairs = new Map<string, number>();
    for (const { parts, n } of words) for (let i = 0; i + 1 < parts.length; i++) {
      const k = `${parts[i]} ${parts[i + 1]}`;
      pairs.set(k, (pairs.get(k) ?? 0) + n);
    }
    let best = '', bestN = 0;
    for (const [k, n] of pairs) if (n > bestN || (n === bestN && k < best)) { best = k; bestN = n; }
    if (bestN < minFrequency) break;
    merges.push(best);
    const [a, b] = best.split(' ');
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.parts.length; i++) {
        if (w.parts[i] === a && w.parts[i + 1] === b) { out.push(a + b); i++; } else out.push(w.parts[i]);
      }
      w.parts = out;
    }
  }
  return merges;
}

/** The text of each file of a CLIP tokenizer folder, by file name. */
export type TokenizerFiles = Record<'vocab.json' | 'merges.txt' | 'special_tokens_map.json' | 'tokenizer_config.json', string>;

/**
 * CLIP-format tokenizer files for a merge list: the vocabulary as CLIP builds it (bytes, bytes
 * with "</w>", merges, start, end), the merges under CLIP's "#version: 0.2" header, SD v1's special
 * tokens (everything "<|endoftext|>" but the start), and `modelMaxLength` (CLIP's is 77).
 */
export function clipTokenizerFiles(merges: readonly string[], modelMaxLength = 77): TokenizerFiles {
  if (!Number.isInteger(modelMaxLength) || modelMaxLength < 2) throw new Error(`clipTokenizerFiles: modelMaxLength ${modelMaxLength} must be an integer ≥ 2`);
  const special = { content: '', lstrip: false, normalized: true, rstrip: false, single_word: false };
  const tok = (content: string) => ({ ...special, content });
  return {
    'vocab.json': JSON.stringify(clipVocabFromMerges(merges)),
    'merges.txt': ['#version: 0.2', ...merges].join('\n') + '\n',
    'special_tokens_map.json': JSON.stringify({
      bos_token: tok('<|startoftext|>'), eos_token: tok('<|endoftext|>'), pad_token: tok('<|endoftext|>'), unk_token: tok('<|endoftext|>'),
    }, null, 2) + '\n',
    'tokenizer_config.json': JSON.stringify({
      add_prefix_space: false, bos_token: '<|startoftext|>', clean_up_tokenization_spaces: true, do_lower_case: true,
      eos_token: '<|endoftext|>', errors: 'replace', model_max_length: modelMaxLength, pad_token: '<|endoftext|>',
      tokenizer_class: 'CLIPTokenizer', unk_token: '<|endoftext|>',
    }, null, 2) + '\n',
  };
}
