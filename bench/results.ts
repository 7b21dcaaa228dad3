// Where a kernel bench's JSON goes: bench-results/<bench>.json unless --out says otherwise,
// written atomically so an interrupted run never leaves half a file behind.

import { writeFileAtomic } from '../cli/files.js';

export function writeResults(bench: string, out: string | undefined, report: object, log: (line: string) => void): string {
  const path = out ?? `bench-results/${bench}.json`;
  writeFileAtomic(path, JSON.stringify(report, null, 2) + '\n');
  log(`\nresults written to ${path}`);
  return path;
}
