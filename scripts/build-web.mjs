// Builds the browser bundle dist/web/ddpo-webgpu.js (ESM, platform browser) from web/ddpo-webgpu.ts,
// and the demo page's script dist/web/app.js (web/app.ts) with its reward worker
// dist/web/reward-worker.js (web/reward-worker.ts).
// Fails if any Node built-in would end up in it, naming the file that imports it, so Node-only
// code (fs reads, worker_threads) cannot leak into the browser graph unnoticed. Runs after tsc, whose
// dist/web/ddpo-webgpu.js (unbundled) it replaces; tsc's .d.ts next to it types the ./browser export.
import { build } from 'esbuild';
import { builtinModules } from 'node:module';
import { relative } from 'node:path';

const NODE_BUILTINS = new Set(builtinModules.flatMap((m) => [m, m.split('/')[0]]));

const noNodeBuiltins = {
  name: 'no-node-builtins',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      const bare = args.path.replace(/^node:/, '');
      if (!args.path.startsWith('node:') && !NODE_BUILTINS.has(bare) && !NODE_BUILTINS.has(bare.split('/')[0])) return undefined;
      const from = args.importer ? relative(process.cwd(), args.importer) : '(entry)';
      return { errors: [{ text: `Node built-in '${args.path}' imported by ${from}: the browser bundle must not use Node. Move the Node-only code out of the browser graph (see web/ddpo-webgpu.ts).` }] };
    });
  },
};

try {
  await build({
    // The library bundle, the demo page (web/index.html) and its reward worker.
    entryPoints: [
      { in: 'web/ddpo-webgpu.ts', out: 'ddpo-webgpu' },
      { in: 'web/app.ts', out: 'app' },
      { in: 'web/reward-worker.ts', out: 'reward-worker' },
    ],
    // jpeg-js (the JPEG reward) calls Buffer.from; see the shim.
    inject: ['scripts/buffer-shim.mjs'],
    outdir: 'dist/web',
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    sourcemap: true,
    logLevel: 'warning',
    plugins: [noNodeBuiltins],
  });
} catch {
  process.exit(1); // esbuild has already printed the errors
}
