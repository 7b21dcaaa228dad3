// DDPO's losses (PPO clip, score function, KL penalty, weighted mean), RWR weights, the per-prompt
// stat tracker and the prompt generators, against hand-computed values and float64 references;
// loss gradients w.r.t. logProb against analytic gradients (those checked once against finite
// differences).

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { backward, tensor } from '../engine/index.js';
import { klPenalty, percentile, ppoClipLoss, rwrSparseWeights, rwrWeights, scoreFunctionLoss, weightedMean } from '../rl/losses.js';
import { StatTracker } from '../rl/advantages.js';
import { ACTIVITIES, PromptRng, SIMPLE_ANIMALS, animalActivities, indefiniteArticle, promptsFromLines, samplePrompts, simpleAnimals } from '../rl/prompts.js';
import { promptsFromFile } from '../rl/prompts-file.js';
import { assertClose, assertThrows, finiteDiff, rng, testDevice, repoRoot } from './helpers.js';

const dev = await testDevice();
void dev;
const s = suite('rl-math');

// ---------------------------------------------------------------- float64 references

/** PPO clip loss, its gradient w.r.t. logp, clipfrac and approx KL (the DDPO reference code's formulas). */
function ppoRef(logp: Float64Array, old: Float64Array, adv: Float64Array, eps: number, advMax: number) {
  const n = logp.length;
  let loss = 0, kl = 0, cf = 0;
  const grad = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const a = Math.min(Math.max(adv[i], -advMax), advMax);
    const d = logp[i] - old[i];
    const r = Math.exp(d);
    const rc = Math.min(Math.max(r, 1 - eps), 1 + eps);
    const u = -a * r, c = -a * rc;
    loss += Math.max(u, c) / n;
    // The unclipped branch carries the gradient when it is the max (ties: both equal -A·r).
    grad[i] = u >= c ? (-a * r) / n : 0;
    kl += (0.5 * d * d) / n;
    cf += (Math.abs(r - 1) > eps ? 1 : 0) / n;
  }
  return { loss, grad, kl, cf };
}

const f32 = (xs: number[]) => Float64Array.from(xs, Math.fround);

// ---------------------------------------------------------------- PPO clip

s('ppoClipLoss: hand-computed loss, clipfrac, approx_kl and gradient (clipRange 0.2)', async () => {
  // ratios 1, 1.5, 0.5, 1.1, 0.5 with advantages 1, 2, -3, 10 (clipped to 5), 2:
  //   −A·r vs −A·clip(r): [−1 | −1], [−3 | −2.4], [1.5 | 2.4], [−5.5 | −5.5], [−1 | −1.6]
  //   max: −1, −2.4 (clip), 2.4 (clip), −5.5, −1 (unclipped wins: pessimistic bound)
  const d = [0, Math.log(1.5), Math.log(0.5), Math.log(1.1), Math.log(0.5)];
  const old = [-1.25, -0.5, -3, -2, 0.75];
  const lp = tensor(d.map((x, i) => x + old[i]), [5]).requireGrad();
  const { loss, approxKl, clipfrac } = ppoClipLoss(lp, old, [1, 2, -3, 10, 2], 0.2, 5);
  assertClose([await loss.item()], [-7.5 / 5], 1e-5, 1e-6, 'loss');
  assertClose([await clipfrac.item()], [3 / 5], 0, 1e-7, 'clipfrac');
  assertClose([await approxKl.item()], [(0.5 * d.reduce((a, x) => a + x * x, 0)) / 5], 1e-5, 1e-7, 'approx_kl');
  assert.equal(loss.shape, []);
  assert.ok(!approxKl.requiresGrad && !clipfrac.requiresGrad, 'statistics carry no gradient');
  backward(loss);
  // d/dlogp = −A·r/N where the unclipped branch is the max, else 0.
  assertClose(await lp.grad!.data(), [-1 / 5, 0, 0, (-5 * 1.1) / 5, (-2 * 0.5) / 5], 1e-5, 1e-6, 'dloss/dlogp');
  for (const t of [lp, loss, approxKl, clipfrac, lp.grad!]) t.dispose();
});

s('ppoClipLoss: random inputs at the default clipRange 1e-4 vs float64, gradient and its finite-difference check', async () => {
  const n = 37, r = rng(11);
  const old = f32(Array.from({ length: n }, () => -2 + r()));
  // Log-ratio offsets of ±3e-4, avoiding |Δ| ≈ ε where f32 rounding could flip the clip decision.
  const dl = Array.from({ length: n }, () => { let x; do x = (r() * 2 - 1) * 3e-4; while (Math.abs(Math.abs(x) - 1e-4) < 2e-5); return x; });
  const logp = f32(dl.map((x, i) => old[i] + x));
  const adv = f32(Array.from({ length: n }, () => (r() * 2 - 1) * 8)); // some beyond ±5
  const ref = ppoRef(logp, old, adv, 1e-4, 5);
  const lp = tensor(logp, [n]).requireGrad();
  const { loss, approxKl, clipfrac } = ppoClipLoss(lp, tensor(old, [n]), tensor(adv, [n]));
  assertClose([await loss.item()], [ref.loss], 1e-5, 1e-6, 'loss');
  assertClose([await clipfrac.item()], [ref.cf], 0, 1e-6, 'clipfrac');
  assertClose([await approxKl.item()], [ref.kl], 1e-5, 1e-14, 'approx_kl'); // f32 logp − old is exact here (Sterbenz)
  assert.ok(ref.cf > 0.2 && ref.cf < 0.9, `the case exercises both branches (clipfrac ${ref.cf})`);
  backward(loss);
  assertClose(await lp.grad!.data(), ref.grad, 1e-4, 1e-6, 'dloss/dlogp');
  // The analytic reference gradient against central differences of the reference loss.
  const fd = finiteDiff(([x]) => ppoRef(x, old, adv, 1e-4, 5).loss, [Float64Array.from(logp)], 1e-9)[0];
  assertClose(ref.grad, fd, 1e-4, 1e-7, 'reference gradient vs finite differences');
  for (const t of [lp, loss, approxKl, clipfrac, lp.grad!]) t.dispose();
});

s('ppoClipLoss: constants get no gradient; bad shapes name the op', async () => {
  const lp = tensor([0.1, 0.2], [2]).requireGrad();
  const old = tensor([0.1, 0.1], [2]).requireGrad();
  const { loss } = ppoClipLoss(lp, old, [1, 1], 0.5);
  backward(loss);
  assert.ok(old.grad === null, 'oldLogProb is a constant');
  await assertThrows(() => ppoClipLoss(lp, [1, 2, 3], [1, 1]), /ppoClipLoss/, /oldLogProb has 3 values/, /\[2\] f32/);
  await assertThrows(() => ppoClipLoss(lp, tensor([1, 2], [1, 2]), [1, 1]), /ppoClipLoss/, /\[1,\s?2\] f32/);
  for (const t of [lp, old, loss, lp.grad!]) t.dispose();
});

// ---------------------------------------------------------------- score function, weighted mean, KL

s('scoreFunctionLoss: mean(−A·logp) and gradient −A/N (hand values)', async () => {
  const lp = tensor([-1, -2, 0.5], [3]).requireGrad();
  const loss = scoreFunctionLoss(lp, [1, -2, 3]);
  // −A·logp: −1·(−1) = 1, 2·(−2) = −4, −3·0.5 = −1.5 → mean −1.5
  assertClose([await loss.item()], [-1.5], 1e-6, 1e-7, 'loss');
  backward(loss);
  assertClose(await lp.grad!.data(), [-1 / 3, 2 / 3, -1], 1e-6, 1e-7, 'grad');
  const clipped = scoreFunctionLoss(tensor([1, 1], [2]), [10, -1], 5);
  assertClose([await clipped.item()], [(-5 + 1) / 2], 1e-6, 1e-7, 'advantages clipped to ±5');
  for (const t of [lp, loss, lp.grad!, clipped]) t.dispose();
});

s('weightedMean: mean(w·loss) and gradient w/N', async () => {
  const l = tensor([2, 4, 8], [3]).requireGrad();
  const out = weightedMean(l, [0.5, 0, 2]);
  assertClose([await out.item()], [(1 + 0 + 16) / 3], 1e-6, 1e-7);
  backward(out);
  assertClose(await l.grad!.data(), [0.5 / 3, 0, 2 / 3], 1e-6, 1e-7);
  for (const t of [l, out, l.grad!]) t.dispose();
});

s('klPenalty: ‖μθ − μref‖²/(2σ²) reduced per sample like the log-probability, averaged over the batch', async () => {
  // sample 0: diff (1, 0), sample 1: diff (0.5, 0.5); σ = 0.5 → 2σ² = 0.5
  const mt = tensor([1, 2, 3.5, 4.5], [2, 2]).requireGrad();
  const mr = tensor([0, 2, 3, 4], [2, 2]);
  const kMean = klPenalty(mt, mr, 0.5);
  assertClose([await kMean.item()], [(0.5 / 0.5 + 0.25 / 0.5) / 2], 1e-6, 1e-7, 'mean over dims');
  const kSum = klPenalty(mt, mr, 0.5, { reduce: 'sum' });
  assertClose([await kSum.item()], [(1 / 0.5 + 0.5 / 0.5) / 2], 1e-6, 1e-7, 'sum over dims (the exact Gaussian KL)');
  // Per-sample σ (host numbers or a tensor): σ = (0.5, 1) → per-sample 0.5/0.5, 0.25/2
  const kPer = klPenalty(mt, mr, [0.5, 1]);
  assertClose([await kPer.item()], [(1 + 0.125) / 2], 1e-6, 1e-7, 'per-sample std');
  const kPerT = klPenalty(mt, mr, tensor([0.5, 1], [2, 1]));
  assertClose([await kPerT.item()], [(1 + 0.125) / 2], 1e-6, 1e-7, 'per-sample std tensor');
  backward(kMean);
  // d/dμθ = (μθ − μref)/(σ²·D·B) with D = 2 dims, B = 2
  assertClose(await mt.grad!.data(), [1, 0, 0.5, 0.5].map((x) => x / (0.25 * 2 * 2)), 1e-6, 1e-7, 'grad');
  await assertThrows(() => klPenalty(mt, tensor([1, 2], [2]), 0.5), /klPenalty/, /meanRef \[2\] f32 does not match meanTheta \[2,\s?2\] f32/);
  await assertThrows(() => klPenalty(mt, mr, 0), /std 0 must be > 0/);
  for (const t of [mt, mr, kMean, kSum, kPer, kPerT, mt.grad!]) t.dispose();
});

// ---------------------------------------------------------------- RWR weights

s('percentile: NumPy linear interpolation', () => {
  assertClose([percentile([1, 2, 3, 4], 0.9), percentile([3, 1, 2], 0.5), percentile([1, 10], 0.25), percentile([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 0.9)], [3.7, 2, 3.25, 8.1], 1e-12, 1e-12);
  assert.is(percentile([5], 0.9), 5);
  assert.is(percentile([2, NaN, 4], 0), 2);
});

s('rwrWeights: hand values, scale invariance when standardised, per prompt, NaN', () => {
  // Raw rewards, T = 1: softmax ∝ exp(0), exp(ln 2), exp(ln 3) = 1, 2, 3 → N·p = 0.5, 1, 1.5
  assertClose(rwrWeights([0, Math.log(2), Math.log(3)], { temperature: 1, standardise: false }), [0.5, 1, 1.5], 1e-12, 1e-12, 'raw');
  // Standardised ±1 with T = 0.2: ±5 → 2·e^{±5}/(e^5 + e^{−5})
  const w = rwrWeights([-1, 1]);
  assertClose(w, [2 / (1 + Math.exp(10)), 2 / (1 + Math.exp(-10))], 1e-12, 1e-15, 'standardised');
  // The same weights whatever the reward's units.
  assertClose(rwrWeights([-1000 + 500, 1000 + 500]), w, 1e-12, 1e-15, 'scale invariance');
  // T = 2/ln 3 on standardised ±1: softmax ∝ 1, 3 → 0.5, 1.5
  assertClose(rwrWeights([3, 7], { temperature: 2 / Math.log(3) }), [0.5, 1.5], 1e-12, 1e-12, 'T');
  // Per prompt: each group's weights average 1.
  const pp = rwrWeights([0, Math.log(3), 0, Math.log(2), Math.log(3)], { temperature: 1, standardise: false, perPrompt: ['a', 'a', 'b', 'b', 'b'] });
  assertClose(pp, [0.5, 1.5, 0.5, 1, 1.5], 1e-12, 1e-12, 'per prompt');
  // A dropped sample: weight 0, the rest as if it were absent.
  assertClose(rwrWeights([0, NaN, Math.log(3)], { temperature: 1, standardise: false }), [0.5, 0, 1.5], 1e-12, 1e-12, 'NaN');
  // Equal rewards: no preference.
  assertClose(rwrWeights([4, 4, 4]), [1, 1, 1], 0, 1e-12, 'flat');
});

s('rwrSparseWeights: 1 at or above the 90th percentile, else 0', () => {
  assert.equal(Array.from(rwrSparseWeights([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])), [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]); // threshold 8.1
  assert.equal(Array.from(rwrSparseWeights([4, 1, 3, 2])), [1, 0, 0, 0]); // 3.7
  assert.equal(Array.from(rwrSparseWeights([5, 5, 5])), [1, 1, 1]); // ties at the threshold are kept
  assert.equal(Array.from(rwrSparseWeights([1, 2, 10, 20, NaN], { perPrompt: ['a', 'a', 'b', 'b', 'b'] })), [0, 1, 0, 1, 0]);
  assert.equal(Array.from(rwrSparseWeights([1, 2, 3, 4], { quantile: 0.5 })), [0, 0, 1, 1]); // 2.5
});

// ---------------------------------------------------------------- stat tracker

s('StatTracker: per-prompt buffers, batch fallback below minCount, buffer size (hand values)', () => {
  const t = new StatTracker({ bufferSize: 3, minCount: 2 });
  const sd = Math.sqrt(8 / 3);
  // batch [1, 3, 5]: mean 3, std √(8/3). 'a' has 2 rewards (≥ minCount): mean 2, std 1. 'b' has 1: batch stats.
  assertClose(t.update(['a', 'a', 'b'], [1, 3, 5]), [-1 / (1 + 1e-6), 1 / (1 + 1e-6), 2 / (sd + 1e-6)], 1e-12, 1e-12, 'first batch');
  // 'a' buffer [1, 3, 5, 7] keeps the last 3: [3, 5, 7], mean 5, std √(8/3).
  assertClose(t.update(['a', 'a'], [5, 7]), [0, 2 / (sd + 1e-6)], 1e-12, 1e-12, 'second batch');
  const st = t.getStats();
  assertClose([st.a.mean, st.a.std, st.a.count, st.b.mean, st.b.std, st.b.count], [5, sd, 3, 5, 0, 1], 1e-12, 1e-12, 'stats');
});

s('StatTracker: defaults (32, 16), global mode, NaN rewards, JSON state round trip', () => {
  const t = new StatTracker();
  assert.is(t.bufferSize, 32); assert.is(t.minCount, 16);
  const g = new StatTracker({ mode: 'global' });
  const s4 = Math.sqrt(1.25);
  assertClose(g.update(['x', 'y', 'x', 'z'], [1, 2, 3, 4]), [-1.5, -0.5, 0.5, 1.5].map((x) => x / (s4 + 1e-8)), 1e-12, 1e-12, 'global');
  assert.equal(g.getStats(), {}, 'global mode keeps no buffers');
  // NaN: advantage 0, not buffered, not in the batch statistics.
  const n = new StatTracker({ minCount: 0 });
  assertClose(n.update(['a', 'a', 'a'], [1, NaN, 3]), [-1 / (1 + 1e-6), 0, 1 / (1 + 1e-6)], 1e-12, 1e-12, 'NaN');
  assert.is(n.getStats().a.count, 2);
  // Round trip through JSON: the restored tracker continues identically.
  const r = rng(3);
  const prompts = Array.from({ length: 40 }, () => ['cat', 'dog', 'ant'][Math.floor(r() * 3)]);
  const rewards = prompts.map(() => r() * 10);
  t.update(prompts.slice(0, 20), rewards.slice(0, 20));
  const restored = StatTracker.fromState(JSON.parse(JSON.stringify(t)));
  assert.equal(restored.getStats(), t.getStats());
  assert.equal(Array.from(restored.update(prompts.slice(20), rewards.slice(20))), Array.from(t.update(prompts.slice(20), rewards.slice(20))));
});

s('StatTracker: bad input names the method', async () => {
  await assertThrows(() => new StatTracker().update(['a'], [1, 2]), /StatTracker.update: 1 prompts for 2 rewards/);
  await assertThrows(() => StatTracker.fromState({ version: 2 } as never), /fromState/);
});

// ---------------------------------------------------------------- prompts

const PROMPTS_DIR = resolve(repoRoot(), '..', 'shared', 'prompts');

s('prompts: built-in lists match the paper files; articles', () => {
  assert.is(SIMPLE_ANIMALS.length, 45);
  assert.is(ACTIVITIES.length, 3);
  if (existsSync(PROMPTS_DIR)) {
    const lines = (f: string) => readFileSync(join(PROMPTS_DIR, f), 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
    assert.equal([...SIMPLE_ANIMALS], lines('simple_animals.txt'));
    assert.equal([...ACTIVITIES], lines('activities.txt'));
  } else {
    console.log(`  (skipped comparing with ${PROMPTS_DIR}: not present)`);
  }
  const cases: [string, string][] = [['ant', 'an'], ['cat', 'a'], ['elephant', 'an'], ['unicorn', 'a'], ['umbrella', 'an'], ['hour', 'an'], ['horse', 'a'], ['European robin', 'a'], ['owl', 'an'], ['one-eyed cat', 'a']];
  for (const [w, a] of cases) assert.is(indefiniteArticle(w), a, w);
});

s('prompts: deterministic by seed, resumable from saved state', () => {
  const a = samplePrompts(animalActivities, new PromptRng(42), 20);
  const b = samplePrompts(animalActivities, new PromptRng(42), 20);
  const c = samplePrompts(animalActivities, new PromptRng(43), 20);
  assert.equal(a, b);
  assert.not.equal(a.prompts, c.prompts);
  for (const [i, p] of a.prompts.entries()) {
    const { animal, activity } = a.metadata[i] as { animal: string; activity: string };
    assert.is(p, `${animal === 'ant' ? 'an' : 'a'} ${animal} ${activity}`);
    assert.ok(SIMPLE_ANIMALS.includes(animal) && ACTIVITIES.includes(activity));
  }
  // Resume: save the state midway, restore it (through JSON), and draw the same continuation.
  const rng1 = new PromptRng(7);
  samplePrompts(simpleAnimals, rng1, 5);
  const saved = JSON.parse(JSON.stringify(rng1));
  const rest = samplePrompts(simpleAnimals, rng1, 10).prompts;
  assert.equal(samplePrompts(simpleAnimals, PromptRng.fromState(saved), 10).prompts, rest);
  // Every animal turns up eventually (the choice is uniform, not stuck).
  const seen = new Set(samplePrompts(simpleAnimals, new PromptRng(1), 2000).prompts);
  assert.is(seen.size, 45);
});

s('prompts: from a file, whole lines, [from, to) ranges', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'prompts-'));
  try {
    const f = join(dir, 'p.txt');
    writeFileSync(f, 'tench, Tinca tinca\r\ngoldfish, Carassius auratus\r\ngreat white shark\r\n');
    const all = new Set(samplePrompts(promptsFromFile(f), new PromptRng(1), 50).prompts);
    assert.equal([...all].sort(), ['goldfish, Carassius auratus', 'great white shark', 'tench, Tinca tinca']);
    const first2 = new Set(samplePrompts(promptsFromFile(f, { to: 2 }), new PromptRng(1), 50).prompts);
    assert.equal([...first2].sort(), ['goldfish, Carassius auratus', 'tench, Tinca tinca']);
    await assertThrows(() => promptsFromFile(f, { from: 2, to: 4 }), /lines \[2, 4\) of .*p\.txt \(3 lines\)/);
    await assertThrows(() => promptsFromLines(['a', ' ', 'b']), /line 2 of prompt list is blank/);
    await assertThrows(() => promptsFromFile(join(dir, 'missing.txt')), /cannot read/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  const imagenet = join(PROMPTS_DIR, 'imagenet_classes.txt');
  if (existsSync(imagenet)) {
    const lines = readFileSync(imagenet, 'utf8').split('\n');
    const first398 = new Set(lines.slice(0, 398).map((l) => l.trim()));
    const drawn = samplePrompts(promptsFromFile(imagenet, { to: 398 }), new PromptRng(5), 200).prompts;
    assert.ok(drawn.every((p) => first398.has(p)), 'only the first 398 classes');
  }
});

s.run();
