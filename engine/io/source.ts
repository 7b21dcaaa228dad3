// File access behind two small interfaces, so model loading runs wherever bytes come from: Node's
// file system (engine/files.ts), a web server (fetchFolder), or bytes already in memory
// (memoryFolder: tests, a page's <input type=file>). Nothing here imports Node.
//
//   ByteSource   random access to one file: the safetensors reader streams big weights from it in
//                chunks instead of holding the whole file (Node file handles)
//   ModelFolder  a folder of named files (a diffusers pipeline or one of its component folders)

/** Random access to one file's bytes. */
export interface ByteSource {
  /** The file's name in messages (a path or a URL). */
  readonly name: string;
  readonly size: number;
  /** Fills `into[0, length)` with the bytes at `position`; throws (naming `what`) when the file ends first. */
  read(position: number, into: Uint8Array, length: number, what: string): Promise<void>;
  close(): Promise<void>;
}

/** A folder of files addressed by '/'-separated relative paths ('unet/config.json'). */
export interface ModelFolder {
  readBytes(path: string): Promise<Uint8Array>;
  readText(path: string): Promise<string>;
  exists(path: string): Promise<boolean>;
  /** What a person reads in an error for `path` (the file's full path or URL; '' is the folder itself). */
  describe(path: string): string;
  /** Random access (Node: a file handle). Without it, openSource reads the whole file once. */
  open?(path: string): Promise<ByteSource>;
}

/** A ByteSource over bytes in memory. */
export function bytesSource(bytes: Uint8Array, name: string): ByteSource {
  return {
    name,
    size: bytes.length,
    async read(position, into, length, what) {
      if (position + length > bytes.length) throw new Error(`${name}: unexpected end of file reading ${what}`);
      into.set(bytes.subarray(position, position + length));
    },
    async close() {},
  };
}

/** Opens `path` of a folder for random access (its own open(), else the whole file in memory). */
export async function openSource(folder: ModelFolder, path: string): Promise<ByteSource> {
  if (folder.open) return folder.open(path);
  return bytesSource(await folder.readBytes(path), folder.describe(path));
}

/** 'a/b' + 'c/d.json' → 'a/b/c/d.json' (empty parts dropped). */
export function joinPath(...parts: string[]): string {
  return parts.flatMap((p) => p.split('/')).filter((p) => p !== '' && p !== '.').join('/');
}

/** The sub-folder `dir` of a folder (a pipeline's unet/, vae/, ...). */
export function subFolder(folder: ModelFolder, dir: string): ModelFolder {
  const at = (p: string) => joinPath(dir, p);
  return {
    readBytes: (p) => folder.readBytes(at(p)),
    readText: (p) => folder.readText(at(p)),
    exists: (p) => folder.exists(at(p)),
    describe: (p) => folder.describe(at(p)),
    ...(folder.open ? { open: (p: string) => folder.open!(at(p)) } : {}),
  };
}

export interface FetchFolderOptions {
  /** Defaults to the global fetch. */
  fetch?: typeof fetch;
  /**
   * Files at least this large (default 64 MiB) are read in HTTP Range requests, chunk by chunk as
   * the safetensors loader asks, when the server accepts ranges: an SD-size UNet never sits in
   * one ArrayBuffer. Smaller files (and servers without ranges) are fetched whole.
   */
  rangeThreshold?: number;
}

/**
 * A folder on a web server: `baseUrl` + path, fetched with GET (exists: HEAD). Any HTTP status
 * other than 2xx is an Error naming the URL.
 */
export function fetchFolder(baseUrl: string, opts: FetchFolderOptions = {}): ModelFolder {
  const fetchFn: typeof fetch = opts.fetch ?? ((...a) => globalThis.fetch(...a));
  const threshold = opts.rangeThreshold ?? 64 << 20;
  const base = baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`;
  const url = (p: string) => `${base}${joinPath(p)}`;
  const get = async (p: string): Promise<Response> => {
    let r: Response;
    try {
      r = await fetchFn(url(p));
    } catch (e) {
      throw new Error(`cannot fetch ${url(p)}: ${(e as Error).message}`);
    }
    if (!r.ok) throw new Error(`cannot fetch ${url(p)}: HTTP ${r.status} ${r.statusText}`.trimEnd());
    return r;
  };
  const readBytes = async (p: string) => new Uint8Array(await (await get(p)).arrayBuffer());
  return {
    readBytes,
    readText: async (p) => (await get(p)).text(),
    exists: async (p) => {
      try {
        return (await fetchFn(url(p), { method: 'HEAD' })).ok;
      } catch {
        return false;
      }
    },
    describe: (p) => (p ? url(p) : base),
    async open(p) {
      let size = NaN, ranges = false;
      try {
        const h = await fetchFn(url(p), { method: 'HEAD' });
        size = Number(h.headers.get('content-length'));
        ranges = h.ok && h.headers.get('accept-ranges') === 'bytes';
      } catch { /* fall back to one GET, which reports the error */ }
      if (!ranges || !Number.isSafeInteger(size) || size < threshold) return bytesSource(await readBytes(p), url(p));
      return rangeSource(url(p), size, fetchFn);
    },
  };
}

/** A ByteSource reading `href` in HTTP Range requests (status 206 required). */
function rangeSource(href: string, size: number, fetchFn: typeof fetch): ByteSource {
  return {
    name: href,
    size,
    async read(position, into, length, what) {
      if (position + length > size) throw new Error(`${href}: unexpected end of file reading ${what}`);
      if (length === 0) return;
      let r: Response;
      try {
        r = await fetchFn(href, { headers: { range: `bytes=${position}-${position + length - 1}` } });
      } catch (e) {
        throw new Error(`cannot fetch ${href} (reading ${what}): ${(e as Error).message}`);
      }
      if (r.status !== 206) throw new Error(`cannot fetch ${href} (reading ${what}): HTTP ${r.status} to a Range request (206 expected)`);
      const got = new Uint8Array(await r.arrayBuffer());
      if (got.length !== length) throw new Error(`${href}: a Range request for ${length} bytes of ${what} returned ${got.length} (file changed while reading?)`);
      into.set(got);
    },
    async close() {},
  };
}

/** A folder held in memory: path → bytes or text. A sub-folder exists when some file lies under it. */
export function memoryFolder(files: Record<string, Uint8Array | string>, name = 'memory:'): ModelFolder {
  const map = new Map(Object.entries(files).map(([k, v]) => [joinPath(k), typeof v === 'string' ? new TextEncoder().encode(v) : v]));
  const need = (p: string) => {
    const b = map.get(joinPath(p));
    if (!b) throw new Error(`${joinPath(name, p)}: no such file`);
    return b;
  };
  return {
    readBytes: async (p) => need(p),
    readText: async (p) => new TextDecoder().decode(need(p)),
    exists: async (p) => {
      const k = joinPath(p);
      return map.has(k) || [...map.keys()].some((f) => k === '' || f.startsWith(`${k}/`));
    },
    describe: (p) => (p ? joinPath(name, p) : name),
  };
}
