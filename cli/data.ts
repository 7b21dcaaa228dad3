// `ddpo data emoji` and `ddpo data images`: build a captioned image set folder that `ddpo pretrain`
// trains on.
//
//   DIR/images/...        the images, PNG, all one square size, composited onto white
//   DIR/metadata.jsonl    one line per image: file_name, text (the caption) and the rest of the
//                         manifest (vendor, license, emoji name and code, category, source package)
//   DIR/dataset.json      what built it: sources with versions, licences and attribution, size,
//                         resize filter, selection, counts
//   DIR/ATTRIBUTION.md    the licences and attributions the images require (emoji sets)
//
// The folder is written whole under a temporary name beside DIR and renamed into place, so an
// error or Ctrl-C never leaves half a set; an existing DIR is refused unless --force.

import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { RGBImage, encodePNG } from './images.js';
import { Progress } from './progress.js';
import { ImageRecord, loadImageSet } from '../pretrain/dataset.js';
import { RESIZE_FILTERS, ResizeFilter, centreCrop, quantise8, resizeImage } from '../pretrain/images.js';
import {
  EMOJI_DATASOURCE_VERSION, EMOJI_VENDORS, EmojiFilter, collectEmoji, fetchEmojiPackage, openEmojiPackage, selectEmoji, vendorOf,
} from '../pretrain/emoji.js';

export const IMAGE_SET_FORMAT = 'ddpo-webgpu-image-set';

export interface SetSummary {
  format: typeof IMAGE_SET_FORMAT;
  version: 1;
  created: string;
  size: number;
  filter: ResizeFilter;
  images: number;
  captions: number;
  sources: Record<string, unknown>[];
  selection?: Record<string, unknown>;
}

/** Refuses an existing non-empty output folder unless force (checked before any work). */
function checkOut(out: string, force: boolean): void {
  if (existsSync(out) && readdirSync(out).length && !force) throw new Error(`${out} already exists and is not empty; choose another --out or pass --force to replace it`);
}

/** Writes a set folder atomically (see the header). */
export function writeImageSet(out: string, records: readonly ImageRecord[], images: readonly RGBImage[], summary: SetSummary, extraFiles: Record<string, string> = {}): void {
  if (!records.length) throw new Error(`no images to write to ${out}: the selection is empty`);
  const parent = dirname(resolve(out));
  mkdirSync(parent, { recursive: true });
  const tmp = join(parent, `.${basename(out)}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  try {
    records.forEach((r, i) => {
      const p = join(tmp, r.file);
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, encodePNG(images[i]));
    });
    writeFileSync(join(tmp, 'metadata.jsonl'), records.map((r) => JSON.stringify({ file_name: r.file, text: r.caption, ...r.meta })).join('\n') + '\n');
    writeFileSync(join(tmp, 'dataset.json'), JSON.stringify(summary, null, 2) + '\n');
    for (const [name, text] of Object.entries(extraFiles)) writeFileSync(join(tmp, name), text);
    const old = `${tmp}.old`;
    const had = existsSync(out);
    if (had) renameSync(out, old);
    renameSync(tmp, out);
    if (had) rmSync(old, { recursive: true, force: true });
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

function parseSize(v: number | undefined, def: number): number {
  const size = v ?? def;
  if (!Number.isInteger(size) || size < 4 || size > 4096) throw new Error(`--size ${size} must be an integer between 4 and 4096 (pixels)`);
  return size;
}

function parseFilter(v: string | undefined): ResizeFilter {
  const f = (v ?? 'area') as ResizeFilter;
  if (!RESIZE_FILTERS.includes(f)) throw new Error(`--filter ${v} is not one of ${RESIZE_FILTERS.join(', ')} (nearest is not offered: it aliases)`);
  return f;
}

const list = (v: string[] | undefined) => (v ?? []).flatMap((s) => s.split(',')).map((s) => s.trim()).filter(Boolean);

export interface DataEmojiOptions {
  out: string;
  vendor?: string[];
  category?: string[];
  subcategory?: string[];
  animals?: boolean;
  only?: string[];
  size?: number;
  filter?: string;
  /** Package tarballs or folders to read instead of fetching (one per vendor). */
  package?: string[];
  cache?: string;
  version?: string;
  force?: boolean;
}

/** `ddpo data emoji`. */
export async function dataEmojiCommand(o: DataEmojiOptions): Promise<number> {
  const size = parseSize(o.size, 32);
  const filter = parseFilter(o.filter);
  checkOut(o.out, !!o.force);
  const sel: EmojiFilter = { categories: list(o.category), subcategories: list(o.subcategory), animals: !!o.animals, only: list(o.only) };
  const log = (m: string) => process.stderr.write(`${m}\n`);
  // Packages given with --package decide the vendors; otherwise the --vendor list (default both) is fetched.
  const paths = list(o.package);
  const pkgs = [];
  if (paths.length) {
    for (const p of paths) pkgs.push(openEmojiPackage(p));
    const want = list(o.vendor).map(vendorOf);
    for (const v of want) if (!pkgs.some((p) => p.vendor === v)) throw new Error(`--vendor ${v}: none of the --package paths is emoji-datasource-${v}`);
    if (want.length) pkgs.splice(0, pkgs.length, ...pkgs.filter((p) => want.includes(p.vendor)));
  } else {
    const vendors = list(o.vendor).length ? list(o.vendor).map(vendorOf) : (Object.keys(EMOJI_VENDORS) as (keyof typeof EMOJI_VENDORS)[]);
    for (const v of vendors) pkgs.push(openEmojiPackage(await fetchEmojiPackage(v, { version: o.version, cacheDir: o.cache, log })));
  }
  const selections = pkgs.map((p) => selectEmoji(p.entries, sel));
  const total = selections.reduce((s, x) => s + x.length, 0);
  if (!total) throw new Error('the filters select no emoji');
  const progress = new Progress(total, 'emoji', 'image');
  const set = collectEmoji(pkgs, selections, { size, filter, onImage: (d) => progress.update(d) });
  if (set.missing.length) log(`${set.missing.length} selected emoji have no image in their package (left out), e.g. ${set.missing.slice(0, 3).join(', ')}`);
  const sources = pkgs.map((p) => ({ vendor: p.vendor, package: `${EMOJI_VENDORS[p.vendor].package}@${p.version}`, license: EMOJI_VENDORS[p.vendor].license, attribution: EMOJI_VENDORS[p.vendor].attribution, license_url: EMOJI_VENDORS[p.vendor].licenseUrl, images: set.records.filter((r) => r.meta.vendor === p.vendor).length }));
  const summary: SetSummary = {
    format: IMAGE_SET_FORMAT, version: 1, created: new Date().toISOString(), size, filter,
    images: set.records.length, captions: new Set(set.records.map((r) => r.caption)).size, sources,
    selection: { categories: sel.categories, subcategories: sel.subcategories, animals: sel.animals, only: sel.only, emoji_datasource_version: o.version ?? EMOJI_DATASOURCE_VERSION },
  };
  writeImageSet(o.out, set.records, set.images, summary, { 'ATTRIBUTION.md': attribution(sources) });
  console.log(`wrote ${set.records.length} images (${summary.captions} captions, ${size}×${size}, ${filter} filter) to ${o.out}/ (metadata.jsonl, dataset.json, ATTRIBUTION.md)`);
  return 0;
}

/** The licence notices of a set's sources, as the licences require them to travel with the images. */
export function attribution(sources: readonly Record<string, unknown>[]): string {
  return ['# Attribution', '',
    'The images in this folder are resized and composited onto white from these packages (emoji-datasource by Cal Henderson, MIT, https://github.com/iamcal/emoji-data):', '',
    ...sources.map((s) => `- ${s.vendor}: ${s.package} — ${s.attribution} (${s.license}, ${s.license_url}). ${s.images} images.`),
    '', 'Each image keeps its licence; metadata.jsonl names the vendor and licence of every file.', ''].join('\n');
}

export interface DataImagesOptions {
  from: string;
  out: string;
  size?: number;
  filter?: string;
  force?: boolean;
}

/** `ddpo data images`: any captioned folder → a set of square images of one size. */
export async function dataImagesCommand(o: DataImagesOptions): Promise<number> {
  const size = parseSize(o.size, 32);
  const filter = parseFilter(o.filter);
  if (resolve(o.from) === resolve(o.out)) throw new Error('--out must differ from --from (the source folder is read, never changed)');
  checkOut(o.out, !!o.force);
  const set = loadImageSet(o.from, { size, prepare: (img) => quantise8(resizeImage(centreCrop(img), size, size, filter)) });
  // Files keep their relative names, as PNG.
  const records = set.records.map((r) => ({ ...r, file: `images/${r.file.replace(/\.(png|jpe?g)$/i, '')}.png` }));
  const names = new Set<string>();
  for (const r of records) { if (names.has(r.file)) throw new Error(`${o.from}: two images become ${r.file} (same name, different extension); rename one`); names.add(r.file); }
  const summary: SetSummary = {
    format: IMAGE_SET_FORMAT, version: 1, created: new Date().toISOString(), size, filter,
    images: records.length, captions: set.captions.length, sources: [{ folder: resolve(o.from), captions_file: set.captionsFile }],
  };
  writeImageSet(o.out, records, set.images, summary);
  console.log(`wrote ${records.length} images (${set.captions.length} captions, ${size}×${size}, ${filter} filter) to ${o.out}/`);
  return 0;
}
