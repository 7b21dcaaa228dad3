// Test runner: loads every compiled test file (test/**/*.test.js; test/slow/ only with --slow),
// runs them with uvu, and ends with the plain totals line CI reads: "N passed, N failed".

import { readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const slow = process.argv.includes('--slow');
const filter = process.argv.slice(2).filter((a) => !a.startsWith('--'));
const root = dirname(fileURLToPath(import.meta.url));

function find(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) {
      if (name === 'slow' && !slow) continue;
      out.push(...find(p));
    } else if (name.endsWith('.test.js') && (!filter.length || filter.some((f) => p.includes(f)))) {
      out.push(p);
    }
  }
  return out;
}

// uvu prints "Total: N" and "Passed: N"; capture them to print the one-line summary.
let captured = '';
const write = process.stdout.write.bind(process.stdout);
process.stdout.write = ((chunk: string | Uint8Array, ...rest: unknown[]) => {
  captured += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
  if (captured.length > 4096) captured = captured.slice(-4096);
  return (write as (...a: unknown[]) => boolean)(chunk, ...rest);
}) as typeof process.stdout.write;

(globalThis as { UVU_DEFER?: number }).UVU_DEFER = 1;
const uvu = await import('uvu');
const queue = (globalThis as unknown as { UVU_QUEUE: unknown[][] }).UVU_QUEUE;
const files = find(root);
let idx = 0;
for (const file of files) {
  (globalThis as { UVU_INDEX?: number }).UVU_INDEX = idx++;
  queue.push([file.slice(root.length + 1)]);
  await import(pathToFileURL(file).href);
}
const started = Date.now();
await uvu.exec(false);
const plain = captured.replace(/\x1b\[[0-9;]*m/g, '');
const total = Number(/Total:\s+(\d+)/.exec(plain)?.[1] ?? NaN);
const passed = Number(/Passed:\s+(\d+)/.exec(plain)?.[1] ?? NaN);
const skipped = Number(/Skipped:\s+(\d+)/.exec(plain)?.[1] ?? 0);
process.stdout.write = write;
if (!Number.isFinite(total) || total === 0) {
  console.log('0 passed, 1 failed');
  console.error('test runner: no tests ran');
  process.exitCode = 1;
} else {
  console.log(`tests: ${files.length} files in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  console.log(`${passed} passed, ${total - passed - skipped} failed${skipped ? `, ${skipped} skipped` : ''}`);
}
// Dawn keeps the event loop alive; leave once uvu has set the exit code.
process.exit(process.exitCode ?? 0);
