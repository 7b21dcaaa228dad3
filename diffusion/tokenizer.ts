// CLIP's byte-level BPE tokenizer (the text side of Stable Diffusion), runtime-neutral: it takes
// the tokenizer files as strings so it works in browsers; diffusion/text/load-node.ts reads them
// from a diffusers `tokenizer/` folder.
//
// Text clean-up follows OpenAI's CLIP `SimpleTokenizer` (the reference ids in
// shared/reference/clip_tokenizer_cases.json come from it):
//   1. HTML character references decoded twice (Python's html.unescape rules; named references
//      are a documented subset, see text/html.ts);
//   2. Unicode NFC (what ftfy.fix_text, when installed, and transformers' BasicTokenizer both do;
//      without it "é" typed as e + U+0301 would tokenise differently from the precomposed "é");
//   3. every run of whitespace (Python's str.isspace set: tabs, newlines, U+001C–U+001F, NBSP,
//      ideographic space, ...) becomes one space; leading/trailing space removed;
//   4. lower-cased.
// Deliberately NOT done: ftfy's other repairs (mojibake, curly quotes → straight), accent
// stripping (the cases keep accents: "résumé" ≠ "resume"), and transformers-without-ftfy's
// BasicTokenizer extras (dropping control/format characters, spacing out CJK characters).
// Pre-tokenising uses CLIP's pattern; "<|startoftext|>" / "<|endoftext|>" written in the text
// become the special ids (as both OpenAI and transformers do).

import { htmlUnescape } from './text/html.js';
import { BYTE_ORDER, BYTE_TO_SYMBOL, SYMBOL_TO_BYTE } from './text/bytes.js';

/** A special-token entry as written in special_tokens_map.json: a string or {content: ...}. */
export type SpecialToken = string | { content: string };

export interface SpecialTokensMap {
  bos_token?: SpecialToken;
  eos_token?: SpecialToken;
  pad_token?: SpecialToken;
  unk_token?: SpecialToken;
}

export interface ClipTokenizerFiles {
  /** vocab.json: its text, or the parsed token → id object. */
  vocab: string | Record<string, number>;
  /** merges.txt text; a first line starting with "#version" is skipped. */
  merges: string;
  /** special_tokens_map.json (text or parsed); default: SD v1's (everything "<|endoftext|>"). */
  specialTokensMap?: string | SpecialTokensMap;
  /** tokenizer_config.json (text or parsed); only model_max_length (default 77) is used. */
  tokenizerConfig?: string | { model_max_length?: number };
}

export interface EncodeBatchOptions {
  /** Sequence length including start and end tokens; default the tokenizer's modelMaxLength (77). */
  maxLength?: number;
  /** 'max_length' pads every row to maxLength; 'longest' to the longest row (at most maxLength). */
  padding?: 'max_length' | 'longest';
  /** Keep start, the first maxLength − 2 tokens and end; when false an overlong prompt throws. */
  truncation?: boolean;
}

export interface EncodedBatch {
  /** Row-major [batch, length] token ids, padded with padId. */
  ids: Int32Array;
  /** [batch, length]: 1 for real tokens (start and end included), 0 for padding. */
  attentionMask: Int32Array;
  /** Real tokens per row, start and end included (the end token sits at lengths[i] − 1). */
  lengths: Int32Array;
  batch: number;
  length: number;
}

const START_TEXT = '<|startoftext|>';
const END_TEXT = '<|endoftext|>';
const END_OF_WORD = '</w>';

// Python's str.isspace set (what CLIP's `re.sub(r'\s+', ' ', ...)` collapses): Unicode White_Space
// plus the information separators U+001C–U+001F, which JS's \s lacks (and JS's \s adds U+FEFF,
// which Python keeps as a character).
const PY_WHITESPACE_RUN = /[\p{White_Space}\x1c-\x1f]+/gu;
// CLIP's pre-tokenising pattern. The `regex` module's \s inside the last class is White_Space.
// Case-insensitive as in CLIP (the text is lower-cased already, but e.g. "'ſ" still matches 's).
const PRETOKENIZE =
  /<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|\p{L}+|\p{N}|[^\p{White_Space}\p{L}\p{N}]+/giu;

/** A cached word's BPE result is small; this cap only bounds memory over endless random prompts. */
const CACHE_LIMIT = 50_000;
const utf8 = new TextEncoder();

function parseJson<T>(v: string | T, what: string): T {
  if (typeof v !== 'string') return v;
  try {
    return JSON.parse(v) as T;
  } catch (e) {
    throw new Error(`ClipTokenizer: ${what} is not valid JSON (${(e as Error).message})`);
  }
}

function tokenText(t: SpecialToken | undefined): string | undefined {
  if (t === undefined || t === null) return undefined;
  return typeof t === 'string' ? t : t.content;
}

/** Clean-up CLIP applies before pre-tokenising (see the header for each step). */
export function clipCleanText(text: string): string {
  let t = htmlUnescape(htmlUnescape(text));
  t = t.normalize('NFC');
  // Only ' ' can remain at the ends now; String.trim would also strip U+FEFF, which CLIP keeps.
  t = t.replace(PY_WHITESPACE_RUN, ' ');
  if (t.startsWith(' ')) t = t.slice(1);
  if (t.endsWith(' ')) t = t.slice(0, -1);
  return t.toLowerCase();
}

/**
 * CLIP's vocabulary for a merge list ("a b" lines in rank order): the 256 byte symbols, the same
 * with "</w>", one token per merge, then the start and end tokens. With no merges it is the
 * 514-token byte-level vocabulary (every byte a token).
 */
export function clipVocabFromMerges(merges: readonly string[]): Record<string, number> {
  const symbols = BYTE_ORDER.map((b) => BYTE_TO_SYMBOL[b]!);
  const tokens = [...symbols, ...symbols.map((s) => s + END_OF_WORD), ...merges.map((m) => m.replace(' ', '')), START_TEXT, END_TEXT];
  const vocab: Record<string, number> = {};
  tokens.forEach((t, i) => { vocab[t] = i; });
  return vocab;
}

/** The pre-tokens BPE runs on: the cleaned text split by CLIP's pattern (a BPE learner needs the same split). */
export function clipPreTokens(text: string): string[] {
  return [...clipCleanText(text).matchAll(PRETOKENIZE)].map((m) => m[0]);
}

export class ClipTokenizer {
  readonly vocabSize: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  /** Used only for a BPE symbol missing from the vocabulary (never with CLIP's own files). */
  readonly unkId: number;
  readonly modelMaxLength: number;

  private readonly encoder: Map<string, number>;
  private readonly decoder: string[];
  /** "first second" → merge rank (line order in merges.txt). */
  private readonly ranks: Map<string, number>;
  private readonly specialIds: Set<number>;
  private readonly cache = new Map<string, number[]>();

  constructor(files: ClipTokenizerFiles) {
    const vocab = parseJson<Record<string, number>>(files.vocab, 'vocab.json');
    this.encoder = new Map(Object.entries(vocab));
    this.decoder = [];
    for (const [tok, id] of this.encoder) this.decoder[id] = tok;
    this.vocabSize = this.decoder.length;

    this.ranks = new Map();
    const lines = files.merges.split(/\r?\n/);
    let rank = 0;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      if ((i === 0 && line.startsWith('#version')) || line.trim() === '') continue;
      const parts = line.split(' ');
      if (parts.length !== 2) throw new Error(`ClipTokenizer: merges.txt line ${i + 1} is not "a b": ${JSON.stringify(line)}`);
      // A repeated pair keeps its first (lowest) rank.
      if (!this.ranks.has(line)) this.ranks.set(line, rank);
      rank++;
    }

    const special = parseJson<SpecialTokensMap>(files.specialTokensMap ?? {}, 'special_tokens_map.json');
    const config = parseJson<{ model_max_length?: number }>(files.tokenizerConfig ?? {}, 'tokenizer_config.json');
    const id = (name: string, tok: string): number => {
      const v = this.encoder.get(tok);
      if (v === undefined) throw new Error(`ClipTokenizer: ${name} ${JSON.stringify(tok)} is not in vocab.json`);
      return v;
    };
    this.bosId = id('start token', START_TEXT);
    this.eosId = id('end token', END_TEXT);
    this.padId = id('pad token', tokenText(special.pad_token) ?? END_TEXT);
    this.unkId = id('unk token', tokenText(special.unk_token) ?? END_TEXT);
    const mml = config.model_max_length;
    // transformers writes a huge sentinel when a model has no limit; CLIP's is 77.
    this.modelMaxLength = typeof mml === 'number' && Number.isInteger(mml) && mml >= 2 && mml <= 1e6 ? mml : 77;
    this.specialIds = new Set([this.bosId, this.eosId]);
    // The special texts bypass BPE (CLIP seeds its cache the same way).
    this.cache.set(START_TEXT, [this.bosId]);
    this.cache.set(END_TEXT, [this.eosId]);
  }

  /**
   * From OpenAI's bpe_simple_vocab_16e6.txt (decompressed): CLIP uses its first 48894 merges and
   * builds the vocabulary as 256 byte symbols, the same with "</w>", one token per merge, then
   * the start and end tokens (49408 in all) — identical to the vocab.json diffusers ships.
   */
  static fromOpenAIBpe(bpeText: string, specialTokensMap?: string | SpecialTokensMap): ClipTokenizer {
    const lines = bpeText.split('\n');
    const merges = lines.slice(1, 49152 - 256 - 2 + 1);
    const vocab = clipVocabFromMerges(merges);
    // OpenAI's first line ('"bpe_simple_vocab_16e6.txt#version: 0.2') is replaced by a standard
    // header, which keeps merges.txt line numbers in errors equal to the original file's.
    return new ClipTokenizer({ vocab, merges: ['#version: 0.2', ...merges].join('\n'), specialTokensMap });
  }

  /** BPE of one pre-token (its UTF-8 bytes as symbols); returns vocabulary ids. */
  private bpe(word: string): number[] {
    const hit = this.cache.get(word);
    if (hit) return hit;
    const symbols: string[] = [];
    for (const b of utf8.encode(word)) symbols.push(BYTE_TO_SYMBOL[b]!);
    symbols[symbols.length - 1] += END_OF_WORD;
    let parts = symbols;
    // Repeatedly merge the lowest-ranked adjacent pair everywhere it occurs (left to right,
    // non-overlapping), until no adjacent pair is a known merge.
    while (parts.length > 1) {
      let best = Infinity;
      let first = '';
      let second = '';
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = this.ranks.get(parts[i]! + ' ' + parts[i + 1]!);
        if (r !== undefined && r < best) { best = r; first = parts[i]!; second = parts[i + 1]!; }
      }
      if (best === Infinity) break;
      const merged: string[] = [];
      for (let i = 0; i < parts.length; i++) {
        if (parts[i] === first && i + 1 < parts.length && parts[i + 1] === second) {
          merged.push(first + second);
          i++;
        } else {
          merged.push(parts[i]!);
        }
      }
      parts = merged;
    }
    const ids = parts.map((p) => this.encoder.get(p) ?? this.unkId);
    if (this.cache.size >= CACHE_LIMIT) {
      this.cache.clear();
      this.cache.set(START_TEXT, [this.bosId]);
      this.cache.set(END_TEXT, [this.eosId]);
    }
    this.cache.set(word, ids);
    return ids;
  }

  /** The vocabulary entry of an id (e.g. "cat</w>"), or undefined. */
  idToToken(id: number): string | undefined {
    return this.decoder[id];
  }

  /** The id of a vocabulary entry, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.encoder.get(token);
  }

  /** Token ids of `text` without start/end tokens. */
  encodeRaw(text: string): number[] {
    const out: number[] = [];
    for (const w of clipPreTokens(text)) {
      for (const id of this.bpe(w)) out.push(id);
    }
    return out;
  }

  /** Token strings (vocabulary entries) of `text`, without start/end: for inspection. */
  tokenize(text: string): string[] {
    return this.encodeRaw(text).map((id) => this.decoder[id]!);
  }

  /** Ids with the start and end tokens, neither truncated nor padded. */
  encode(text: string): number[] {
    return [this.bosId, ...this.encodeRaw(text), this.eosId];
  }

  /** A batch as flat [n, length] ids and attention mask (SD conditioning input). */
  encodeBatch(texts: readonly string[], opts: EncodeBatchOptions = {}): EncodedBatch {
    const maxLength = opts.maxLength ?? this.modelMaxLength;
    const padding = opts.padding ?? 'max_length';
    const truncation = opts.truncation ?? true;
    if (!Number.isInteger(maxLength) || maxLength < 2) {
      throw new Error(`ClipTokenizer.encodeBatch: maxLength must be an integer ≥ 2 (start + end), got ${maxLength}`);
    }
    if (padding !== 'max_length' && padding !== 'longest') {
      throw new Error(`ClipTokenizer.encodeBatch: padding must be 'max_length' or 'longest', got ${String(padding)}`);
    }
    const rows = texts.map((t, i) => {
      let body = this.encodeRaw(t);
      if (body.length + 2 > maxLength) {
        if (!truncation) {
          throw new Error(`ClipTokenizer.encodeBatch: text ${i} has ${body.length + 2} tokens (start and end included), ` +
            `more than maxLength ${maxLength}, and truncation is off`);
        }
        body = body.slice(0, maxLength - 2);
      }
      return [this.bosId, ...body, this.eosId];
    });
    const length = padding === 'max_length' ? maxLength : rows.reduce((m, r) => Math.max(m, r.length), 0);
    const n = rows.length;
    const ids = new Int32Array(n * length).fill(this.padId);
    const attentionMask = new Int32Array(n * length);
    const lengths = new Int32Array(n);
    rows.forEach((r, i) => {
      ids.set(r, i * length);
      attentionMask.fill(1, i * length, i * length + r.length);
      lengths[i] = r.length;
    });
    return { ids, attentionMask, lengths, batch: n, length };
  }

  /**
   * Text back from ids, for debugging: symbols back to bytes, UTF-8 decoded (bad sequences become
   * U+FFFD), each "</w>" a space, the ends trimmed. Start/end tokens are dropped unless
   * skipSpecialTokens is false; with SD 2's "!" padding, strip the padding first (see lengths).
   */
  decode(ids: ArrayLike<number>, opts: { skipSpecialTokens?: boolean } = {}): string {
    const skip = opts.skipSpecialTokens ?? true;
    const pieces: string[] = [];
    const bytes: number[] = [];
    const flush = (): void => {
      if (bytes.length) pieces.push(new TextDecoder().decode(new Uint8Array(bytes)));
      bytes.length = 0;
    };
    for (let k = 0; k < ids.length; k++) {
      const id = ids[k]!;
      const tok = this.decoder[id];
      if (tok === undefined) throw new Error(`ClipTokenizer.decode: id ${id} is outside the vocabulary (size ${this.vocabSize})`);
      if (this.specialIds.has(id)) {
        if (!skip) { flush(); pieces.push(tok); }
        continue;
      }
      const eow = tok.endsWith(END_OF_WORD);
      const body = eow ? tok.slice(0, -END_OF_WORD.length) : tok;
      for (const ch of body) {
        const b = SYMBOL_TO_BYTE.get(ch);
        if (b === undefined) throw new Error(`ClipTokenizer.decode: token ${JSON.stringify(tok)} has a non-byte symbol`);
        bytes.push(b);
      }
      if (eow) bytes.push(0x20);
    }
    flush();
    return pieces.join('').trim();
  }
}
