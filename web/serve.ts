// A tiny static file server for the browser pages and test: serves the repository root (web/,
// dist/web/, models/) on 127.0.0.1 (never another interface). `npm run web` runs it on port 8080
// (or PORT) and prints the demo page's URL.

import { createServer, Server } from 'node:http';
import { readFile } from 'node:fs/promises';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json',
  '.map': 'application/json', '.txt': 'text/plain; charset=utf-8', '.png': 'image/png', '.css': 'text/css', '.svg': 'image/svg+xml',
};

/** Starts serving `root` on 127.0.0.1:`port` (0 = a free port); resolves with the server and its URL. */
export function serveStatic(root: string, port = 0): Promise<{ server: Server; url: string }> {
  const base = resolve(root);
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    const file = normalize(join(base, path.endsWith('/') ? path + 'index.html' : path));
    if (file !== base && !file.startsWith(base + sep)) { res.writeHead(403).end(); return; }
    try {
      const body = await readFile(file);
      const head = { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store', 'accept-ranges': 'bytes' };
      // One byte range (what fetchFolder's range reads ask for), else the whole file.
      const range = /^bytes=(\d+)-(\d+)$/.exec(req.headers.range ?? '');
      if (range) {
        const [from, to] = [Number(range[1]), Math.min(Number(range[2]), body.length - 1)];
        if (from > to) { res.writeHead(416, { 'content-range': `bytes */${body.length}` }).end(); return; }
        res.writeHead(206, { ...head, 'content-range': `bytes ${from}-${to}/${body.length}`, 'content-length': to - from + 1 }).end(body.subarray(from, to + 1));
        return;
      }
      res.writeHead(200, { ...head, 'content-length': body.length }).end(body);
    } catch {
      res.writeHead(404).end(`not found: ${path}`);
    }
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, '127.0.0.1', () => {
      const addr = server.address();
      ok({ server, url: `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : port}` });
    });
  });
}

/** The repository root, from dist/web/serve.js. */
export const REPO_ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..');

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { url } = await serveStatic(REPO_ROOT, Number(process.env.PORT ?? 8080));
  console.log(`Serving ${REPO_ROOT} on 127.0.0.1 (Ctrl-C stops):\n  ${url}/web/index.html   sample and fine-tune models/emoji-16\n  ${url}/web/test.html    the engine's op checks\nChromium on Linux needs --enable-unsafe-webgpu --enable-features=Vulkan.`);
}
