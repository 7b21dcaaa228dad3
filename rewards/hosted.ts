// Rewards that run in the trainer's own thread, on its device: a model on the GPU (aesthetic,
// CLIP score) or a client of a remote service. They cannot live in worker threads (a GPUDevice
// does not cross threads, and a model loaded per worker would multiply its memory), so a
// RewardSpec with `thread: 'main'` names a factory that the scorer calls once, in this thread,
// with the spec's args followed by a RewardContext.
//
// A factory returns a plain Reward or a HostedReward: the reward with its lifetime (release
// between epochs, close at the end) and facts for the logs.

import type { Device } from '../engine/device.js';
import type { ScoredBatch } from './score.js';
import { ImageBatch, Metadata, Reward, RewardSpec } from './types.js';
import { importModule } from './load.js';

/** What a main-thread factory receives after its args. */
export interface RewardContext {
  /** The training device: GPU rewards run their models on it. */
  device?: Device;
  /** Messages for the run's log. */
  log?: (message: string) => void;
}

export interface HostedReward {
  score: Reward;
  /** As score, with a reason for each dropped sample (used instead of score when given). */
  scoreDetailed?(images: ImageBatch, prompts: string[], metadata: Metadata[]): Promise<ScoredBatch>;
  /** Frees what it holds between uses (called after each epoch's scoring): transient GPU memory, optionally its weights. */
  release?(): void | Promise<void>;
  /** Frees everything; the reward is not used again. */
  close?(): void | Promise<void>;
  /** It retries and counts its own failures (a service client): the scorer does not rescore its dropped samples. */
  retriesInternally?: boolean;
  /** Counters since the last call (e.g. requests, retries), logged per epoch. */
  takeStats?(): Record<string, number>;
}

export type MainThreadSpec = Extract<RewardSpec, { module: string }> & { thread: 'main' };

export function isMainThreadSpec(spec: RewardSpec): spec is MainThreadSpec {
  return 'module' in spec && spec.thread === 'main';
}

function isHosted(v: unknown): v is HostedReward {
  return !!v && typeof v === 'object' && typeof (v as HostedReward).score === 'function';
}

/**
 * Imports a main-thread spec's module and builds its reward: the export called with
 * (...args, context), or the export itself when it takes no args and is a plain reward function
 * (then it is called with (images, prompts, metadata) as any reward).
 */
export async function loadHostedReward(spec: MainThreadSpec, context: RewardContext): Promise<HostedReward> {
  const mod = await importModule(spec.module);
  const f = mod[spec.export];
  if (f === undefined) throw new Error(`loadHostedReward: ${spec.module} has no export "${spec.export}" (exports: ${Object.keys(mod).join(', ') || 'none'})`);
  if (typeof f !== 'function') throw new Error(`loadHostedReward: ${spec.module}#${spec.export} is ${typeof f}, not a function`);
  if (!spec.args) return { score: f as Reward };
  const made = await (f as (...a: unknown[]) => unknown)(...spec.args, context);
  if (typeof made === 'function') return { score: made as Reward };
  if (isHosted(made)) return made;
  throw new Error(`loadHostedReward: ${spec.module}#${spec.export}(...) returned ${typeof made}, not a reward function nor {score, release?, close?}`);
}
