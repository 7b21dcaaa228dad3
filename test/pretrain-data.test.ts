// Building captioned image sets (no GPU, no download): resizing and compositing against direct
// computations, the tar reader on a tarball written here, `ddpo data emoji` on a tiny fake
// emoji-datasource package (folder and .tgz), `ddpo data images` on a user folder, the BPE
// learner and the CLIP-format tokenizer files it writes, and every kind of bad input failing with
// an Error that names the file, before anything is written.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { PNG } from 'pngjs';
import { compositeOnWhite, decodeImage, resizeImage } from '../pretrain/images.js';
import { readTar, writeTar } from '../pretrain/tar.js';
import { loadImageSet } from '../pretrain/dataset.js';
import { emojiCaption, openEmojiPackage, selectEmoji } from '../pretrain/emoji.js';
import { ANIMAL_EMOJI } from '../pretrain/animals.js';
import { SIMPLE_ANIMALS } from '../rl/prompts.js';
import { dataEmojiCommand, dataImagesCommand } from '../cli/data.js';
import { clipTokenizerFiles, learnBpeMerges } from '../diffusion/text/bpe-learn.js';
import { ClipTokenizer } from '../diffusion/tokenizer.js';
import { assertThrows } from './helpers.js';

const s = suite('pretrain data');
const scratch = mkdtempSync(join(tmpdir(), 'ddpo-data-test-'));
const quiet = <T>(fn: () => Promise<T>): Promise<T> => {
  const log = console.log, err = process.stderr.write.bind(process.stderr);
  console.log = () => {};
  process.stderr.write = (() => true) as typeof process.stderr.write;
  return fn().finally(() => { console.log = log; process.stderr.write = err; });
};

/** An RGBA PNG of w×h whose pixel (x, y) is f(x, y) = [r, g, b, a] bytes. */
function png(w: number, h: number, f: (x: number, y: number) => number[]): Buffer {
  const p = new PNG({ width: w, height: h });
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) p.data.set(f(x, y), (y * w + x) * 4);
  return PNG.sync.write(p);
}

s('area resize averages blocks exactly; bicubic keeps constants; compositing is α·c + (1 − α)', () => {
  const w = 8, data = new Float32Array(3 * w * w).map((_, i) => ((i * 37) % 101) / 100);
  const r = resizeImage({ data, height: w, width: w }, 2, 2, 'area');
  for (let c = 0; c < 3; c++) for (let y = 0; y < 2; y++) for (let x = 0; x < 2; x++) {
    let sum = 0;
    for (let j = 0; j < 4; j++) for (let i = 0; i < 4; i++) sum += data[c * 64 + (y * 4 + j) * 8 + x * 4 + i];
    assert.ok(Math.abs(r.data[c * 4 + y * 2 + x] - sum / 16) < 1e-6, `area block ${c},${y},${x}`);
  }
  // 6 → 4: output pixel 0 covers source [0, 1.5): 1·p0 + 0.5·p1, over 1.5.
  const line = { data: Float32Array.from({ length: 3 * 6 }, (_, i) => [0.1, 0.4, 0.7, 1, 0.2, 0.5][i % 6]), height: 1, width: 6 };
  const l4 = resizeImage(line, 1, 4, 'area');
  assert.ok(Math.abs(l4.data[0] - (0.1 + 0.5 * 0.4) / 1.5) < 1e-6, `fractional coverage: ${l4.data[0]}`);
  const flat = { data: new Float32Array(3 * 64).fill(0.25), height: 8, width: 8 };
  for (const [h, ww] of [[3, 5], [16, 16], [8, 8]]) {
    const b = resizeImage(flat, h, ww, 'bicubic');
    assert.ok(b.data.every((v) => Math.abs(v - 0.25) < 1e-6), `bicubic ${h}×${ww} of a constant`);
  }
  const img = compositeOnWhite(decodeImage(png(2, 1, (x) => (x === 0 ? [255, 0, 0, 255] : [0, 0, 255, 64])), 'two.png'));
  assert.equal([...img.data].map((v) => Math.round(v * 255)), [255, 191, 0, 191, 0, 255]);
});

s('tar: files written by writeTar come back, gzipped or not, and a corrupt header is an Error', async () => {
  const files = { 'package/a.txt': new TextEncoder().encode('hello'), 'package/img/x.png': new Uint8Array(700).map((_, i) => i % 251) };
  const tar = writeTar(files);
  for (const t of [tar, new Uint8Array(gzipSync(tar))]) {
    const got = readTar(t);
    assert.equal([...got.keys()], Object.keys(files));
    assert.equal([...got.get('package/img/x.png')!], [...files['package/img/x.png']]);
  }
  assert.equal([...readTar(tar, (p) => p.endsWith('.txt')).keys()], ['package/a.txt']);
  const bad = new Uint8Array(tar);
  bad[10] ^= 0xff;
  await assertThrows(() => readTar(bad, undefined, 'bad.tgz'), /bad\.tgz: corrupt tar header/);
});

/** A fake emoji-datasource package: 4 emoji (2 animals, a smiley, one with no image), 64 px RGBA PNGs. */
function fakePackage(dir: string, vendor: string): void {
  const entries = [
    { name: 'CAT', unified: ANIMAL_EMOJI.cat, image: `${ANIMAL_EMOJI.cat.toLowerCase()}.png`, short_name: 'cat2', category: 'Animals & Nature', subcategory: 'animal-mammal', sort_order: 2 },
    { name: 'GRINNING FACE', unified: '1F600', image: '1f600.png', short_name: 'grinning', category: 'Smileys & Emotion', subcategory: 'face-smiling', sort_order: 1 },
    { name: 'FOX FACE', unified: ANIMAL_EMOJI.fox, image: `${ANIMAL_EMOJI.fox.toLowerCase()}.png`, short_name: 'fox_face', category: 'Animals & Nature', subcategory: 'animal-mammal', sort_order: 3 },
    { name: 'GHOST OF NOTHING', unified: '1F47B', image: '1f47b.png', short_name: 'ghost', category: 'Smileys & Emotion', subcategory: 'face-costume', sort_order: 4 },
  ];
  mkdirSync(join(dir, 'img', vendor, '64'), { recursive: true });
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: `emoji-datasource-${vendor}`, version: '0.0.1-test' }));
  writeFileSync(join(dir, 'emoji.json'), JSON.stringify(entries));
  entries.slice(0, 3).forEach((e, k) => writeFileSync(join(dir, 'img', vendor, '64', e.image),
    png(64, 64, (x, y) => [k * 100, 255 - k * 80, (x * 4) % 256, x < 32 && y < 32 ? 255 : 0])));
}

s('ddpo data emoji on a fake package: filters, captions, 16 px composited images, manifest, licence', async () => {
  const pkg = join(scratch, 'pkg-google');
  fakePackage(pkg, 'google');
  const p = openEmojiPackage(pkg);
  assert.is(p.vendor, 'google');
  assert.equal(selectEmoji(p.entries, { animals: true }).map((e) => e.name), ['CAT', 'FOX FACE']);
  assert.equal(selectEmoji(p.entries, { categories: ['smileys-emotion'] }).map((e) => e.short_name), ['grinning', 'ghost']);
  assert.equal(selectEmoji(p.entries, { only: ['fox', 'grinning'] }).map((e) => e.short_name), ['grinning', 'fox_face']);
  await assertThrows(() => selectEmoji(p.entries, { categories: ['Animals'] }), /category "Animals" does not exist; categories: "Animals & Nature" \(animals-nature\)/);
  await assertThrows(() => selectEmoji(p.entries, { only: ['unicorn'] }), /emoji "unicorn" is not among/);
  assert.is(emojiCaption(p.entries[0]), 'a cat');
  assert.is(emojiCaption(p.entries[1]), 'a grinning face');
  assert.is(emojiCaption(p.entries[2]), 'a fox');

  // The same package as an npm tarball (package/ prefix, gzipped).
  const tgz = join(scratch, 'emoji-datasource-twitter-0.0.1.tgz');
  const twit = join(scratch, 'pkg-twitter');
  fakePackage(twit, 'twitter');
  const files = new Map<string, Uint8Array>();
  for (const f of ['package.json', 'emoji.json', ...['1f408.png', '1f600.png', '1f98a.png'].map((x) => `img/twitter/64/${x}`)]) files.set(`package/${f}`, readFileSync(join(twit, f)));
  writeFileSync(tgz, gzipSync(writeTar(files)));

  const out = join(scratch, 'set');
  await quiet(() => dataEmojiCommand({ out, package: [pkg, tgz], size: 16 }));
  const set = loadImageSet(out);
  assert.is(set.records.length, 6, 'three emoji with images, two vendors (the ghost has none)');
  assert.is(set.size, 16);
  assert.equal(set.captions, ['a grinning face', 'a cat', 'a fox']);
  const r = set.records.find((x) => x.caption === 'a grinning face' && x.meta.vendor === 'twitter')!;
  assert.is(r.meta.license, 'CC-BY-4.0');
  assert.is(r.file, 'images/twitter/1f600.png');
  assert.is(set.records.find((x) => x.meta.vendor === 'google')!.meta.license, 'Apache-2.0');
  // The source's opaque top-left quarter (red 100) becomes the top-left 8×8 of the 16×16; the rest is white.
  const img = set.images[set.records.indexOf(r)];
  assert.ok(Math.abs(img.data[0] - 100 / 255) < 1.5 / 255, `composited pixel ${img.data[0]}`);
  assert.is(img.data[15], 1, 'transparent → white');
  const summary = JSON.parse(readFileSync(join(out, 'dataset.json'), 'utf8'));
  assert.is(summary.images, 6);
  assert.equal(summary.sources.map((x: { license: string }) => x.license), ['Apache-2.0', 'CC-BY-4.0']);
  assert.match(readFileSync(join(out, 'ATTRIBUTION.md'), 'utf8'), /Twemoji graphics.*CC-BY 4\.0/);

  // Only animals, one vendor; an existing --out is refused unless --force.
  let refused = '';
  await dataEmojiCommand({ out, package: [pkg], animals: true }).catch((e: Error) => { refused = e.message; });
  assert.match(refused, /already exists and is not empty; choose another --out or pass --force/);
  await quiet(() => dataEmojiCommand({ out, package: [pkg], animals: true, force: true, size: 8, filter: 'bicubic' }));
  const set2 = loadImageSet(out);
  assert.equal(set2.captions, ['a cat', 'a fox']);
  assert.is(set2.size, 8);
  let vendorErr = '';
  await dataEmojiCommand({ out: join(scratch, 'x'), package: [pkg], vendor: ['apple'] }).catch((e: Error) => { vendorErr = e.message; });
  assert.match(vendorErr, /vendor "apple" is not offered \(its images are not licensed/);
});

s("the paper's 45 animals each have one emoji and the caption \"a(n) ANIMAL\"", () => {
  assert.is(Object.keys(ANIMAL_EMOJI).length, 45);
  assert.equal(Object.keys(ANIMAL_EMOJI).sort(), [...SIMPLE_ANIMALS].sort());
  assert.is(new Set(Object.values(ANIMAL_EMOJI)).size, 45);
  assert.is(emojiCaption({ unified: ANIMAL_EMOJI.squirrel, name: 'CHIPMUNK' }), 'a squirrel');
  assert.is(emojiCaption({ unified: ANIMAL_EMOJI.ant, name: 'ANT' }), 'an ant');
});

/** A user folder: images (any size) and a captions file. */
function userFolder(name: string, files: Record<string, Buffer | string>): string {
  const dir = join(scratch, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [f, b] of Object.entries(files)) { mkdirSync(join(dir, f, '..'), { recursive: true }); writeFileSync(join(dir, f), b); }
  return dir;
}

s('ddpo data images: any folder with captions.tsv or metadata.jsonl → square images of one size', async () => {
  const dir = userFolder('user', {
    'a.png': png(20, 10, () => [0, 0, 255, 255]), 'sub/b.png': png(12, 12, (x) => [x * 20, 0, 0, 255]),
    'captions.tsv': 'a.png\ta blue box\nsub/b.png\ta red ramp\n',
  });
  const out = join(scratch, 'user-set');
  await quiet(() => dataImagesCommand({ from: dir, out, size: 8 }));
  const set = loadImageSet(out);
  assert.equal(set.records.map((r) => [r.file, r.caption]), [['images/a.png', 'a blue box'], ['images/sub/b.png', 'a red ramp']]);
  assert.is(set.size, 8);
  const jsonl = userFolder('user2', { 'x.png': png(8, 8, () => [1, 2, 3, 255]), 'metadata.jsonl': '{"file_name": "x.png", "text": "a dot", "author": "me"}\n' });
  const s2 = loadImageSet(jsonl);
  assert.equal(s2.records[0].meta, { author: 'me' });
  assert.is(s2.fingerprint.length, 64);
});

s('bad image sets fail naming the file, and nothing is written', async () => {
  const ok = png(8, 8, () => [9, 9, 9, 255]);
  const cases: [string, Record<string, Buffer | string>, RegExp][] = [
    ['corrupt', { 'a.png': ok, 'b.png': Buffer.concat([ok.subarray(0, 40)]), 'captions.tsv': 'a.png\ta\nb.png\tb\n' }, /b\.png: cannot decode the PNG/],
    ['not-image', { 'a.png': Buffer.from('hello'), 'captions.tsv': 'a.png\ta\n' }, /a\.png: not a PNG or JPEG/],
    ['uncaptioned', { 'a.png': ok, 'b.png': ok, 'captions.tsv': 'a.png\ta\n' }, /b\.png has no caption in captions\.tsv/],
    ['empty-caption', { 'a.png': ok, 'metadata.jsonl': '{"file_name": "a.png", "text": " "}\n' }, /metadata\.jsonl line 1: a\.png has no caption/],
    ['missing-file', { 'a.png': ok, 'captions.tsv': 'a.png\ta\nz.png\tz\n' }, /z\.png does not exist/],
    ['sizes', { 'a.png': ok, 'b.png': png(16, 16, () => [0, 0, 0, 255]), 'captions.tsv': 'a.png\ta\nb.png\tb\n' }, /b\.png: 16×16, but a\.png \(the first image\) is 8×8/],
    ['not-square', { 'a.png': png(8, 6, () => [0, 0, 0, 255]), 'captions.tsv': 'a.png\ta\n' }, /a\.png: 8×6 is not square/],
    ['empty', { 'captions.tsv': '\n' }, /lists no images \(an empty set\)/],
    ['no-captions', { 'a.png': ok }, /no captions file/],
    ['bad-json', { 'a.png': ok, 'metadata.jsonl': '{"file_name": "a.png", "text": \n' }, /metadata\.jsonl line 1: not JSON/],
  ];
  for (const [name, files, re] of cases) {
    const dir = userFolder(`bad-${name}`, files);
    await assertThrows(() => loadImageSet(dir), re);
    if (name === 'corrupt' || name === 'uncaptioned') {
      const out = join(scratch, `out-${name}`);
      let msg = '';
      await dataImagesCommand({ from: dir, out, size: 8 }).catch((e: Error) => { msg = e.message; });
      assert.match(msg, re);
      assert.not.ok(existsSync(out), `${name}: nothing written`);
    }
  }
});

s('BPE learned from captions: common words become single tokens, files in CLIP format', () => {
  const caps = ['a cat', 'a fox', 'an ant', 'a grinning face', 'a cat face'];
  const merges = learnBpeMerges(caps, { maxMerges: 100, minFrequency: 1 });
  const files = clipTokenizerFiles(merges, 16);
  const tok = new ClipTokenizer({ vocab: files['vocab.json'], merges: files['merges.txt'], specialTokensMap: files['special_tokens_map.json'], tokenizerConfig: files['tokenizer_config.json'] });
  assert.equal(tok.tokenize('a cat face'), ['a</w>', 'cat</w>', 'face</w>']);
  assert.equal(tok.tokenize('an ant'), ['an</w>', 'ant</w>']);
  assert.is(tok.modelMaxLength, 16);
  assert.is(tok.vocabSize, 514 + merges.length);
  assert.is(files['merges.txt'].split('\n')[0], '#version: 0.2');
  // Unseen words still tokenise (byte fallback); ties between the most frequent pairs go to the first in sort order.
  assert.ok(tok.tokenize('zebra').length >= 2);
  assert.is(merges[0], 'a c', `first merge ${merges[0]} (five pairs occur twice: a c, a t</w>, c a, c e</w>, f a, i n)`);
  assert.equal(learnBpeMerges(caps, { maxMerges: 0 }), []);
  const byte = clipTokenizerFiles([]);
  assert.is(Object.keys(JSON.parse(byte['vocab.json'])).length, 514);
});

s.after(() => rmSync(scratch, { recursive: true, force: true }));
s.run();
