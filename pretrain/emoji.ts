// Emoji as a captioned training set, from the npm packages of emoji-datasource (iamcal/emoji-data):
// `emoji-datasource-google` (Noto Emoji images, Apache-2.0) and `emoji-datasource-twitter`
// (Twemoji images, CC-BY-4.0), each holding emoji.json (names, categories) and 64 px PNGs. The
// Apple and Facebook packages are not offered: their images are not licensed for this.
//
// The packages are not dependencies: fetchEmojiPackage runs `npm pack` (npm's own client, which
// checks the registry's integrity hash) into a cache folder on first use, and later runs read the
// cached tarball. openEmojiPackage reads a tarball or an unpacked package folder in memory (tests
// use a tiny fake package; nothing is downloaded in CI).
//
// Captions come from the names: the paper's 45 animals by their word (pretrain/animals.ts: "a cat"
// on the cat emoji), every other emoji from its Unicode name ("GRINNING FACE" → "a grinning face").

import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { RGBImage } from '../cli/images.js';
import { withArticle } from '../rl/prompts.js';
import { EMOJI_ANIMAL } from './animals.js';
import { ImageRecord } from './dataset.js';
import { ResizeFilter, compositeOnWhite, decodeImage, quantise8, resizeImage } from './images.js';
import { readTar } from './tar.js';

export type EmojiVendor = 'google' | 'twitter';

export interface VendorInfo {
  package: string;
  /** SPDX id of the images' licence. */
  license: string;
  attribution: string;
  licenseUrl: string;
}

export const EMOJI_VENDORS: Readonly<Record<EmojiVendor, VendorInfo>> = Object.freeze({
  google: {
    package: 'emoji-datasource-google', license: 'Apache-2.0',
    attribution: 'Noto Emoji images, Copyright Google Inc., licensed under the Apache License 2.0',
    licenseUrl: 'https://github.com/googlefonts/noto-emoji/blob/main/LICENSE',
  },
  twitter: {
    package: 'emoji-datasource-twitter', license: 'CC-BY-4.0',
    attribution: 'Twemoji graphics, Copyright Twitter, Inc and other contributors, licensed under CC-BY 4.0',
    licenseUrl: 'https://github.com/jdecked/twemoji/blob/main/LICENSE-GRAPHICS',
  },
});
export const EMOJI_VENDOR_NAMES = Object.keys(EMOJI_VENDORS) as EmojiVendor[];

/** The emoji-datasource release the data sets are built from (pinned, so a set can be rebuilt exactly). */
export const EMOJI_DATASOURCE_VERSION = '16.0.0';

/** The fields of an emoji.json entry we use. */
export interface EmojiEntry {
  name: string;
  unified: string;
  image: string;
  short_name: string;
  short_names?: string[];
  category: string;
  subcategory?: string;
  sort_order?: number;
  [key: string]: unknown;
}

export interface EmojiPackage {
  vendor: EmojiVendor;
  version: string;
  entries: EmojiEntry[];
  /** The 64 px PNG of an entry's image file name, if the package has it. */
  image(file: string): Uint8Array | undefined;
  source: string;
}

/** Where packages are cached: $DDPO_CACHE, else $XDG_CACHE_HOME/ddpo-webgpu, else ~/.cache/ddpo-webgpu. */
export function defaultCacheDir(): string {
  if (process.env.DDPO_CACHE) return process.env.DDPO_CACHE;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'ddpo-webgpu');
}

export function vendorOf(name: string): EmojiVendor {
  if (!(name in EMOJI_VENDORS)) {
    const why = /apple|facebook/.test(name) ? ' (its images are not licensed for training and redistribution)' : '';
    throw new Error(`emoji vendor "${name}" is not offered${why}; choose from ${EMOJI_VENDOR_NAMES.join(', ')}`);
  }
  return name as EmojiVendor;
}

/**
 * The cached tarball of a vendor's package, fetched with `npm pack` on first use (the file name is
 * npm's: emoji-datasource-google-16.0.0.tgz). Written to a temporary folder and renamed into the
 * cache, so an interrupted download never leaves a partial tarball under the final name.
 */
export async function fetchEmojiPackage(vendor: EmojiVendor, opts: { version?: string; cacheDir?: string; log?: (m: string) => void } = {}): Promise<string> {
  const version = opts.version ?? EMOJI_DATASOURCE_VERSION;
  const pkg = EMOJI_VENDORS[vendor].package;
  const dir = join(opts.cacheDir ?? defaultCacheDir(), 'npm');
  const file = join(dir, `${pkg}-${version}.tgz`);
  if (existsSync(file)) return file;
  mkdirSync(dir, { recursive: true });
  const tmp = mkdtempSync(join(dir, '.fetch-'));
  opts.log?.(`fetching ${pkg}@${version} from the npm registry into ${dir} (about 75 MB, once)`);
  try {
    await promisify(execFile)('npm', ['pack', `${pkg}@${version}`, '--pack-destination', tmp, '--silent'], { maxBuffer: 1 << 24 });
    const got = readdirSync(tmp).find((f) => f.endsWith('.tgz'));
    if (!got) throw new Error('npm pack wrote no tarball');
    renameSync(join(tmp, got), file);
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    const why = err.code === 'ENOENT' ? 'npm is not installed' : (err.stderr?.trim() || err.message);
    throw new Error(`cannot fetch ${pkg}@${version} with npm pack: ${why}. Check the network and the npm registry, or download it elsewhere (npm pack ${pkg}@${version}) and pass the tarball with --package`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  return file;
}

function parseJson<T>(bytes: Uint8Array | undefined, what: string): T {
  if (!bytes) throw new Error(`${what}: not found`);
  try {
    return JSON.parse(Buffer.from(bytes).toString('utf8')) as T;
  } catch (e) {
    throw new Error(`${what}: not valid JSON (${(e as Error).message})`);
  }
}

/**
 * Opens a package: its npm tarball (.tgz) or an unpacked folder (holding package.json, emoji.json
 * and img/<vendor>/64/). The vendor is read from package.json's name.
 */
export function openEmojiPackage(path: string): EmojiPackage {
  if (!existsSync(path)) throw new Error(`emoji package ${path}: not found`);
  let files: (rel: string) => Uint8Array | undefined;
  if (statSync(path).isDirectory()) {
    const root = existsSync(join(path, 'package', 'emoji.json')) ? join(path, 'package') : path;
    files = (rel) => { const p = join(root, rel); return existsSync(p) ? readFileSync(p) : undefined; };
  } else {
    const inTar = readTar(readFileSync(path), (p) => /^package\/(package\.json|emoji\.json|img\/[a-z]+\/64\/[^/]+\.png)$/.test(p), path);
    files = (rel) => inTar.get(`package/${rel}`);
  }
  const meta = parseJson<{ name?: string; version?: string }>(files('package.json'), `${path}: package.json`);
  const vendorName = /^emoji-datasource-([a-z]+)$/.exec(meta.name ?? '')?.[1];
  if (!vendorName) throw new Error(`${path}: package.json names "${meta.name}", not an emoji-datasource-<vendor> package`);
  const vendor = vendorOf(vendorName);
  const entries = parseJson<EmojiEntry[]>(files('emoji.json'), `${path}: emoji.json`);
  if (!Array.isArray(entries)) throw new Error(`${path}: emoji.json is not a list of emoji`);
  entries.forEach((e, i) => {
    for (const k of ['name', 'unified', 'image', 'short_name', 'category'] as const) {
      if (typeof e?.[k] !== 'string' || !e[k]) throw new Error(`${path}: emoji.json entry ${i} has no "${k}"`);
    }
  });
  return { vendor, version: meta.version ?? '?', entries, image: (f) => files(`img/${vendor}/64/${f}`), source: path };
}

/** The caption of an emoji: the paper's animal word ("a cat"), else its name ("a grinning face"). */
export function emojiCaption(e: Pick<EmojiEntry, 'unified' | 'name'>): string {
  const animal = EMOJI_ANIMAL.get(e.unified.toUpperCase());
  return withArticle(animal ?? e.name.toLowerCase().replace(/\s+/g, ' ').trim());
}

/** A lowercase slug of a category name: "Animals & Nature" → "animals-nature". */
export function slug(s: string): string {
  return s.toLowerCase().replace(/&/g, ' ').replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

export interface EmojiFilter {
  /** Category names or slugs ("Animals & Nature", "animals-nature"); none = all. */
  categories?: string[];
  /** Subcategory names ("animal-mammal"); none = all. */
  subcategories?: string[];
  /** Only the paper's 45 animals. */
  animals?: boolean;
  /** Only these: animal words ("cat"), short names ("grinning") or unified codes ("1F600"). */
  only?: string[];
}

/** The entries a filter keeps, in emoji.json's sort order; an unknown category or `only` name is an Error listing the valid ones. */
export function selectEmoji(entries: readonly EmojiEntry[], f: EmojiFilter = {}): EmojiEntry[] {
  const cats = new Set(entries.map((e) => e.category));
  const wantCats = (f.categories ?? []).map((c) => {
    const hit = [...cats].find((k) => k === c || slug(k) === slug(c));
    if (!hit) throw new Error(`emoji category "${c}" does not exist; categories: ${[...cats].map((k) => `"${k}" (${slug(k)})`).join(', ')}`);
    return hit;
  });
  const subs = new Set(entries.map((e) => e.subcategory ?? ''));
  for (const s of f.subcategories ?? []) if (!subs.has(s)) throw new Error(`emoji subcategory "${s}" does not exist; e.g. ${[...subs].slice(0, 12).join(', ')}, …`);
  let out = entries.filter((e) => (!wantCats.length || wantCats.includes(e.category)) && (!f.subcategories?.length || f.subcategories.includes(e.subcategory ?? '')));
  if (f.animals) out = out.filter((e) => EMOJI_ANIMAL.has(e.unified.toUpperCase()));
  if (f.only?.length) {
    const pick = new Set<EmojiEntry>();
    for (const name of f.only) {
      const key = name.trim().toLowerCase();
      const hit = out.filter((e) => EMOJI_ANIMAL.get(e.unified.toUpperCase()) === key || e.short_name === key || (e.short_names ?? []).includes(key) || e.unified.toLowerCase() === key);
      // An animal word names its one emoji, not every emoji whose short name happens to match.
      const animal = hit.find((e) => EMOJI_ANIMAL.get(e.unified.toUpperCase()) === key);
      if (!hit.length) throw new Error(`emoji "${name}" is not among the ${out.length} emoji the other filters keep (give an animal word, a short name such as "grinning", or a code such as 1F600)`);
      for (const e of animal ? [animal] : hit) pick.add(e);
    }
    out = out.filter((e) => pick.has(e));
  }
  return [...out].sort((a, b) => (a.sort_order ?? 0) - (b.sort_order ?? 0));
}

export interface CollectOptions {
  size: number;
  filter?: ResizeFilter;
  /** Progress after each image. */
  onImage?: (done: number, total: number) => void;
}

export interface CollectedSet {
  records: ImageRecord[];
  images: RGBImage[];
  /** Entries selected but without an image in their vendor's package. */
  missing: string[];
}

/**
 * The selected emoji of each package as training images: composited onto white, resized to
 * `size` with a proper filter and rounded to 8 bits; records carry the caption and, as metadata,
 * the vendor, licence and emoji identity (what the manifest lists).
 */
export function collectEmoji(pkgs: readonly EmojiPackage[], selections: readonly EmojiEntry[][], opts: CollectOptions): CollectedSet {
  const records: ImageRecord[] = [];
  const images: RGBImage[] = [];
  const missing: string[] = [];
  const total = selections.reduce((s, x) => s + x.length, 0);
  let done = 0;
  pkgs.forEach((pkg, k) => {
    const info = EMOJI_VENDORS[pkg.vendor];
    for (const e of selections[k]) {
      const bytes = pkg.image(e.image);
      done++;
      if (!bytes || e[`has_img_${pkg.vendor}`] === false) { missing.push(`${pkg.vendor}/${e.image}`); continue; }
      const src = compositeOnWhite(decodeImage(bytes, `${pkg.source}: img/${pkg.vendor}/64/${e.image}`));
      images.push(quantise8(resizeImage(src, opts.size, opts.size, opts.filter ?? 'area')));
      records.push({
        file: `images/${pkg.vendor}/${e.image}`, caption: emojiCaption(e),
        meta: {
          vendor: pkg.vendor, license: info.license, name: e.name, unified: e.unified, short_name: e.short_name,
          category: e.category, subcategory: e.subcategory ?? null, source: `${info.package}@${pkg.version}`,
        },
      });
      opts.onImage?.(done, total);
    }
  });
  return { records, images, missing };
}
