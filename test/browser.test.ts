// The engine in a real browser: builds nothing and installs nothing; drives the system Chromium
// (/usr/bin/chromium, via playwright-core; no browser download) headless with WebGPU on, loads
// web/test.html from a local static server, runs the shared op checks (web/op-checks.ts) on the
// page's GPUDevice and compares them with the same checks on Node's device. Keeps a screenshot in
// out/browser/. Without Chromium: fails under CI or DDPO_REQUIRE_BROWSER=1 (.ci/run sets it; it installs
// Chromium with scripts/setup-chromium.sh), skips with a message elsewhere.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium, Browser } from 'playwright-core';
import { serveStatic, REPO_ROOT } from '../web/serve.js';
import { runOpChecks, OpCheckResults } from '../web/op-checks.js';
import { testDevice } from './helpers.js';

const CHROMIUM = process.env.DDPO_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan'];
const BUNDLE = join(REPO_ROOT, 'dist', 'web', 'ddpo-webgpu.js');
const ARTIFACTS = join(REPO_ROOT, 'out', 'browser');

// Both sides sum in the same order, but the adapters differ: Chromium's SwiftShader (LLVM JIT)
// and Node's lavapipe may contract a*b+c into fma differently, flush denormals differently and
// use different exp/rsqrt approximations (softmax in attention, group norm). On values in [-1, 1)
// with sums of at most ~300 terms, that stays far below 1e-4 relative to the result's scale;
// a real kernel bug (wrong index, missing term) moves values by O(0.1) of scale.
const TOLERANCE = 1e-4;

const s = suite('browser');
const missing = !existsSync(CHROMIUM);

function maxRelError(a: number[], b: number[]): number {
  const scale = Math.max(1e-6, ...b.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / scale);
  return worst;
}

async function pageOpChecks(browser: Browser, url: string, query = ''): Promise<{ family: string; adapter: string; timings: Record<string, number>; results: OpCheckResults; shot: Buffer }> {
  const page = await browser.newPage({ viewport: { width: 900, height: 700 } });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('crash', () => errors.push('page crashed'));
  try {
    await page.goto(`${url}/web/test.html${query}`);
    const r = await page.evaluate(() => (globalThis as unknown as { opChecks: Promise<unknown> }).opChecks) as { error?: string; family: string; adapter: string; timings: Record<string, number>; results: OpCheckResults };
    if (r.error) throw new Error(`the page failed: ${r.error}`);
    return { ...r, shot: await page.screenshot() };
  } catch (e) {
    throw new Error(`${(e as Error).message}${errors.length ? `\npage errors: ${errors.join('; ')}` : ''}`);
  } finally {
    await page.close().catch(() => {});
  }
}

// CI (and .ci/run, through DDPO_REQUIRE_BROWSER=1) must not pass by skipping.
const required = !!process.env.CI || process.env.DDPO_REQUIRE_BROWSER === '1';
if (missing && !required) {
  console.log(`  browser: SKIPPED, ${CHROMIUM} not found (install it with \`bash scripts/setup-chromium.sh\`; CI fails instead)`);
} else {
  s('op checks in headless Chromium agree with Node (forward and backward)', async () => {
    assert.ok(!missing, `${CHROMIUM} not found: CI must install it (bash scripts/setup-chromium.sh), or set DDPO_CHROMIUM`);
    assert.ok(existsSync(BUNDLE), `${BUNDLE} is missing: run \`npm run build\` (it builds the browser bundle too)`);
    const { server, url } = await serveStatic(REPO_ROOT);
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
    try {
      let t = performance.now();
      const expected = await runOpChecks(await testDevice());
      const nodeMs = performance.now() - t;
      t = performance.now();
      const got = await pageOpChecks(browser, url);
      const pageMs = performance.now() - t;
      mkdirSync(ARTIFACTS, { recursive: true });
      const { writeFile } = await import('node:fs/promises');
      await writeFile(join(ARTIFACTS, 'op-checks.png'), got.shot);
      const errs: string[] = [];
      for (const [name, want] of Object.entries(expected)) {
        const have = got.results[name];
        assert.ok(have, `the page returned no '${name}'`);
        assert.is(have.length, want.length, `${name}: length`);
        const err = maxRelError(have, want);
        errs.push(`${name} ${err.toExponential(1)}`);
        assert.ok(err <= TOLERANCE, `${name}: browser vs Node max error ${err.toExponential(2)} of scale > ${TOLERANCE}`);
      }
      console.log(`  browser: ${got.adapter} (${got.family} kernels); Node checks ${(nodeMs / 1000).toFixed(1)} s, page ${(pageMs / 1000).toFixed(1)} s (checks, ms: ${JSON.stringify(got.timings)}); max error of scale: ${errs.join(', ')}`);
    } finally {
      await browser.close();
      server.close();
    }
  });
}

s.run();
