// The engine in a real browser: builds nothing and installs nothing; drives the system Chromium
// (/usr/bin/chromium, via playwright-core; no browser download) headless with WebGPU on, against
// a local static server (web/serve.ts, 127.0.0.1):
//   - web/test.html runs the shared op checks (web/op-checks.ts) on the page's GPUDevice, named
//     both ways (Device.fromAdapter: GPU kernels; pageDevice: the software kernels the demo page
//     uses on SwiftShader), compared with the same checks on Node's device;
//   - web/index.html (the demo page) loads models/emoji-16 over fetch and samples a grid at a fixed
//     seed, compared with Node sampling the same; a screenshot of the page is kept;
//   - the page's "Fine-tune one epoch" (web/fine-tune.ts) finishes with finite rewards and loss
//     and changes the LoRA weights.
// Artefacts (screenshots) go to out/browser/. Without Chromium: fails under CI or
// DDPO_REQUIRE_BROWSER=1 (.ci/run sets it; it installs Chromium with scripts/setup-chromium.sh),
// skips with a message elsewhere.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import { join } from 'node:path';
import { chromium, Browser, Page } from 'playwright-core';
import { serveStatic, REPO_ROOT } from '../web/serve.js';
import { runOpChecks, OpCheckResults } from '../web/op-checks.js';
import { disposeStableDiffusion, loadStableDiffusion } from '../diffusion/load.js';
import { sample } from '../diffusion/pipeline.js';
import { testDevice } from './helpers.js';

const CHROMIUM = process.env.DDPO_CHROMIUM ?? '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan'];
const BUNDLES = ['ddpo-webgpu.js', 'app.js'].map((f) => join(REPO_ROOT, 'dist', 'web', f));
const ARTIFACTS = join(REPO_ROOT, 'out', 'browser');
const MODEL = join(REPO_ROOT, 'models', 'emoji-16');

// Both sides sum in the same order, but the adapters differ: Chromium's SwiftShader (LLVM JIT)
// and Node's lavapipe may contract a*b+c into fma differently, flush denormals differently and
// use different exp/rsqrt approximations (softmax in attention, group norm). On values in [-1, 1)
// with sums of at most ~300 terms, that stays far below 1e-4 relative to the result's scale;
// a real kernel bug (wrong index, missing term) moves values by O(0.1) of scale.
const TOLERANCE = 1e-4;

// The fixed-seed sample the page and Node both draw: the model's reference settings
// (models/emoji-16/README.md: η 0, guidance 3) at 8 DDIM steps instead of 25, to keep the test short.
const SAMPLE = { prompt: 'a fox', n: 4, steps: 8, eta: 0, guidance: 3, seed: 0 };
// Pixels in [0, 1]. The rounding differences above pass through 8 UNet steps (×2 for guidance)
// and the VAE: measured here (Chromium 156 SwiftShader, software kernels with 4-column conv
// blocks, vs Node lavapipe) mean |Δ| 1.06e-5, max |Δ| 8.5e-5 over the 4 images (3,072 values).
// The tolerances leave ~10× room; a wrong kernel, seed or prompt moves pixels by O(0.1).
const PIXEL_MEAN_TOL = 1e-4;
const PIXEL_MAX_TOL = 1e-3;

const s = suite('browser');
const missing = !existsSync(CHROMIUM);

function maxRelError(a: number[], b: number[]): number {
  const scale = Math.max(1e-6, ...b.map(Math.abs));
  let worst = 0;
  for (let i = 0; i < b.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]) / scale);
  return worst;
}

let server: Server | null = null, url = '', browser: Browser | null = null;
/** The demo page, kept open from the sampling test for the fine-tuning one (the model loaded, its kernels compiled). */
let demo: { page: Page; errors: string[] } | null = null;

/** Opens a page and runs `fn` on it; page errors and crashes are added to any failure's message. */
async function onPage<T>(path: string, fn: (page: Page) => Promise<T>, viewport = { width: 900, height: 700 }): Promise<T> {
  const page = await browser!.newPage({ viewport });
  const errors: string[] = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('crash', () => errors.push('page crashed'));
  try {
    await page.goto(`${url}${path}`);
    return await fn(page);
  } catch (e) {
    throw new Error(`${(e as Error).message}${errors.length ? `\npage errors: ${errors.join('; ')}` : ''}`);
  } finally {
    await page.close().catch(() => {});
  }
}

type PageOpChecks = { error?: string; family: string; adapter: string; timings: Record<string, number>; results: OpCheckResults };

if (missing && !(process.env.CI || process.env.DDPO_REQUIRE_BROWSER === '1')) {
  console.log(`  browser: SKIPPED, ${CHROMIUM} not found (install it with \`bash scripts/setup-chromium.sh\`; CI fails instead)`);
} else {
  s.before(async () => {
    assert.ok(!missing, `${CHROMIUM} not found: CI must install it (bash scripts/setup-chromium.sh), or set DDPO_CHROMIUM`);
    for (const b of BUNDLES) assert.ok(existsSync(b), `${b} is missing: run \`npm run build\` (it builds the browser bundles too)`);
    mkdirSync(ARTIFACTS, { recursive: true });
    ({ server, url } = await serveStatic(REPO_ROOT));
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
  });
  s.after(async () => {
    await demo?.page.close().catch(() => {});
    await browser?.close();
    server?.close();
  });

  s('op checks in headless Chromium agree with Node (forward and backward; GPU and software kernels)', async () => {
    let t = performance.now();
    const expected = await runOpChecks(await testDevice());
    const nodeMs = performance.now() - t;
    // Default naming (GPU kernels on SwiftShader), then the demo page's (software kernels, 4-column conv blocks).
    for (const [query, shot] of [['', 'op-checks.png'], ['?device=page', 'op-checks-page-device.png']]) {
      t = performance.now();
      const got = await onPage(`/web/test.html${query}`, async (page) => {
        const r = await page.evaluate(() => (globalThis as unknown as { opChecks: Promise<unknown> }).opChecks) as PageOpChecks;
        if (r.error) throw new Error(`the page failed: ${r.error}`);
        await writeFile(join(ARTIFACTS, shot), await page.screenshot());
        return r;
      });
      const pageMs = performance.now() - t;
      const errs: string[] = [];
      for (const [name, want] of Object.entries(expected)) {
        const have = got.results[name];
        assert.ok(have, `the page returned no '${name}'`);
        assert.is(have.length, want.length, `${name}: length`);
        const err = maxRelError(have, want);
        errs.push(`${name} ${err.toExponential(1)}`);
        assert.ok(err <= TOLERANCE, `${got.family} kernels, ${name}: browser vs Node max error ${err.toExponential(2)} of scale > ${TOLERANCE}`);
      }
      console.log(`  browser: ${got.adapter} (${got.family} kernels); Node checks ${(nodeMs / 1000).toFixed(1)} s, page ${(pageMs / 1000).toFixed(1)} s (checks, ms: ${JSON.stringify(got.timings)}); max error of scale: ${errs.join(', ')}`);
    }
  });

  s('the demo page loads models/emoji-16 over fetch and samples the same images as Node at a fixed seed', async () => {
    const sd = await loadStableDiffusion(MODEL, { device: await testDevice() });
    let want: Float32Array;
    try {
      const r = sample(sd, { prompts: new Array(SAMPLE.n).fill(SAMPLE.prompt), steps: SAMPLE.steps, eta: SAMPLE.eta, guidance: SAMPLE.guidance, seed: SAMPLE.seed });
      want = (await r.images!.data()) as Float32Array;
      r.images!.dispose(); r.trajectory.dispose();
    } finally {
      disposeStableDiffusion(sd);
    }
    const t = performance.now();
    const page = await browser!.newPage({ viewport: { width: 900, height: 640 } });
    demo = { page, errors: [] };
    page.on('pageerror', (e) => demo?.errors.push(String(e)));
    page.on('crash', () => demo?.errors.push('page crashed'));
    const withErrors = async <T>(f: () => Promise<T>): Promise<T> => {
      try { return await f(); } catch (e) { throw new Error(`${(e as Error).message}${demo?.errors.length ? `\npage errors: ${demo.errors.join('; ')}` : ''}`); }
    };
    const got = await withErrors(async () => {
      await page.goto(`${url}/web/index.html`);
      const info = await page.evaluate(() => (globalThis as unknown as { ddpoApp: { ready: Promise<unknown> } }).ddpoApp.ready) as { adapter: string; family: string; features: string[]; prompts: string[] };
      assert.ok(info.prompts.includes(SAMPLE.prompt), `the page read models/emoji-16/prompts.txt: ${JSON.stringify(info.prompts)}`);
      const r = await page.evaluate((o) => (globalThis as unknown as { ddpoApp: { sampleGrid(o: unknown): Promise<unknown> } }).ddpoApp.sampleGrid(o), SAMPLE) as { images: number[][]; shape: number[]; ms: number };
      await writeFile(join(ARTIFACTS, 'page.png'), await page.screenshot({ fullPage: true }));
      const progress = await page.evaluate(() => { const p = document.getElementById('progress') as HTMLProgressElement; return [p.value, p.max]; });
      assert.equal(progress, [SAMPLE.steps, SAMPLE.steps], 'the progress bar ends at the last step');
      assert.is(await page.locator('#grid canvas').count(), SAMPLE.n, 'one canvas per image');
      return { ...r, info };
    });
    const have = got.images.flat();
    assert.is(have.length, want.length, 'image sizes');
    let sum = 0, max = 0;
    for (let i = 0; i < want.length; i++) { const d = Math.abs(have[i] - want[i]); sum += d; max = Math.max(max, d); }
    const mean = sum / want.length;
    console.log(`  browser: sampled ${SAMPLE.n} × ${got.shape.join('×')} at ${SAMPLE.steps} steps on ${got.info.adapter} (${got.info.family} kernels) in ${(got.ms / 1000).toFixed(1)} s (page ${((performance.now() - t) / 1000).toFixed(1)} s with loading); vs Node: mean |Δ| ${mean.toExponential(2)}, max |Δ| ${max.toExponential(2)}`);
    assert.ok(mean <= PIXEL_MEAN_TOL, `mean |Δ| ${mean.toExponential(2)} > ${PIXEL_MEAN_TOL}`);
    assert.ok(max <= PIXEL_MAX_TOL, `max |Δ| ${max.toExponential(2)} > ${PIXEL_MAX_TOL}`);
  });

  s('the demo page\'s "Fine-tune one epoch" runs DDPO-IS with LoRA and the JPEG reward in a Web Worker', async () => {
    assert.ok(demo, 'the sampling test opened the demo page');
    const { page } = demo;
    const t = performance.now();
    await page.click('#finetune');
    await page.waitForFunction(() => { const a = (globalThis as unknown as { ddpoApp: { lastFineTune?: unknown; lastError?: string } }).ddpoApp; return a.lastFineTune || a.lastError; }, null, { timeout: 300_000 });
    const r = await page.evaluate(() => { const a = (globalThis as unknown as { ddpoApp: { lastFineTune?: unknown; lastError?: string } }).ddpoApp; return { result: a.lastFineTune, error: a.lastError }; }) as {
      error?: string; result?: { rewards: number[]; meanReward: number; loss: number; approxKl: number; clipfrac: number; optimizerSteps: number; loraChange: number; ms: number };
    };
    assert.ok(!r.error, `the page failed: ${r.error}${demo.errors.length ? `\npage errors: ${demo.errors.join('; ')}` : ''}`);
    const f = r.result!;
    await writeFile(join(ARTIFACTS, 'page-finetune.png'), await page.screenshot({ fullPage: true }));
    console.log(`  browser: one DDPO epoch in the page in ${(f.ms / 1000).toFixed(1)} s (${((performance.now() - t) / 1000).toFixed(1)} s with the click): rewards ${f.rewards.map((x) => x.toFixed(3)).join(', ')} (mean ${f.meanReward.toFixed(3)}), loss ${f.loss.toExponential(2)}, approx KL ${f.approxKl.toExponential(2)}, clipfrac ${f.clipfrac}, LoRA max |Δ| ${f.loraChange.toExponential(2)}`);
    assert.is(f.rewards.length, 4, 'four samples');
    // JPEG compressibility is −kB: a 16×16 image's JPEG is about a kilobyte.
    assert.ok(f.rewards.every((x) => Number.isFinite(x) && x < 0 && x > -10), `rewards ${f.rewards}`);
    assert.ok(Number.isFinite(f.loss) && Number.isFinite(f.approxKl) && Number.isFinite(f.clipfrac), 'finite loss, approx KL and clipfrac');
    assert.is(f.optimizerSteps, 2);
    assert.ok(f.loraChange > 0, 'the LoRA weights changed');
    assert.match(await page.locator('#rewards').textContent() ?? '', /mean -\d/);
  });
}

s.run();
