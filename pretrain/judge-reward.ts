// Prompt alignment without a vision-language model: the reward of a sample is the judge's
// probability (softmax of its logits) of the sample's prompt among its captions — how surely the
// recognisability judge (pretrain/judge.ts, trained by `ddpo judge` on the model's own image set)
// sees in the image what the prompt asked for. Chance is 1 / number of captions. It plays the part
// the paper's LLaVA + BERTScore reward plays for SD, on our own small models, in-process on the
// training device or behind the reward service (`ddpo reward-server --reward '{"judge": {...}}'`).
//
// Config: {"judge": {"model": DIR, "batch_size": 64}}. A prompt that is not one of the judge's
// captions is dropped (with a reason naming it); images must have the judge's size.

import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { noGrad } from '../engine/autograd.js';
import { softmax } from '../engine/ops/softmax.js';
import { tidy } from '../engine/scope.js';
import { getDefaultDevice, tensor } from '../engine/tensor.js';
import type { HostedReward, RewardContext } from '../rewards/hosted.js';
import { JudgeRewardOptions, checkHostedReward } from '../rewards/hosted-options.js';
import type { Dropped, ScoredBatch } from '../rewards/score.js';
import { ImageBatch, checkBatch, sliceBatch } from '../rewards/types.js';
import { Judge, loadJudge } from './judge.js';

/** p(prompt's caption | image) for each image of the batch; NaN (dropped) for an unknown prompt or a non-finite image. */
export async function judgeProbabilities(judge: Judge, images: ImageBatch, prompts: readonly string[], batchSize = 64): Promise<ScoredBatch> {
  checkBatch('judge reward', images, prompts);
  const { classes, size } = judge.config;
  if (images.h !== size || images.w !== size) throw new Error(`judge reward: images are ${images.h}×${images.w}; this judge takes ${size}×${size}`);
  const C = classes.length;
  const index = new Map(classes.map((c, i) => [c, i]));
  const rewards: number[] = [];
  const dropped: Dropped[] = [];
  for (let from = 0; from < images.n; from += batchSize) {
    const chunk = sliceBatch(images, from, Math.min(images.n, from + batchSize));
    const p = noGrad(() => tidy(() => softmax(judge.forward(tensor(chunk.data, [chunk.n, 3, size, size], 'f32', judge.device)), 1)));
    const v = await p.data();
    p.dispose();
    for (let k = 0; k < chunk.n; k++) {
      const i = from + k, c = index.get(prompts[i]);
      const img = chunk.data.subarray(k * 3 * size * size, (k + 1) * 3 * size * size);
      const reason = c === undefined ? `the judge does not know the prompt "${prompts[i]}" (it knows ${C} captions, e.g. "${classes[0]}")`
        : !img.every(Number.isFinite) ? 'the image holds NaN or ±Infinity' : null;
      if (reason) dropped.push({ index: i, reason });
      rewards.push(reason ? NaN : v[k * C + c!]);
    }
  }
  return { rewards, dropped };
}

/** The `{"judge": {...}}` reward (a main-thread factory): loads the judge on the training device. */
export async function createJudgeReward(options: JudgeRewardOptions, ctx: RewardContext = {}): Promise<HostedReward> {
  const problems = checkHostedReward('judge', options, 'reward');
  if (problems.length) throw new Error(problems.join('; '));
  const dir = resolve(options.model);
  if (!existsSync(dir)) throw new Error(`judge.model: ${dir} does not exist (train a judge with \`ddpo judge --data DIR --out ${options.model}\`)`);
  const judge = await loadJudge(dir, ctx.device ?? getDefaultDevice());
  judge.freeze();
  const batch = options.batch_size ?? 64;
  return {
    score: async (images, prompts) => (await judgeProbabilities(judge, images, prompts, batch)).rewards,
    scoreDetailed: (images, prompts) => judgeProbabilities(judge, images, prompts, batch),
    release: () => judge.device.trim(),
    close: () => judge.dispose(),
  };
}
