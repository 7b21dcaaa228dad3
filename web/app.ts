/// <reference lib="dom" />
// The demo page (web/index.html; bundled into dist/web/app.js): creates an engine Device on the
// page's own adapter, shows the adapter and its features, loads the shipped model
// (models/emoji-16) from the same origin with fetch, samples a grid for a prompt with a progress
// bar per denoising step, and fine-tunes it for one DDPO epoch (web/fine-tune.ts).
// window.ddpoApp exposes the same actions to test/browser.test.ts.

import * as D from './ddpo-webgpu.js';
import { FINE_TUNE_DEFAULTS, FineTuneOptions, FineTuneResult, FineTuner } from './fine-tune.js';
import { workerRunner } from './worker-runner.js';

/** What the page draws by default: the model's own reference settings (models/emoji-16/README.md). */
export const DEFAULTS = { n: 4, steps: 25, eta: 0, guidance: 3, seed: 0 };

export interface SampleRequest {
  prompt: string;
  n?: number;
  steps?: number;
  eta?: number;
  guidance?: number;
  seed?: number;
}

export interface SampleResponse {
  /** Per image, CHW floats in [0, 1]. */
  images: number[][];
  shape: [number, number, number];
  ms: number;
}

export interface PageInfo {
  adapter: string;
  family: string;
  features: string[];
  model: string;
  prompts: string[];
  loadMs: number;
}

const el = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);

let state: { dev: D.Device; sd: D.StableDiffusion } | null = null;
/** The page's fine-tuning run: made at the first click (LoRA injected once), continued after. */
let tuner: FineTuner | null = null;
let busy = false;

function status(text: string): void {
  el('status').textContent = text;
}

function setBusy(b: boolean): void {
  busy = b;
  for (const id of ['sample', 'finetune']) el<HTMLButtonElement>(id).disabled = b || !state;
}

/** One image (CHW in [0, 1]) into a canvas at its own size; CSS scales it up. */
function draw(canvas: HTMLCanvasElement, chw: ArrayLike<number>, h: number, w: number): void {
  canvas.width = w;
  canvas.height = h;
  const ctx = canvas.getContext('2d')!;
  const img = ctx.createImageData(w, h);
  const plane = h * w;
  for (let p = 0; p < plane; p++) {
    for (let c = 0; c < 3; c++) img.data[p * 4 + c] = Math.round(Math.min(1, Math.max(0, chw[c * plane + p])) * 255);
    img.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

/** Draws a batch as a row of captioned canvases into `target`. */
export function drawGrid(target: HTMLElement, images: ArrayLike<number>[], h: number, w: number, captions: string[]): void {
  target.replaceChildren(...images.map((im, i) => {
    const fig = document.createElement('figure');
    const c = document.createElement('canvas');
    draw(c, im, h, w);
    const cap = document.createElement('figcaption');
    cap.textContent = captions[i] ?? '';
    fig.append(c, cap);
    return fig;
  }));
}

async function init(): Promise<PageInfo> {
  if (!navigator.gpu) throw new Error('navigator.gpu is missing: this browser has no WebGPU (Chromium on Linux: --enable-unsafe-webgpu --enable-features=Vulkan)');
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) throw new Error('no WebGPU adapter');
  const dev = await D.pageDevice(adapter);
  D.setDefaultDevice(dev);
  // ?kernels=software|gpu forces a kernel family (engine/kernel-family.ts), as DDPO_KERNELS does in Node.
  const forced = params.get('kernels');
  if (forced === 'software' || forced === 'gpu') D.kernelFamilyOverride.family = forced;
  const features = [...dev.features].sort();
  const info = adapter.info;
  el('adapter').textContent = `${dev.adapterName} (${[info.architecture, info.description].filter(Boolean).join(', ') || 'no further description'}), ${D.kernelFamily(dev)} kernels`;
  el('features').textContent = features.join(', ') || '(none)';
  const model = params.get('model') ?? '../models/emoji-16/';
  el('model').textContent = new URL(model, location.href).href;
  status('loading the model…');
  const t = performance.now();
  const base = D.fetchFolder(new URL(model, location.href).href);
  const prompts = (await base.exists('prompts.txt')) ? (await base.readText('prompts.txt')).split('\n').map((l) => l.trim()).filter(Boolean) : [];
  const sd = await D.loadStableDiffusion(base, { device: dev });
  const loadMs = Math.round(performance.now() - t);
  state = { dev, sd };
  const list = el<HTMLDataListElement>('prompt-list');
  list.replaceChildren(...prompts.map((p) => Object.assign(document.createElement('option'), { value: p })));
  if (prompts.length) el<HTMLInputElement>('prompt').value = prompts[0];
  status(`model loaded in ${loadMs} ms`);
  setBusy(false);
  return { adapter: dev.adapterName, family: D.kernelFamily(dev), features, model: el('model').textContent!, prompts, loadMs };
}

/** Samples `n` images (sample i uses noise index i of the seed), drawing progress and the grid. */
export async function sampleGrid(req: SampleRequest): Promise<SampleResponse> {
  if (!state) throw new Error('the model is not loaded yet');
  if (busy) throw new Error('busy: wait for the current run');
  const { sd } = state;
  const o = { ...DEFAULTS, ...req };
  for (const k of ['n', 'steps', 'guidance', 'seed'] as const) el<HTMLInputElement>(k).value = String(o[k]);
  el<HTMLInputElement>('prompt').value = o.prompt;
  setBusy(true);
  const bar = el<HTMLProgressElement>('progress');
  bar.max = o.steps;
  bar.value = 0;
  const t = performance.now();
  try {
    const r = await D.sampleAsync(sd, {
      prompts: new Array(o.n).fill(o.prompt), steps: o.steps, eta: o.eta, guidance: o.guidance, seed: o.seed,
      onStep: (k, total) => { bar.value = k; status(`sampling: step ${k} of ${total}`); },
    });
    try {
      const bad = await r.nonFinite;
      if (bad.length) throw new Error(`sample ${bad[0].index}: ${bad[0].message}`);
      const [B, C, H, W] = r.images!.shape;
      const flat = await r.images!.data();
      const per = C * H * W;
      const images = Array.from({ length: B }, (_, i) => Array.from(flat.subarray(i * per, (i + 1) * per)));
      drawGrid(el('grid'), images, H, W, images.map((_, i) => `${o.prompt} · seed ${o.seed} #${i}`));
      const ms = Math.round(performance.now() - t);
      status(`${B} image${B > 1 ? 's' : ''}, ${o.steps} DDIM steps (η ${o.eta}, guidance ${o.guidance}) in ${(ms / 1000).toFixed(1)} s`);
      return { images, shape: [C, H, W], ms };
    } finally {
      r.trajectory.dispose();
      r.images?.dispose();
    }
  } finally {
    setBusy(false);
  }
}

/**
 * One DDPO epoch on the loaded model (DDPO-IS, LoRA; JPEG compressibility scored in a Web
 * Worker). The first call fixes the run's options; later calls continue it, and Sample then
 * draws from the fine-tuned model.
 */
export async function fineTune(opts: Partial<FineTuneOptions> = {}): Promise<FineTuneResult> {
  if (!state) throw new Error('the model is not loaded yet');
  if (busy) throw new Error('busy: wait for the current run');
  setBusy(true);
  const bar = el<HTMLProgressElement>('progress');
  try {
    if (!tuner) {
      const worker = workerRunner(new URL('./reward-worker.js', import.meta.url));
      tuner = new FineTuner(state.sd, { ...FINE_TUNE_DEFAULTS, prompt: el<HTMLInputElement>('prompt').value || 'a fox', ...opts }, worker.runner);
    }
    const r = await tuner.epoch((p) => {
      bar.max = p.total;
      bar.value = p.done;
      status(`fine-tuning: ${p.phase} ${p.done} of ${p.total}`);
    });
    el('rewards').textContent = `epoch ${r.epoch} ("${tuner.options.prompt}", ${r.rewards.length} samples, ${tuner.options.steps} steps, DDPO-IS + LoRA): ` +
      `rewards (JPEG compressibility, −kB) ${r.rewards.map((x) => x.toFixed(3)).join(', ')}; mean ${r.meanReward.toFixed(3)}\n` +
      `loss ${r.loss.toExponential(3)}, approx KL ${r.approxKl.toExponential(3)}, clipfrac ${r.clipfrac.toFixed(3)} over ${r.optimizerSteps} optimizer steps; ` +
      `LoRA weights moved by up to ${r.loraChange.toExponential(2)}; ${(r.ms / 1000).toFixed(1)} s`;
    drawGrid(el('grid'), r.images, r.shape[1], r.shape[2], r.rewards.map((x) => `reward ${x.toFixed(3)}`));
    status(`one DDPO epoch in ${(r.ms / 1000).toFixed(1)} s`);
    app.lastFineTune = r;
    return r;
  } finally {
    setBusy(false);
  }
}

function readForm(): SampleRequest {
  const num = (id: string, d: number) => {
    const v = Number(el<HTMLInputElement>(id).value);
    return Number.isFinite(v) ? v : d;
  };
  return { prompt: el<HTMLInputElement>('prompt').value, n: num('n', DEFAULTS.n), steps: num('steps', DEFAULTS.steps), guidance: num('guidance', DEFAULTS.guidance), seed: num('seed', DEFAULTS.seed), eta: DEFAULTS.eta };
}

const report = (e: unknown) => { status(`FAILED: ${(e as Error).stack ?? e}`); app.lastError = String((e as Error).stack ?? e); };
el('sample').addEventListener('click', () => { sampleGrid(readForm()).catch(report); });
el('finetune').addEventListener('click', () => { fineTune().catch(report); });

const ready = init();
ready.catch(report);
/** For test/browser.test.ts: the actions, and what the buttons last produced. */
const app: { ready: Promise<PageInfo>; sampleGrid: typeof sampleGrid; fineTune: typeof fineTune; defaults: typeof DEFAULTS; lastFineTune?: FineTuneResult; lastError?: string } =
  { ready, sampleGrid, fineTune, defaults: DEFAULTS };
(globalThis as unknown as { ddpoApp: typeof app }).ddpoApp = app;
