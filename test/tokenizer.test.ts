// CLIP tokenizer: the 18 reference prompts (OpenAI's tokenizer ids) exactly, the vocabulary rebuilt
// from OpenAI's bpe_simple_vocab_16e6.txt.gz equal to diffusers' vocab.json, truncation/padding to
// 77 with SD v1's ("<|endoftext|>") and SD 2's ("!") pad conventions, decode round trips, a speed
// check, plus file-free checks on a tiny hand-made merge table (BPE rank order, non-overlapping
// merges, unknown symbols) and of the text clean-up (HTML references as Python's html.unescape,
// Python's whitespace set, NFC). Real-file tests skip with a message when ../shared is absent.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ClipTokenizer, clipCleanText } from '../diffusion/tokenizer.js';
import { htmlUnescape } from '../diffusion/text/html.js';
import { loadClipTokenizer, loadOpenAIClipTokenizer } from '../diffusion/text/load-node.js';
import { SHARED_DIR } from './helpers.js';

const s = suite('tokenizer');

const shared = SHARED_DIR;
const tokDir = join(shared, 'reference', 'tiny-sd-pipe', 'tokenizer');
const casesPath = join(shared, 'reference', 'clip_tokenizer_cases.json');
const openaiBpe = join(shared, 'clip', 'bpe_simple_vocab_16e6.txt.gz');
const haveReal = existsSync(join(tokDir, 'vocab.json')) && existsSync(casesPath);

// Loaded once: parsing the 1 MB vocabulary takes a few hundred ms.
const real = haveReal ? loadClipTokenizer(tokDir) : undefined;
const cases: Record<string, number[]> = haveReal
  ? (JSON.parse(readFileSync(casesPath, 'utf8')) as { ids: Record<string, number[]> }).ids : {};
const LONG = Object.keys(cases).find((k) => cases[k]!.length > 77);

function skipped(what: string): boolean {
  if (real) return false;
  console.log(`  (skipped: ${what}: ${tokDir} or ${casesPath} not found)`);
  return true;
}

function ids(a: ArrayLike<number>, from = 0, to = a.length): number[] {
  return Array.from(a).slice(from, to);
}

// ---- real CLIP files -----------------------------------------------------------------------

s('the 18 reference prompts give exactly OpenAI CLIP ids', () => {
  if (skipped('reference cases')) return;
  const keys = Object.keys(cases);
  assert.is(keys.length, 18);
  for (const k of keys) assert.equal(real!.encode(k), cases[k], `prompt ${JSON.stringify(k)}`);
  assert.is(real!.bosId, 49406);
  assert.is(real!.eosId, 49407);
  assert.is(real!.padId, 49407);
  assert.is(real!.modelMaxLength, 77);
  assert.is(real!.vocabSize, 49408);
});

s('vocabulary built from OpenAI bpe_simple_vocab_16e6.txt.gz equals vocab.json', () => {
  if (skipped('OpenAI bpe')) return;
  if (!existsSync(openaiBpe)) { console.log(`  (skipped: ${openaiBpe} not found)`); return; }
  const fromGz = loadOpenAIClipTokenizer(openaiBpe);
  const vocab = JSON.parse(readFileSync(join(tokDir, 'vocab.json'), 'utf8')) as Record<string, number>;
  assert.is(fromGz.vocabSize, Object.keys(vocab).length);
  let same = 0;
  for (const [tok, id] of Object.entries(vocab)) if (fromGz.tokenToId(tok) === id && real!.idToToken(id) === tok) same++;
  assert.is(same, Object.keys(vocab).length);
  for (const k of Object.keys(cases)) assert.equal(fromGz.encode(k), cases[k], `prompt ${JSON.stringify(k)}`);
});

s('encodeBatch: truncation keeps start + first 75 + end; SD v1 pads with <|endoftext|>', () => {
  if (skipped('batch')) return;
  const short = 'a cat';
  const b = real!.encodeBatch([LONG!, short, '']);
  assert.is(b.batch, 3);
  assert.is(b.length, 77);
  assert.is(b.ids.length, 3 * 77);
  const full = cases[LONG!]!;
  assert.ok(full.length > 77);
  assert.equal(ids(b.ids, 0, 77), [...full.slice(0, 76), 49407]);
  assert.equal(ids(b.attentionMask, 0, 77), new Array(77).fill(1));
  assert.equal(ids(b.ids, 77, 77 + 4), cases[short]);
  assert.equal(ids(b.ids, 77 + 4, 154), new Array(73).fill(49407));
  assert.equal(ids(b.attentionMask, 77, 154), [1, 1, 1, 1, ...new Array(73).fill(0)]);
  assert.equal(ids(b.ids, 154, 156), [49406, 49407]);
  assert.equal(ids(b.lengths), [77, 4, 2]);
  // The README's text-encoder inputs: "a dog riding a bike", "a cat" padded with 49407.
  const r = real!.encodeBatch(['a dog riding a bike', 'a cat']);
  assert.equal(ids(r.ids, 0, 8), [49406, 320, 1929, 6765, 320, 3701, 49407, 49407]);
});

s('encodeBatch: SD 2 convention pads with "!" (id 0); longest padding; truncation off throws', () => {
  if (skipped('SD2 padding')) return;
  const sd2 = new ClipTokenizer({
    vocab: readFileSync(join(tokDir, 'vocab.json'), 'utf8'),
    merges: readFileSync(join(tokDir, 'merges.txt'), 'utf8'),
    specialTokensMap: {
      bos_token: { content: '<|startoftext|>' }, eos_token: { content: '<|endoftext|>' },
      pad_token: '!', unk_token: { content: '<|endoftext|>' },
    },
    tokenizerConfig: '{"model_max_length": 77}',
  });
  assert.is(sd2.padId, 0);
  const b = sd2.encodeBatch(['a cat', LONG!]);
  assert.equal(ids(b.ids, 0, 77), [...cases['a cat']!, ...new Array(73).fill(0)]);
  assert.equal(ids(b.attentionMask, 0, 6), [1, 1, 1, 1, 0, 0]);
  assert.equal(ids(b.ids, 77, 154), [...cases[LONG!]!.slice(0, 76), 49407]);
  // Padding only to the longest row; a custom maxLength truncates to start + 3 + end.
  const l = sd2.encodeBatch(['a cat', 'a dog riding a bike'], { padding: 'longest' });
  assert.is(l.length, 7);
  assert.equal(ids(l.ids), [49406, 320, 2368, 49407, 0, 0, 0, 49406, 320, 1929, 6765, 320, 3701, 49407]);
  const t = sd2.encodeBatch(['a dog riding a bike'], { maxLength: 5 });
  assert.equal(ids(t.ids), [49406, 320, 1929, 6765, 49407]);
  assert.throws(() => sd2.encodeBatch([LONG!], { truncation: false }), /truncation is off/);
  assert.throws(() => sd2.encodeBatch(['a'], { maxLength: 1 }), /maxLength/);
  // Padding decodes as "!" unless cut off by lengths first.
  assert.is(sd2.decode(b.ids.subarray(0, b.lengths[0]!)), 'a cat');
});

s('decode round trip on plain text', () => {
  if (skipped('decode')) return;
  for (const text of ['a photo of an astronaut riding a horse on mars', 'two dogs', 'naïve résumé café',
    'zzzzzzzzzzzzzzzz', 'an elephant washing the dishes', 'photorealistic sunset over snowy mountains']) {
    assert.is(real!.decode(real!.encode(text)), text);
  }
  // Tokens are words, so capitals/whitespace come back normalised and punctuation spaced.
  assert.is(real!.decode(real!.encode('  A   LLAMA\tPlaying\nChess ')), 'a llama playing chess');
  assert.is(real!.decode(real!.encode('a cat'), { skipSpecialTokens: false }), '<|startoftext|>a cat <|endoftext|>');
  assert.throws(() => real!.decode([49408]), /outside the vocabulary/);
});

s('speed: 1000 prompts tokenised in under 1 s', () => {
  if (skipped('speed')) return;
  const fresh = loadClipTokenizer(tokDir); // cold word cache
  const words = ['a', 'photo', 'of', 'an', 'astronaut', 'riding', 'horse', 'on', 'mars', 'dog', 'cat',
    'oil', 'painting', 'sunset', 'trending', 'artstation', 'highly', 'detailed', '4k', 'octane'];
  let seed = 1;
  const rand = (n: number): number => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  const prompts = Array.from({ length: 1000 }, (_, i) =>
    Array.from({ length: 8 + rand(12) }, () => words[rand(words.length)]).join(' ') + ` #${i}, v${i * 7}!`);
  const t0 = performance.now();
  const b = fresh.encodeBatch(prompts);
  const ms = performance.now() - t0;
  assert.is(b.ids.length, 1000 * 77);
  assert.ok(ms < 1000, `1000 prompts took ${ms.toFixed(0)} ms`);
});

// ---- file-free: a tiny merge table ----------------------------------------------------------

/** A vocabulary as CLIP builds it (bytes, bytes + </w>, one token per merge, specials). */
function tiny(merges: string[], special?: object): ClipTokenizer {
  return ClipTokenizer.fromOpenAIBpe(['#version: test', ...merges].join('\n'), special);
}

s('BPE: merges by rank, non-overlapping left to right, </w> on the last symbol', () => {
  const t = tiny(['a a', 'aa aa', 'b c</w>', 'a b']);
  // a,a,a,a,a</w> → aa,aa,a</w> → aaaa,a</w> (an overlapping merge would give something else).
  assert.equal(t.tokenize('aaaaa'), ['aaaa', 'a</w>']);
  // "b c</w>" ranks before "a b": abc → a, bc</w>.
  assert.equal(t.tokenize('abc'), ['a', 'bc</w>']);
  const u = tiny(['a b', 'b c</w>']);
  assert.equal(u.tokenize('abc'), ['ab', 'c</w>']);
  // Non-ASCII letters go through their UTF-8 bytes: é = C3 A9 → "Ã" + "©</w>".
  assert.equal(t.tokenize('é'), ['Ã', '©</w>']);
  assert.is(t.vocabSize, 512 + 4 + 2);
  assert.equal(t.encode('<|endoftext|>'), [t.bosId, t.eosId, t.eosId]);
  assert.is(t.decode(t.encode('aaaaa abc é')), 'aaaaa abc é');
  // Pre-tokens: contractions, single digits, punctuation runs, specials.
  assert.equal(t.tokenize("it's 42!?"), ['i', 't</w>', "'", 's</w>', '4</w>', '2</w>', '!', '?</w>']);
  // A BPE result missing from the vocabulary falls back to the unk token.
  const sparse = new ClipTokenizer({
    vocab: { 'a</w>': 0, '<|startoftext|>': 1, '<|endoftext|>': 2 }, merges: '#version: 0.2\n',
  });
  assert.equal(sparse.encode('a b'), [1, 0, 2, 2]);
  assert.throws(() => new ClipTokenizer({ vocab: {}, merges: '' }), /start token/);
  assert.throws(() => new ClipTokenizer({ vocab: '{bad', merges: '' }), /vocab\.json/);
  assert.throws(() => tiny(['a b c']), /merges\.txt line 2/);
});

s('clean-up: HTML references decoded twice as Python html.unescape, whitespace, NFC, lower', () => {
  // Expected values computed by Python 3's html.unescape.
  const py: [string, string, string][] = [
    ['&amp;lt;', '&lt;', '<'], ['&amp;amp;', '&amp;', '&'], ['&#39;&#x41;&#65', "'AA", "'AA"],
    ['&#128;&#x81;&#0;&#13;', '\u20ac\u0081\ufffd\r', '\u20ac\u0081\ufffd\r'],
    ['&#xD800;&#99999999999;&#1;&#xFFFE;&#x1FFFF;', '\ufffd\ufffd', '\ufffd\ufffd'],
    ['&eacute;&eacutex&copy2&notit;&COPY;&Copy;', 'ééx©2¬it;©&Copy;', 'ééx©2¬it;©&Copy;'],
    ['&hellip;&mdash;&bogus;&ampx&amp&Alpha;&sigmaf;&apos;', '\u2026\u2014&bogus;&x&\u0391\u03c2\'',
      '\u2026\u2014&bogus;&x&\u0391\u03c2\''],
    ['& &# &#x; &;', '& &# &#x; &;', '& &# &#x; &;'], ['caf&#233; &nbsp;x', 'café \u00a0x', 'café \u00a0x'],
    ['&' + 'a'.repeat(40) + ';', '&' + 'a'.repeat(40) + ';', '&' + 'a'.repeat(40) + ';'],
  ];
  for (const [input, once, twice] of py) {
    assert.is(htmlUnescape(input), once, `unescape ${JSON.stringify(input)}`);
    assert.is(htmlUnescape(htmlUnescape(input)), twice, `unescape twice ${JSON.stringify(input)}`);
  }
  // Python's str.isspace set (incl. U+001C and U+0085, U+3000) collapses; U+FEFF is kept.
  assert.is(clipCleanText(' \tA\x1cB\x85C\u3000\u00a0D\n\n'), 'a b c d');
  assert.is(clipCleanText('\ufeffX\ufeff'), '\ufeffx\ufeff');
  assert.is(clipCleanText('Fish &amp;amp; Chips'), 'fish & chips');
  // NFC: a decomposed accent tokenises like the precomposed one.
  assert.is(clipCleanText('Re\u0301sume\u0301'), 'r\u00e9sum\u00e9');
  const t = tiny([]);
  assert.equal(t.encode('e\u0301'), t.encode('\u00e9'));
});

s.run();
