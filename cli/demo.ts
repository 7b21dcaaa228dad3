// `ddpo demo`: picks the best device, prints it, and trains a small MLP on a synthetic regression
// task so the loss visibly falls. Writes the loss curve as SVG.

import { createNodeDevice } from '../engine/node.js';
import { Tensor, setDefaultDevice, tensor } from '../engine/tensor.js';
import { keep, tidy } from '../engine/scope.js';
import { backward } from '../engine/autograd.js';
import * as E from '../engine/ops/index.js';
import { AdamW } from '../engine/optim.js';
import { randomNormal, randomUniform } from '../engine/ops/random.js';
import { lineChartSVG } from './plot.js';
import { writeFileAtomic } from './files.js';
import { Progress } from './progress.js';

export interface DemoOptions {
  steps: number;
  hidden: number;
  batch: number;
  lr: number;
  seed: number;
  out: string;
  adapter?: string;
}

export async function demo(o: DemoOptions): Promise<number> {
  const dev = await createNodeDevice({ adapter: o.adapter });
  setDefaultDevice(dev);
  console.log(`device: ${dev.adapterName}`);
  console.log(`task: fit y = sin(3·x₀)·cos(2·x₁) + x₂² with a 3→${o.hidden}→${o.hidden}→1 SiLU MLP, batch ${o.batch}, AdamW lr ${o.lr}, ${o.steps} steps`);
  const init = (shape: number[], fanIn: number, seed: number) => keep(E.mulScalar(randomNormal(shape, seed), 1 / Math.sqrt(fanIn)).requireGrad());
  const params: Tensor[] = [
    init([3, o.hidden], 3, o.seed + 1), keep(E.zeros([o.hidden]).requireGrad()),
    init([o.hidden, o.hidden], o.hidden, o.seed + 2), keep(E.zeros([o.hidden]).requireGrad()),
    init([o.hidden, 1], o.hidden, o.seed + 3), keep(E.zeros([1]).requireGrad()),
  ];
  const [w1, b1, w2, b2, w3, b3] = params;
  const opt = new AdamW(params, { lr: o.lr, weightDecay: 1e-4 });
  const curve: [number, number][] = [];
  const progress = new Progress(o.steps, 'training');
  const every = Math.max(1, Math.floor(o.steps / 20));
  let pending: Promise<void> | null = null;
  for (let step = 1; step <= o.steps; step++) {
    const loss = tidy(() => {
      // Fresh data each step from the GPU generator (seeded by step): no host uploads in the loop.
      const x = E.mulScalar(E.add(randomUniform([o.batch, 3], o.seed * 1000 + step), -0.5), 2);
      const [x0, x1, x2] = [E.slice(x, [0, 0], [undefined, 1]), E.slice(x, [0, 1], [undefined, 2]), E.slice(x, [0, 2], [undefined, 3])];
      const y = E.add(E.mul(E.sin(E.mulScalar(x0, 3)), E.cos(E.mulScalar(x1, 2))), E.square(x2));
      const h1 = E.silu(E.add(E.matmul(x, w1), b1));
      const h2 = E.silu(E.add(E.matmul(h1, w2), b2));
      const pred = E.add(E.matmul(h2, w3), b3);
      const l = E.mean(E.square(E.sub(pred, y)));
      backward(l);
      opt.step();
      opt.zeroGrad();
      return l;
    });
    if (step % every === 0 || step === 1 || step === o.steps) {
      await pending;
      // Read the loss without stalling the next steps behind it.
      pending = loss.item().then((v) => { curve.push([step, v]); loss.dispose(); });
    } else {
      loss.dispose();
    }
    progress.update(step, curve.length ? `loss ${curve[curve.length - 1][1].toFixed(4)}` : '');
  }
  await pending;
  curve.sort((a, b) => a[0] - b[0]);
  for (const [s, v] of curve) if (s === 1 || s % (every * 4) === 0 || s === o.steps) console.log(`step ${String(s).padStart(5)}  loss ${v.toFixed(5)}`);
  const first = curve[0][1], last = curve[curve.length - 1][1];
  console.log(`loss ${first.toFixed(4)} -> ${last.toFixed(4)} (${(first / last).toFixed(1)}× lower)`);
  const mem = dev.memory();
  console.log(`GPU memory: live ${(mem.liveBytes / 1024).toFixed(0)} KiB, pooled ${(mem.pooledBytes / 1024).toFixed(0)} KiB, peak ${(mem.peakTotalBytes / 1024).toFixed(0)} KiB; ${dev.dispatchCount} dispatches in ${dev.submitCount} submits`);
  const svgPath = `${o.out}/demo-loss.svg`;
  writeFileAtomic(svgPath, lineChartSVG([{ name: 'training loss (MSE)', points: curve }], { title: `ddpo demo on ${dev.adapterName.split(' / ').slice(-1)[0]}`, xLabel: 'step', yLabel: 'loss (log scale)', logY: true }));
  console.log(`loss curve: ${svgPath}`);
  opt.dispose();
  for (const p of params) p.dispose();
  dev.destroy();
  void tensor;
  return last < first ? 0 : 1;
}
