// Does the DDPO policy gradient point uphill in expected reward? A direct check without the
// training loop (the loop's own check is test/learning.test.ts).
//
// Reward = mean of latent channel 0 of x₀: a function of the policy's actions (the sampled
// latents) alone, so no decoder is involved. On the tiny random pipeline we sample N trajectories
// (4 DDIM steps, η = 1, guidance 1), standardise the rewards into advantages A, and take
// g = ∇θ Σ_k scoreFunctionLoss(stepLogProb(k), A) = −∇θ mean_i Σ_k A_i·log p_k(i), with θ the
// UNet's conv_out weight and bias only. Then the expected reward, estimated on M fixed-seed
// trajectories (the same noise for both, so the comparison is nearly noise-free), must be higher
// after a descent step θ − ε·ĝ than after an ascent step θ + ε·ĝ.
//
// Analytic anchor: conv_out.bias[0] adds a constant to ε̂'s channel 0, and each DDIM step's mean
// is cx·x_t + ce·ε̂ with ce < 0 (x̂₀ subtracts √(1−ᾱ)·ε̂), so ignoring the UNet's Jacobian
// dR/db₀ = Σ_k ce_k·Π_{j>k} cx_j < 0 (≈ −5.5 with SD's schedule at 4 steps; pathwise finite
// differences give ≈ −5.4). Hence ∂L/∂b₀ must come out positive.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { disposeStableDiffusion } from '../../diffusion/load.js';
import { sample, stepLogProb } from '../../diffusion/pipeline.js';
import { stepCoefficients } from '../../diffusion/ddim.js';
import { backward } from '../../engine/autograd.js';
import { copyInto } from '../../engine/nn/module.js';
import { tidy } from '../../engine/scope.js';
import { Tensor, tensor } from '../../engine/tensor.js';
import { scoreFunctionLoss } from '../../rl/losses.js';
import { createTinyPipeline } from '../../rl/tiny-model.js';
import { testDevice } from '../helpers.js';

const dev = await testDevice();
const s = suite('ddpo-direction');

const STEPS = 4;
const LATENT: [number, number] = [4, 4];
const N = 32; // trajectories for the gradient
const M = 32; // fixed-seed trajectories for the expected reward
const EPS = 0.01; // step length along the unit gradient direction

const mean = (a: readonly number[]) => a.reduce((x, y) => x + y, 0) / a.length;

s('the score-function gradient raises the expected reward (mean of x₀ channel 0)', async () => {
  const sd = createTinyPipeline({ device: dev, seed: 0, size: 8, byteTokenizer: true });
  try {
    // The analytic sign of dR/db₀ through the DDIM coefficients alone.
    const co = sd.schedule.timesteps(STEPS).map((t) => stepCoefficients(sd.schedule, t, STEPS, 1));
    let dRdb0 = 0;
    co.forEach((c, k) => { dRdb0 += co.slice(k + 1).reduce((p, d) => p * d.cx, c.ce); });
    assert.ok(dRdb0 < 0, `analytic dR/db0 = ${dRdb0} should be negative`);

    sd.unet.freeze();
    const conv = sd.unet.child('conv_out');
    const params = [conv.param('weight'), conv.param('bias')];
    for (const p of params) p.requireGrad(true);
    const orig = await Promise.all(params.map(async (p) => Float64Array.from(await p.data())));

    const rewards = async (seed: number, n: number) => {
      const { trajectory } = sample(sd, { prompts: new Array<string>(n).fill('cat'), steps: STEPS, eta: 1, guidance: 1, seed, latentSize: LATENT, decode: false });
      const x0 = await trajectory.latents[STEPS].data();
      const hw = LATENT[0] * LATENT[1], per = 4 * hw;
      const r: number[] = [];
      for (let i = 0; i < n; i++) {
        let acc = 0;
        for (let j = 0; j < hw; j++) acc += x0[i * per + j];
        r.push(acc / hw);
      }
      return { r, trajectory };
    };
    const setParams = (dir: Float64Array[], eps: number) => {
      params.forEach((p, i) => {
        const t: Tensor = tensor(Float32Array.from(orig[i], (x, j) => x + eps * dir[i][j]), p.shape, 'f32', dev);
        copyInto(p, t);
        t.dispose();
      });
    };
    const expectedReward = async (dir: Float64Array[], eps: number) => {
      setParams(dir, eps);
      const { r, trajectory } = await rewards(999, M);
      trajectory.dispose();
      return mean(r);
    };

    // g = ∇ of the score-function surrogate, summed over the steps.
    const { r, trajectory } = await rewards(1, N);
    const m = mean(r), sdev = Math.sqrt(mean(r.map((x) => (x - m) ** 2)));
    const adv = r.map((x) => (x - m) / (sdev + 1e-8));
    for (const p of params) { p.grad?.dispose(); p.grad = null; }
    for (let k = 0; k < STEPS; k++) tidy(() => { backward(scoreFunctionLoss(stepLogProb(sd, trajectory, k).logProb, adv)); });
    trajectory.dispose();
    const g = await Promise.all(params.map(async (p) => Float64Array.from(await p.grad!.data())));
    for (const p of params) { p.grad?.dispose(); p.grad = null; }
    const norm = Math.sqrt(g.reduce((a, x) => a + x.reduce((b, y) => b + y * y, 0), 0));
    assert.ok(norm > 0 && Number.isFinite(norm), `gradient norm ${norm}`);
    assert.ok(g[1][0] > 0, `∂L/∂conv_out.bias[0] = ${g[1][0]} should be positive (dR/db0 < 0)`);

    const descent = g.map((x) => x.map((y) => -y / norm));
    const up = await expectedReward(descent, EPS);
    const down = await expectedReward(descent, -EPS);
    setParams(descent, 0);
    console.log(`  reward after descent ${up.toFixed(5)}, after ascent ${down.toFixed(5)} (ε = ${EPS}, |g| = ${norm.toExponential(3)})`);
    assert.ok(up > down, `descent on the DDPO surrogate should raise the expected reward: ${up} vs ${down}`);
  } finally {
    disposeStableDiffusion(sd);
  }
});

s.run();
