// A captioned image set on disk: a folder of PNG/JPEG images and one captions file naming them.
//
// Captions files (exactly one of them in the folder):
//   metadata.jsonl   one JSON object a line with "file_name" (a path relative to the folder) and
//                    "text" (or "caption"): Hugging Face's ImageFolder convention. Other keys
//                    (vendor, license, ...) are kept as the record's metadata. `ddpo data` writes this.
//   captions.tsv     one "file<TAB>caption" a line (captions.txt is read the same way).
//
// Loading checks everything before any training starts, and each problem is an Error naming the
// file: no or several captions files, a line that is not JSON, an empty caption, a listed file
// that is missing, an image in the folder without a caption, an image listed twice, a file that
// does not decode, images of different sizes or not square, and an empty set. Transparent images
// are composited onto white.

import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import type { RGBImage } from '../cli/images.js';
import { compositeOnWhite, decodeImage } from './images.js';

export const CAPTION_FILES = ['metadata.jsonl', 'captions.tsv', 'captions.txt'] as const;
export const IMAGE_EXTENSIONS = ['.png', '.jpg', '.jpeg'];

/** One image of a set: its file (relative to the folder, '/' separated), caption and any other metadata. */
export interface ImageRecord {
  file: string;
  caption: string;
  meta: Record<string, unknown>;
}

export interface ImageSet {
  dir: string;
  /** Which captions file was read. */
  captionsFile: string;
  records: ImageRecord[];
  /** Per record, the image (CHW RGB in [0, 1], on white). */
  images: RGBImage[];
  /** Side of every (square) image in pixels. */
  size: number;
  /** The distinct captions, in order of first appearance. */
  captions: string[];
  /** SHA-256 over the captions file and every image file's bytes: a resumed run checks it trains on the same data. */
  fingerprint: string;
}

/** Reads the folder's captions file into records (no image is opened). */
export function readCaptions(dir: string): { file: string; records: ImageRecord[] } {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new Error(`image set ${dir}: not a folder`);
  const found = CAPTION_FILES.filter((f) => existsSync(join(dir, f)));
  if (!found.length) {
    throw new Error(`image set ${dir}: no captions file. Put metadata.jsonl (one {"file_name": ..., "text": ...} a line) or captions.tsv ("file<TAB>caption" lines) beside the images, or build a set with \`ddpo data emoji\` / \`ddpo data images\``);
  }
  if (found.length > 1) throw new Error(`image set ${dir}: several captions files (${found.join(', ')}); keep one`);
  const path = join(dir, found[0]);
  const lines = readFileSync(path, 'utf8').split(/\r?\n/);
  const records: ImageRecord[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    const where = `${path} line ${i + 1}`;
    let file: unknown, caption: unknown, meta: Record<string, unknown> = {};
    if (found[0] === 'metadata.jsonl') {
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(line);
      } catch (e) {
        throw new Error(`${where}: not JSON (${(e as Error).message})`);
      }
      if (!o || typeof o !== 'object' || Array.isArray(o)) throw new Error(`${where}: expected a JSON object with "file_name" and "text"`);
      file = o.file_name;
      caption = o.text ?? o.caption;
      const { file_name: _f, text: _t, caption: _c, ...rest } = o;
      meta = rest;
    } else {
      const tab = line.indexOf('\t');
      if (tab < 0) throw new Error(`${where}: expected "file<TAB>caption"`);
      file = line.slice(0, tab).trim();
      caption = line.slice(tab + 1);
    }
    if (typeof file !== 'string' || !file) throw new Error(`${where}: no file name`);
    if (typeof caption !== 'string' || !caption.trim()) throw new Error(`${where}: ${file} has no caption (an empty caption is what classifier-free guidance drops captions to; give every image a real one)`);
    records.push({ file: file.split(sep).join('/'), caption: caption.trim(), meta });
  });
  return { file: found[0], records };
}

/** Every image file under dir (relative, '/' separated), in sorted order. */
function imageFiles(dir: string, root = dir): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue;
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...imageFiles(p, root));
    else if (IMAGE_EXTENSIONS.includes(extname(name).toLowerCase())) out.push(relative(root, p).split(sep).join('/'));
  }
  return out;
}

export interface LoadImageSetOptions {
  /** Every image must be this size (default: whatever the first one is). */
  size?: number;
  /** Applied to each decoded image before the size checks (e.g. crop and resize). */
  prepare?: (img: RGBImage, record: ImageRecord) => RGBImage;
}

/** Loads and checks a captioned image set (see the header for what is checked). */
export function loadImageSet(dir: string, opts: LoadImageSetOptions = {}): ImageSet {
  const { file: captionsFile, records } = readCaptions(dir);
  const where = join(dir, captionsFile);
  if (!records.length) throw new Error(`image set ${dir}: ${captionsFile} lists no images (an empty set)`);
  const listed = new Set<string>();
  for (const r of records) {
    if (listed.has(r.file)) throw new Error(`${where}: ${r.file} is listed twice`);
    listed.add(r.file);
    if (!existsSync(join(dir, r.file))) throw new Error(`${where}: ${r.file} does not exist in ${dir}`);
  }
  const unlisted = imageFiles(dir).filter((f) => !listed.has(f));
  if (unlisted.length) throw new Error(`image set ${dir}: ${unlisted[0]} has no caption in ${captionsFile}${unlisted.length > 1 ? ` (nor do ${unlisted.length - 1} more images)` : ''}; add a line for it or move it out of the folder`);
  const images: RGBImage[] = [];
  const hash = createHash('sha256').update(readFileSync(where));
  let size = opts.size ?? 0;
  let first = opts.size ? `the requested size ${opts.size}` : '';
  for (const r of records) {
    const path = join(dir, r.file);
    const bytes = readFileSync(path);
    hash.update(bytes);
    const decoded = compositeOnWhite(decodeImage(bytes, path));
    const img = opts.prepare ? opts.prepare(decoded, r) : decoded;
    if (img.width !== img.height) throw new Error(`${path}: ${img.width}×${img.height} is not square; training sets need square images of one size (resize them with \`ddpo data images --from ${dir} --size N\`)`);
    if (!size) { size = img.width; first = `${r.file} (the first image)`; }
    if (img.width !== size) throw new Error(`${path}: ${img.width}×${img.height}, but ${first} is ${size}×${size}; every image must have the same size (resize them with \`ddpo data images --from ${dir} --size ${size}\`)`);
    images.push(img);
  }
  const captions = [...new Set(records.map((r) => r.caption))];
  return { dir, captionsFile, records, images, size, captions, fingerprint: hash.digest('hex') };
}
