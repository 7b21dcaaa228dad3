// DDIM steps as Gaussian policies: schedule conventions, the reference code's log-probabilities,
// gradients, DDPM's posterior, closed forms, and bit-identical re-evaluation.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import * as E from '../engine/index.js';
import { DDIMSchedule } from '../diffusion/schedule.js';
import { ddimStep, stepCoefficients } from '../diffusion/ddim.js';
import { assertClose, assertThrows, randArray, testDevice, repoRoot } from './helpers.js';

await testDevice();
const s = suite('ddim');

const shared = resolve(repoRoot(), '..', 'shared');
const SD = { beta_start: 0.00085, beta_end: 0.012, beta_schedule: 'scaled_linear', num_train_timesteps: 1000, set_alpha_to_one: false, steps_offset: 1, clip_sample: false };

s('SD schedule: timesteps 981 … 1 and ᾱ as diffusers computes it', () => {
  const sch = new DDIMSchedule(SD);
  const ts = sch.timesteps(50);
  assert.is(ts.length, 50);
  assert.is(ts[0], 981); assert.is(ts[1], 961); assert.is(ts[49], 1);
  assert.is(sch.prevTimestep(1, 50), -19);
  assert.is(sch.alphaPrev(1, 50), sch.alphasCumprod[0], 'below 0 the DDPO code clamps to ᾱ₀ (= final_alpha_cumprod for SD)');
  const path = resolve(shared, 'reference', 'ddim_logprob_cases.json');
  if (existsSync(path)) {
    const ref = JSON.parse(readFileSync(path, 'utf8'));
    assert.equal(ts, ref.timesteps_50);
    assertClose(sch.alphasCumprod, ref.alphas_cumprod, 0, 0, "alphas_cumprod (bit-equal to torch)");
  }
  assert.is(new DDIMSchedule({ ...SD, set_alpha_to_one: true }).alphaPrev(1, 50), 1);
  const lin = new DDIMSchedule({ beta_schedule: 'linear', beta_start: 0.0001, beta_end: 0.02 });
  assertClose([lin.alphasCumprod[0], lin.alphasCumprod[1]], [1 - 0.0001, (1 - 0.0001) * (1 - (0.0001 + 0.0199 / 999))], 1e-6);
});

s('a scheduler config we do not support is an Error naming the key', async () => {
  await assertThrows(() => new DDIMSchedule({ ...SD, beta_schedule: 'cosine_weird' }), /beta_schedule/);
  await assertThrows(() => new DDIMSchedule({ ...SD, timestep_spacing: 'trailing' }), /timestep_spacing/);
  await assertThrows(() => new DDIMSchedule({ ...SD, prediction_type: 'sample' }), /prediction_type/);
  await assertThrows(() => new DDIMSchedule({ ...SD, mystery: 1 }), /mystery/);
  const pndm = resolve(shared, 'reference', 'tiny-sd-pipe', 'scheduler', 'scheduler_config.json');
  if (existsSync(pndm)) new DDIMSchedule(JSON.parse(readFileSync(pndm, 'utf8'))); // SD's PNDM config is accepted
});

s('matches the DDPO reference code (float64) to f32 precision', async () => {
  const path = resolve(shared, 'reference', 'ddim_logprob_cases.json');
  if (!existsSync(path)) { console.log(`  (skipped: ${path} not found)`); return; }
  const ref = JSON.parse(readFileSync(path, 'utf8'));
  const sch = new DDIMSchedule(SD);
  for (const c of ref.cases) {
    const coef = stepCoefficients(sch, c.t, 50, c.eta);
    assertClose([coef.std], [c.std], 1e-6, 0, `σ at t=${c.t}`);
    const x = E.tensor(c.sample, c.shape), out = E.tensor(c.model_output, c.shape), prev = E.tensor(c.prev_sample, c.shape);
    const r = ddimStep(sch, out, c.t, x, { numSteps: 50, eta: c.eta, prevSample: prev });
    assertClose(await r.mean.data(), c.mean, 1e-5, 1e-6, `mean at t=${c.t}`);
    assertClose(await r.logProb!.data(), c.log_prob_mean, 1e-5, 1e-4, `log-prob (mean) at t=${c.t}`);
    const rs = ddimStep(sch, out, c.t, x, { numSteps: 50, eta: c.eta, prevSample: prev, reduce: 'sum' });
    assertClose(await rs.logProb!.data(), c.log_prob_sum, 1e-5, 1e-3, `log-prob (sum) at t=${c.t}`);
  }
});

s('gradient of the log-probability w.r.t. the model output matches the float64 analytic gradient', async () => {
  const sch = new DDIMSchedule(SD);
  const shape = [2, 3, 5];
  const n = 15;
  const xs = randArray(30, 1), eps = randArray(30, 2), xp = randArray(30, 3);
  const t = 501;
  const c = stepCoefficients(sch, t, 50, 1);
  const out = E.tensor(eps, shape).requireGrad();
  const r = ddimStep(sch, out, t, E.tensor(xs, shape), { numSteps: 50, eta: 1, prevSample: E.tensor(xp, shape) });
  const w = [0.7, -1.3];
  E.backward(r.logProb!, { grad: E.tensor(w, [2]) });
  // d/dε of mean_i −(xp_i − m_i)²/(2σ²) with m = cx·x + ce·ε
  const expected = eps.map((e, i) => {
    const m = c.cx * xs[i] + c.ce * e;
    return w[Math.floor(i / n)] * ((xp[i] - m) / (c.std * c.std)) * c.ce / n;
  });
  assertClose(await out.grad!.data(), expected, 1e-4, 1e-6, 'd logp / d ε');
});

s('η = 1 reproduces the DDPM posterior q(x_prev | x_t, x̂₀)', async () => {
  const sch = new DDIMSchedule(SD);
  for (const t of [981, 501, 41]) {
    const c = stepCoefficients(sch, t, 50, 1);
    const a = c.alpha, ap = c.alphaPrev, beta = 1 - a / ap;
    assertClose([c.std * c.std], [((1 - ap) / (1 - a)) * beta], 1e-9, 0, `posterior variance at ${t}`);
    const xs = randArray(8, t), eps = randArray(8, t + 1);
    const r = ddimStep(sch, E.tensor(eps, [1, 8]), t, E.tensor(xs, [1, 8]), { numSteps: 50, eta: 1, prevSample: E.zeros([1, 8]) });
    const mu = xs.map((x, i) => {
      const x0 = (x - Math.sqrt(1 - a) * eps[i]) / Math.sqrt(a);
      return (Math.sqrt(ap) * beta / (1 - a)) * x0 + (Math.sqrt(a / ap) * (1 - ap) / (1 - a)) * x;
    });
    assertClose(await r.mean.data(), mu, 1e-5, 1e-5, `posterior mean at ${t}`);
  }
});

s('η = 0 with a model that knows the noise: x₀ with set_alpha_to_one, √ᾱ₀x₀ + √(1−ᾱ₀)ε with SD settings', async () => {
  const x0v = randArray(12, 5), epsv = randArray(12, 6);
  for (const alphaToOne of [true, false]) {
    const sch = new DDIMSchedule({ ...SD, set_alpha_to_one: alphaToOne });
    const steps = 10;
    const ts = sch.timesteps(steps);
    const x0 = E.tensor(x0v, [2, 6]);
    const a0 = sch.alphaAt(ts[0]);
    let x = E.tensor(x0v.map((v, i) => Math.sqrt(a0) * v + Math.sqrt(1 - a0) * epsv[i]), [2, 6]);
    for (const t of ts) {
      const a = sch.alphaAt(t);
      const eps = E.mulScalar(E.sub(x, E.mulScalar(x0, Math.sqrt(a))), 1 / Math.sqrt(1 - a)); // the true noise of x_t
      const r = ddimStep(sch, eps, t, x, { numSteps: steps, eta: 0 });
      assert.is(r.logProb, null, 'η = 0 has no density');
      x = r.prevSample;
    }
    const af = sch.alphaPrev(ts[steps - 1], steps);
    const expected = x0v.map((v, i) => (alphaToOne ? v : Math.sqrt(af) * v + Math.sqrt(1 - af) * epsv[i]));
    assertClose(await x.data(), expected, 1e-4, 1e-5, alphaToOne ? 'x₀' : 'closed form');
  }
});

s('addNoise and velocity (the training forward process) match float64, one timestep per sample; ddimStep leaves no temporaries', async () => {
  const dev = await testDevice();
  for (const pt of ['epsilon', 'v_prediction'] as const) {
    const sch = new DDIMSchedule({ ...SD, prediction_type: pt });
    const ts = [999, 0, 500];
    const x0v = randArray(3 * 8, 1), nv = randArray(3 * 8, 2);
    const x0 = E.tensor(x0v, [3, 2, 4]), noise = E.tensor(nv, [3, 2, 4]);
    const live = dev.memory().liveBytes;
    const xt = sch.addNoise(x0, noise, ts), v = sch.velocity(x0, noise, ts), target = sch.trainingTarget(x0, noise, ts);
    const a = (i: number) => sch.alphasCumprod[ts[Math.floor(i / 8)]];
    assertClose(await xt.data(), Array.from(x0v, (x, i) => Math.sqrt(a(i)) * x + Math.sqrt(1 - a(i)) * nv[i]), 1e-6, 1e-6, 'x_t');
    assertClose(await v.data(), Array.from(x0v, (x, i) => Math.sqrt(a(i)) * nv[i] - Math.sqrt(1 - a(i)) * x), 1e-6, 1e-6, 'v');
    assert.is(target === noise, pt === 'epsilon', `${pt}: the target is ${pt === 'epsilon' ? 'the noise' : 'v'}`);
    if (target !== noise) target.dispose();
    xt.dispose(); v.dispose();
    assert.is(dev.memory().liveBytes, live, 'no coefficient tensors left behind');
    const r = ddimStep(sch, noise, 500, x0, { numSteps: 10, eta: 1, noise });
    r.prevSample.dispose(); r.mean.dispose(); r.logProb!.dispose();
    assert.is(dev.memory().liveBytes, live, 'ddimStep frees every intermediate');
    await assertThrows(() => sch.addNoise(x0, noise, [1, 2]), /2 timesteps for a batch of 3/);
    x0.dispose(); noise.dispose();
  }
});

s('re-evaluating a sampled step gives bit-identical log-probabilities, at any batch size', async () => {
  const sch = new DDIMSchedule(SD);
  const shape = [4, 4, 3, 3];
  const x = E.randomNormal(shape, 11), out = E.randomNormal(shape, 12), z = E.randomNormal(shape, 13);
  const sampled = ddimStep(sch, out, 761, x, { numSteps: 50, eta: 1, noise: z });
  const lp = await sampled.logProb!.data();
  const again = ddimStep(sch, out, 761, x, { numSteps: 50, eta: 1, prevSample: sampled.prevSample });
  assert.equal([...await again.logProb!.data()], [...lp]);
  const part = (t: E.Tensor) => E.slice(t, [1], [3]);
  const sub = ddimStep(sch, part(out), 761, part(x), { numSteps: 50, eta: 1, prevSample: part(sampled.prevSample) });
  assert.equal([...await sub.logProb!.data()], [...lp.slice(1, 3)]);
  const f16 = ddimStep(sch, E.cast(out, 'f16'), 761, x, { numSteps: 50, eta: 1, prevSample: sampled.prevSample });
  assert.is(f16.logProb!.dtype, 'f32', 'log-probabilities stay f32 with an f16 model output');
});

s.run();
