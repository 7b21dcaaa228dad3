// How the rewards of a model's samples move when the UNet's output bias is shifted: the
// measurement behind "JPEG rewards on a model trained from scratch" in rewards/README.md.
// `node dist/bench/reward-levers.js [--channels 1,1,1,1] [--n 16]`: for δ in −2…2, adds δ·channels
// to `conv_out.bias` of the tiny pipeline (rl/tiny-model.ts, seed 0, 16×16) and prints the mean and
// spread of the JPEG size (kB) and of the brightness of n fixed-seed samples (4 steps, no guidance).

import { pathToFileURL } from 'node:url';
import { noGrad } from '../engine/autograd.js';
import { copyInto } from '../engine/nn/module.js';
import { createNodeDevice } from '../engine/node.js';
import { setDefaultDevice, tensor } from '../engine/tensor.js';
import { disposeStableDiffusion } from '../diffusion/load.js';
import { sample } from '../diffusion/pipeline.js';
import { meanPixel } from '../rewards/brightness.js';
import { jpegSizesKB } from '../rewards/jpeg.js';
import { createTinyPipeline } from '../rl/tiny-model.js';

const stats = (a: number[]) => {
  const m = a.reduce((x, y) => x + y, 0) / a.length;
  return `${m.toFixed(4)} ± ${Math.sqrt(a.reduce((x, y) => x + (y - m) ** 2, 0) / a.length).toFixed(4)}`;
};

async function main(argv: string[]): Promise<void> {
  let channels = [1, 1, 1, 1], n = 16;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--channels') channels = (argv[++i] ?? '').split(',').map(Number);
    else if (argv[i] === '--n') n = Number(argv[++i]);
    else throw new Error(`unknown argument ${argv[i]}\nusage: node dist/bench/reward-levers.js [--channels 1,1,1,1] [--n 16]`);
  }
  if (channels.length !== 4 || channels.some((c) => !Number.isFinite(c))) throw new Error('--channels takes 4 numbers, e.g. 1,0,0,0');
  if (!(Number.isInteger(n) && n > 0)) throw new Error('--n takes a positive integer');
  const dev = await createNodeDevice();
  setDefaultDevice(dev);
  const sd = createTinyPipeline({ device: dev, seed: 0 });
  const bias = sd.unet.stateDict().get('conv_out.bias')!;
  const b0 = Float32Array.from(await bias.data());
  const prompts = Array.from({ length: n }, (_, i) => ['cat', 'dog'][i % 2]);
  console.log(`conv_out.bias + δ·[${channels.join(', ')}], ${n} samples (seed 3): mean ± spread across samples`);
  for (const d of [-2, -1, -0.5, -0.2, 0, 0.2, 0.5, 1, 2]) {
    const shifted = tensor(b0.map((v, i) => v + d * channels[i]), bias.shape);
    copyInto(bias, shifted);
    shifted.dispose();
    const r = noGrad(() => sample(sd, { prompts, steps: 4, guidance: 1, seed: 3 }));
    const [b, c, h, w] = r.images!.shape;
    const images = { data: (await r.images!.data()) as Float32Array, n: b, c, h, w };
    console.log(`δ ${String(d).padStart(4)}: JPEG ${stats(jpegSizesKB(images))} kB, brightness ${stats(meanPixel(images))}`);
    r.trajectory.dispose();
    r.images!.dispose();
  }
  disposeStableDiffusion(sd);
  dev.destroy();
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main(process.argv.slice(2)).then(() => process.exit(0), (e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exit(1);
  });
}
