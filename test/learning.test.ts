// Training moves the model the way the reward asks: on the tiny random SD-architecture pipeline,
// two epochs of DDPO-IS, DDPO-SF and RWR each raise the brightness of fixed-seed evaluation
// samples, and DDPO-IS on negated advantages (the negative control) lowers it.
//
// Why brightness and not JPEG size: a random model's images are noise, and their JPEG size sits
// at a maximum along every simple direction of the model (shifting the UNet's output bias either
// way makes them smaller: rewards/README.md), so from scratch compressibility has a vanishing
// gradient and incompressibility nowhere to go, and a few epochs show nothing. Brightness has a
// first-order handle (that same bias moves it one way), so the signal is there within two
// epochs. test/slow/learning.test.ts repeats this over seeds and runs JPEG compressibility longer.
//
// The evaluation is the mean reward of 16 samples from fixed noise (common random numbers), before
// and after training, so the difference is the model's change and not sampling noise.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { testDevice } from './helpers.js';
import { learn as learnWith } from './learning-setup.js';

const dev = await testDevice();
const s = suite('learning');
const scratch = mkdtempSync(join(tmpdir(), 'ddpo-learning-'));
const learn = (config: Parameters<typeof learnWith>[0]) => learnWith(config, { device: dev, scratch });

/**
 * Required change of the eval brightness (0…1 scale). Measured (lavapipe, seed 11): DDPO-IS lr
 * 1e-3 with one step per epoch moved it +0.0026 in two epochs, its negated control −0.0035; the
 * spread of one image's brightness across samples is about 0.003.
 */
const MARGIN = 0.001;

for (const [algorithm, extra] of [
  ['ddpo-is', {}],
  ['ddpo-sf', { gradient_accumulation_steps: 2 }],
  ['rwr', {}],
] as const) {
  s(`${algorithm}: two epochs raise the fixed-seed eval brightness by > ${MARGIN}`, async () => {
    const { before, after } = await learn({ algorithm, ...extra });
    assert.ok(after - before > MARGIN, `${algorithm}: ${before} → ${after}`);
  });
}

s(`negative control: DDPO-IS on negated advantages lowers it by > ${MARGIN}`, async () => {
  const { before, after } = await learn({ algorithm: 'ddpo-is', negate_advantages: true });
  assert.ok(after - before < -MARGIN, `negated: ${before} → ${after}`);
});

s.after(() => rmSync(scratch, { recursive: true, force: true }));

s.run();
